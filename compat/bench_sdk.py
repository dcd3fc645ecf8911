"""SDK-level benchmark: the official Python SDK (e2b 2.63.0) against `soulbox serve`.

    compat/bench.sh          # starts a server and runs this

Measures create→first command, `commands.run("true")` through the proxy, 50 concurrent
creates, and exec throughput with many concurrent clients. Prints a Markdown table."""

import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from e2b import Sandbox

TEMPLATE = os.environ.get("SOULBOX_COMPAT_TEMPLATE", "base")


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def cell(xs):
    return f"{pct(xs, 50):.1f} / {pct(xs, 99):.1f} ms"


def create_then_true():
    t = time.perf_counter()
    s = Sandbox.create(TEMPLATE, timeout=120)
    s.commands.run("true")
    d = (time.perf_counter() - t) * 1000
    return s, d


def main():
    n = int(os.environ.get("BENCH_N", "50"))
    rows = []

    first = []
    for _ in range(n):
        s, d = create_then_true()
        first.append(d)
        s.kill()
    rows.append((f"create → first command, one at a time (n={n})", cell(first)))

    s = Sandbox.create(TEMPLATE, timeout=300)
    rt = []
    for _ in range(n * 4):
        t = time.perf_counter()
        s.commands.run("true")
        rt.append((time.perf_counter() - t) * 1000)
    rows.append((f'`commands.run("true")` round trip (n={n * 4})', cell(rt)))

    with ThreadPoolExecutor(50) as pool:
        creates = []

        def timed_create(_):
            t = time.perf_counter()
            sb = Sandbox.create(TEMPLATE, timeout=120)
            return sb, (time.perf_counter() - t) * 1000

        results = list(pool.map(timed_create, range(50)))
        creates = [d for _, d in results]
        list(pool.map(lambda r: r[0].kill(), results))
    rows.append(("create, 50 concurrent (n=50)", cell(creates)))

    clients, per = 16, 25
    def worker(_):
        for _ in range(per):
            s.commands.run("true")

    t = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, range(clients)))
    elapsed = time.perf_counter() - t
    rows.append((f"exec throughput, {clients} concurrent clients, one sandbox", f"{clients * per / elapsed:.0f} commands/s"))
    s.kill()

    print(f"\nSDK benchmark, {time.strftime('%Y-%m-%d')}, Python e2b (unmodified), template `{TEMPLATE}`; p50 / p99\n")
    print("| measure | result |")
    print("|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")


if __name__ == "__main__":
    sys.exit(main())
