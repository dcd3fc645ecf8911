import pytest
from e2b.sandbox.commands.command_handle import CommandExitException
from e2b.exceptions import TimeoutException


def test_run_output_env_cwd_user(sbx):
    r = sbx.commands.run("echo out; echo err >&2; echo $X; pwd; id -un", envs={"X": "1"}, cwd="/tmp")
    assert r.stdout == "out\n1\n/tmp\nuser\n"
    assert r.stderr == "err\n"
    assert r.exit_code == 0
    assert sbx.commands.run("id -un", user="root").stdout == "root\n"


def test_sudo_as_user(sbx):
    # E2B's templates give `user` passwordless sudo; an earlier command's envs do not leak in.
    assert sbx.commands.run("echo $SECRET_X", envs={"SECRET_X": "leak"}).stdout == "leak\n"
    r = sbx.commands.run("sudo echo hi; sudo id -un; sudo env | grep -c SECRET_X || true")
    assert r.stdout == "hi\nroot\n0\n", r.stdout + r.stderr
    assert "unable to resolve host" not in r.stderr


def test_non_zero_exit_raises(sbx):
    with pytest.raises(CommandExitException) as e:
        sbx.commands.run("echo partial; exit 7")
    assert e.value.exit_code == 7
    assert e.value.stdout == "partial\n"


def test_streaming_callbacks(sbx):
    seen = []
    sbx.commands.run("for i in 1 2 3; do echo $i; sleep 0.1; done", on_stdout=lambda d: seen.append(d))
    assert "".join(seen) == "1\n2\n3\n"


def test_background_list_connect_kill(sbx):
    h = sbx.commands.run("sleep 30", background=True)
    assert any(p.pid == h.pid for p in sbx.commands.list())
    again = sbx.commands.connect(h.pid)
    assert sbx.commands.kill(h.pid) is True
    with pytest.raises(CommandExitException):
        again.wait()
    assert sbx.commands.kill(h.pid) is False


def test_stdin(sbx):
    h = sbx.commands.run("cat", background=True, stdin=True)
    sbx.commands.send_stdin(h.pid, "hello\n")
    sbx.commands.close_stdin(h.pid)
    r = h.wait()
    assert r.stdout == "hello\n"


def test_command_timeout(sbx):
    with pytest.raises(TimeoutException):
        sbx.commands.run("sleep 10", timeout=1)


def test_sandbox_killed_mid_command(sbx):
    """A sandbox killed while a command streams: E2B's timeout error, whatever the SDK version."""
    import threading
    import time

    from e2b import Sandbox

    t = threading.Thread(target=lambda: (time.sleep(1), Sandbox.kill(sbx.sandbox_id)))
    t.start()
    with pytest.raises(TimeoutException) as e:
        sbx.commands.run("echo started; sleep 30")
    t.join()
    assert "was not found" in str(e.value) or "killed" in str(e.value), str(e.value)
