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
    s.kill()
    print(f"\nCode-interpreter benchmark, {time.strftime('%Y-%m-%d')}, Python e2b-code-interpreter 2.11.5 (unmodified); p50 / p99\n")
    print("| measure | result |")
    print("|---|---|")
    print(f"| create → first `run_code(\"1+1\")` result, warm pool (n={n}) | {pct(warm_pool, 50):.0f} / {pct(warm_pool, 99):.0f} ms |")
    print(f"| create → first `run_code(\"1+1\")` result, kernel started on demand (n={n}) | {pct(cold, 50):.0f} / {pct(cold, 99):.0f} ms |")
    print(f"| `run_code(\"1+1\")` on a warm context (n={n * 10}) | {pct(warm, 50):.1f} / {pct(warm, 99):.1f} ms |")


if __name__ == "__main__":
    main()
