"""How fast the dashboard loads in a real browser (Debian's Chromium, headless, driven by
Playwright), against a running `soulbox serve` at SOULBOX_URL with an admin key in
E2B_API_KEY. Each figure is from a fresh page; p50 / p99 / max in ms.

  floor       the browser navigates to one small file the same server serves (a text file of
              the dashboard's): what any page costs here before it has content
  cold        a new browser context (empty cache, no session) until the sign-in form shows
  signed in   a new page of a signed-in context until the sandbox list shows every sandbox
  sandbox     a new page at one sandbox's page until its facts and CPU chart are drawn

Also the bytes the first load moves (what a phone on a slow link downloads)."""

import os
import statistics
import sys
import time

from e2b import Sandbox
from playwright.sync_api import sync_playwright

URL = os.environ["SOULBOX_URL"].rstrip("/")
KEY = os.environ["E2B_API_KEY"]
N = int(os.environ.get("SOULBOX_BENCH_N", "30"))
SANDBOXES = 5
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def ms(f):
    t = time.perf_counter()
    f()
    return (time.perf_counter() - t) * 1000


def body_size(r):
    """Bytes on the wire of one answer's body (compressed, as sent)."""
    n = r.headers.get("content-length")
    if n:
        return int(n)
    try:
        return len(r.body())
    except Exception:
        return 0


def row(name, xs):
    xs = sorted(xs)
    p99 = xs[min(len(xs) - 1, int(len(xs) * 0.99))]
    print(f"| {name} (n={len(xs)}) | {statistics.median(xs):.0f} / {p99:.0f} / {xs[-1]:.0f} ms |")


def main():
    os.environ["E2B_API_URL"] = os.environ["E2B_SANDBOX_URL"] = URL
    boxes = [Sandbox.create(os.environ.get("SOULBOX_COMPAT_TEMPLATE", "base"), timeout=600) for _ in range(SANDBOXES)]
    try:
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=os.environ.get("SOULBOX_CHROMIUM", "/usr/bin/chromium"), args=ARGS)
            floor, cold, warm, one = [], [], [], []
            moved = 0
            for i in range(N):
                ctx = b.new_context()
                page = ctx.new_page()
                floor.append(ms(lambda: page.goto(f"{URL}/dashboard/assets/vendor/VERSIONS", wait_until="load")))
                sizes = []
                page.on("response", lambda r: sizes.append(body_size(r)))
                cold.append(ms(lambda: (page.goto(f"{URL}/dashboard/"), page.wait_for_selector("#api-key"))))
                if i == 0:
                    moved = sum(sizes)
                page.fill("#api-key", KEY)
                page.click("#sign-in")
                page.wait_for_selector("#sign-out", state="visible")
                page.close()

                def listed():
                    pg = ctx.new_page()
                    pg.goto(f"{URL}/dashboard/#/sandboxes")
                    for s in boxes:
                        pg.wait_for_selector(f'[data-sandbox-id="{s.sandbox_id}"]')
                    pg.close()
                warm.append(ms(listed))

                def sandbox():
                    pg = ctx.new_page()
                    pg.goto(f"{URL}/dashboard/#/sandboxes/{boxes[0].sandbox_id}")
                    pg.wait_for_selector("[data-tab=overview]")
                    pg.wait_for_selector("svg", state="attached")
                    pg.close()
                one.append(ms(sandbox))
                ctx.close()
            b.close()
    finally:
        for s in boxes:
            s.kill()
    print(f"\n{time.strftime('%Y-%m-%d')}, Chromium headless, {SANDBOXES} sandboxes listed; p50 / p99 / max\n")
    print("| measure | result |\n|---|---|")
    row("floor: navigate to a small file of the same server", floor)
    row("cold: empty cache to the sign-in form", cold)
    row("signed in: a new page to the full sandbox list", warm)
    row("a sandbox's page to its facts and chart", one)
    print(f"| bytes of the first load (gzip) | {moved / 1024:.0f} KiB |")


if __name__ == "__main__":
    sys.exit(main())
