//! HTTPS on the listener (issue 14): with `tls_cert`/`tls_key` set, the API and the sandbox
//! proxy are served over TLS with the operator's certificate; plain HTTP to the port gets a
//! clear 400; a connection that never finishes its handshake is closed by the first-request
//! timeout. Driven by reqwest with the CA and, where a venv with it exists, by the real E2B
//! Python SDK (create, run a command, kill). Run as root (under sbx-locked).

mod common;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KEY: &str = "e2b_000000000000000000000000000000000000a77b";
const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// A fresh CA and a server certificate for 127.0.0.1 and localhost, written to `dir` as
/// ca.pem, cert.pem and key.pem.
fn make_certs(dir: &Path) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "SoulBox test CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let mut leaf =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "SoulBox test server");
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_cert = leaf.signed_by(&leaf_key, &ca_cert, &ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), leaf_cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), leaf_key.serialize_pem()).unwrap();
}

/// The HTTPS server of this test binary: (address, directory of ca.pem).
async fn server() -> (SocketAddr, PathBuf) {
    static S: tokio::sync::OnceCell<(SocketAddr, PathBuf)> = tokio::sync::OnceCell::const_new();
    S.get_or_init(|| async {
        let backend = common::backend();
        let dir = tempfile::tempdir().unwrap().keep();
        make_certs(&dir);
        let store = soulbox_server::store::Store::open(&dir).await.unwrap();
        let team = store.default_team().await.unwrap();
        store.add_key(&team, KEY, "test").await.unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let certs = dir.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                let l = soulbox_server::listen("127.0.0.1:0".parse().unwrap()).unwrap();
                let mut cfg = soulbox_server::ServerConfig::new(l.local_addr().unwrap());
                cfg.warm_pool = Default::default();
                cfg.first_request_timeout = FIRST_REQUEST_TIMEOUT;
                cfg.tls = Some(soulbox_server::TlsFiles {
                    cert: certs.join("cert.pem"),
                    key: certs.join("key.pem"),
                });
                tx.send(l.local_addr().unwrap()).unwrap();
                soulbox_server::serve_on(l, cfg, store, backend)
                    .await
                    .unwrap();
            });
        });
        (rx.recv().unwrap(), dir)
    })
    .await
    .clone()
}

fn client(ca: &Path) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca.join("ca.pem")).unwrap()).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_api_is_served_over_https_with_the_operators_certificate() {
    let (addr, dir) = server().await;
    let url = format!("https://{addr}");
    let c = client(&dir);
    let r = c
        .post(format!("{url}/sandboxes"))
        .header("X-API-KEY", KEY)
        .json(&json!({"templateID": "tiny", "timeout": 60}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    let id = v["sandboxID"].as_str().unwrap();
    // The data plane (envd, through the proxy) over the same TLS listener.
    let r = c
        .get(format!("{url}/health"))
        .header("E2b-Sandbox-Id", id)
        .header("E2b-Sandbox-Port", "49983")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "envd health: {}", r.status());
    let r = c
        .delete(format!("{url}/sandboxes/{id}"))
        .header("X-API-KEY", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);

    // A client that does not trust the CA is refused by its own verification: this is TLS
    // with this certificate, not plain HTTP.
    let e = reqwest::Client::new()
        .get(format!("{url}/health"))
        .send()
        .await
        .unwrap_err();
    assert!(
        format!("{e:?}").to_lowercase().contains("certificate"),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_http_to_the_https_port_gets_a_clear_answer() {
    let (addr, _) = server().await;
    let (status, body) = common::http(addr, "GET", "/health", &[], b"").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("https://"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_that_never_finishes_its_handshake_is_closed_in_time() {
    let (addr, _) = server().await;
    // One that sends nothing, one that stops inside its TLS record header.
    for opening in [&[][..], &[0x16, 0x03, 0x01][..]] {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(opening).await.unwrap();
        let start = Instant::now();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
            .await
            .expect("the server closes the connection")
            .unwrap_or(0);
        assert_eq!(n, 0);
        let took = start.elapsed();
        assert!(
            took >= FIRST_REQUEST_TIMEOUT - Duration::from_millis(200)
                && took < Duration::from_secs(5),
            "{opening:?}: closed after {took:?}"
        );
    }
}

/// The Python SDK's interpreter: `SOULBOX_E2B_PYTHON`, else the compat venv of the workspace.
/// Given explicitly (as `scripts/test.sh` does), it must exist: the test never skips there.
fn e2b_python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SOULBOX_E2B_PYTHON").map(PathBuf::from) {
        assert!(
            p.exists(),
            "SOULBOX_E2B_PYTHON={} does not exist",
            p.display()
        );
        return Some(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../compat/.venv-2.63.0/bin/python");
    p.exists().then_some(p)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_e2b_python_sdk_works_over_https() {
    let Some(python) = e2b_python() else {
        eprintln!("SKIPPED: no E2B SDK venv (set SOULBOX_E2B_PYTHON to its python)");
        return;
    };
    let (addr, dir) = server().await;
    let url = format!("https://{addr}");
    let script = r#"
from e2b import Sandbox
s = Sandbox.create("tiny", timeout=60)
r = s.commands.run("echo over-tls")
print(r.stdout.strip())
s.kill()
"#;
    let out = tokio::process::Command::new(python)
        .args(["-c", script])
        .env("E2B_API_URL", &url)
        .env("E2B_SANDBOX_URL", &url)
        .env("E2B_API_KEY", KEY)
        .env("SSL_CERT_FILE", dir.join("ca.pem"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("E2B_DEBUG")
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout.trim(), "over-tls", "{stderr}");
}
