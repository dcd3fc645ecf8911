//! Shared set-up for tests that start real sandboxes (root required).

#![allow(dead_code)]

use soulbox_runtime::agent_client::{AgentClient, Output};
use soulbox_runtime::ns::{NsBackend, RuntimeConfig};
use soulbox_runtime::{Backend, Limits, SandboxInfo, SandboxSpec};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Changes the configuration of this test process's runtime; call before the first
/// [`backend`] (a test binary that needs low thresholds calls it in every test).
pub fn configure(f: fn(&mut RuntimeConfig)) {
    let _ = CONFIGURE.set(f);
}

static CONFIGURE: OnceLock<fn(&mut RuntimeConfig)> = OnceLock::new();

/// One runtime per test process: the runtime lock is host-wide.
pub fn backend() -> Arc<NsBackend> {
    static B: OnceLock<Arc<NsBackend>> = OnceLock::new();
    B.get_or_init(|| {
        let exe = PathBuf::from(env!("CARGO_BIN_EXE_soulbox"));
        let data = std::env::var_os("SOULBOX_TEST_DATA_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| "/var/lib/soulbox-test".into());
        let mut cfg = RuntimeConfig::new(data, exe.with_file_name("soulbox-agent"), exe);
        // Each test binary starts clean: what an earlier one left is removed, not taken over.
        cfg.adopt = false;
        if let Some(f) = CONFIGURE.get() {
            f(&mut cfg);
        }
        let b = NsBackend::new(cfg).expect("runtime starts (run the tests as root)");
        b.templates()
            .ensure("tiny", &mut |_| {})
            .expect("tiny template builds");
        Arc::new(b)
    })
    .clone()
}

pub fn spec(limits: Limits, internet: bool) -> SandboxSpec {
    SandboxSpec {
        template: "tiny".into(),
        limits,
        internet,
        ..Default::default()
    }
}

/// A running sandbox that is killed when dropped (also when a test fails).
pub struct Sandbox {
    pub info: SandboxInfo,
    pub backend: Arc<NsBackend>,
    killed: bool,
}

impl Sandbox {
    pub async fn new(limits: Limits, internet: bool) -> Sandbox {
        let backend = backend();
        let info = backend
            .create(spec(limits, internet))
            .await
            .expect("sandbox starts");
        Sandbox {
            info,
            backend,
            killed: false,
        }
    }

    pub async fn client(&self) -> AgentClient {
        AgentClient::connect(&self.info.socket, self.info.access_token.clone())
            .await
            .expect("agent connects")
    }

    /// `bash -c script` as `user` (`None` = the default user).
    pub async fn sh_as(&self, user: Option<&str>, script: &str) -> Output {
        self.client()
            .await
            .sh(script, user)
            .await
            .expect("command runs")
    }

    pub async fn root(&self, script: &str) -> Output {
        self.sh_as(Some("root"), script).await
    }

    pub async fn kill(mut self) {
        self.killed = true;
        self.backend
            .kill(&self.info.id)
            .await
            .expect("sandbox is killed");
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if !self.killed {
            let (b, id) = (self.backend.clone(), self.info.id.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let _ = rt.block_on(b.kill(&id));
            })
            .join()
            .ok();
        }
    }
}

/// Sandbox `id` is paused to disk and holds nothing on the host while it is: no process, no
/// network slot (`free_slots` were free before the pause).
pub fn assert_paused_and_released(b: &Arc<NsBackend>, id: &str, free_slots: usize) {
    assert!(
        b.get(id).is_none() && b.is_paused_on_disk(id),
        "{id} is paused to disk, not running"
    );
    assert!(
        b.cgroups().pids(id).is_empty(),
        "a process outlived the pause"
    );
    assert_eq!(
        b.network().free_slots(),
        free_slots + 1,
        "the network slot is free"
    );
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Polls `f` until it returns true or `limit` passes.
pub async fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

/// The API key of [`serve`]'s server.
pub const KEY: &str = "e2b_000000000000000000000000000000000000c11e";

/// One `soulbox serve` per test process (on its own thread and runtime, since each test has
/// its own runtime), with [`KEY`] in the default team; returns its address.
pub fn serve() -> std::net::SocketAddr {
    static ADDR: OnceLock<std::net::SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let backend = backend();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                let dir = tempfile::tempdir().unwrap().keep();
                let store = soulbox_server::store::Store::open(&dir).await.unwrap();
                let team = store.default_team().await.unwrap();
                store.add_key(&team, KEY, "test").await.unwrap();
                let l = soulbox_server::listen("127.0.0.1:0".parse().unwrap()).unwrap();
                let addr = l.local_addr().unwrap();
                tx.send(addr).unwrap();
                let cfg = soulbox_server::ServerConfig::new(addr);
                soulbox_server::serve_on(l, cfg, store, backend)
                    .await
                    .unwrap();
            });
        });
        rx.recv().unwrap()
    })
}

/// One Connect-JSON message envelope (the body of a server-streaming call such as Start).
pub fn connect_frame(msg: serde_json::Value) -> Vec<u8> {
    soulbox_protocol::connect::encode_message(&msg).to_vec()
}

/// One raw HTTP/1.1 exchange; returns (status, body).
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(req.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (status, body)
}

/// What a sandbox could leave on the host, counted.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct Traces {
    pub mounts: usize,
    pub loop_devices: usize,
    pub cgroups: Vec<String>,
    pub net_devices: usize,
    pub netns: usize,
    pub sandbox_dirs: usize,
    pub children: usize,
}

fn count_dir(p: &str) -> usize {
    std::fs::read_dir(p).map(|d| d.count()).unwrap_or(0)
}

pub fn traces() -> Traces {
    let b = backend();
    let loop_devices = std::fs::read_dir("/sys/block")
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("loop/backing_file").exists())
        .count();
    let me = std::process::id();
    let children =
        std::fs::read_to_string(format!("/proc/{me}/task/{me}/children")).unwrap_or_default();
    let zombies_or_children = children.split_whitespace().count();
    Traces {
        mounts: std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .count(),
        loop_devices,
        cgroups: b.cgroups().existing(),
        net_devices: count_dir("/sys/class/net"),
        netns: count_dir("/run/netns"),
        sandbox_dirs: count_dir(b.sandbox_dir("x").parent().unwrap().to_str().unwrap()),
        children: zombies_or_children,
    }
}

/// The CLI, configured by env for the test server, with an empty HOME (no config file).
pub fn soulbox(home: &std::path::Path) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_soulbox"));
    c.env("SOULBOX_URL", format!("http://{}", serve()))
        .env("SOULBOX_API_KEY", KEY)
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("SOULBOX_CONFIG");
    c
}

pub fn run(cmd: &mut std::process::Command) -> std::process::Output {
    cmd.output().expect("soulbox runs")
}

pub fn ok(cmd: &mut std::process::Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Serves `store` with this process's runtime on a port of its own, on a thread and tokio
/// runtime of its own (each test runs on its own runtime, the server must outlive them);
/// `configure` changes the server's configuration first. Returns the address.
pub fn serve_store(
    store: soulbox_server::store::Store,
    configure: impl FnOnce(&mut soulbox_server::ServerConfig) + Send + 'static,
) -> std::net::SocketAddr {
    let backend = backend();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let l = soulbox_server::listen("127.0.0.1:0".parse().unwrap()).unwrap();
            let addr = l.local_addr().unwrap();
            let mut cfg = soulbox_server::ServerConfig::new(addr);
            configure(&mut cfg);
            tx.send(addr).unwrap();
            soulbox_server::serve_on(l, cfg, store, backend)
                .await
                .unwrap();
        });
    });
    rx.recv().unwrap()
}
