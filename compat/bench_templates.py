"""Template build benchmark: the official Python SDK (e2b 2.63.0) against `soulbox serve`.

    compat/bench.sh          # starts a server and runs this (needs PyPI for the pip step)

A template with one `pip_install` and one COPY: a cold build (`skip_cache`), a rebuild after
changing only the COPY'd file (every earlier layer cached), and create→first command from
that template side by side with `base`. Prints a Markdown table."""

import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from e2b import Sandbox, Template


def template(ctx: Path, content: str):
    (ctx / "app.py").write_text(content)
    return (
        Template(file_context_path=str(ctx))
        .from_template("base")
        .pip_install(["six"])
        .copy("app.py", "/home/user/app.py")
    )


def timed(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def create_ms(name, n=15):
    out = []
    for _ in range(n):
        t = time.perf_counter()
        s = Sandbox.create(name, timeout=60)
        s.commands.run("true")
        out.append((time.perf_counter() - t) * 1000)
        s.kill()
    return statistics.median(out), max(out)


def main():
    name = f"bench-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory() as d:
        ctx = Path(d)
        cold = timed(lambda: Template.build(template(ctx, "print(1)\n"), name, skip_cache=True))
        cached = timed(lambda: Template.build(template(ctx, "print(2)\n"), name))
    custom = create_ms(name)
    base = create_ms("base")
    print(f"| {time.strftime('%Y-%m-%d')} | seconds / ms |")
    print("|---|---|")
    print(f"| cold build (pip_install + COPY, skip_cache) | {cold:.2f} s |")
    print(f"| rebuild after changing the COPY'd file | {cached:.2f} s |")
    print(f"| create→first command, custom template (p50 / max of 15) | {custom[0]:.1f} / {custom[1]:.1f} ms |")
    print(f"| create→first command, `base` (p50 / max of 15) | {base[0]:.1f} / {base[1]:.1f} ms |")


if __name__ == "__main__":
    sys.exit(main())
