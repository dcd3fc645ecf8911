"""Custom templates through the official SDK: E2B's build API (spec §2.7) against SoulBox."""

import os
import time
import uuid

import pytest
from e2b import Sandbox, Template, wait_for_port
from e2b.exceptions import BuildException

URL = os.environ.get("SOULBOX_URL", "http://127.0.0.1:3000")
os.environ["E2B_API_URL"] = URL
os.environ["E2B_SANDBOX_URL"] = URL


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def app_template(ctx, greeting):
    (ctx / "app").mkdir(exist_ok=True)
    (ctx / "app" / "main.py").write_text(f"print({greeting!r})\n")
    return (
        Template(file_context_path=str(ctx))
        .from_template("base")
        .set_envs({"GREETING": "hello"})
        .run_cmd("echo built-as-$(whoami) > /opt/marker", user="root")
        .copy("app", "/home/user/app/")
        .set_workdir("/home/user/app")
        .set_user("user")
        .set_start_cmd("python3 -m http.server 8080", wait_for_port(8080))
    )


def test_build_then_create(tmp_path):
    name = unique("compat-app")
    logs = []
    Template.build(app_template(tmp_path, "from-app"), f"{name}:v1", cpu_count=1, memory_mb=512,
                   on_build_logs=logs.append)
    text = "\n".join(str(l.message) for l in logs)
    assert "RUN echo built-as" in text, text
    s = Sandbox.create(f"{name}:v1")
    try:
        r = s.commands.run("python3 main.py; echo $GREETING; pwd; whoami; cat /opt/marker; "
                           "stat -c %U /home/user /home/user/app/main.py; ss -ltn | grep -c :8080")
        assert r.stdout.split("\n")[:8] == ["from-app", "hello", "/home/user/app", "user",
                                            "built-as-root", "user", "root", "1"], r.stdout
    finally:
        s.kill()


def test_rebuild_reuses_layers_and_changed_copy_is_seen(tmp_path):
    name = unique("compat-cache")
    # Contents unique to this run: a COPY of the same files is cached across runs too.
    Template.build(app_template(tmp_path, f"one-{name}"), name)
    logs = []
    start = time.time()
    Template.build(app_template(tmp_path, f"two-{name}"), name, on_build_logs=logs.append)
    text = "\n".join(str(l.message) for l in logs)
    # The RUN before the changed COPY comes from the cache; the COPY and what follows do not.
    run = text.index("RUN echo built-as")
    assert text[run:].split("\n")[1] == "CACHED", text
    assert "COPY app" in text and text.count("CACHED") == 1, text
    assert time.time() - start < 60
    s = Sandbox.create(name)
    try:
        assert s.commands.run("python3 main.py").stdout == f"two-{name}\n"
    finally:
        s.kill()


def test_failing_step_reports_its_step_and_log(tmp_path):
    t = Template().from_template("base").run_cmd("echo about-to-fail; exit 3")
    with pytest.raises(BuildException) as e:
        Template.build(t, unique("compat-fail"))
    assert "exited with 3" in str(e.value), str(e.value)


def test_unknown_base_is_an_error():
    with pytest.raises(BuildException) as e:
        Template.build(Template().from_template("no-such-base-xyz"), unique("compat-nobase"))
    assert "no-such-base-xyz" in str(e.value)


def test_another_team_cannot_see_the_template(tmp_path):
    other = os.environ.get("SOULBOX_OTHER_TEAM_KEY")
    if not other:
        pytest.fail("SOULBOX_OTHER_TEAM_KEY is not set (compat/run.sh makes a second team's key)")
    name = unique("compat-private")
    Template.build(Template().from_template("base").run_cmd("true"), name)
    with pytest.raises(Exception) as e:
        Sandbox.create(name, api_key=other)
    assert "not found" in str(e.value).lower() or "404" in str(e.value), str(e.value)


def test_from_image_without_user_or_bash():
    """An OCI image from a registry on loopback (compat/templates/registry.sh): busybox only."""
    registry = os.environ.get("SOULBOX_COMPAT_REGISTRY")
    if not registry:
        pytest.fail("SOULBOX_COMPAT_REGISTRY is not set (compat/run.sh starts a registry)")
    name = unique("compat-image")
    t = Template().from_image(f"{registry}/busybox:1").run_cmd("echo made > /made.txt")
    Template.build(t, name)
    s = Sandbox.create(name)
    try:
        r = s.commands.run("cat /srv/hello.txt /made.txt; echo $IMAGE_VAR; pwd; id -u")
        assert r.stdout == "from the image\nmade\nfrom-config\n/srv\n0\n", r.stdout
        s.files.write("/tmp/x", "written")
        assert s.files.read("/tmp/x") == "written"
    finally:
        s.kill()


def test_unknown_image_is_a_clear_error():
    registry = os.environ.get("SOULBOX_COMPAT_REGISTRY", "127.0.0.1:1")
    with pytest.raises(BuildException) as e:
        Template.build(Template().from_image(f"{registry}/nope:1"), unique("compat-noimage"))
    assert "not found" in str(e.value).lower(), str(e.value)
