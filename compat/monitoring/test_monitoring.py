"""`/metrics` counters, gauges and histogram after real SDK calls, and `get_metrics()` over
time."""

import datetime
import time

from conftest import SAMPLE_INTERVAL, TEMPLATE, of_sandbox, scrape, value, wait_for


def test_counters_move_and_sandbox_series_come_and_go():
    from e2b import Sandbox

    before, families = scrape()
    # Counters and histograms are there from the start; gauges of sandboxes once there are.
    for f in ("soulbox_sandbox_creates", "soulbox_sandbox_create_seconds", "soulbox_sandbox_kills",
              "soulbox_proxy_requests", "soulbox_proxy_bytes", "soulbox_template_builds"):
        assert f in families, f
    s = Sandbox.create(TEMPLATE, timeout=180)
    try:
        assert s.commands.run("echo hi").stdout == "hi\n"
        series = wait_for(lambda: of_sandbox(scrape()[0], s.sandbox_id), SAMPLE_INTERVAL * 3 + 5)
        for name in ("soulbox_sandbox_cpu_seconds_total", "soulbox_sandbox_cpu_used_percent",
                     "soulbox_sandbox_memory_used_bytes", "soulbox_sandbox_disk_used_bytes",
                     "soulbox_sandbox_network_receive_bytes_total"):
            assert name in series, (name, series)
        mid, _ = scrape()
        ok = {"outcome": "ok"}
        assert value(mid, "soulbox_sandbox_creates_total", **ok) >= value(before, "soulbox_sandbox_creates_total", **ok) + 1
        # The histogram counted it.
        assert value(mid, "soulbox_sandbox_create_seconds_count") >= value(before, "soulbox_sandbox_create_seconds_count") + 1
        assert value(mid, "soulbox_sandbox_create_seconds_bucket", le="+Inf") >= value(mid, "soulbox_sandbox_create_seconds_count") - value(before, "soulbox_sandbox_create_seconds_count")
        # The command went through the proxy.
        assert value(mid, "soulbox_proxy_requests_total", code="2xx") > value(before, "soulbox_proxy_requests_total", code="2xx")
        assert value(mid, "soulbox_proxy_bytes_total", direction="from_sandbox") > value(before, "soulbox_proxy_bytes_total", direction="from_sandbox")
        assert value(mid, "soulbox_sandboxes", state="running", template=s.get_info().template_id) >= 1

        assert s.pause() is True
        paused, _ = scrape()
        assert value(paused, "soulbox_sandbox_pauses_total", **ok) >= value(before, "soulbox_sandbox_pauses_total", **ok) + 1
        assert wait_for(lambda: not of_sandbox(scrape()[0], s.sandbox_id), SAMPLE_INTERVAL * 2 + 5), "a paused sandbox exports no resource series"
        # Paused, it keeps its history.
        assert len(s.get_metrics()) >= 1
        s.connect()
        resumed, _ = scrape()
        assert value(resumed, "soulbox_sandbox_resumes_total", **ok) >= value(before, "soulbox_sandbox_resumes_total", **ok) + 1
    finally:
        s.kill()
    after, _ = scrape()
    assert not of_sandbox(after, s.sandbox_id), "killed, its series are gone"
    assert value(after, "soulbox_sandbox_kills_total", outcome="ok") >= value(before, "soulbox_sandbox_kills_total", outcome="ok") + 1


def test_get_metrics_has_points_over_time_and_the_burn_shows(sbx):
    first = sbx.get_metrics()
    # Just created: one point, taken now.
    assert len(first) >= 1
    m = first[-1]
    assert m.cpu_count >= 1 and m.mem_total > 0 and m.disk_total > 0 and m.mem_used > 0
    burn = max(2.0, SAMPLE_INTERVAL * 2)
    start = datetime.datetime.now(datetime.timezone.utc)
    sbx.commands.run(
        f"b() {{ end=$(($(date +%s)+{int(burn)})); while [ $(date +%s) -lt $end ]; do :; done; }}; "
        + " ".join(["b &"] * m.cpu_count) + " wait",
        timeout=burn + 60,
    )
    end = datetime.datetime.now(datetime.timezone.utc)
    time.sleep(SAMPLE_INTERVAL * 2 + 1)
    points = sbx.get_metrics()
    assert len(points) >= 3, points
    stamps = [p.timestamp for p in points]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    during = [p.cpu_used_pct for p in points if start <= p.timestamp <= end + datetime.timedelta(seconds=1)]
    assert during and max(during) > 60, (during, points)
    # The percent is over each interval: the last one, after the burn, is low again.
    assert points[-1].cpu_used_pct < 30, points[-1]
    # start/end select.
    some = sbx.get_metrics(start=start, end=end)
    second = datetime.timedelta(seconds=1)
    assert some and all(start - second <= p.timestamp <= end + second for p in some)
