"""CLI benchmark: `soulbox files cp` of a 200 MiB file both ways and `soulbox exec ID -- true`,
each a fresh `soulbox` process against the `soulbox serve` of compat/bench.sh. Prints a
Markdown table."""

import os
import subprocess
import sys
import tempfile
import time

BIN = sys.argv[1]
env = dict(os.environ, SOULBOX_URL=os.environ["E2B_API_URL"], SOULBOX_API_KEY=os.environ["E2B_API_KEY"])


def cli(*args):
    return subprocess.run([BIN, *args], env=env, check=True, capture_output=True, text=True).stdout


def timed(*args):
    t = time.perf_counter()
    cli(*args)
    return (time.perf_counter() - t) * 1000


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def main():
    sid = cli("sandbox", "create", "base", "--timeout", "600").strip()
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "big.bin")
        with open(src, "wb") as f:
            f.write(os.urandom(200 << 20))
        up = [timed("files", "cp", src, f"{sid}:/home/user/big.bin") for _ in range(5)]
        down = [timed("files", "cp", f"{sid}:/home/user/big.bin", os.path.join(d, "back.bin")) for _ in range(5)]
    execs = [timed("exec", sid, "--", "true") for _ in range(50)]
    cli("sandbox", "kill", sid)
    mib_s = lambda ms: 200 / (ms / 1000)
    print(f"\nCLI benchmark, {time.strftime('%Y-%m-%d')}, one `soulbox` process per operation; p50\n")
    print("| measure | result |")
    print("|---|---|")
    print(f"| `files cp` 200 MiB into a sandbox (n=5) | {pct(up, 50):.0f} ms ({mib_s(pct(up, 50)):.0f} MiB/s) |")
    print(f"| `files cp` 200 MiB out of a sandbox (n=5) | {pct(down, 50):.0f} ms ({mib_s(pct(down, 50)):.0f} MiB/s) |")
    print(f"| `exec ID -- true`, process start to exit (n=50) | {pct(execs, 50):.1f} ms |")


if __name__ == "__main__":
    main()
