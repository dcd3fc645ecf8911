import urllib.request

import pytest
from e2b.exceptions import NotFoundException
from e2b import FilesystemEventType
from e2b.sandbox.filesystem.filesystem import FileType, WriteEntry


def test_write_read_list_exists_info(sbx):
    info = sbx.files.write("/home/user/dir/a.txt", "alpha")
    assert info.path == "/home/user/dir/a.txt"
    assert sbx.files.read("/home/user/dir/a.txt") == "alpha"
    assert sbx.files.read("/home/user/dir/a.txt", format="bytes") == b"alpha"
    sbx.files.write_files([WriteEntry(path="/home/user/dir/b.txt", data="beta"), WriteEntry(path="/home/user/dir/c.bin", data=b"\x00\x01")])
    names = sorted(e.name for e in sbx.files.list("/home/user/dir"))
    assert names == ["a.txt", "b.txt", "c.bin"]
    assert sbx.files.exists("/home/user/dir/b.txt")
    assert not sbx.files.exists("/home/user/dir/zzz")
    i = sbx.files.get_info("/home/user/dir/a.txt")
    assert i.size == 5 and i.type == FileType.FILE and i.owner == "user"
    with pytest.raises(NotFoundException):
        sbx.files.read("/home/user/nope")


def test_make_dir_rename_remove(sbx):
    assert sbx.files.make_dir("/home/user/new/deep") is True
    assert sbx.files.make_dir("/home/user/new/deep") is False
    sbx.files.write("/home/user/new/f", "x")
    moved = sbx.files.rename("/home/user/new/f", "/home/user/new/g")
    assert moved.path == "/home/user/new/g"
    sbx.files.remove("/home/user/new")
    assert not sbx.files.exists("/home/user/new")
    sbx.files.remove("/home/user/never-was")


def test_watch(sbx):
    sbx.files.make_dir("/home/user/w")
    handle = sbx.files.watch_dir("/home/user/w")
    sbx.files.write("/home/user/w/file.txt", "hi")
    events = handle.get_new_events()
    handle.stop()
    assert any(e.name == "file.txt" for e in events)


def kinds(events):
    return [(e.name, e.type) for e in events]


def test_watch_reports_what_envd_reports_for_a_write(sbx):
    # As envd (and E2B's own SDK tests): a new file is created, given its owner, written; all
    # three are in the first get_new_events() after the write returned.
    sbx.files.make_dir("/home/user/wn")
    handle = sbx.files.watch_dir("/home/user/wn", include_entry=True)
    sbx.files.write("/home/user/wn/f.txt", "one")
    events = handle.get_new_events()
    assert kinds(events) == [("f.txt", FilesystemEventType.CREATE), ("f.txt", FilesystemEventType.CHMOD), ("f.txt", FilesystemEventType.WRITE)]
    assert all(e.entry is not None and e.entry.type == FileType.FILE for e in events)
    # Overwriting: the owner is set again, then the truncation and the write (one event when
    # the kernel merges them, two when the watcher read between them, as with envd).
    sbx.files.write("/home/user/wn/f.txt", "two")
    events = kinds(handle.get_new_events())
    assert events[0] == ("f.txt", FilesystemEventType.CHMOD)
    assert events[1:] in ([("f.txt", FilesystemEventType.WRITE)], [("f.txt", FilesystemEventType.WRITE)] * 2)
    handle.stop()


def test_recursive_watch_reports_nested_writes(sbx):
    sbx.files.make_dir("/home/user/wr/nested")
    handle = sbx.files.watch_dir("/home/user/wr", recursive=True)
    sbx.files.write("/home/user/wr/nested/f.txt", "x")
    assert kinds(handle.get_new_events()) == [("nested/f.txt", FilesystemEventType.CREATE), ("nested/f.txt", FilesystemEventType.CHMOD), ("nested/f.txt", FilesystemEventType.WRITE)]
    # Directories made after the watch began are watched too.
    sbx.files.make_dir("/home/user/wr/later/deeper")
    sbx.files.write("/home/user/wr/later/deeper/g.txt", "y")
    assert kinds(handle.get_new_events()) == [
        ("later", FilesystemEventType.CREATE),
        ("later/deeper", FilesystemEventType.CREATE),
        ("later/deeper/g.txt", FilesystemEventType.CREATE),
        ("later/deeper/g.txt", FilesystemEventType.CHMOD),
        ("later/deeper/g.txt", FilesystemEventType.WRITE),
    ]
    handle.stop()


def test_signed_urls(sbx):
    sbx.files.write("/home/user/dl.txt", "download me")
    url = sbx.download_url("/home/user/dl.txt")
    assert "signature=" in url
    with urllib.request.urlopen(url) as r:
        assert r.read() == b"download me"
    up = sbx.upload_url("/home/user/up.txt")
    req = urllib.request.Request(up, data=b"uploaded", method="POST", headers={"Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(req) as r:
        assert r.status == 200
    assert sbx.files.read("/home/user/up.txt") == "uploaded"
    expired = sbx.download_url("/home/user/dl.txt", use_signature_expiration=-10)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(expired)
    assert e.value.code == 401


def test_modes_are_permission_bits(sbx):
    # envd reports Go's FileMode.Perm() in `mode` and FileMode.String() in `permissions`.
    sbx.commands.run("mkdir -p /home/user/m/sub && chmod 755 /home/user/m/sub && printf x > /home/user/m/f && chmod 640 /home/user/m/f")
    d = sbx.files.get_info("/home/user/m/sub")
    assert (d.type, d.mode, d.permissions) == (FileType.DIR, 0o755, "drwxr-xr-x")
    f = sbx.files.get_info("/home/user/m/f")
    assert (f.type, f.mode, f.permissions) == (FileType.FILE, 0o640, "-rw-r-----")
    listed = {e.name: (e.mode, e.permissions) for e in sbx.files.list("/home/user/m")}
    assert listed == {"sub": (0o755, "drwxr-xr-x"), "f": (0o640, "-rw-r-----")}
    sbx.commands.run("chmod 700 /home/user/m/sub")
    made = sbx.files.make_dir("/home/user/m/made")
    assert made is True
    assert sbx.files.get_info("/home/user/m/made").mode == 0o755
    assert sbx.files.get_info("/home/user/m/sub").mode == 0o700


def test_symlinks_report_their_target(sbx):
    sbx.commands.run(
        "mkdir -p /home/user/s/dir && printf abc > /home/user/s/file && chmod 600 /home/user/s/file"
        " && ln -s file /home/user/s/to-file && ln -s /home/user/s/dir /home/user/s/to-dir"
        " && ln -s nowhere /home/user/s/dangling && touch /home/user/s/dir/inside"
    )
    f = sbx.files.get_info("/home/user/s/to-file")
    assert (f.type, f.symlink_target, f.mode) == (FileType.FILE, "/home/user/s/file", 0o600)
    assert f.permissions == "Lrwxrwxrwx" and f.name == "to-file" and f.path == "/home/user/s/to-file"
    d = sbx.files.get_info("/home/user/s/to-dir")
    assert (d.type, d.symlink_target) == (FileType.DIR, "/home/user/s/dir")
    dangling = sbx.files.get_info("/home/user/s/dangling")
    assert dangling.symlink_target == "/home/user/s/dangling" and dangling.mode == 0
    plain = sbx.files.get_info("/home/user/s/file")
    assert plain.symlink_target is None
    # A listing reports links the same way and does not descend through a link to a directory.
    listed = {e.path: (e.type, e.symlink_target) for e in sbx.files.list("/home/user/s", depth=2)}
    assert listed["/home/user/s/to-file"] == (FileType.FILE, "/home/user/s/file")
    assert listed["/home/user/s/to-dir"] == (FileType.DIR, "/home/user/s/dir")
    assert "/home/user/s/dir/inside" in listed
    assert "/home/user/s/to-dir/inside" not in listed
