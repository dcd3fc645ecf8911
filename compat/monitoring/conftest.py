"""Monitoring scenarios: the official E2B SDK against `soulbox serve` (started by
compat/run.sh), with `GET /metrics` read by the Prometheus client's own text parser."""

import os
import time
import urllib.request

import pytest

URL = os.environ.get("SOULBOX_URL", "http://127.0.0.1:3000")
os.environ["E2B_API_URL"] = URL
os.environ["E2B_SANDBOX_URL"] = URL
os.environ.pop("E2B_DEBUG", None)

TEMPLATE = os.environ.get("SOULBOX_COMPAT_TEMPLATE", "base")
# The server's sample interval (`serve`'s default unless run.sh sets another).
SAMPLE_INTERVAL = float(os.environ.get("SOULBOX_COMPAT_SAMPLE_INTERVAL", "5"))
TOKEN = os.environ.get("SOULBOX_METRICS_TOKEN")


def scrape():
    """Every sample of `GET /metrics`: {(name, frozenset(labels)): value}, and the family
    names, as Prometheus' own parser reads them."""
    from prometheus_client.parser import text_string_to_metric_families

    req = urllib.request.Request(URL + "/metrics")
    if TOKEN:
        req.add_header("Authorization", "Bearer " + TOKEN)
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain"), r.headers["Content-Type"]
        text = r.read().decode()
    samples, families = {}, set()
    for fam in text_string_to_metric_families(text):
        families.add(fam.name)
        for s in fam.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples, families


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


def of_sandbox(samples, sandbox_id):
    """The names of the series labelled with this sandbox."""
    return {n for (n, l) in samples if ("sandbox_id", sandbox_id) in l}


def wait_for(pred, timeout):
    end = time.time() + timeout
    while time.time() < end:
        got = pred()
        if got:
            return got
        time.sleep(0.2)
    return pred()


@pytest.fixture
def sbx():
    from e2b import Sandbox

    s = Sandbox.create(TEMPLATE, timeout=180)
    yield s
    try:
        s.kill()
    except Exception:
        pass
