"""Code-interpreter benchmark: the official e2b-code-interpreter SDK against `soulbox serve`
(started by compat/bench.sh with its default warm pool of one code-interpreter sandbox).
Prints a Markdown table."""

import os
import time

from e2b_code_interpreter import Sandbox


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def first_result(**kw):
    t = time.perf_counter()
    s = Sandbox.create(timeout=120, **kw)
    r = s.run_code("1+1")
    ms = (time.perf_counter() - t) * 1000
    assert r.text == "2", r
    s.kill()
    return ms


# Run inside the sandbox: the kernel's own round trip for `1+1` (execute → idle) through
# jupyter_client, without the bridge, the agent, the proxy or the SDK.
KERNEL_ALONE = """
import os, tempfile, time
from jupyter_client import KernelManager
km = KernelManager(kernel_name="python3", transport="ipc", ip=os.path.join(tempfile.mkdtemp(), "k"))
km.start_kernel()
kc = km.client(); kc.start_channels(); kc.wait_for_ready(timeout=60)
def once():
    t = time.perf_counter()
    mid = kc.execute("1+1")
    while True:
        m = kc.get_iopub_msg(timeout=10)
        if m["parent_header"].get("msg_id") == mid and m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
            break
    kc.get_shell_msg(timeout=10)
    return (time.perf_counter() - t) * 1000
for _ in range(20): once()
xs = sorted(once() for _ in range(%d))
print(xs[len(xs) // 2], xs[min(len(xs) - 1, round(0.99 * (len(xs) - 1)))])
km.shutdown_kernel(now=True)
"""


def main():
    n = int(os.environ.get("BENCH_N", "20"))
    time.sleep(5)  # let the pool fill after start
    warm_pool = []
    for _ in range(n):
        warm_pool.append(first_result())
        time.sleep(3)  # the pool refills (one kernel start) before the next create
    # allow_internet_access=False never matches the pool: the kernel starts on demand.
    cold = [first_result(allow_internet_access=False) for _ in range(n)]
    s = Sandbox.create(timeout=300)
    s.run_code("1+1")
    warm = []
    for _ in range(n * 10):
        t = time.perf_counter()
        s.run_code("1+1")
        warm.append((time.perf_counter() - t) * 1000)
    s.files.write("/tmp/kernel_alone.py", KERNEL_ALONE % (n * 10))
    alone = s.commands.run("python3 /tmp/kernel_alone.py 2>/dev/null", timeout=120).stdout.split()
    s.kill()
    print(f"\nCode-interpreter benchmark, {time.strftime('%Y-%m-%d')}, Python e2b-code-interpreter 2.11.5 (unmodified); p50 / p99\n")
    print("| measure | result |")
    print("|---|---|")
    print(f"| create → first `run_code(\"1+1\")` result, warm pool (n={n}) | {pct(warm_pool, 50):.0f} / {pct(warm_pool, 99):.0f} ms |")
    print(f"| create → first `run_code(\"1+1\")` result, kernel started on demand (n={n}) | {pct(cold, 50):.0f} / {pct(cold, 99):.0f} ms |")
    print(f"| `run_code(\"1+1\")` on a warm context (n={n * 10}) | {pct(warm, 50):.1f} / {pct(warm, 99):.1f} ms |")
    print(f"| of which the kernel alone: `1+1` execute → idle by jupyter_client inside the sandbox (n={n * 10}) | {float(alone[0]):.1f} / {float(alone[1]):.1f} ms |")


if __name__ == "__main__":
    main()
