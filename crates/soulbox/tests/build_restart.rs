//! `soulbox serve` killed in the middle of a template build: the next start reports the build
//! failed, and nothing of it is left half-made, mounted or running. Every sandbox here belongs
//! to a child `soulbox` (this file never starts a runtime of its own).

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const KEY: &str = "e2b_00000000000000000000000000000000000b0117";

fn test_data_dir() -> PathBuf {
    std::env::var_os("SOULBOX_TEST_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/var/lib/soulbox-test".into())
}

struct Serve(std::process::Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn start_serve(addr: SocketAddr) -> Serve {
    let child = Command::new(env!("CARGO_BIN_EXE_soulbox"))
        .args(["serve", "--listen", &addr.to_string()])
        .args(["--templates", "tiny", "--warm-pool", ""])
        .env("SOULBOX_DATA_DIR", test_data_dir())
        .env("SOULBOX_ADMIN_API_KEY", KEY)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !healthy(addr).await {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "serve did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Serve(child)
}

async fn healthy(addr: SocketAddr) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_ok()
        && common::http(addr, "GET", "/health", &[], b"").await.0 == 204
}

async fn call(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let h = [("X-API-KEY", KEY), ("Content-Type", "application/json")];
    let (s, text) = common::http(addr, method, path, &h, body.as_bytes()).await;
    let start = text.find(['{', '[']).unwrap_or(0);
    let end = text.rfind(['}', ']']).map(|e| e + 1).unwrap_or(text.len());
    (
        s,
        serde_json::from_str(&text[start..end]).unwrap_or_default(),
    )
}

#[tokio::test]
async fn a_build_cut_by_a_crash_is_reported_failed_and_leaves_nothing() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let serve = start_serve(addr).await;
    let name = format!("restart-{}", &soulbox_runtime::ns::new_id()[..8]);
    let (s, v) = call(
        addr,
        "POST",
        "/v3/templates",
        &format!(r#"{{"name":"{name}"}}"#),
    )
    .await;
    assert_eq!(s, 202, "{v}");
    let (tid, bid) = (
        v["templateID"].as_str().unwrap().to_string(),
        v["buildID"].as_str().unwrap().to_string(),
    );
    let start = r#"{"fromTemplate":"tiny","force":true,"steps":[{"type":"RUN","args":["echo $((6*7))-started; sleep 300","root"]}]}"#;
    let (s, v) = call(
        addr,
        "POST",
        &format!("/v2/templates/{tid}/builds/{bid}"),
        start,
    )
    .await;
    assert_eq!(s, 202, "{v}");
    let status = format!("/templates/{tid}/builds/{bid}/status");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, v) = call(addr, "GET", &status, "").await;
        // The step's output, not its description: the sandbox is up and the command runs.
        if v.to_string().contains("42-started") {
            break;
        }
        assert!(Instant::now() < deadline, "the step did not start: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A crash: no graceful stop, the build sandbox is mid-step; and a layer some writer that
    // died had half made.
    drop(serve);
    let mut gone = Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    let planted = test_data_dir()
        .join("layers")
        .join(format!(".new-0123456789ab-{dead}"));
    std::fs::create_dir_all(planted.join("root/usr")).unwrap();
    let _serve = start_serve(addr).await;
    let (s, v) = call(addr, "GET", &status, "").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "error", "{v}");
    assert!(
        v["reason"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("server stopped"),
        "{v}"
    );
    let data = test_data_dir();
    let left: Vec<_> = std::fs::read_dir(data.join("sandboxes"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "sandboxes left: {left:?}");
    let half: Vec<_> = std::fs::read_dir(data.join("layers"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".new-"))
        .collect();
    assert!(
        half.is_empty() && !planted.exists(),
        "half-made layers: {half:?}"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&data.join("sandboxes").display().to_string()));
}
