"""The dashboard, end to end in Chromium: sign-in (and a bad key refused), the live list and
its search, one sandbox's charts, processes, terminal (typing, UTF-8 both ways), file
browser (upload and download checked byte for byte with the SDK, a text file shown as text),
templates, team, audit, a phone-sized list, a read-only key refused (403 shown, the sandbox
still runs), another team seeing nothing, and a kill from the list. Screenshots of every page
go to $SOULBOX_ARTIFACTS/dashboard/; any CSP violation or script error fails the test."""

import os
import re
import time
import uuid

import pytest
from playwright.sync_api import expect

from conftest import URL, TEMPLATE, XSS, key, shot, sign_in


def until(what, fn, timeout=30.0, every=0.2):
    """Polls fn() until it returns something true (no fixed sleeps)."""
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            last = fn()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - reported on timeout
            last = e
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def last_line(page):
    lines = [l for l in terminal_lines(page) if l]
    return lines[-1] if lines else ""


def row(page, sid):
    return page.locator(f'tr[data-sandbox-id="{sid}"]')


def terminal_lines(page):
    return [t.strip() for t in page.locator(".xterm-accessibility-tree > div").all_text_contents()]


def test_a_bad_key_is_refused(new_context):
    ctx, page = new_context()
    page.goto(URL + "/dashboard/")
    expect(page.locator("#api-key")).to_be_visible()
    expect(page.locator("#api-key")).to_have_attribute("type", "password")
    shot(page, "01-sign-in")
    page.locator("#api-key").fill("e2b_" + "0" * 40)
    page.locator("#sign-in").click()
    expect(page.locator("#toast")).to_be_visible()
    expect(page.locator("#toast")).to_contain_text("Sign-in failed")
    expect(page.locator("#sign-out")).to_be_hidden()
    assert not [c for c in ctx.cookies() if c["name"].endswith("soulbox_session")]


def test_admin_sees_drives_and_inspects_a_sandbox(new_context, sandbox, admin_key):
    ctx, page = new_context()
    sid = sandbox.sandbox_id
    sign_in(page, admin_key)

    # The key is in no storage the page's scripts can read, and the cookie is HttpOnly.
    assert page.evaluate("localStorage.length + sessionStorage.length") == 0
    assert "soulbox_session" not in page.evaluate("document.cookie")
    cookie = [c for c in ctx.cookies() if c["name"].endswith("soulbox_session")]
    assert cookie and cookie[0]["httpOnly"] and cookie[0]["sameSite"] == "Strict"
    assert admin_key not in (cookie[0]["value"])
    expect(page.locator("#whoami")).to_contain_text("admin")

    # The list shows it, with its template and metadata, and the search finds it by metadata.
    expect(row(page, sid)).to_be_visible()
    expect(row(page, sid)).to_contain_text(sandbox.tag)
    # Metadata is text: the markup shows as written and makes no element.
    expect(row(page, sid)).to_contain_text(XSS)
    assert row(page, sid).locator("img, script").count() == 0
    expect(row(page, sid)).to_contain_text("running")
    page.locator("#sandbox-search").fill(sandbox.tag)
    expect(page.locator("tr[data-sandbox-id]")).to_have_count(1)
    page.locator("#sandbox-search").fill("no-such-sandbox-" + uuid.uuid4().hex)
    expect(row(page, sid)).to_have_count(0)
    page.locator("#sandbox-search").fill("")
    expect(row(page, sid)).to_be_visible()
    # CPU and memory come from the metrics (a number, not the placeholder).
    until("the list's CPU figure", lambda: re.search(r"\d+(\.\d)? % of \d+ vCPU", row(page, sid).inner_text()))
    shot(page, "02-sandboxes")

    # Its page: facts, and the charts fill with samples (the server samples every 5 s). A
    # busy loop and a file written show on them.
    sandbox.commands.run("dd if=/dev/zero of=/home/user/ballast bs=1M count=64 status=none; "
                         "timeout 20 sh -c 'while :; do :; done'", background=True)
    row(page, sid).locator(f'a[href="#/sandboxes/{sid}"]').click()
    expect(page.locator("[data-tab=overview]")).to_have_attribute("aria-selected", "true")
    expect(page.locator(".facts")).to_contain_text(sandbox.tag)
    cpu = page.locator(".chart").first
    until("three samples on the charts", lambda: int(cpu.get_attribute("data-samples") or 0) >= 3, timeout=60)
    until("the busy loop on the CPU chart",
          lambda: float(re.match(r"[\d.]+", cpu.locator(".now").text_content()).group()) >= 20, timeout=30)
    shot(page, "03-sandbox-overview")

    # Terminal: keystrokes in, output out. The rows are read as text through xterm's
    # screen-reader mode (the canvas has no text).
    page.locator("[data-tab=terminal]").click()
    expect(page.locator("#terminal canvas").first).to_be_attached()
    expect(page.locator(".term-status")).to_contain_text("Connected")
    page.locator("#screen-reader").check()
    until("the shell's prompt", lambda: any(l.endswith("$") for l in terminal_lines(page)))
    page.keyboard.type("echo hi\n")
    until("hi on the terminal", lambda: "hi" in terminal_lines(page))
    # Multi-byte output is decoded as UTF-8 (printf of octal escapes: ASCII in, UTF-8 out).
    page.keyboard.type("printf 'caf\\303\\251 \\342\\234\\223\\n'\n")
    until("café ✓ on the terminal", lambda: "café ✓" in terminal_lines(page))
    # UTF-8 typed in reaches the sandbox intact: `cat` writes the bytes it got and the SDK
    # reads them back. Typed as input events (as phone keyboards and IMEs send text), which
    # xterm takes only outside screen-reader mode.
    page.keyboard.type("cat > /tmp/dashboard-utf8.txt\n")
    until("cat to start", lambda: last_line(page).endswith("$ cat > /tmp/dashboard-utf8.txt"))
    page.locator("#screen-reader").uncheck()
    utf8 = "héllo wörld ✓ ß €"
    page.keyboard.type(utf8 + "\n")
    page.keyboard.press("Control+d")
    until("the typed UTF-8 in the sandbox",
          lambda: sandbox.files.read("/tmp/dashboard-utf8.txt") == utf8 + "\n")
    page.locator("#screen-reader").check()
    # Ctrl+Shift+V pastes the clipboard into the shell.
    ctx.grant_permissions(["clipboard-read", "clipboard-write"], origin=URL)
    page.evaluate("navigator.clipboard.writeText('echo pasted-$((6*7))')")
    page.keyboard.press("Control+Shift+V")
    # (The clipboard is read asynchronously: Enter only once the text is on the line.)
    until("the pasted text on the line", lambda: last_line(page).endswith("$ echo pasted-$((6*7))"))
    page.keyboard.press("Enter")
    until("the pasted command's output", lambda: "pasted-42" in terminal_lines(page))
    # Ctrl+Shift+C copies the selection: drag across the terminal's first row.
    box = page.locator("#terminal .xterm-screen").bounding_box()
    page.mouse.move(box["x"] + 2, box["y"] + 5)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] - 2, box["y"] + 5, steps=5)
    page.mouse.up()
    page.keyboard.press("Control+Shift+C")
    until("the selection in the clipboard", lambda: "echo hi" in page.evaluate("navigator.clipboard.readText()"))
    page.locator("#terminal").click()
    page.keyboard.type("ls /tmp\n")
    until("ls on the terminal", lambda: any("dashboard-utf8.txt" in l and "cat" not in l for l in terminal_lines(page)))
    shot(page, "04-sandbox-terminal", full_page=False)

    # Processes: the sandbox's own, pid 1 (the agent) and the terminal's shell among them.
    page.locator("[data-tab=processes]").click()
    expect(page.locator('#process-list tr[data-pid="1"]')).to_have_count(1)
    expect(page.locator("#process-list tbody")).to_contain_text("bash")
    shot(page, "06-sandbox-processes")

    # Files: upload, check it arrived byte for byte.
    page.locator("[data-tab=files]").click()
    expect(page.locator("#file-upload")).to_be_attached()
    up_name = f"up-{uuid.uuid4().hex[:8]}.bin"
    up_bytes = os.urandom(50_000) + bytes(range(256))
    page.locator("#file-upload").set_input_files(files=[{"name": up_name, "mimeType": "application/octet-stream", "buffer": up_bytes}])
    expect(page.locator(f'[data-path="/home/user/{up_name}"]')).to_be_visible()
    assert bytes(sandbox.files.read(f"/home/user/{up_name}", format="bytes")) == up_bytes

    # Download: a file the SDK wrote, through the browser, compared byte for byte.
    down_name = f"down-{uuid.uuid4().hex[:8]}.bin"
    down_bytes = os.urandom(70_000)
    sandbox.files.write(f"/home/user/{down_name}", down_bytes)
    # Text shown as text: markup in a file is never markup on the page.
    text_name = f"notes-{uuid.uuid4().hex[:6]}.html"
    text = "<img src=x onerror=alert(1)><script>alert(2)</script>\nline two ✓\n"
    sandbox.files.write(f"/home/user/{text_name}", text)
    page.get_by_role("button", name="Refresh").click()
    expect(page.locator(f'[data-download="/home/user/{down_name}"]')).to_be_visible()
    with page.expect_download() as dl:
        page.locator(f'[data-download="/home/user/{down_name}"]').click()
    assert dl.value.suggested_filename == down_name
    with open(dl.value.path(), "rb") as f:
        assert f.read() == down_bytes
    page.locator(f'[data-path="/home/user/{text_name}"] .file-name').click()
    until("the text viewer", lambda: page.locator("#file-view").text_content() == text)
    assert page.locator("#file-view img, #file-view script").count() == 0
    shot(page, "05-sandbox-files")

    # Templates: the list, and the sandbox's template's page.
    page.locator('a[data-nav="templates"]').click()
    expect(page.locator(f'#template-list tr[data-template-id="{TEMPLATE}"]')).to_be_visible()
    expect(page.locator("#snapshot-list tbody tr").first).to_be_visible()
    shot(page, "07-templates")
    page.locator(f'#template-list tr[data-template-id="{TEMPLATE}"] a').click()
    expect(page.locator("h1")).to_contain_text(TEMPLATE)
    shot(page, "08-template-builtin")

    # Team: quota and use, the keys; a key made here is shown once, then only its prefix.
    page.locator('a[data-nav="team"]').click()
    expect(page.locator("#key-list tbody tr[data-key-id]").first).to_be_visible()
    expect(page.locator(".meters")).to_contain_text("Running sandboxes")
    name = f"dash-{uuid.uuid4().hex[:6]}"
    page.locator("#key-name").fill(name)
    page.locator("#key-role").select_option("read-only")
    page.locator("#key-create-btn").click()
    new_key = page.locator("#new-key").text_content()
    assert re.fullmatch(r"e2b_[0-9a-f]{40}", new_key), new_key
    new_row = page.locator("#key-list tr", has_text=name)
    expect(new_row).to_be_visible()
    shot(page, "09-team")
    # Revoke it (in-page confirmation), and it is gone from the active keys.
    new_row.locator("[data-action=revoke]").click()
    page.locator("#confirm-ok").click()
    expect(page.locator("#key-list tr", has_text=name)).to_have_count(0)
    page.locator('a[data-nav="sandboxes"]').click()
    page.locator('a[data-nav="team"]').click()
    expect(page.locator("#new-key")).to_have_count(0)

    # Audit: the SDK's create of this sandbox is there, found by the filter.
    page.locator('a[data-nav="audit"]').click()
    page.locator("#audit-action").fill("sandbox.create")
    page.locator("#audit-target").fill(sid)
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("#audit-list tbody tr[data-seq]")).to_have_count(1)
    expect(page.locator("#audit-list tbody tr[data-seq]")).to_contain_text("sandbox.create")
    page.get_by_role("button", name="Clear").click()
    expect(page.locator("#audit-list tbody tr[data-seq]").first).to_be_visible()
    shot(page, "10-audit")

    # A phone: the list as cards, the same hooks.
    _, phone = new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    sign_in(phone, admin_key)
    expect(row(phone, sid)).to_be_visible()
    expect(phone.locator("#sandbox-list thead")).to_be_hidden()
    expect(row(phone, sid).locator("[data-action=kill]")).to_be_visible()
    shot(phone, "11-phone-sandboxes")

    # Sign out: the session is gone on the server too.
    phone.locator("#sign-out").click()
    expect(phone.locator("#api-key")).to_be_visible()
    phone.reload()
    expect(phone.locator("#api-key")).to_be_visible()


def test_a_build_streams_its_logs_and_shows_its_layers(new_context, admin_key):
    """A custom template built by the SDK in the background: its page streams the build's log
    while it runs, then shows the build ready with its layers."""
    import httpx
    from e2b import Template

    name = f"dash-{uuid.uuid4().hex[:8]}"
    t = Template().from_template(TEMPLATE).run_cmd(
        "for i in $(seq 1 12); do echo dash-step-$i; sleep 1; done")
    info = Template.build_in_background(t, name, skip_cache=True)
    try:
        _, page = new_context()
        sign_in(page, admin_key)
        page.goto(f"{URL}/dashboard/#/templates/{info.template_id}")
        expect(page.locator("h1")).to_contain_text(name)
        logs = page.locator("#build-logs")
        # Lines arrive while the build runs, not all at its end.
        expect(logs).to_contain_text("dash-step-1", timeout=120_000)
        # (12 s of steps: the page is open long before they end.)
        assert "dash-step-12" not in logs.text_content()
        expect(logs).to_contain_text("dash-step-12", timeout=120_000)
        expect(page.locator(f'#build-list tr[data-build-id="{info.build_id}"] .badge')).to_have_text("ready", timeout=120_000)
        layers = page.locator(f'#build-list tr[data-build-id="{info.build_id}"] details.layers')
        layers.locator("summary").click()
        expect(layers).to_contain_text("dash-step")
        expect(layers).to_contain_text(re.compile(r"\d+(\.\d)? (B|KiB|MiB|GiB)"))
        shot(page, "08-template")
        page.locator('a[data-nav="templates"]').click()
        expect(page.locator(f'#template-list tr[data-template-id="{info.template_id}"]')).to_contain_text("ready")
    finally:
        httpx.delete(f"{URL}/templates/{info.template_id}", headers={"X-API-KEY": admin_key}, timeout=30)


def test_the_csrf_guard_refuses_a_request_without_its_header(new_context, sandbox, admin_key):
    ctx, page = new_context()
    sign_in(page, admin_key)
    api = ctx.request
    sid = sandbox.sandbox_id
    # The session cookie alone does not make a change.
    r = api.post(f"{URL}/dashboard/api/sandboxes/{sid}/timeout", data='{"timeout": 600}',
                 headers={"Content-Type": "application/json"})
    assert r.status == 403, (r.status, r.text())
    r = api.post(f"{URL}/dashboard/api/sandboxes/{sid}/timeout", data='{"timeout": 600}',
                 headers={"Content-Type": "application/json", "X-SoulBox-Dashboard": "1", "Origin": "https://evil.example"})
    assert r.status == 403, (r.status, r.text())
    r = api.post(f"{URL}/dashboard/api/sandboxes/{sid}/timeout", data='{"timeout": 600}',
                 headers={"Content-Type": "application/json", "X-SoulBox-Dashboard": "1", "Origin": URL})
    assert r.status == 204, (r.status, r.text())
    # A session ended elsewhere (here: signed out by another request) sends the page back to
    # the sign-in form at its next call.
    expect(row(page, sid)).to_be_visible()
    r = api.delete(f"{URL}/dashboard/api/session", headers={"X-SoulBox-Dashboard": "1", "Origin": URL})
    assert r.status == 204, (r.status, r.text())
    expect(page.locator("#api-key")).to_be_visible()
    expect(page.locator("#toast")).to_contain_text("Signed out")


def test_a_read_only_key_sees_but_cannot_kill(new_context, sandbox):
    _, page = new_context()
    sid = sandbox.sandbox_id
    sign_in(page, key("SOULBOX_READER_KEY"))
    expect(page.locator("#whoami")).to_contain_text("read-only")
    expect(page.locator('a[data-nav="audit"]')).to_be_hidden()
    # The team's quota is everyone's to see; its keys are the admins'.
    page.locator('a[data-nav="team"]').click()
    expect(page.locator("#keys-admin-only")).to_be_visible()
    expect(page.locator(".meter").first).to_be_visible()
    expect(page.locator("#key-list")).to_have_count(0)
    page.locator('a[data-nav="sandboxes"]').click()
    expect(row(page, sid)).to_be_visible()
    row(page, sid).locator("[data-action=kill]").click()
    page.locator("#confirm-ok").click()
    expect(page.locator("#toast")).to_be_visible()
    expect(page.locator("#toast")).to_contain_text("read-only")
    assert sandbox.is_running()
    expect(row(page, sid)).to_be_visible()
    # Nor does it get a shell.
    page.goto(f"{URL}/dashboard/#/sandboxes/{sid}/terminal")
    expect(page.locator(".term-status")).to_contain_text(re.compile("Disconnected|error", re.I))
    assert sandbox.is_running()


def test_another_team_sees_nothing_of_it(new_context, sandbox):
    _, page = new_context()
    sid = sandbox.sandbox_id
    sign_in(page, key("SOULBOX_OTHER_TEAM_KEY"))
    expect(page.locator("#sandbox-list tbody tr").first).not_to_have_text("Loading…")
    expect(row(page, sid)).to_have_count(0)
    page.goto(f"{URL}/dashboard/#/sandboxes/{sid}")
    expect(page.locator(".facts")).to_contain_text("no longer exists")
    assert sandbox.is_running()


def test_kill_from_the_list(new_context, sandbox, admin_key):
    from e2b import Sandbox
    from e2b.exceptions import NotFoundException

    _, page = new_context()
    sid = sandbox.sandbox_id
    sign_in(page, admin_key)

    # Extend: +1 h moves the end time an hour on.
    before = Sandbox.get_info(sid).end_at.timestamp()
    row(page, sid).locator("[data-action=extend]").click()
    page.locator('#extend-dialog [data-extend="3600"]').click()
    expect(page.locator("#toast")).to_contain_text("now ends in")
    after = Sandbox.get_info(sid).end_at.timestamp()
    assert 3590 <= after - before <= 3700, (before, after)

    # Pause, then resume.
    row(page, sid).locator("[data-action=pause]").click()
    expect(row(page, sid)).to_contain_text("paused", timeout=60_000)
    assert Sandbox.get_info(sid).state.value == "paused"
    row(page, sid).locator("[data-action=resume]").click()
    expect(row(page, sid).locator(".badge")).to_have_text("running", timeout=60_000)
    assert sandbox.is_running()

    row(page, sid).locator("[data-action=kill]").click()
    expect(page.locator("#confirm")).to_be_visible()
    # Cancel keeps it.
    page.locator("#confirm-cancel").click()
    expect(row(page, sid)).to_be_visible()
    row(page, sid).locator("[data-action=kill]").click()
    page.locator("#confirm-ok").click()
    expect(row(page, sid)).to_have_count(0)
    expect(page.locator("#toast")).to_contain_text("Killed")
    assert not sandbox.is_running()
    with pytest.raises(NotFoundException):
        Sandbox.get_info(sid)
