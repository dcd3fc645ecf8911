"""The official, unmodified e2b-code-interpreter SDK against `soulbox serve`."""

import os

import pytest

URL = os.environ.get("SOULBOX_URL", "http://127.0.0.1:3000")
os.environ["E2B_API_URL"] = URL
os.environ["E2B_SANDBOX_URL"] = URL
os.environ.setdefault("E2B_API_KEY", "e2b_0123456789abcdef0123456789abcdef01234567")
os.environ.pop("E2B_DEBUG", None)


@pytest.fixture(scope="module")
def sbx():
    from e2b_code_interpreter import Sandbox

    s = Sandbox.create(timeout=300)  # the SDK's default template, code-interpreter-v1
    yield s
    s.kill()
