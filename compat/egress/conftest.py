"""Egress scenarios: the official E2B SDK against `soulbox serve`, with `soulbox-testnet`
playing the internet (started by compat/run.sh): its own DNS server, HTTP and HTTPS servers
answering several names, with their own CA. Nothing here leaves this machine."""

import json
import os
import time
import uuid

import pytest

URL = os.environ.get("SOULBOX_URL", "http://127.0.0.1:3000")
os.environ["E2B_API_URL"] = URL
os.environ["E2B_SANDBOX_URL"] = URL
os.environ.pop("E2B_DEBUG", None)

TESTNET = os.environ["SOULBOX_TESTNET_DIR"]
DNS = "198.51.100.53"
ROGUE_DNS = "203.0.113.53"
REQUESTS = os.path.join(TESTNET, "requests.jsonl")
CA = open(os.path.join(TESTNET, "ca.pem")).read()
TEMPLATE = os.environ.get("SOULBOX_COMPAT_TEMPLATE", "base")


def requests_seen():
    """What the testnet's servers received, one dict per request."""
    with open(REQUESTS) as f:
        return [json.loads(l) for l in f if l.strip()]


def wait_for(pred, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


@pytest.fixture
def make():
    """Creates sandboxes with a network configuration, the testnet's CA trusted at
    /tmp/testnet-ca.pem (for curl --cacert: the sandbox's own trust store is left as is)."""
    from e2b import Sandbox

    made = []

    def _make(**kw):
        s = Sandbox.create(TEMPLATE, timeout=180, **kw)
        made.append(s)
        s.files.write("/tmp/testnet-ca.pem", CA)
        return s

    yield _make
    for s in made:
        try:
            s.kill()
        except Exception:
            pass


def sh(sbx, cmd, timeout=60):
    """Runs a shell line; returns (exit code, stdout + stderr)."""
    from e2b.sandbox.commands.command_handle import CommandExitException

    try:
        r = sbx.commands.run(cmd, timeout=timeout)
        return r.exit_code, r.stdout + r.stderr
    except CommandExitException as e:
        return e.exit_code, e.stdout + e.stderr


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"
