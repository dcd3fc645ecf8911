"""The compatibility tests drive the official, unmodified E2B Python SDK against a running
`soulbox serve` (started by compat/run.sh) through one URL, as docs/e2b-sdks.md describes."""

import os

import pytest

URL = os.environ.get("SOULBOX_URL", "http://127.0.0.1:3000")
os.environ["E2B_API_URL"] = URL
os.environ["E2B_SANDBOX_URL"] = URL
os.environ.setdefault("E2B_API_KEY", "e2b_0123456789abcdef0123456789abcdef01234567")
os.environ.pop("E2B_DEBUG", None)

TEMPLATE = os.environ.get("SOULBOX_COMPAT_TEMPLATE", "base")


@pytest.fixture
def sbx():
    from e2b import Sandbox

    s = Sandbox.create(TEMPLATE, timeout=120)
    yield s
    try:
        s.kill()
    except Exception:
        pass
