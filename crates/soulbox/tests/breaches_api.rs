//! Attacks on the API surface of a real `soulbox serve` (issue 9, items 7, 8, 9 and 12): each
//! test performs the attack against the binary, as an outsider would, and checks it fails.
//!
//! The server is the `soulbox` executable itself, started once for this file on the test data
//! directory, so that what `serve` does at start (umask, data directory modes, descriptor
//! limits) is what is tested. Its descriptor limit is lowered to 1024 so that item 9's attack
//! needs only a few thousand connections.

mod common;

use common::{http, KEY};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;
use tokio::io::AsyncReadExt;

struct Serve {
    addr: SocketAddr,
    data: PathBuf,
}

/// Per-address connection cap the server is started with.
const PER_IP: usize = 64;

/// The pid of [`server`]'s `soulbox serve`, for [`stop_server`].
static SERVE_PID: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// At exit: stops `soulbox serve` and waits until it has let go of the host's runtime lock,
/// so that the next test process (`cargo test` runs them one after another) can take it.
extern "C" fn stop_server() {
    let pid = SERVE_PID.load(std::sync::atomic::Ordering::SeqCst);
    if pid <= 0 {
        return;
    }
    // SAFETY: signals a child of ours by pid; it has not been reaped while the test runs.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    if let Ok(lock) = std::fs::File::open("/run/soulbox.lock") {
        use std::os::fd::AsRawFd;
        // SAFETY: a blocking flock on a descriptor we own; closing the file releases it.
        unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
    }
}

/// The `soulbox serve` of this file, stopped at exit ([`stop_server`]; PR_SET_PDEATHSIG if
/// the test process dies).
fn server() -> &'static Serve {
    static S: OnceLock<Serve> = OnceLock::new();
    S.get_or_init(|| {
        let data: PathBuf = std::env::var_os("SOULBOX_TEST_DATA_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| "/var/lib/soulbox-test".into());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_soulbox"));
        cmd.args(["serve", "--listen", &addr.to_string()])
            .args(["--templates", "tiny", "--warm-pool", ""])
            .env("SOULBOX_DATA_DIR", &data)
            .env("SOULBOX_ADMIN_API_KEY", KEY)
            .env("SOULBOX_MAX_CONNECTIONS_PER_IP", PER_IP.to_string())
            .env("SOULBOX_FIRST_REQUEST_TIMEOUT_MS", "2000")
            .env_remove("SOULBOX_SECRET_KEY")
            .stdout(std::process::Stdio::null());
        use std::os::unix::process::CommandExt;
        // SAFETY: only async-signal-safe calls (prctl, setrlimit) between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                let lim = libc::rlimit {
                    rlim_cur: 1024,
                    rlim_max: 1024,
                };
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0
                    || libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let (tx, exited) = std::sync::mpsc::channel();
        // The death signal follows the thread that forks: this one lives as long as the process.
        std::thread::spawn(move || {
            let status = cmd.spawn().and_then(|mut child| {
                SERVE_PID.store(child.id() as i32, std::sync::atomic::Ordering::SeqCst);
                let status = child.wait();
                SERVE_PID.store(0, std::sync::atomic::Ordering::SeqCst);
                status
            });
            let _ = tx.send(format!("{status:?}"));
        });
        // SAFETY: registers a plain function to run at exit.
        unsafe { libc::atexit(stop_server) };
        // The first start may build the tiny template.
        let up = (0..6000).any(|_| {
            if let Ok(status) = exited.try_recv() {
                panic!("soulbox serve exited: {status}");
            }
            if health_blocking(addr) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
            false
        });
        assert!(up, "soulbox serve did not come up on {addr}");
        Serve { addr, data }
    })
}

fn health_blocking(addr: SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let req = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let mut out = String::new();
    s.write_all(req).is_ok() && s.read_to_string(&mut out).is_ok() && out.contains(" 204 ")
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
}

/// Creates a sandbox; returns the whole answer.
async fn create(addr: SocketAddr, body: serde_json::Value) -> serde_json::Value {
    let (status, answer) = http(
        addr,
        "POST",
        "/v2/sandboxes",
        &[("X-API-KEY", KEY), ("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
    json(&answer)
}

async fn kill(addr: SocketAddr, id: &str) {
    let path = format!("/sandboxes/{id}");
    let (status, body) = http(addr, "DELETE", &path, &[("X-API-KEY", KEY)], b"").await;
    assert_eq!(status, 204, "{body}");
}

fn field(v: &serde_json::Value, name: &str) -> String {
    v[name].as_str().unwrap_or_default().to_string()
}

/// Item 7: the interpreter's routes through the proxy with nothing but a sandbox id.
#[tokio::test]
async fn interpreter_routes_need_the_envd_token() {
    let addr = server().addr;
    let sb = create(
        addr,
        serde_json::json!({"templateID": "tiny", "timeout": 120}),
    )
    .await;
    let (id, token) = (field(&sb, "sandboxID"), field(&sb, "envdAccessToken"));
    let route = [
        ("E2b-Sandbox-Id", id.as_str()),
        ("E2b-Sandbox-Port", "49999"),
        ("Content-Type", "application/json"),
    ];
    let attacks: [(&str, &str, &[u8]); 5] = [
        ("GET", "/contexts", b""),
        ("POST", "/contexts", br#"{"language":"python"}"#),
        ("POST", "/contexts/some-id/restart", b""),
        ("DELETE", "/contexts/some-id", b""),
        ("POST", "/execute", br#"{"code":"1"}"#),
    ];
    for (method, path, body) in attacks {
        let (status, answer) = http(addr, method, path, &route, body).await;
        assert_eq!(status, 401, "{method} {path} without a token: {answer}");
        let mut wrong = route.to_vec();
        wrong.push(("X-Access-Token", "not-the-token"));
        wrong.push(("E2B-Traffic-Access-Token", "not-the-token"));
        let (status, answer) = http(addr, method, path, &wrong, body).await;
        assert_eq!(status, 401, "{method} {path} with a wrong token: {answer}");
    }
    // The owner gets through: with the envd token, and with the traffic token the create
    // answer carries (the code-interpreter SDKs send only that one on /contexts).
    let mut owner = route.to_vec();
    owner.push(("X-Access-Token", token.as_str()));
    let (status, answer) = http(addr, "GET", "/contexts", &owner, b"").await;
    assert_eq!(status, 200, "{answer}");
    let traffic = field(&sb, "trafficAccessToken");
    assert!(
        !traffic.is_empty() && traffic != token,
        "create answers a traffic token of its own: {sb}"
    );
    let mut sdk = route.to_vec();
    sdk.push(("E2B-Traffic-Access-Token", traffic.as_str()));
    let (status, answer) = http(addr, "GET", "/contexts", &sdk, b"").await;
    assert_eq!(status, 200, "{answer}");
    // The traffic token opens the interpreter only, not envd.
    let envd = [
        ("E2b-Sandbox-Id", id.as_str()),
        ("E2b-Sandbox-Port", "49983"),
        ("E2B-Traffic-Access-Token", traffic.as_str()),
    ];
    let (status, _) = http(addr, "GET", "/envs", &envd, b"").await;
    assert_eq!(status, 401);
    kill(addr, &id).await;
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Nobody but root may read, write or search it.
fn assert_private(p: &Path) {
    let m = mode(p);
    assert_eq!(m & 0o077, 0, "{} is {m:o}", p.display());
}

/// The start of a long answer, for assertion messages.
fn short(s: &str) -> &str {
    &s[..s.char_indices().nth(300).map_or(s.len(), |(i, _)| i)]
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Item 8: what a local user could read of the data directory.
#[tokio::test]
async fn secrets_at_rest_are_private_and_sealed() {
    let s = server();
    let secret = format!("s3cret-{:016x}", rand_u64());
    let sb = create(
        s.addr,
        serde_json::json!({"templateID": "tiny", "timeout": 120, "envVars": {"SB_SECRET": secret}}),
    )
    .await;
    let (id, token) = (field(&sb, "sandboxID"), field(&sb, "envdAccessToken"));
    assert_private(&s.data);
    for f in ["soulbox.db", "soulbox.db-wal", "soulbox.db-shm"] {
        let p = s.data.join(f);
        if !p.exists() {
            continue;
        }
        assert_eq!(mode(&p), 0o600, "{}", p.display());
        let bytes = std::fs::read(&p).unwrap();
        assert!(!contains(&bytes, &token), "{f} holds the envd token");
        assert!(!contains(&bytes, &secret), "{f} holds an env var's value");
    }
    assert_eq!(mode(&s.data.join("secret.key")), 0o600);
    let dir = s.data.join("sandboxes").join(&id);
    for p in [s.data.join("sandboxes"), dir.clone()] {
        assert_private(&p);
    }
    assert_eq!(mode(&s.data.join("templates")), 0o700);
    let upper = dir.join("upper.img");
    if upper.exists() {
        assert_eq!(mode(&upper), 0o600);
    }
    // Nothing is lost: the token still works through the proxy, the env var reaches the sandbox.
    let envd = [
        ("E2b-Sandbox-Id", id.as_str()),
        ("E2b-Sandbox-Port", "49983"),
        ("X-Access-Token", token.as_str()),
    ];
    let (status, body) = http(s.addr, "GET", "/envs", &envd, b"").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["SB_SECRET"], secret.as_str(), "{body}");
    let (status, body) = http(
        s.addr,
        "GET",
        &format!("/sandboxes/{id}"),
        &[("X-API-KEY", KEY)],
        b"",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["envdAccessToken"], token.as_str());
    kill(s.addr, &id).await;
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::UNIX_EPOCH
            .elapsed()
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}

/// An idle connection from `from`: connected, sends nothing.
async fn idle_from(from: Ipv4Addr, to: SocketAddr) -> tokio::net::TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::from((from, 0))).unwrap();
    sock.connect(to).await.unwrap()
}

/// Item 9: thousands of idle connections from one address, no key needed.
#[tokio::test]
async fn idle_connections_cannot_starve_the_server() {
    let addr = server().addr;
    // More than the server's descriptors (1024) and far more than its per-address cap.
    let attacker = Ipv4Addr::new(127, 0, 0, 2);
    let mut idle = Vec::new();
    for _ in 0..1500 {
        idle.push(idle_from(attacker, addr).await);
    }
    // The operator (another address) is still answered at once, with and without a key.
    let prompt = Duration::from_secs(20);
    let (status, _) = tokio::time::timeout(prompt, http(addr, "GET", "/health", &[], b""))
        .await
        .expect("/health answers while idle connections are open");
    assert_eq!(status, 204);
    let (status, body) = tokio::time::timeout(
        prompt,
        http(addr, "GET", "/v2/sandboxes", &[("X-API-KEY", KEY)], b""),
    )
    .await
    .expect("an authenticated request answers while idle connections are open");
    assert_eq!(status, 200, "{body}");
    // Every idle connection is closed by the server: at once above the cap (after a 429),
    // after the first-request timeout below it.
    let mut refused = 0;
    for (i, s) in idle.iter_mut().enumerate() {
        let mut got = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut got))
            .await
            .unwrap_or_else(|_| panic!("idle connection {i} is still open"));
        if r.is_ok() && String::from_utf8_lossy(&got).starts_with("HTTP/1.1 429") {
            refused += 1;
        }
    }
    assert!(
        refused >= 1500 - PER_IP,
        "{refused} connections were refused"
    );
}

/// Item 12: input the API must refuse instead of storing and breaking on later.
#[tokio::test]
async fn bad_env_vars_and_metadata_are_refused() {
    let addr = server().addr;
    let key = [("X-API-KEY", KEY), ("Content-Type", "application/json")];
    let big: String = (0..900 << 10)
        .map(|i| if i % 1000 == 0 { '\u{1}' } else { 'a' })
        .collect();
    let many: serde_json::Map<_, _> = (0..65).map(|i| (format!("k{i}"), "v".into())).collect();
    let bad = [
        (serde_json::json!({"envVars": {"A": "x\u{0}y"}}), "NUL"),
        (serde_json::json!({"envVars": {"A=B": "x"}}), "="),
        (serde_json::json!({"envVars": {"": "x"}}), "empty"),
        (serde_json::json!({"metadata": {"m": big}}), "metadata"),
        (serde_json::json!({"metadata": {"m": "a\u{7}b"}}), "control"),
        (serde_json::json!({"metadata": many}), "metadata"),
    ];
    for (extra, reason) in bad {
        let mut body = serde_json::json!({"templateID": "tiny", "timeout": 60});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, answer) = http(
            addr,
            "POST",
            "/v2/sandboxes",
            &key,
            body.to_string().as_bytes(),
        )
        .await;
        if status == 201 {
            kill(addr, &field(&json(&answer), "sandboxID")).await;
        }
        let what = short(&extra.to_string()).to_string();
        assert_eq!(status, 400, "{what}: {}", short(&answer));
        let v = json(&answer);
        assert_eq!(v["code"], 400, "{}", short(&answer));
        assert!(
            v["message"].as_str().unwrap_or_default().contains(reason),
            "the reason ({reason}) is given: {}",
            short(&answer)
        );
    }

    // The agent refuses them too: /init, a command's envs, an execution's env vars.
    let sb = create(
        addr,
        serde_json::json!({"templateID": "tiny", "timeout": 120}),
    )
    .await;
    let (id, token) = (field(&sb, "sandboxID"), field(&sb, "envdAccessToken"));
    let envd = [
        ("E2b-Sandbox-Id", id.as_str()),
        ("E2b-Sandbox-Port", "49983"),
        ("X-Access-Token", token.as_str()),
        ("Content-Type", "application/json"),
    ];
    let (status, answer) = http(
        addr,
        "POST",
        "/init",
        &envd,
        br#"{"envVars":{"BAD":"a\u0000b"}}"#,
    )
    .await;
    assert_eq!(status, 400, "/init with a NUL: {answer}");
    assert!(answer.contains("NUL"), "{answer}");
    let (status, answer) = http(addr, "POST", "/init", &envd, br#"{"envVars":{"A=B":"x"}}"#).await;
    assert_eq!(status, 400, "/init with '=' in a key: {answer}");

    let mut stream = envd.to_vec();
    stream[3] = ("Content-Type", "application/connect+json");
    let start = |envs: serde_json::Value| {
        common::connect_frame(serde_json::json!({
            "process": {"cmd": "/bin/bash", "args": ["-c", "exit 7"], "envs": envs},
            "stdin": false,
        }))
    };
    let path = "/process.Process/Start";
    let (_, answer) = http(
        addr,
        "POST",
        path,
        &stream,
        &start(serde_json::json!({"X": "a\u{0}b"})),
    )
    .await;
    assert!(
        answer.contains("invalid_argument") && answer.contains("NUL"),
        "a command's env var with a NUL: {answer}"
    );
    let (_, answer) = http(
        addr,
        "POST",
        path,
        &stream,
        &start(serde_json::json!({"": "x"})),
    )
    .await;
    assert!(
        answer.contains("invalid_argument"),
        "an empty key: {answer}"
    );

    let mut jupyter = envd.to_vec();
    jupyter[1] = ("E2b-Sandbox-Port", "49999");
    let (status, answer) = http(
        addr,
        "POST",
        "/execute",
        &jupyter,
        br#"{"code":"1","env_vars":{"A=B":"x"}}"#,
    )
    .await;
    assert_eq!(status, 400, "/execute with '=' in a key: {answer}");

    // Nothing was lost: commands still run with the sandbox's env.
    let (_, answer) = http(
        addr,
        "POST",
        path,
        &stream,
        &start(serde_json::json!({"OK": "1"})),
    )
    .await;
    assert!(
        answer.contains("\"exitCode\":7"),
        "the command ran: {answer}"
    );
    kill(addr, &id).await;
}
