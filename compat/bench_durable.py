"""Durable-sandbox benchmark (issue 12), the official Python SDK (e2b 2.63.0) against
`soulbox serve`; run by compat/bench_durable.sh, which restarts the server between phases.

    pause               pause + resume, both modes, of a sandbox holding 100 MiB and 1 GiB (in a
                        file and in a process's memory), beside create → first command of a fresh
                        sandbox; forks of 1 and 10 with and without memory
    fill N FILE         starts N sandboxes (no internet) and writes their ids to FILE
    check FILE          after the restart: every one of them answers a command
"""

import concurrent.futures as cf
import os
import statistics
import sys
import time

import httpx
from e2b import Sandbox

TEMPLATE = "base"


def ms(f):
    t = time.perf_counter()
    f()
    return (time.perf_counter() - t) * 1000


def pause():
    rows = []
    cold = []
    for _ in range(5):
        t = time.perf_counter()
        s = Sandbox.create(TEMPLATE, timeout=300)
        s.commands.run("true")
        cold.append((time.perf_counter() - t) * 1000)
        s.kill()
    # Resident memory: the sandbox's limit is 512 MiB, so the 1 GiB case holds its file and
    # 400 MiB of a process's memory.
    rows = []
    for mib, held in ((100, 100), (1024, 400)):
        for memory in (True, False):
            p_ms, r_ms = [], []
            for _ in range(3):
                s = Sandbox.create(TEMPLATE, timeout=600)
                s.commands.run(f"head -c {mib}M /dev/urandom > /home/user/blob; sync")
                s.commands.run(f"nohup python3 -c 'import os, time; b = os.urandom({held} << 20); "
                               f"time.sleep(10**6)' >/dev/null 2>&1 &")
                time.sleep(0.5 + held / 200)
                p_ms.append(ms(lambda: s.pause(keep_memory=memory)))

                def resume():
                    r = Sandbox.connect(s.sandbox_id)
                    r.commands.run("true")

                r_ms.append(ms(resume))
                Sandbox.kill(s.sandbox_id)
            rows.append((mib, held, memory, statistics.median(p_ms), statistics.median(r_ms)))
    print("| sandbox holds | mode | pause | resume → first command | baseline: create → first command |")
    print("|---|---|---|---|---|")
    for mib, held, memory, p, r in rows:
        mode = "full (processes kept)" if memory else "filesystem"
        print(f"| {mib} MiB file + {held} MiB process memory | {mode} | {p:.0f} ms | {r:.0f} ms | "
              f"{statistics.median(cold):.0f} ms |")
    print()
    print("| fork of a sandbox holding a 100 MiB file and a process | children | total | per child | "
          "baseline: create → first command |")
    print("|---|---|---|---|---|")
    parent = Sandbox.create(TEMPLATE, timeout=600)
    parent.commands.run("head -c 100M /dev/urandom > /home/user/blob")
    parent.commands.run("nohup sleep 1000000 >/dev/null 2>&1 &")
    url = os.environ["E2B_API_URL"]
    for memory in (True, False):
        for n in (1, 10):
            t = time.perf_counter()
            r = httpx.post(f"{url}/sandboxes/{parent.sandbox_id}/fork", timeout=300,
                           headers={"X-API-KEY": os.environ["E2B_API_KEY"]},
                           json={"count": n, "memory": memory})
            took = (time.perf_counter() - t) * 1000
            r.raise_for_status()
            kids = [k["sandbox"]["sandboxID"] for k in r.json()]
            assert len(kids) == n, r.text
            what = "with memory (restored)" if memory else "files only (booted)"
            print(f"| {what} | {n} | {took:.0f} ms | {took / n:.0f} ms | {statistics.median(cold):.0f} ms |")
            for k in kids:
                Sandbox.kill(k)
    parent.kill()


def fill(n, path):
    def one(_):
        s = Sandbox.create(TEMPLATE, timeout=3600, allow_internet_access=False)
        return s.sandbox_id

    t = time.perf_counter()
    with cf.ThreadPoolExecutor(16) as ex:
        ids = list(ex.map(one, range(n)))
    open(path, "w").write("\n".join(ids))
    print(f"started {n} sandboxes in {time.perf_counter() - t:.1f} s")


def check(path):
    ids = open(path).read().split()

    def one(i):
        s = Sandbox.connect(i)
        assert s.commands.run("echo ok").stdout == "ok\n"
        return i

    t = time.perf_counter()
    with cf.ThreadPoolExecutor(16) as ex:
        done = list(ex.map(one, ids))
    print(f"all {len(done)} sandboxes answer a command after the restart ({time.perf_counter() - t:.1f} s to ask them all)")
    with cf.ThreadPoolExecutor(16) as ex:
        list(ex.map(Sandbox.kill, ids))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "pause":
        pause()
    elif cmd == "fill":
        fill(int(sys.argv[2]), sys.argv[3])
    else:
        check(sys.argv[2])
