"""Restart scenario helper: `create` prints a new sandbox's id; `gone ID` checks that the SDK
sees that sandbox as gone after a restart and that nothing of it is left on the host."""

import glob
import os
import sys

from e2b import Sandbox
from e2b.exceptions import NotFoundException


def create():
    s = Sandbox.create(os.environ.get("SOULBOX_COMPAT_TEMPLATE", "base"), timeout=300)
    s.files.write("/home/user/state.txt", "before restart")
    print(s.sandbox_id)


def gone(sandbox_id):
    try:
        Sandbox.connect(sandbox_id)
        sys.exit(f"{sandbox_id} still answers after the restart")
    except NotFoundException:
        pass
    listed = [s.sandbox_id for s in Sandbox.list().next_items()]
    assert sandbox_id not in listed, listed
    # Only this sandbox's: the restarted server may already be filling its warm pool.
    cgroups = [d for d in glob.glob(f"/sys/fs/cgroup/*/soulbox/{sandbox_id}") if os.path.isdir(d)]
    assert not cgroups, f"cgroups left: {cgroups}"
    mounts = [l for l in open("/proc/self/mountinfo") if sandbox_id in l]
    assert not mounts, f"mounts left: {mounts}"
    loops = [f for f in glob.glob("/sys/block/loop*/loop/backing_file") if sandbox_id in open(f).read()]
    assert not loops, f"loop devices left: {loops}"
    print(f"{sandbox_id}: reported gone, nothing left")


if __name__ == "__main__":
    create() if sys.argv[1] == "create" else gone(sys.argv[2])
