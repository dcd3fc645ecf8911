import os
import time

import httpx
import pytest
from e2b import Sandbox
from e2b.exceptions import AuthenticationException, NotFoundException, SandboxException

from conftest import TEMPLATE


def test_create_info_metadata_env_and_kill():
    s = Sandbox.create(TEMPLATE, metadata={"owner": "compat", "run": "1"}, envs={"GLOBAL_VAR": "g1"}, timeout=60)
    try:
        info = s.get_info()
        assert info.sandbox_id == s.sandbox_id
        assert info.metadata == {"owner": "compat", "run": "1"}
        assert info.state.value == "running"
        assert s.commands.run("echo $GLOBAL_VAR").stdout == "g1\n"
        assert s.is_running()
    finally:
        assert s.kill() is True
    assert not s.is_running()
    assert Sandbox.kill(s.sandbox_id) is False


def test_connect_and_list_with_filters():
    a = Sandbox.create(TEMPLATE, metadata={"group": "list-a"}, timeout=60)
    b = Sandbox.create(TEMPLATE, metadata={"group": "list-b"}, timeout=60)
    try:
        same = Sandbox.connect(a.sandbox_id)
        assert same.commands.run("hostname").stdout.strip() == a.sandbox_id
        from e2b import SandboxQuery

        found = Sandbox.list(query=SandboxQuery(metadata={"group": "list-a"})).next_items()
        assert [x.sandbox_id for x in found] == [a.sandbox_id]
        ids = set()
        pager = Sandbox.list(limit=1)
        while pager.has_next:
            ids.update(x.sandbox_id for x in pager.next_items())
        assert {a.sandbox_id, b.sandbox_id} <= ids
        # startedAfter is inclusive: a sandbox's own start time finds it (and what started later).
        started = a.get_info().started_at
        after = {x.sandbox_id for x in Sandbox.list(query=SandboxQuery(started_after=started)).next_items()}
        assert a.sandbox_id in after
        assert b.sandbox_id in after
        later = b.get_info().started_at
        assert a.sandbox_id not in {x.sandbox_id for x in Sandbox.list(query=SandboxQuery(started_after=later)).next_items()}
    finally:
        a.kill()
        b.kill()


def test_timeout_kills_the_sandbox():
    s = Sandbox.create(TEMPLATE, timeout=60)
    s.set_timeout(2)
    deadline = time.time() + 15
    while time.time() < deadline and s.is_running():
        time.sleep(0.25)
    assert not s.is_running()
    with pytest.raises(NotFoundException):
        s.get_info()


def test_pause_and_resume_by_connect(sbx):
    sbx.files.write("/home/user/keep.txt", "kept")
    assert sbx.pause() is True
    assert sbx.get_info().state.value == "paused"
    assert sbx.pause() is False  # already paused: 409
    resumed = Sandbox.connect(sbx.sandbox_id)
    assert resumed.get_info().state.value == "running"
    assert resumed.files.read("/home/user/keep.txt") == "kept"


def detail(sandbox_id):
    """The raw `GET /sandboxes/{id}` (the SDK's SandboxInfo has no pauseMode)."""
    r = httpx.get(f"{os.environ['E2B_API_URL']}/sandboxes/{sandbox_id}",
                  headers={"X-API-KEY": os.environ["E2B_API_KEY"]})
    r.raise_for_status()
    return r.json()


def test_pause_is_to_disk_and_says_so():
    """A full pause (CRIU, built by scripts/install.sh) keeps processes; a filesystem one ends them."""
    s = Sandbox.create(TEMPLATE, timeout=120)
    try:
        s.files.write("/home/user/a.txt", "a")
        s.commands.run("nohup sleep 100000 >/dev/null 2>&1 &")
        content = "a"
        for mode, sleeping in (("full", "1\n"), ("filesystem", "0\n")):
            assert s.pause(keep_memory=(mode == "full")) is True
            d = detail(s.sandbox_id)
            assert (d["state"], d["pauseMode"]) == ("paused", mode), d
            with pytest.raises(Exception):
                s.files.read("/home/user/a.txt")  # paused without auto-resume: refused
            s = Sandbox.connect(s.sandbox_id)
            assert s.files.read("/home/user/a.txt") == content
            assert s.commands.run("pgrep -c sleep || true").stdout == sleeping, mode
            content += mode
            s.files.write("/home/user/a.txt", content)
        assert "pauseMode" not in detail(s.sandbox_id)
        # A full pause resumed with on_resume="reboot": the memory is dropped, the files kept.
        assert s.pause() is True
        s = Sandbox.connect(s.sandbox_id, on_resume="reboot")
        assert s.files.read("/home/user/a.txt") == content
        assert s.commands.run("pgrep -c sleep || true").stdout == "0\n"
    finally:
        s.kill()


def test_a_command_running_through_a_full_pause_can_be_reconnected():
    s = Sandbox.create(TEMPLATE, timeout=120)
    try:
        h = s.commands.run("for i in $(seq 1 40); do echo tick $i; sleep 0.1; done", background=True)
        time.sleep(0.5)
        assert s.pause() is True  # memory kept: E2B's default
        s = Sandbox.connect(s.sandbox_id)
        lines = []
        result = s.commands.connect(h.pid).wait(on_stdout=lambda line: lines.append(line))
        assert result.exit_code == 0
        # The loop went on where it was: it ends at 40 and streams what came after the resume.
        assert "tick 40" in result.stdout or any("tick 40" in x for x in lines), (result.stdout, lines)
    finally:
        s.kill()


def test_auto_resume_wakes_a_paused_sandbox_on_the_first_request():
    s = Sandbox.create(TEMPLATE, timeout=120, lifecycle={"on_timeout": "pause", "auto_resume": True})
    try:
        assert s.get_info().lifecycle["auto_resume"] is True
        s.files.write("/home/user/b.txt", "b")
        assert s.pause() is True
        assert s.get_info().state.value == "paused"
        assert s.files.read("/home/user/b.txt") == "b"  # resumed, then served
        assert s.get_info().state.value == "running"
        assert s.commands.run("echo up").stdout == "up\n"
    finally:
        s.kill()


def test_snapshot_is_a_template_and_forks_share_the_parents_files():
    s = Sandbox.create(TEMPLATE, timeout=120, metadata={"role": "parent"}, envs={"FROM": "parent"})
    made = []
    try:
        s.files.write("/home/user/data.txt", "from the parent")
        s.commands.run("nohup sleep 100000 >/dev/null 2>&1 &")
        snap = s.create_snapshot()
        listed = [x.snapshot_id for x in Sandbox.list_snapshots(sandbox_id=s.sandbox_id).next_items()]
        assert snap.snapshot_id in listed, listed
        c = Sandbox.create(snap.snapshot_id, timeout=60)
        made.append(c)
        assert c.files.read("/home/user/data.txt") == "from the parent"
        assert c.commands.run("echo $FROM").stdout == "parent\n"
        # A full snapshot (the default, with CRIU): the parent's process runs in the child.
        assert c.commands.run("pgrep -c sleep").stdout == "1\n"
        # A files-only one (`memory: false`; 2.50 has no `mode`): its sandboxes boot afresh.
        r = httpx.post(f"{os.environ['E2B_API_URL']}/sandboxes/{s.sandbox_id}/snapshots",
                       headers={"X-API-KEY": os.environ["E2B_API_KEY"]}, json={"memory": False})
        assert r.status_code == 201, r.text
        files_only = r.json()["snapshotID"]
        c2 = Sandbox.create(files_only, timeout=60)
        made.append(c2)
        assert c2.files.read("/home/user/data.txt") == "from the parent"
        assert c2.commands.run("pgrep -c sleep || true").stdout == "0\n"
        forks = s.fork(count=3)
        assert len(forks) == 3 and not [f for f in forks if isinstance(f, Exception)], forks
        made += forks
        for i, f in enumerate(forks):
            assert f.sandbox_id != s.sandbox_id
            assert f.files.read("/home/user/data.txt") == "from the parent"
            assert f.commands.run("pgrep -c sleep").stdout == "1\n"  # memory too
            f.files.write("/home/user/data.txt", f"child {i}")
        assert [f.files.read("/home/user/data.txt") for f in forks] == ["child 0", "child 1", "child 2"]
        assert Sandbox.get_info(forks[0].sandbox_id).metadata == {"role": "parent"}
        # The parent runs on, untouched: its process and its file.
        assert s.commands.run("pgrep -c sleep").stdout == "1\n"
        assert s.files.read("/home/user/data.txt") == "from the parent"
        for bad in (0, 101):
            r = httpx.post(f"{os.environ['E2B_API_URL']}/sandboxes/{s.sandbox_id}/fork",
                           headers={"X-API-KEY": os.environ["E2B_API_KEY"]}, json={"count": bad})
            assert r.status_code == 400, (bad, r.text)
        assert Sandbox.delete_snapshot(snap.snapshot_id) is True
        assert Sandbox.delete_snapshot(files_only) is True
        assert Sandbox.delete_snapshot(snap.snapshot_id) is False
        # The sandbox started from it keeps its files (its layers stay while it runs).
        assert c.files.read("/home/user/data.txt") == "from the parent"
    finally:
        for x in made + [s]:
            x.kill()


def test_metrics(sbx):
    sbx.commands.run("head -c 10000000 /dev/urandom > /tmp/blob")
    m = sbx.get_metrics()
    assert m and m[-1].mem_used > 0 and m[-1].disk_total > 0 and m[-1].cpu_count >= 1


def test_bad_key_and_unknown_sandbox():
    with pytest.raises(AuthenticationException):
        Sandbox.create(TEMPLATE, api_key="e2b_ffffffffffffffffffffffffffffffffffffffff")
    with pytest.raises(NotFoundException):
        Sandbox.connect("doesnotexist000000000")


def test_allow_internet_access_false_means_no_network():
    s = Sandbox.create(TEMPLATE, allow_internet_access=False, timeout=60)
    try:
        ifaces = s.commands.run("tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '").stdout.split()
        assert ifaces == ["lo"]
    finally:
        s.kill()
    s = Sandbox.create(TEMPLATE, timeout=60)
    try:
        ifaces = s.commands.run("tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '").stdout.split()
        assert sorted(ifaces) == ["eth0", "lo"]
    finally:
        s.kill()
