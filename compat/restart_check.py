"""Restart scenarios (issue 12, re-adoption), run by compat/run.sh around a stop of `serve`:

  before STATE   sandboxes in every state the restart must keep: one running a background
                 command, one paused with its memory and one without, one whose end time falls after the restart, one that
                 will die while the server is down; their ids and what they hold go to STATE
  while-down STATE   kills the one meant to die (from the host, as an OOM kill would)
  after STATE    the new server took them over: files, processes, metadata, end times, the
                 background command reconnected and still streaming; the dead one reported
                 gone with nothing of it left; then everything is killed
"""

import glob
import json
import os
import signal
import sys
import time

from e2b import Sandbox
from e2b.exceptions import NotFoundException

TEMPLATE = os.environ.get("SOULBOX_COMPAT_TEMPLATE", "base")
TICKER = "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done"
# An egress policy (soulbox-testnet's names): kept by the firewall and the proxy of the new
# server, which listens on another port.
FENCE = {"allow_out": ["allowed.test"], "deny_out": ["0.0.0.0/0"], "dns_servers": ["198.51.100.53"]}
UDP = ("python3 -c \"import socket; s=socket.socket(2,2); s.settimeout(2); "
       "s.sendto(b'x',('198.51.100.13',5353)); print(s.recvfrom(9)[0])\"")


def fenced_as_before(sbx):
    ok = sbx.commands.run("curl -s -m 5 http://allowed.test/").stdout
    assert ok.startswith("hello 198.51.100.10"), ok
    refused = sbx.commands.run("curl -s -m 5 http://other.test/").stdout
    assert "not allowed" in refused, refused
    udp = sbx.commands.run(UDP + " || echo blocked").stdout
    assert "blocked" in udp, udp


def cgroup_pids(sandbox_id):
    pids = set()
    for f in glob.glob(f"/sys/fs/cgroup/*/soulbox/{sandbox_id}/cgroup.procs"):
        pids |= {int(p) for p in open(f).read().split()}
    return pids


def host_traces(sandbox_id):
    cgroups = [d for d in glob.glob(f"/sys/fs/cgroup/*/soulbox/{sandbox_id}") if os.path.isdir(d)]
    mounts = [l for l in open("/proc/self/mountinfo") if sandbox_id in l]
    loops = [f for f in glob.glob("/sys/block/loop*/loop/backing_file") if sandbox_id in open(f).read()]
    return cgroups + mounts + loops


def hashes(sandbox):
    """Every file the user made, with its mode and SHA-256: what a pause must keep."""
    return sandbox.commands.run(
        "cd ~ && find . -xdev \\( -type f -o -type l \\) -printf '%p %m %y\\n' | sort && "
        "find . -xdev -type f -print0 | sort -z | xargs -0 sha256sum").stdout


def before(path):
    keep = Sandbox.create(TEMPLATE, timeout=600, metadata={"case": "restart"})
    keep.files.write("/home/user/state.txt", "before restart")
    ticker = keep.commands.run(TICKER, background=True)
    # A process that is not a command of the agent's: it must survive too.
    keep.commands.run("nohup sleep 100000 >/dev/null 2>&1 &")
    sleeper = keep.commands.run("pgrep -f 'sleep 100000'").stdout.split()
    paused = Sandbox.create(TEMPLATE, timeout=600)
    paused.files.write("/home/user/paused.txt", "kept while paused")
    paused.commands.run("mkdir -p ~/work && head -c 5000000 /dev/urandom > ~/work/blob && "
                        "ln -s blob ~/work/link && chmod 600 ~/work/blob")
    # A process of its own: a full pause (memory kept) brings it back, same pid and all.
    paused.commands.run("nohup sleep 200000 >/dev/null 2>&1 &")
    paused_sleeper = paused.commands.run("pgrep -f 'sleep 200000'").stdout.split()
    paused_files = hashes(paused)
    assert paused.pause() is True
    # And one paused without memory: files only.
    paused_fs = Sandbox.create(TEMPLATE, timeout=600)
    paused_fs.files.write("/home/user/fs.txt", "files only")
    assert paused_fs.pause(keep_memory=False) is True
    fenced = Sandbox.create(TEMPLATE, timeout=600, network=FENCE)
    fenced_as_before(fenced)
    ending = Sandbox.create(TEMPLATE, timeout=25)
    doomed = Sandbox.create(TEMPLATE, timeout=600)
    info = keep.get_info()
    state = {
        "keep": keep.sandbox_id, "ticker": ticker.pid, "sleeper": sleeper,
        "end_at": info.end_at.isoformat(), "paused": paused.sandbox_id,
        "ending": ending.sandbox_id, "ending_end": ending.get_info().end_at.timestamp(),
        "doomed": doomed.sandbox_id, "paused_files": paused_files,
        "paused_sleeper": paused_sleeper, "paused_fs": paused_fs.sandbox_id,
        "fenced": fenced.sandbox_id,
        # Every sandbox on the host (the warm pool's too): all must be the same after.
        "all": sorted(os.path.basename(d) for d in glob.glob("/sys/fs/cgroup/pids/soulbox/*")
                      if os.path.isdir(d)),
    }
    json.dump(state, open(path, "w"))
    print(f"before the restart: {state}")


def while_down(path):
    state = json.load(open(path))
    pids = cgroup_pids(state["doomed"])
    assert pids, "the doomed sandbox has no processes"
    for p in pids:
        os.kill(p, signal.SIGKILL)
    deadline = time.time() + 10
    while cgroup_pids(state["doomed"]) and time.time() < deadline:
        time.sleep(0.05)
    assert not cgroup_pids(state["doomed"]), "the doomed sandbox did not die"


def after(path):
    state = json.load(open(path))
    # Every sandbox that ran (the warm pool's included) was taken over, none started anew; the
    # paused one has no processes until it is resumed.
    now = sorted(os.path.basename(d) for d in glob.glob("/sys/fs/cgroup/pids/soulbox/*")
                 if os.path.isdir(d))
    expected = sorted(set(state["all"]) - {state["doomed"]})
    assert now == expected, f"sandboxes before {expected}, after {now}"
    keep = Sandbox.connect(state["keep"])
    assert keep.files.read("/home/user/state.txt") == "before restart"
    assert keep.commands.run("pgrep -f 'sleep 100000'").stdout.split() == state["sleeper"]
    info = keep.get_info()
    assert info.metadata == {"case": "restart"}, info.metadata
    assert info.end_at.isoformat() == state["end_at"], (info.end_at, state["end_at"])
    # The background command started before the restart: reconnected, it still streams.
    handle = keep.commands.connect(state["ticker"])
    ticks = []
    for stdout, _, _ in handle:
        ticks += [int(l.split()[-1]) for l in (stdout or "").splitlines() if l.startswith("tick")]
        if len(ticks) >= 3:
            break
    assert len(ticks) >= 3 and ticks[0] > 5, f"the ticker did not go on: {ticks}"
    handle.kill()
    fenced = Sandbox.connect(state["fenced"])
    fenced_as_before(fenced)
    # Still paused, and resumed on connect with its files.
    listed = {s.sandbox_id: s.state for s in Sandbox.list().next_items()}
    assert listed.get(state["paused"]) == "paused", listed
    paused = Sandbox.connect(state["paused"])
    assert paused.files.read("/home/user/paused.txt") == "kept while paused"
    assert hashes(paused) == state["paused_files"], "a file changed across pause, restart, resume"
    assert paused.commands.run("pgrep -f 'sleep 200000'").stdout.split() == state["paused_sleeper"]
    paused_fs = Sandbox.connect(state["paused_fs"])
    assert paused_fs.files.read("/home/user/fs.txt") == "files only"
    # Write, pause, resume again: every file as it was each time.
    paused.commands.run("echo more >> ~/paused.txt && cp ~/work/blob ~/work/blob2")
    again = hashes(paused)
    assert paused.pause() is True
    paused = Sandbox.connect(state["paused"])
    assert hashes(paused) == again
    # The one that died while the server was down is gone, with nothing left of it.
    try:
        Sandbox.connect(state["doomed"])
        sys.exit(f"{state['doomed']} answers after dying")
    except NotFoundException:
        pass
    assert state["doomed"] not in listed, listed
    assert not host_traces(state["doomed"]), host_traces(state["doomed"])
    # The end time set before the restart is kept by the new server.
    wait = state["ending_end"] - time.time() + 3
    if wait > 0:
        time.sleep(wait)
    try:
        Sandbox.connect(state["ending"])
        sys.exit(f"{state['ending']} outlived its end time")
    except NotFoundException:
        pass
    for s in (keep, paused, paused_fs, fenced):
        s.kill()
    print("after the restart: every sandbox taken over as it was")


if __name__ == "__main__":
    {"before": before, "while-down": while_down, "after": after}[sys.argv[1]](sys.argv[2])
