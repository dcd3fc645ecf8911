//! Monitoring against a real server: `/metrics` (its token, its counters and per-sandbox
//! series), `/ready`, `get_metrics()` over time, the live stream, and the Grafana dashboard
//! (every metric it queries is one the server exports, and the other way round).

mod common;

use common::http;
use soulbox_client::{Client, Config};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const KEY: &str = "e2b_00000000000000000000000000000000000000cc";
const OTHER_KEY: &str = "e2b_00000000000000000000000000000000000000dd";
const TOKEN: &str = "metrics-token-for-tests";
const SAMPLE: Duration = Duration::from_millis(250);

async fn server() -> SocketAddr {
    static ADDR: tokio::sync::OnceCell<SocketAddr> = tokio::sync::OnceCell::const_new();
    *ADDR
        .get_or_init(|| async {
            let dir = tempfile::tempdir().unwrap().keep();
            let store = soulbox_server::store::Store::open(&dir).await.unwrap();
            let team = store.default_team().await.unwrap();
            store.add_key(&team, KEY, "test").await.unwrap();
            let other = store.create_team("other").await.unwrap();
            store.add_key(&other, OTHER_KEY, "other").await.unwrap();
            common::serve_store(store, |cfg| {
                cfg.monitoring.metrics_token = Some(TOKEN.into());
                cfg.monitoring.sample_interval = SAMPLE;
                cfg.monitoring.sample_retention = Duration::from_secs(60);
                // A pool, so that its families are exported too.
                cfg.warm_pool.insert("tiny".into(), 1);
            })
        })
        .await
}

fn client(addr: SocketAddr, key: &str) -> Client {
    Client::new(Config {
        url: format!("http://{addr}"),
        api_key: key.into(),
    })
    .unwrap()
}

async fn create(addr: SocketAddr) -> String {
    let (status, body) = http(
        addr,
        "POST",
        "/v2/sandboxes",
        &[("X-API-KEY", KEY), ("Content-Type", "application/json")],
        br#"{"templateID":"tiny","timeout":120}"#,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["sandboxID"].as_str().unwrap().to_string()
}

/// Every sample of a scrape: `name{labels}` → value.
async fn scrape(addr: SocketAddr) -> (String, BTreeMap<String, f64>) {
    let auth = format!("Bearer {TOKEN}");
    let (status, body) = http(addr, "GET", "/metrics", &[("Authorization", &auth)], b"").await;
    assert_eq!(status, 200, "{body}");
    let samples = body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect();
    (body, samples)
}

fn value(s: &BTreeMap<String, f64>, key: &str) -> f64 {
    s.get(key).copied().unwrap_or(0.0)
}

/// Waits for `check` on scrapes, for at most `secs`.
async fn until(addr: SocketAddr, secs: u64, what: &str, check: impl Fn(&str) -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        let (text, _) = scrape(addr).await;
        if check(&text) {
            return;
        }
        assert!(Instant::now() < end, "{what}; last scrape:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn metrics_need_the_token_and_ready_answers() {
    let addr = server().await;
    let (status, _) = http(addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(status, 401);
    for bad in [
        "Bearer wrong",
        "metrics-token-for-tests",
        "Bearer metrics-token-for-test",
    ] {
        let (status, _) = http(addr, "GET", "/metrics", &[("Authorization", bad)], b"").await;
        assert_eq!(status, 401, "{bad}");
    }
    let (text, _) = scrape(addr).await;
    assert!(
        text.contains("# TYPE soulbox_sandbox_creates_total counter"),
        "{text}"
    );
    let (status, body) = http(addr, "GET", "/ready", &[], b"").await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ready"}"#));
    let (status, _) = http(addr, "GET", "/health", &[], b"").await;
    assert_eq!(status, 204);
}

#[tokio::test]
async fn counters_move_and_sandbox_series_come_and_go() {
    let addr = server().await;
    let (_, before) = scrape(addr).await;
    let id = create(addr).await;
    let label = format!("sandbox_id=\"{id}\"");
    until(addr, 10, "the sandbox's series appear", |t| {
        t.contains(&format!("soulbox_sandbox_memory_used_bytes{{{label}"))
    })
    .await;
    let (text, after) = scrape(addr).await;
    let ok = "{outcome=\"ok\"}";
    assert!(
        value(&after, &format!("soulbox_sandbox_creates_total{ok}"))
            > value(&before, &format!("soulbox_sandbox_creates_total{ok}")),
        "{text}"
    );
    assert!(
        value(&after, "soulbox_sandbox_create_seconds_count")
            > value(&before, "soulbox_sandbox_create_seconds_count")
    );
    assert!(value(&after, "soulbox_sandbox_create_seconds_bucket{le=\"+Inf\"}") >= 1.0);
    assert!(
        value(
            &after,
            "soulbox_sandboxes{state=\"running\",template=\"tiny\"}"
        ) >= 1.0
    );
    for family in [
        "soulbox_sandbox_cpu_seconds_total",
        "soulbox_sandbox_cpu_used_percent",
        "soulbox_sandbox_memory_limit_bytes",
        "soulbox_sandbox_disk_total_bytes",
        "soulbox_sandbox_network_receive_bytes_total",
    ] {
        assert!(
            text.contains(&format!("{family}{{{label}")),
            "{family} of {id}"
        );
    }

    let key = [("X-API-KEY", KEY)];
    let (status, body) = http(addr, "POST", &format!("/sandboxes/{id}/pause"), &key, b"").await;
    assert_eq!(status, 204, "{body}");
    until(
        addr,
        10,
        "a paused sandbox exports no resource series",
        |t| {
            !t.contains(&label)
                && t.contains("soulbox_sandboxes{state=\"paused\",template=\"tiny\"}")
        },
    )
    .await;
    // It keeps its history.
    let (status, body) = http(addr, "GET", &format!("/sandboxes/{id}/metrics"), &key, b"").await;
    assert_eq!(status, 200);
    assert!(body.starts_with("[{"), "{body}");
    let (status, body) = http(
        addr,
        "POST",
        &format!("/sandboxes/{id}/resume"),
        &key,
        br#"{"timeout":60}"#,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = http(addr, "DELETE", &format!("/sandboxes/{id}"), &key, b"").await;
    assert_eq!(status, 204);
    let (text, end) = scrape(addr).await;
    assert!(
        !text.contains(&label),
        "killed, its series are gone:\n{text}"
    );
    for family in ["pauses", "resumes", "kills"] {
        let k = format!("soulbox_sandbox_{family}_total{ok}");
        assert!(value(&end, &k) > value(&before, &k), "{k}:\n{text}");
    }
}

#[tokio::test]
async fn get_metrics_has_points_over_time_with_the_burn_in_its_interval() {
    let addr = server().await;
    let id = create(addr).await;
    let c = client(addr, KEY);
    // At once: one point, taken now.
    let first = c.metrics(&id, None, None).await.unwrap();
    assert!(!first.is_empty());
    let sbx = c.connect(&id, None).await.unwrap();
    let burn_start = chrono::Utc::now().timestamp();
    let out = sbx
        .commands()
        // Both CPUs of the default allotment, for two seconds.
        .run("b() { end=$(($(date +%s)+2)); while [ $(date +%s) -lt $end ]; do :; done; }; b & b; wait")
        .await
        .unwrap();
    assert!(out.exit.success(), "{}", out.stderr_lossy());
    tokio::time::sleep(SAMPLE * 4).await;
    let all = c.metrics(&id, None, None).await.unwrap();
    assert!(all.len() >= 8, "{} samples: {all:?}", all.len());
    let burn = all
        .iter()
        .filter(|m| m.timestamp_unix >= burn_start && m.timestamp_unix <= burn_start + 2)
        .map(|m| m.cpu_used_pct)
        .fold(0.0, f64::max);
    assert!(burn > 50.0, "the burn's interval: {burn} %: {all:?}");
    let idle = all.last().unwrap().cpu_used_pct;
    assert!(idle < 20.0, "after the burn: {idle} %");
    // A range gives only what is in it.
    let t = all[all.len() / 2].timestamp_unix;
    let some = c.metrics(&id, Some(t), Some(t)).await.unwrap();
    assert!(!some.is_empty() && some.iter().all(|m| m.timestamp_unix == t));
    // The batch: the team's sandboxes only.
    let other = client(addr, OTHER_KEY);
    let mine = c.metrics_of(std::slice::from_ref(&id)).await.unwrap();
    assert!(mine.contains_key(&id));
    assert!(other
        .metrics_of(std::slice::from_ref(&id))
        .await
        .unwrap()
        .is_empty());
    assert!(other
        .metrics(&id, None, None)
        .await
        .unwrap_err()
        .is_not_found());
    c.kill(&id).await.unwrap();
}

#[tokio::test]
async fn the_stream_follows_a_sandbox_until_it_is_killed() {
    let addr = server().await;
    let id = create(addr).await;
    let c = client(addr, KEY);
    let other = client(addr, OTHER_KEY);
    assert!(other
        .metrics_stream(&id)
        .await
        .err()
        .unwrap()
        .is_not_found());
    let mut s = c.metrics_stream(&id).await.unwrap();
    let mut times = vec![];
    for _ in 0..3 {
        let m = tokio::time::timeout(SAMPLE * 8, s.next())
            .await
            .expect("a sample within a few intervals")
            .expect("the stream goes on")
            .unwrap();
        assert!(m.mem_total > 0 && m.cpu_count >= 1, "{m:?}");
        times.push(m.timestamp.clone());
    }
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
    c.kill(&id).await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(m) = s.next().await {
            m.unwrap();
        }
    })
    .await;
    assert!(end.is_ok(), "the stream ends when the sandbox is killed");
}

/// Metric names in a PromQL expression.
fn names_in(expr: &str) -> Vec<String> {
    let mut out = vec![];
    let mut rest = expr;
    while let Some(i) = rest.find("soulbox_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

#[tokio::test]
async fn the_dashboard_queries_exactly_what_the_server_exports() {
    let addr = server().await;
    let id = create(addr).await;
    until(addr, 60, "a sampled sandbox and a ready warm pool", |t| {
        t.contains(&format!("sandbox_id=\"{id}\""))
            && t.contains("soulbox_warm_pool_ready{template=\"tiny\"} 1")
    })
    .await;
    let (text, samples) = scrape(addr).await;
    let exported: BTreeSet<String> = samples
        .keys()
        .map(|k| k.split('{').next().unwrap().to_string())
        .collect();
    let families: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/grafana/soulbox-dashboard.json"
    );
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut used = BTreeSet::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            used.extend(names_in(t["expr"].as_str().unwrap()));
        }
    }
    let unknown: Vec<_> = used.iter().filter(|n| !exported.contains(*n)).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard queries {unknown:?}, which the server does not export:\n{text}"
    );
    let unused: Vec<_> = families
        .iter()
        .filter(|f| !used.iter().any(|u| u.starts_with(f.as_str())))
        .collect();
    assert!(unused.is_empty(), "families with no panel: {unused:?}");
    client(addr, KEY).kill(&id).await.unwrap();
}
