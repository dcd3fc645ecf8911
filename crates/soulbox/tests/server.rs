//! `soulbox serve` under bad input and load: clear answers, and the server stays healthy.

mod common;

use common::http;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KEY: &str = "e2b_00000000000000000000000000000000000000aa";
const OTHER_KEY: &str = "e2b_00000000000000000000000000000000000000bb";

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
                cfg.max_body = 64 << 10;
                cfg.header_read_timeout = Duration::from_secs(1);
            })
        })
        .await
}

fn json(body: &str) -> serde_json::Value {
    // Chunked bodies: take the JSON object or array inside.
    let start = body.find(['{', '[']).unwrap_or(0);
    let end = body.rfind(['}', ']']).map(|e| e + 1).unwrap_or(body.len());
    serde_json::from_str(&body[start..end]).unwrap_or(serde_json::Value::Null)
}

async fn create(addr: SocketAddr) -> (String, String) {
    let (status, body) = http(
        addr,
        "POST",
        "/v2/sandboxes",
        &[("X-API-KEY", KEY), ("Content-Type", "application/json")],
        br#"{"templateID":"tiny","timeout":120}"#,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let v = json(&body);
    (
        v["sandboxID"].as_str().unwrap().to_string(),
        v["envdAccessToken"].as_str().unwrap().to_string(),
    )
}

/// Kills a sandbox of the test team through the API.
async fn kill(addr: SocketAddr, id: &str) {
    let path = format!("/sandboxes/{id}");
    let (status, body) = http(addr, "DELETE", &path, &[("X-API-KEY", KEY)], b"").await;
    assert_eq!(status, 204, "{body}");
}

/// A request as the other team.
async fn as_other(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    http(addr, method, path, &[("X-API-KEY", OTHER_KEY)], b"").await
}

#[tokio::test]
async fn bad_requests_get_e2b_errors() {
    let addr = server().await;
    let key = [("X-API-KEY", KEY)];
    let (status, body) = http(addr, "POST", "/v2/sandboxes", &key, b"{not json").await;
    assert_eq!(status, 400);
    assert_eq!(json(&body)["code"], 400, "{body}");
    let (status, body) = http(addr, "POST", "/v2/sandboxes", &key, br#"{"timeout": 10}"#).await;
    assert_eq!(
        (status, json(&body)["code"].as_i64()),
        (400, Some(400)),
        "templateID missing: {body}"
    );
    let (status, body) = http(addr, "POST", "/v2/sandboxes", &key, &vec![b' '; 100 << 10]).await;
    assert_eq!(
        (status, json(&body)["code"].as_i64()),
        (413, Some(413)),
        "{body}"
    );
    let (status, body) = http(addr, "GET", "/no/such/route", &key, b"").await;
    assert_eq!((status, json(&body)["code"].as_i64()), (404, Some(404)));
    let (status, _) = http(addr, "GET", "/sandboxes/nosuchsandbox0000000", &key, b"").await;
    assert_eq!(status, 404);
    let (status, body) = http(
        addr,
        "GET",
        "/v2/sandboxes",
        &[("X-API-KEY", "e2b_wrong")],
        b"",
    )
    .await;
    assert_eq!((status, json(&body)["code"].as_i64()), (401, Some(401)));
    let (status, _) = http(addr, "GET", "/v2/sandboxes", &[], b"").await;
    assert_eq!(status, 401);
    // The data plane: unknown sandbox → E2B's 502.
    let (status, body) = http(
        addr,
        "GET",
        "/health",
        &[
            ("E2b-Sandbox-Id", "nosuchsandbox0000000"),
            ("E2b-Sandbox-Port", "49983"),
        ],
        b"",
    )
    .await;
    assert_eq!(status, 502);
    assert!(body.contains("was not found"), "{body}");
    let (status, _) = http(addr, "GET", "/health", &[("E2b-Sandbox-Id", "x")], b"").await;
    assert_eq!(status, 400, "a missing E2b-Sandbox-Port header");
}

#[tokio::test]
async fn teams_do_not_see_each_other() {
    let addr = server().await;
    let (id, _) = create(addr).await;
    let path = format!("/sandboxes/{id}");
    assert_eq!(as_other(addr, "GET", &path).await.0, 404);
    assert_eq!(as_other(addr, "DELETE", &path).await.0, 404);
    let (_, body) = as_other(addr, "GET", "/v2/sandboxes").await;
    assert!(!body.contains(&id));
    kill(addr, &id).await;
}

#[tokio::test]
async fn the_envd_token_is_enforced_through_the_proxy() {
    let addr = server().await;
    let (id, token) = create(addr).await;
    let route = [
        ("E2b-Sandbox-Id", id.as_str()),
        ("E2b-Sandbox-Port", "49983"),
        ("Content-Type", "application/json"),
    ];
    let (status, _) = http(addr, "POST", "/process.Process/List", &route, b"{}").await;
    assert_eq!(status, 401, "no X-Access-Token");
    let mut with_token = route.to_vec();
    with_token.push(("X-Access-Token", token.as_str()));
    let (status, _) = http(addr, "POST", "/process.Process/List", &with_token, b"{}").await;
    assert_eq!(status, 200);
    let mut wrong = route.to_vec();
    wrong.push(("X-Access-Token", "not-the-token"));
    let (status, _) = http(addr, "POST", "/process.Process/List", &wrong, b"{}").await;
    assert_eq!(status, 401);
    // /health needs no token (the SDK's is_running); /files needs a token or a signature.
    let (status, _) = http(addr, "GET", "/health", &route, b"").await;
    assert_eq!(status, 204);
    let (status, _) = http(addr, "GET", "/files?path=/etc/hostname", &route, b"").await;
    assert_eq!(status, 401);
    kill(addr, &id).await;
}

#[tokio::test]
async fn pause_resume_and_their_conflicts() {
    let addr = server().await;
    let (id, _) = create(addr).await;
    let key = [("X-API-KEY", KEY)];
    let (status, _) = http(
        addr,
        "POST",
        &format!("/sandboxes/{id}/resume"),
        &key,
        b"{}",
    )
    .await;
    assert_eq!(status, 409, "resuming a running sandbox");
    let (status, _) = http(addr, "POST", &format!("/sandboxes/{id}/pause"), &key, b"{}").await;
    assert_eq!(status, 204);
    let (status, _) = http(addr, "POST", &format!("/sandboxes/{id}/pause"), &key, b"{}").await;
    assert_eq!(status, 409, "pausing a paused sandbox");
    let (_, body) = http(addr, "GET", &format!("/sandboxes/{id}"), &key, b"").await;
    assert_eq!(json(&body)["state"], "paused");
    let (_, body) = http(addr, "GET", "/v2/sandboxes?state=paused", &key, b"").await;
    assert!(body.contains(&id), "{body}");
    let (status, body) = http(
        addr,
        "POST",
        &format!("/sandboxes/{id}/resume"),
        &key,
        br#"{"timeout": 60}"#,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(json(&body)["sandboxID"], id.as_str());
    let (_, body) = http(addr, "GET", &format!("/sandboxes/{id}"), &key, b"").await;
    assert_eq!(json(&body)["state"], "running");
    // Bad input: a body that is not JSON, an unknown sandbox, verify of a running one.
    let path = format!("/sandboxes/{id}/pause");
    let (status, _) = http(addr, "POST", &path, &key, b"{memory").await;
    assert_eq!(status, 400);
    for (method, path) in [
        ("POST", "/sandboxes/nosuchsandbox0000000/pause"),
        ("POST", "/sandboxes/nosuchsandbox0000000/resume"),
        ("POST", "/sandboxes/nosuchsandbox0000000/connect"),
        ("GET", "/sandboxes/nosuchsandbox0000000/verify"),
    ] {
        let (status, body) = http(addr, method, path, &key, b"{}").await;
        assert_eq!(status, 404, "{method} {path}: {body}");
    }
    let (status, body) = http(addr, "GET", &format!("/sandboxes/{id}/verify"), &key, b"").await;
    assert_eq!(status, 400, "{body}");
    kill(addr, &id).await;
}

/// Issue 12 item 6: no 24-hour cap unless the operator sets one; a negative timeout is refused.
#[tokio::test]
async fn timeouts_are_not_capped_at_a_day() {
    let addr = server().await;
    let key = [("X-API-KEY", KEY), ("Content-Type", "application/json")];
    let month = 30 * 24 * 3600;
    let body = format!(r#"{{"templateID":"tiny","timeout":{month}}}"#);
    let (status, body) = http(addr, "POST", "/v2/sandboxes", &key, body.as_bytes()).await;
    assert_eq!(status, 201, "{body}");
    let v = json(&body);
    let id = v["sandboxID"].as_str().unwrap().to_string();
    let (_, body) = http(addr, "GET", &format!("/sandboxes/{id}"), &key, b"").await;
    let end = chrono::DateTime::parse_from_rfc3339(json(&body)["endAt"].as_str().unwrap()).unwrap();
    let left = end.timestamp() - chrono::Utc::now().timestamp();
    assert!((month - 60..=month).contains(&left), "{left} s left");
    let path = format!("/sandboxes/{id}/timeout");
    let (status, _) = http(addr, "POST", &path, &key, br#"{"timeout": 31536000}"#).await;
    assert_eq!(status, 204, "a year");
    let (status, _) = http(addr, "POST", &path, &key, br#"{"timeout": -1}"#).await;
    assert_eq!(status, 400);
    kill(addr, &id).await;
}

#[tokio::test]
async fn idle_connections_are_dropped() {
    let addr = server().await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 64];
    // Sends nothing: the server closes it after the header timeout (1 s here).
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("server closed the idle connection");
    // Closed, with nothing sent: end of stream (or a reset, if the close raced our read).
    assert!(
        matches!(&n, Ok(0))
            || matches!(&n, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "idle connection not closed: {n:?} {:?}",
        String::from_utf8_lossy(&buf)
    );
    let (status, _) = http(addr, "GET", "/health", &[], b"").await;
    assert_eq!(status, 204);
}

fn start_frame(cmd: &str) -> Vec<u8> {
    common::connect_frame(
        serde_json::json!({"process": {"cmd": "/bin/bash", "args": ["-c", cmd]}, "stdin": false}),
    )
}

/// Opens a Start stream through the proxy and reads up to the start event.
async fn open_stream(addr: SocketAddr, id: &str, token: &str, cmd: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let body = start_frame(cmd);
    let head = format!("POST /process.Process/Start HTTP/1.1\r\nHost: 127.0.0.1\r\nE2b-Sandbox-Id: {id}\r\nE2b-Sandbox-Port: 49983\r\nX-Access-Token: {token}\r\nContent-Type: application/connect+json\r\nContent-Length: {}\r\n\r\n", body.len());
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&body).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains("\"start\"") {
        let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf))
            .await
            .expect("start event in time")
            .unwrap();
        assert!(
            n > 0,
            "stream closed early: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    s
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_leaves_the_process_running() {
    let addr = server().await;
    let (id, token) = create(addr).await;
    let s = open_stream(addr, &id, &token, "sleep 60").await;
    drop(s);
    let list = http(
        addr,
        "POST",
        "/process.Process/List",
        &[
            ("E2b-Sandbox-Id", &id),
            ("E2b-Sandbox-Port", "49983"),
            ("X-Access-Token", &token),
            ("Content-Type", "application/json"),
        ],
        b"{}",
    )
    .await;
    assert!(list.1.contains("sleep 60"), "{list:?}");
    kill(addr, &id).await;
}

#[tokio::test]
async fn a_thousand_open_streams() {
    let addr = server().await;
    let mut sandboxes = vec![];
    for _ in 0..10 {
        sandboxes.push(create(addr).await);
    }
    let sandboxes = Arc::new(sandboxes);
    let n: usize = std::env::var("SOULBOX_TEST_STREAMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let started = std::time::Instant::now();
    let mut tasks = vec![];
    for i in 0..n {
        let sbs = Arc::clone(&sandboxes);
        tasks.push(tokio::spawn(async move {
            let (id, token) = &sbs[i % sbs.len()];
            open_stream(addr, id, token, "sleep 120").await
        }));
    }
    let mut streams = vec![];
    for t in tasks {
        streams.push(t.await.unwrap());
    }
    assert_eq!(streams.len(), n);
    eprintln!("{n} streams open after {:?}", started.elapsed());
    // The server still answers, and a sandbox still runs commands.
    let (status, _) = http(addr, "GET", "/health", &[], b"").await;
    assert_eq!(status, 204);
    let (id, token) = &sandboxes[0];
    let mut s = open_stream(addr, id, token, "echo still-serving").await;
    // The connection stays open after the stream's end, so read until the output is there:
    // "still-serving\n" in base64, as Connect's JSON carries stdout.
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !String::from_utf8_lossy(&out).contains("c3RpbGwtc2VydmluZwo=") {
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .expect("the command's output in time")
            .unwrap();
        assert!(n > 0, "stream closed: {}", String::from_utf8_lossy(&out));
        out.extend_from_slice(&buf[..n]);
    }
    drop(streams);
    for (id, _) in sandboxes.iter() {
        kill(addr, id).await;
    }
}

/// Issue 12 item 5: a file upload in flight when a pause starts is finished first (the file is
/// whole after the resume); an upload that arrives while the pause runs is refused.
#[tokio::test]
async fn a_pause_waits_for_uploads_in_flight_and_refuses_new_ones() {
    let addr = server().await;
    let (id, token) = create(addr).await;
    let total: usize = 4 << 20;
    let mut up = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /files?path=/home/user/big HTTP/1.1\r\nHost: x\r\nE2b-Sandbox-Id: {id}\r\n\
         E2b-Sandbox-Port: 49983\r\nX-Access-Token: {token}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {total}\r\n\r\n"
    );
    up.write_all(head.as_bytes()).await.unwrap();
    up.write_all(&vec![b'a'; total / 2]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let path = format!("/sandboxes/{id}/pause");
    let pause =
        tokio::spawn(async move { http(addr, "POST", &path, &[("X-API-KEY", KEY)], b"{}").await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!pause.is_finished(), "the pause waits for the upload");
    let envd = [
        ("E2b-Sandbox-Id", id.as_str()),
        ("E2b-Sandbox-Port", "49983"),
        ("X-Access-Token", token.as_str()),
        ("Content-Type", "application/octet-stream"),
    ];
    let (status, body) = http(addr, "POST", "/files?path=/home/user/late", &envd, b"late").await;
    assert_eq!(status, 409, "an upload during the pause: {body}");
    up.write_all(&vec![b'a'; total - total / 2]).await.unwrap();
    let mut answer = vec![0u8; 1024];
    let n = up.read(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let (status, body) = pause.await.unwrap();
    assert_eq!(status, 204, "{body}");
    let key = [("X-API-KEY", KEY)];
    let (status, body) = http(
        addr,
        "POST",
        &format!("/sandboxes/{id}/connect"),
        &key,
        b"{}",
    )
    .await;
    assert_eq!(status, 201, "resumed: {body}");
    let (status, body) = http(addr, "GET", "/files?path=/home/user/big", &envd[..3], b"").await;
    assert_eq!((status, body.len()), (200, total), "the whole file");
    kill(addr, &id).await;
}
