//! Resources per sandbox (issue 14): a built-in template's sandbox gets the operator's default
//! limits, a custom template's its own cpuCount/memoryMB (and the default disk as of its
//! build), none above the operator's maximum; a build asking for more is refused. The limits
//! are read back from the host's cgroup files and the writable layer's image, and the API
//! reports the same. Run as root on a host where `soulbox doctor` passes (under sbx-locked).

mod common;

use common::http;
use serde_json::{json, Value};
use soulbox_runtime::Limits;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const KEY: &str = "e2b_0000000000000000000000000000000000001135";

fn default_limits() -> Limits {
    Limits {
        cpu_millis: 1000,
        memory_bytes: 320 << 20,
        disk_bytes: 384 << 20,
        pids: 512,
        ..Limits::default()
    }
}

fn max_limits() -> Limits {
    Limits {
        cpu_millis: 2000,
        memory_bytes: 768 << 20,
        disk_bytes: 1 << 30,
        pids: 4096,
        ..Limits::default()
    }
}

async fn server() -> SocketAddr {
    static ADDR: tokio::sync::OnceCell<SocketAddr> = tokio::sync::OnceCell::const_new();
    *ADDR
        .get_or_init(|| async {
            let dir = tempfile::tempdir().unwrap().keep();
            let store = soulbox_server::store::Store::open(&dir).await.unwrap();
            let team = store.default_team().await.unwrap();
            store.add_key(&team, KEY, "test").await.unwrap();
            common::serve_store(store, |cfg| {
                cfg.warm_pool = Default::default();
                cfg.build_disk_mb = 512;
                cfg.default_limits = default_limits();
                cfg.max_limits = max_limits();
            })
        })
        .await
}

async fn call(method: &str, path: &str, body: &Value) -> (u16, Value, String) {
    let raw = if body.is_null() {
        vec![]
    } else {
        body.to_string().into_bytes()
    };
    let (status, text) = http(
        server().await,
        method,
        path,
        &[("X-API-KEY", KEY), ("Content-Type", "application/json")],
        &raw,
    )
    .await;
    let v = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, v, text)
}

fn read_number(p: &str) -> u64 {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{p}: {e}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// What the host enforces on sandbox `id`: (memory bytes, CPU millis, pids, disk bytes).
/// The CPU quota is also capped by the total of all sandboxes (the parent group's quota).
fn applied(id: &str) -> (u64, u64, u64, u64) {
    let v2 = PathBuf::from("/sys/fs/cgroup/soulbox").join(id);
    let data = std::env::var_os("SOULBOX_TEST_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/var/lib/soulbox-test".into());
    let image = data.join("sandboxes").join(id).join("upper.img");
    let disk = std::fs::metadata(&image)
        .unwrap_or_else(|e| panic!("{}: {e}", image.display()))
        .len();
    if v2.exists() {
        let mem = read_number(v2.join("memory.max").to_str().unwrap());
        let cpu = std::fs::read_to_string(v2.join("cpu.max")).unwrap();
        let mut it = cpu.split_whitespace();
        let (q, p): (u64, u64) = (
            it.next().unwrap().parse().unwrap(),
            it.next().unwrap().parse().unwrap(),
        );
        let pids = read_number(v2.join("pids.max").to_str().unwrap());
        return (mem, q * 1000 / p, pids, disk);
    }
    let mem = read_number(&format!(
        "/sys/fs/cgroup/memory/soulbox/{id}/memory.limit_in_bytes"
    ));
    let quota = read_number(&format!("/sys/fs/cgroup/cpu/soulbox/{id}/cpu.cfs_quota_us"));
    let period = read_number(&format!(
        "/sys/fs/cgroup/cpu/soulbox/{id}/cpu.cfs_period_us"
    ));
    let pids = read_number(&format!("/sys/fs/cgroup/pids/soulbox/{id}/pids.max"));
    (mem, quota * 1000 / period, pids, disk)
}

/// The CPU all sandboxes together may use, in millis (the runtime caps each sandbox to it).
fn total_cpu_millis() -> u64 {
    let q = std::fs::read_to_string("/sys/fs/cgroup/cpu/soulbox/cpu.cfs_quota_us")
        .ok()
        .and_then(|q| q.trim().parse::<i64>().ok())
        .filter(|q| *q > 0);
    match q {
        Some(q) => q as u64 * 1000 / 100_000,
        None => u64::MAX,
    }
}

/// Creates a sandbox of `template`, checks that the host applies `want` and that info and
/// list report it; kills it.
async fn check_sandbox(template: &str, want: Limits) {
    let (s, v, t) = call(
        "POST",
        "/sandboxes",
        &json!({"templateID": template, "timeout": 120}),
    )
    .await;
    assert_eq!(s, 201, "{t}");
    let id = v["sandboxID"].as_str().unwrap().to_string();
    let (mem, cpu, pids, disk) = applied(&id);
    assert_eq!(mem, want.memory_bytes, "memory of {template}");
    assert_eq!(
        cpu,
        want.cpu_millis.min(total_cpu_millis()),
        "CPU of {template}"
    );
    assert_eq!(pids, want.pids, "pids of {template}");
    assert_eq!(disk, want.disk_bytes, "disk of {template}");
    let reported = |v: &Value| {
        (
            v["cpuCount"].as_u64().unwrap(),
            v["memoryMB"].as_u64().unwrap(),
            v["diskSizeMB"].as_u64().unwrap(),
        )
    };
    let expected = (
        want.cpu_millis / 1000,
        want.memory_bytes >> 20,
        want.disk_bytes >> 20,
    );
    let (s, info, t) = call("GET", &format!("/sandboxes/{id}"), &Value::Null).await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(reported(&info), expected, "info of {template}: {info}");
    let (s, list, t) = call("GET", "/sandboxes", &Value::Null).await;
    assert_eq!(s, 200, "{t}");
    let listed = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["sandboxID"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} not listed: {list}"));
    assert_eq!(reported(listed), expected, "list of {template}: {listed}");
    let (s, _, t) = call("DELETE", &format!("/sandboxes/{id}"), &Value::Null).await;
    assert_eq!(s, 204, "{t}");
}

/// Requests and runs a build of `name` from tiny; returns its template id.
async fn build(request: Value) -> String {
    let (s, v, t) = call("POST", "/v3/templates", &request).await;
    assert_eq!(s, 202, "{t}");
    let (tid, bid) = (
        v["templateID"].as_str().unwrap().to_string(),
        v["buildID"].as_str().unwrap().to_string(),
    );
    let start = json!({"fromTemplate": "tiny", "force": true,
        "steps": [{"type": "RUN", "args": ["echo built > /built", "root"]}]});
    let (s, _, t) = call("POST", &format!("/v2/templates/{tid}/builds/{bid}"), &start).await;
    assert_eq!(s, 202, "{t}");
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (_, v, _) = call(
            "GET",
            &format!("/templates/{tid}/builds/{bid}/status"),
            &Value::Null,
        )
        .await;
        match v["status"].as_str() {
            Some("ready") => return tid,
            Some("error") => panic!("the build failed: {v}"),
            _ => {}
        }
        assert!(Instant::now() < deadline, "the build did not end: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sandboxes_get_their_templates_limits_within_the_maximum() {
    // A built-in template: the operator's defaults.
    check_sandbox("tiny", default_limits()).await;

    // A custom template: its own CPU and memory, the default disk (as of its build).
    let name = format!("limits-{}", &soulbox_runtime::ns::new_id()[..6]);
    let tid = build(json!({"name": name, "cpuCount": 2, "memoryMB": 640})).await;
    let (s, v, t) = call("GET", &format!("/templates/{tid}"), &Value::Null).await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(v["cpuCount"], 2, "{v}");
    assert_eq!(v["memoryMB"], 640, "{v}");
    check_sandbox(
        &name,
        Limits {
            cpu_millis: 2000,
            memory_bytes: 640 << 20,
            ..default_limits()
        },
    )
    .await;

    // Above the maximum: refused, naming the limit.
    for (req, limit) in [
        (
            json!({"name": name, "cpuCount": 3}),
            "runtime.max_limits.cpu_count",
        ),
        (
            json!({"name": name, "memoryMB": 769}),
            "runtime.max_limits.memory_mb",
        ),
    ] {
        let (s, _, t) = call("POST", "/v3/templates", &req).await;
        assert_eq!(s, 400, "{req}: {t}");
        assert!(t.contains(limit), "{req}: {t}");
    }
    let (s, _, t) = call("DELETE", &format!("/templates/{tid}"), &Value::Null).await;
    assert!(s == 204 || s == 200, "{t}");
}
