"""Roles, quotas and rate limits as the official E2B SDK meets them (compat/run.sh makes the
keys and quotas with `soulbox keys` and `soulbox teams`): a rate-limited SDK waits out
`Retry-After` and succeeds, a quota is a RateLimitException at once, a read-only key reads
but changes nothing."""

import os
import time

import pytest
from e2b import Sandbox
from e2b.exceptions import RateLimitException, SandboxException

URL = os.environ["SOULBOX_URL"]
os.environ["E2B_API_URL"] = URL
os.environ["E2B_SANDBOX_URL"] = URL
TEMPLATE = os.environ.get("SOULBOX_COMPAT_TEMPLATE", "base")
QUOTA_KEY = os.environ["SOULBOX_QUOTA_KEY"]  # a team with a quota of 1 running sandbox
RATE_KEY = os.environ["SOULBOX_RATE_KEY"]  # a team whose keys may make 2 requests/s, 2 at once
READER_KEY = os.environ["SOULBOX_READER_KEY"]  # read-only, in the main key's team


def test_the_sdk_waits_out_the_rate_limit_and_succeeds():
    start = time.monotonic()
    for _ in range(8):
        # Each call is a real request; over the rate, the server answers 429 with
        # Retry-After and the SDK waits and retries.
        assert isinstance(Sandbox.list(api_key=RATE_KEY).next_items(), list)
    elapsed = time.monotonic() - start
    # 2 at once, then 2 per second: 8 requests take about 3 s — never an error.
    assert elapsed >= 2.0, elapsed
    # Without retries the same burst is refused, and says why.
    with pytest.raises(RateLimitException) as e:
        for _ in range(5):
            Sandbox.list(api_key=RATE_KEY, retries=0).next_items()
    assert "too many requests" in str(e.value)


def test_a_quota_is_a_rate_limit_exception_at_once():
    first = Sandbox.create(TEMPLATE, api_key=QUOTA_KEY, timeout=120)
    try:
        start = time.monotonic()
        with pytest.raises(RateLimitException) as e:
            Sandbox.create(TEMPLATE, api_key=QUOTA_KEY, timeout=120)
        assert time.monotonic() - start < 5, "a quota refusal must not wait"
        assert "quota of 1 running sandboxes" in str(e.value)
        assert first.commands.run("echo still-here").stdout.strip() == "still-here"
    finally:
        first.kill()
    # Its place is free again.
    second = Sandbox.create(TEMPLATE, api_key=QUOTA_KEY, timeout=120)
    second.kill()


def test_a_read_only_key_reads_and_changes_nothing():
    sbx = Sandbox.create(TEMPLATE, timeout=120)
    try:
        listed = [s.sandbox_id for s in Sandbox.list(api_key=READER_KEY).next_items()]
        assert sbx.sandbox_id in listed
        info = Sandbox.get_info(sbx.sandbox_id, api_key=READER_KEY)
        assert info.sandbox_id == sbx.sandbox_id
        for change in (
            lambda: Sandbox.create(TEMPLATE, api_key=READER_KEY),
            lambda: Sandbox.kill(sbx.sandbox_id, api_key=READER_KEY),
            lambda: Sandbox.set_timeout(sbx.sandbox_id, 30, api_key=READER_KEY),
            lambda: Sandbox.connect(sbx.sandbox_id, api_key=READER_KEY),
        ):
            with pytest.raises(SandboxException) as e:
                change()
            assert "403" in str(e.value) and "read-only" in str(e.value), str(e.value)
        assert sbx.is_running()
        assert sbx.commands.run("echo alive").stdout.strip() == "alive"
    finally:
        sbx.kill()
