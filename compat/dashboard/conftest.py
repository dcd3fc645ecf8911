"""The dashboard in a real browser: Debian's Chromium, headless, driven by Playwright (never
Playwright's own browser download), against a running `soulbox serve` at SOULBOX_URL. The
E2B SDK makes the sandboxes the browser looks at and checks what the browser did to them.

Environment: SOULBOX_URL; E2B_API_KEY (an admin key); SOULBOX_READER_KEY (read-only, same
team); SOULBOX_OTHER_TEAM_KEY (a key of another team); SOULBOX_COMPAT_TEMPLATE (default
base); SOULBOX_ARTIFACTS (screenshots go to its dashboard/ folder; default artifacts/ at the
repository's top)."""

import os
import re
import uuid
from pathlib import Path

import pytest

URL = os.environ.get("SOULBOX_URL", "http://127.0.0.1:3000").rstrip("/")
os.environ["E2B_API_URL"] = URL
os.environ["E2B_SANDBOX_URL"] = URL
os.environ.pop("E2B_DEBUG", None)
TEMPLATE = os.environ.get("SOULBOX_COMPAT_TEMPLATE", "base")
CHROMIUM = os.environ.get("SOULBOX_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ARTIFACTS = Path(os.environ.get("SOULBOX_ARTIFACTS") or Path(__file__).resolve().parents[2] / "artifacts") / "dashboard"

XSS = '<img src=x onerror="alert(1)"><script>alert(2)</script>'

# What the page may never log: a CSP refusal or an uncaught error.
BAD_CONSOLE = re.compile(r"Content Security Policy|Refused to|Uncaught|TypeError|ReferenceError|SyntaxError")


def key(name):
    v = os.environ.get(name)
    if not v:
        pytest.skip(f"{name} is not set")
    return v


@pytest.fixture(scope="session")
def admin_key():
    return key("E2B_API_KEY")


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    if not os.path.exists(CHROMIUM):
        pytest.fail(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


class Console:
    """Everything a page logged; problems() are the CSP refusals and script errors."""

    def __init__(self):
        self.lines = []

    def attach(self, page):
        page.on("console", lambda m: self.lines.append(f"console.{m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.lines.append(f"pageerror: {e}"))
        # window.alert/confirm/prompt are never used: one appearing is a bug (or an XSS).
        page.on("dialog", lambda d: (self.lines.append(f"dialog: {d.type} {d.message}"), d.dismiss()))

    def problems(self):
        return [l for l in self.lines if l.startswith(("pageerror", "dialog")) or BAD_CONSOLE.search(l)]


@pytest.fixture
def new_context(browser):
    """new_context(viewport=…) → (context, page), each page's console checked at the end."""
    made = []

    def make(**kw):
        kw.setdefault("viewport", {"width": 1280, "height": 800})
        ctx = browser.new_context(accept_downloads=True, **kw)
        console = Console()
        ctx.on("page", console.attach)
        page = ctx.new_page()
        page.set_default_timeout(20_000)
        made.append((ctx, console))
        return ctx, page

    yield make
    problems = []
    for ctx, console in made:
        problems += console.problems()
        ctx.close()
    assert not problems, "the page logged CSP violations or script errors:\n" + "\n".join(problems)


def shot(page, name, full_page=True):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # A success message would cover the page (errors stay: they are part of the picture).
    ok = page.locator("#toast.ok .toast-close")
    if ok.is_visible():
        ok.click()
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full_page)


def sign_in(page, api_key):
    page.goto(URL + "/dashboard/")
    page.locator("#api-key").fill(api_key)
    page.locator("#sign-in").click()
    page.locator("#sign-out").wait_for(state="visible")


@pytest.fixture(scope="module")
def sandbox():
    """A sandbox of the admin's team, with metadata the list's search finds, and metadata
    that would run script if the page ever made HTML of it (a dialog fails the test)."""
    from e2b import Sandbox

    tag = uuid.uuid4().hex[:12]
    s = Sandbox.create(TEMPLATE, timeout=600, metadata={"dashboard-test": tag, "note": XSS})
    s.tag = tag
    yield s
    try:
        s.kill()
    except Exception:
        pass
