//! The `soulbox` binary as an operator runs it: a data directory under a private parent, a
//! graceful stop of `serve` while a sandbox is paused, and sandboxes outliving `serve`. This file never starts a runtime of its
//! own (the runtime lock is host-wide): every sandbox here belongs to a child `soulbox`.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const KEY: &str = "e2b_0000000000000000000000000000000000005e7e";

/// The tests here take turns: each child `soulbox` takes the host-wide runtime lock.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn test_data_dir() -> PathBuf {
    std::env::var_os("SOULBOX_TEST_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/var/lib/soulbox-test".into())
}

/// Every cgroup directory SoulBox keeps for `id`, on any hierarchy.
fn cgroup_traces(id: &str) -> Vec<PathBuf> {
    let mut found = vec![];
    for c in ["memory", "cpu", "pids", "freezer", "unified", "cpu,cpuacct"] {
        let p = Path::new("/sys/fs/cgroup").join(c).join("soulbox").join(id);
        if p.exists() {
            found.push(p);
        }
    }
    let v2 = Path::new("/sys/fs/cgroup/soulbox").join(id);
    if v2.exists() {
        found.push(v2);
    }
    found
}

/// Issue 10 item 1: `serve --data-dir "$(mktemp -d)"` (a 0700 parent, as `/root` is) made every
/// create fail with EACCES. A data directory anywhere works.
#[test]
fn a_data_dir_under_a_private_parent_works() {
    let _turn = TURN.blocking_lock();
    let parent = tempfile::tempdir().unwrap();
    std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let data = parent.path().join("data");
    // The built templates (their layers), hard-linked from the test data directory (built
    // before the tests), so the child does not build tiny again.
    std::fs::create_dir_all(&data).unwrap();
    for d in ["templates", "layers"] {
        let st = Command::new("cp")
            .arg("-al")
            .arg(test_data_dir().join(d))
            .arg(data.join(d))
            .status()
            .unwrap();
        assert!(st.success(), "copying {d}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_soulbox"))
        .args(["run", "-t", "tiny", "--", "id -un; echo started"])
        .env("SOULBOX_DATA_DIR", &data)
        .output()
        .unwrap();
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success() && o.contains("started"), "{o}{e}");
}

struct Serve {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Drop for Serve {
    /// A failed test must not leave its server running (it holds the runtime lock).
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn start_serve(extra: &[&str]) -> Serve {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let child = Command::new(env!("CARGO_BIN_EXE_soulbox"))
        .args(["serve", "--listen", &addr.to_string()])
        .args(["--templates", "tiny", "--warm-pool", ""])
        .args(extra)
        .env("SOULBOX_DATA_DIR", test_data_dir())
        .env("SOULBOX_ADMIN_API_KEY", KEY)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    Serve { child, addr }
}

async fn wait_healthy(addr: SocketAddr) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if tokio::net::TcpStream::connect(addr).await.is_ok()
            && common::http(addr, "GET", "/health", &[], b"").await.0 == 204
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("serve did not come up on {addr}");
}

/// Issue 10 item 2: a paused sandbox must not stop a graceful stop of `serve --on-stop kill`,
/// and nothing of it may stay behind (its frozen processes, cgroups, directory).
#[tokio::test]
async fn a_graceful_stop_with_a_paused_sandbox_finishes_and_leaves_nothing() {
    let _turn = TURN.lock().await;
    let mut s = start_serve(&["--on-stop", "kill"]);
    wait_healthy(s.addr).await;
    let key = [("X-API-KEY", KEY), ("Content-Type", "application/json")];
    let (status, body) = common::http(
        s.addr,
        "POST",
        "/sandboxes",
        &key,
        br#"{"templateID":"tiny","timeout":300}"#,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = v["sandboxID"].as_str().unwrap().to_string();
    let dir = test_data_dir().join("sandboxes").join(&id);
    assert!(dir.exists() && !cgroup_traces(&id).is_empty());
    let (status, body) =
        common::http(s.addr, "POST", &format!("/sandboxes/{id}/pause"), &key, b"").await;
    assert_eq!(status, 204, "{body}");

    stop(&mut s, nix::sys::signal::Signal::SIGTERM).await;
    assert!(!dir.exists(), "{} is left", dir.display());
    assert_eq!(
        cgroup_traces(&id),
        Vec::<PathBuf>::new(),
        "cgroups are left"
    );
}

/// Sends `sig` to `serve` and waits (a minute at most) for it to exit.
async fn stop(s: &mut Serve, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(s.child.id() as i32), sig).unwrap();
    let start = Instant::now();
    while s.child.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "serve did not stop within a minute of {sig}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The processes in a sandbox's pids cgroup.
fn sandbox_pids(id: &str) -> Vec<i32> {
    let mut p: Vec<i32> =
        std::fs::read_to_string(format!("/sys/fs/cgroup/pids/soulbox/{id}/cgroup.procs"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
    p.sort();
    p
}

/// Issue 12 item 1: a crash (SIGKILL) and a stop (SIGTERM) of `serve` leave the sandbox
/// running, and the next start takes it over: the same processes, end time and agent; one
/// that died meanwhile is reported gone with nothing left of it.
#[tokio::test]
async fn sandboxes_outlive_serve_and_are_taken_over() {
    let _turn = TURN.lock().await;
    let mut s = start_serve(&[]);
    wait_healthy(s.addr).await;
    let key = [("X-API-KEY", KEY), ("Content-Type", "application/json")];
    let create = |addr| async move {
        let (status, body) = common::http(
            addr,
            "POST",
            "/sandboxes",
            &key,
            br#"{"templateID":"tiny","timeout":300}"#,
        )
        .await;
        assert_eq!(status, 201, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["sandboxID"].as_str().unwrap().to_string()
    };
    let (id, doomed) = (create(s.addr).await, create(s.addr).await);
    let info = |addr, id: String| async move {
        let (status, body) =
            common::http(addr, "GET", &format!("/sandboxes/{id}"), &key, b"").await;
        (
            status,
            serde_json::from_str::<serde_json::Value>(&body).unwrap_or_default(),
        )
    };
    let (_, before) = info(s.addr, id.clone()).await;
    let pids = sandbox_pids(&id);
    assert!(!pids.is_empty());
    let envd_health = |addr, id: String| async move {
        let h = [
            ("E2b-Sandbox-Id", id.as_str()),
            ("E2b-Sandbox-Port", "49983"),
        ];
        common::http(addr, "GET", "/health", &h, b"").await.0
    };
    assert_eq!(envd_health(s.addr, id.clone()).await, 204);

    for sig in [
        nix::sys::signal::Signal::SIGKILL,
        nix::sys::signal::Signal::SIGTERM,
    ] {
        stop(&mut s, sig).await;
        assert_eq!(
            sandbox_pids(&id),
            pids,
            "the sandbox's processes run on after {sig}"
        );
        if sig == nix::sys::signal::Signal::SIGKILL {
            // One dies while no server watches (an OOM kill, say).
            for p in sandbox_pids(&doomed) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        s = start_serve(&[]);
        wait_healthy(s.addr).await;
        let (status, now) = info(s.addr, id.clone()).await;
        assert_eq!(status, 200, "taken over after {sig}: {now}");
        assert_eq!(
            (&now["endAt"], &now["state"]),
            (&before["endAt"], &before["state"])
        );
        assert_eq!(sandbox_pids(&id), pids, "the same processes after {sig}");
        assert_eq!(
            envd_health(s.addr, id.clone()).await,
            204,
            "its agent answers through the new server"
        );
        let (status, _) = info(s.addr, doomed.clone()).await;
        assert_eq!(status, 404, "the one that died is reported gone");
        assert!(
            cgroup_traces(&doomed).is_empty(),
            "nothing is left of the one that died"
        );
        assert!(!test_data_dir().join("sandboxes").join(&doomed).exists());
    }
    let (status, body) =
        common::http(s.addr, "DELETE", &format!("/sandboxes/{id}"), &key, b"").await;
    assert_eq!(status, 204, "{body}");
    assert!(cgroup_traces(&id).is_empty() && sandbox_pids(&id).is_empty());
    stop(&mut s, nix::sys::signal::Signal::SIGTERM).await;
}

/// A state file is only trusted for the process it names: one naming a host process (a pid
/// reused after a reboot, or a forged file) is not taken over, and that process is not
/// touched; the directory is removed.
#[tokio::test]
async fn a_state_naming_another_process_is_not_taken_over() {
    let _turn = TURN.lock().await;
    let mut host = Command::new("sleep").arg("1000").spawn().unwrap();
    let pid = host.id() as i32;
    let id = "forgedstate000000000";
    let dir = test_data_dir().join("sandboxes").join(id);
    std::fs::create_dir_all(&dir).unwrap();
    let start = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let start: u64 = start[start.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap();
    let state = serde_json::json!({
        "version": 1, "id": id, "template": "tiny", "label": "api",
        "limits": {"memory_bytes": 536870912u64, "cpu_millis": 1000, "pids": 64, "disk_bytes": 1073741824u64, "nofile": 1024},
        "internet": false, "init": {}, "layers": [], "upper": "ext4", "id_base": 1073741824u32,
        "created_unix_ms": 0, "running": {"pid": pid, "pid_start": start, "slot": null}
    });
    std::fs::write(dir.join("state.json"), state.to_string()).unwrap();
    let mut s = start_serve(&[]);
    wait_healthy(s.addr).await;
    assert!(!dir.exists(), "the forged sandbox's directory is removed");
    assert!(
        host.try_wait().unwrap().is_none(),
        "the host process named by it runs on"
    );
    let key = [("X-API-KEY", KEY)];
    let (status, _) = common::http(s.addr, "GET", &format!("/sandboxes/{id}"), &key, b"").await;
    assert_eq!(status, 404);
    stop(&mut s, nix::sys::signal::Signal::SIGTERM).await;
    let _ = host.kill();
    let _ = host.wait();
}

/// A stop lets a request under way finish (within `--shutdown-grace`) and takes no new
/// connection; `--metrics false` turns `/metrics` off and leaves `/health` and `/ready`.
#[tokio::test]
async fn a_stop_finishes_requests_under_way_and_metrics_can_be_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _turn = TURN.lock().await;
    let mut s = start_serve(&[
        "--on-stop",
        "kill",
        "--metrics",
        "false",
        "--shutdown-grace",
        "20s",
    ]);
    wait_healthy(s.addr).await;
    assert_eq!(
        common::http(s.addr, "GET", "/metrics", &[], b"").await.0,
        404
    );
    assert_eq!(common::http(s.addr, "GET", "/ready", &[], b"").await.0, 200);
    // A create whose body is half sent when the stop comes.
    let body = br#"{"templateID":"tiny","timeout":60}"#;
    let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let head = format!(
        "POST /v2/sandboxes HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-API-KEY: {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes()).await.unwrap();
    c.write_all(&body[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = nix::unistd::Pid::from_raw(s.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Stopping: a new connection is not served…
    let mut fresh = String::new();
    if let Ok(mut c2) = tokio::net::TcpStream::connect(s.addr).await {
        let _ = c2
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await;
        let _ = tokio::time::timeout(Duration::from_secs(2), c2.read_to_string(&mut fresh)).await;
    }
    assert!(
        !fresh.starts_with("HTTP/1.1 204"),
        "a new request was served during the stop: {fresh}"
    );
    // …while the one under way is answered in full.
    c.write_all(&body[10..]).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(15), c.read_to_string(&mut out))
        .await
        .expect("the request under way is answered")
        .unwrap();
    assert!(out.starts_with("HTTP/1.1 201"), "{out}");
    let start = Instant::now();
    while s.child.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "serve did not exit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
