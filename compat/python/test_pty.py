import threading
import time

from e2b.sandbox.commands.command_handle import PtySize


def test_pty_input_resize_kill(sbx):
    out = []
    h = sbx.pty.create(PtySize(rows=24, cols=80))

    def read():
        try:
            h.wait(on_pty=lambda d: out.append(bytes(d)))
        except Exception:
            pass  # killed: the handle raises on the non-zero end

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    sbx.pty.resize(h.pid, PtySize(rows=30, cols=100))
    sbx.pty.send_stdin(h.pid, b"stty size; echo marker-$((6*7))\n")
    deadline = time.time() + 10
    while time.time() < deadline and b"marker-42" not in b"".join(out):
        time.sleep(0.05)
    text = b"".join(out)
    assert b"30 100" in text, text
    assert b"marker-42" in text, text
    assert sbx.pty.kill(h.pid) is True
    reader.join(timeout=10)
    assert not reader.is_alive()
