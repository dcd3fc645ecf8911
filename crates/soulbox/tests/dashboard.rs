//! The dashboard's boundaries, through a real `soulbox serve` with real sandboxes (root): no
//! page or call works without a session, every answer carries the strict CSP, changes from
//! another site are refused, the session follows its key (role, team, revocation), and the
//! routes inside a sandbox (terminal, files, processes) work for the key's own team only.

mod common;

use futures::{SinkExt, StreamExt};
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::{json, Value};
use soulbox_server::access::Role;
use soulbox_server::store::Store;
use std::net::SocketAddr;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const ADMIN: &str = "e2b_00000000000000000000000000000000000da001";
const MEMBER: &str = "e2b_00000000000000000000000000000000000da002";
const READER: &str = "e2b_00000000000000000000000000000000000da003";
const OTHER: &str = "e2b_00000000000000000000000000000000000da004";
const REVOKED: &str = "e2b_00000000000000000000000000000000000da005";

struct Server {
    addr: SocketAddr,
    store: Store,
}

async fn server() -> &'static Server {
    static S: tokio::sync::OnceCell<Server> = tokio::sync::OnceCell::const_new();
    S.get_or_init(|| async {
        let dir = tempfile::tempdir().unwrap().keep();
        let store = Store::open(&dir).await.unwrap();
        let team = store.default_team().await.unwrap();
        for (key, name, role) in [
            (ADMIN, "admin", Role::Admin),
            (MEMBER, "member", Role::Member),
            (READER, "reader", Role::ReadOnly),
            (REVOKED, "revoked", Role::Member),
        ] {
            store
                .add_key_with_role(&team, key, name, role)
                .await
                .unwrap();
        }
        let other = store.create_team("dash-other").await.unwrap();
        store.add_key(&other, OTHER, "other").await.unwrap();
        let addr = common::serve_store(store.clone(), |_| {});
        Server { addr, store }
    })
    .await
}

fn url(addr: SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// What the dashboard's own page sends with a change.
fn same_site(addr: SocketAddr, cookie: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        "origin",
        HeaderValue::from_str(&format!("http://{addr}")).unwrap(),
    );
    h.insert("x-soulbox-dashboard", HeaderValue::from_static("1"));
    h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
    if !cookie.is_empty() {
        h.insert("cookie", HeaderValue::from_str(cookie).unwrap());
    }
    h
}

/// The dashboard's sign-in request, as its page sends it.
async fn sign_in_answer(addr: SocketAddr, key: &str) -> reqwest::Response {
    http()
        .post(url(addr, "/dashboard/api/session"))
        .headers(same_site(addr, ""))
        .json(&json!({"apiKey": key}))
        .send()
        .await
        .unwrap()
}

/// Signs in; returns the `Cookie` header value of the session.
async fn sign_in(addr: SocketAddr, key: &str) -> String {
    let r = sign_in_answer(addr, key).await;
    assert_eq!(r.status(), 200, "sign-in with {key}");
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    set.split(';').next().unwrap().to_string()
}

async fn get(addr: SocketAddr, cookie: &str, path: &str) -> reqwest::Response {
    let mut req = http().get(url(addr, path));
    if !cookie.is_empty() {
        req = req.header("cookie", cookie);
    }
    req.send().await.unwrap()
}

/// The status of a GET with a session cookie (or none).
async fn status(addr: SocketAddr, cookie: &str, path: &str) -> u16 {
    get(addr, cookie, path).await.status().as_u16()
}

async fn create(addr: SocketAddr, key: &str) -> String {
    let r = http()
        .post(url(addr, "/v2/sandboxes"))
        .header("x-api-key", key)
        .json(&json!({"templateID": "tiny", "timeout": 300}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json::<Value>().await.unwrap()["sandboxID"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn running(addr: SocketAddr, id: &str) -> bool {
    let r = http()
        .get(url(addr, &format!("/sandboxes/{id}")))
        .header("x-api-key", ADMIN)
        .send()
        .await
        .unwrap();
    r.status() == 200 && r.json::<Value>().await.unwrap()["state"] == "running"
}

async fn kill(addr: SocketAddr, id: &str) {
    let _ = http()
        .delete(url(addr, &format!("/sandboxes/{id}")))
        .header("x-api-key", ADMIN)
        .send()
        .await;
}

fn assert_strict(h: &HeaderMap, what: &str) {
    let csp = h
        .get("content-security-policy")
        .unwrap_or_else(|| panic!("{what}: no CSP"))
        .to_str()
        .unwrap();
    for need in [
        "default-src 'none'",
        "script-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(need), "{what}: CSP {csp} lacks {need}");
    }
    assert!(
        !csp.contains("unsafe"),
        "{what}: CSP {csp} allows unsafe code"
    );
    assert_eq!(h["x-content-type-options"], "nosniff", "{what}");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_page_or_call_works_without_a_session_and_every_answer_is_strict() {
    let s = server().await;
    let a = s.addr;
    // The page loads (it is the sign-in form) and so do its files, each typed and strict.
    let page = get(a, "", "/dashboard/").await;
    assert_eq!(page.status(), 200);
    assert_strict(page.headers(), "/dashboard/");
    assert!(page
        .text()
        .await
        .unwrap()
        .contains("<script type=\"module\""));
    for name in soulbox_server::dashboard::assets::names() {
        if name == "index.html" {
            continue;
        }
        let r = get(a, "", &format!("/dashboard/assets/{name}")).await;
        assert_eq!(r.status(), 200, "{name}");
        assert_strict(r.headers(), &name);
        assert_ne!(
            r.headers()["content-type"],
            "application/octet-stream",
            "{name}"
        );
    }
    assert_eq!(status(a, "", "/dashboard").await, 308);
    // Text files go gzipped to browsers that take it, and revalidate to 304 by their ETag.
    let js = url(a, "/dashboard/assets/vendor/xterm.js");
    let r = http()
        .get(&js)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-encoding"], "gzip");
    let etag = r.headers()["etag"].clone();
    let zipped = r.bytes().await.unwrap().len();
    let plain = http().get(&js).send().await.unwrap().bytes().await.unwrap();
    assert!(zipped * 2 < plain.len(), "{zipped} of {}", plain.len());
    let r = http()
        .get(&js)
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(
        status(a, "", "/dashboard/assets/../../etc/passwd").await,
        404
    );
    // No data without a session: not the list, not inside a sandbox, not who one is.
    let id = create(a, ADMIN).await;
    for path in [
        "/dashboard/api/session".to_string(),
        "/dashboard/api/v2/sandboxes".into(),
        format!("/dashboard/api/sandboxes/{id}"),
        format!("/dashboard/api/sandboxes/{id}/processes"),
        "/dashboard/api/api-keys".into(),
        "/dashboard/api/audit".into(),
    ] {
        let r = get(a, "", &path).await;
        assert_eq!(r.status(), 401, "{path}");
        assert_strict(r.headers(), &path);
        // A made-up cookie is no session either.
        let r = get(a, "soulbox_session=0123abcd", &path).await;
        assert_eq!(r.status(), 401, "{path} with a made-up session");
    }
    // An API key is not a session: the dashboard's routes take only the cookie.
    let r = http()
        .get(url(a, "/dashboard/api/v2/sandboxes"))
        .header("x-api-key", ADMIN)
        .send()
        .await
        .unwrap();
    assert!(
        !r.status().is_success(),
        "an X-API-KEY opened the dashboard API"
    );
    // Nor does the terminal open.
    let mut req = format!("ws://{a}/dashboard/api/sandboxes/{id}/terminal")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("origin", format!("http://{a}").parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("a terminal without a session: {other:?}"),
    }
    // A bad key signs nobody in, and the answer never echoes a key.
    let r = sign_in_answer(a, "e2b_nope").await;
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("set-cookie").is_none());
    kill(a, &id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_session_cookie_is_strict_and_ends_with_its_key() {
    let s = server().await;
    let a = s.addr;
    let r = sign_in_answer(a, MEMBER).await;
    assert_eq!(r.status(), 200);
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    for need in ["HttpOnly", "SameSite=Strict", "Path=/dashboard"] {
        assert!(set.contains(need), "{set} lacks {need}");
    }
    assert!(
        !set.contains("Max-Age") && !set.contains("Expires"),
        "{set} outlives the browser session"
    );
    let body = r.text().await.unwrap();
    assert!(!body.contains(MEMBER), "the sign-in answer shows the key");
    let who: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(who["role"], "member");
    assert_eq!(who["keyName"], "member");
    let cookie = set.split(';').next().unwrap().to_string();
    assert!(!cookie.contains(MEMBER), "the cookie holds the key");
    assert_eq!(status(a, &cookie, "/dashboard/api/v2/sandboxes").await, 200);
    // Signing out ends it.
    let r = http()
        .delete(url(a, "/dashboard/api/session"))
        .headers(same_site(a, &cookie))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    assert_eq!(status(a, &cookie, "/dashboard/api/v2/sandboxes").await, 401);
    // Revoking the key ends its sessions at the next call.
    let cookie = sign_in(a, REVOKED).await;
    assert_eq!(status(a, &cookie, "/dashboard/api/session").await, 200);
    let team = s.store.default_team().await.unwrap();
    let keys = s.store.key_records(Some(&team)).await.unwrap();
    let id = keys
        .iter()
        .find(|k| k.name == "revoked")
        .unwrap()
        .id
        .clone();
    s.store.revoke_team_key(&team, &id).await.unwrap();
    assert_eq!(status(a, &cookie, "/dashboard/api/v2/sandboxes").await, 401);
    assert_eq!(status(a, &cookie, "/dashboard/api/session").await, 401);
    // Each sign-in is in the team's audit log with its key and address.
    let admin = sign_in(a, ADMIN).await;
    let log: Value = get(a, &admin, "/dashboard/api/audit?action=dashboard.sign_in")
        .await
        .json()
        .await
        .unwrap();
    let revoked_in = log
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["keyID"] == id.as_str())
        .unwrap_or_else(|| panic!("no sign-in of the revoked key in {log}"));
    assert_eq!(revoked_in["source"], "127.0.0.1");
    assert!(!log.to_string().contains(REVOKED), "a key in the log");
    // Two session cookies (one tossed in by another page): neither is used.
    let c1 = sign_in(a, MEMBER).await;
    let c2 = sign_in(a, ADMIN).await;
    let both = format!("{c1}; {c2}");
    assert_eq!(status(a, &both, "/dashboard/api/session").await, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_from_another_site_are_refused() {
    let s = server().await;
    let a = s.addr;
    let cookie = sign_in(a, ADMIN).await;
    let id = create(a, ADMIN).await;
    let path = url(a, &format!("/dashboard/api/sandboxes/{id}"));
    let cases: Vec<(&str, HeaderMap)> = vec![
        ("another origin", {
            let mut h = same_site(a, &cookie);
            h.insert("origin", HeaderValue::from_static("http://evil.example"));
            h
        }),
        ("no origin", {
            let mut h = same_site(a, &cookie);
            h.remove("origin");
            h
        }),
        ("no dashboard header (a form post)", {
            let mut h = same_site(a, &cookie);
            h.remove("x-soulbox-dashboard");
            h
        }),
        ("a cross-site fetch", {
            let mut h = same_site(a, &cookie);
            h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
            h
        }),
    ];
    for (what, headers) in cases {
        let r = http().delete(&path).headers(headers).send().await.unwrap();
        assert_eq!(r.status(), 403, "{what}");
        assert_strict(r.headers(), what);
        assert!(running(a, &id).await, "{what} killed the sandbox");
    }
    // A cross-site sign-in (login CSRF) is refused too.
    let mut h = same_site(a, "");
    h.insert("origin", HeaderValue::from_static("http://evil.example"));
    let r = http()
        .post(url(a, "/dashboard/api/session"))
        .headers(h)
        .json(&json!({"apiKey": ADMIN}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // The terminal's socket from another origin.
    let mut req = format!("ws://{a}/dashboard/api/sandboxes/{id}/terminal")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("origin", "http://evil.example".parse().unwrap());
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("a terminal from another origin: {other:?}"),
    }
    // From the dashboard's own page, the same kill works.
    let r = http()
        .delete(&path)
        .headers(same_site(a, &cookie))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(!running(a, &id).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_session_has_its_keys_role_and_team() {
    let s = server().await;
    let a = s.addr;
    let id = create(a, ADMIN).await;
    let reader = sign_in(a, READER).await;
    assert_eq!(status(a, &reader, "/dashboard/api/v2/sandboxes").await, 200);
    let info: Value = get(a, &reader, &format!("/dashboard/api/sandboxes/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        info.get("envdAccessToken").is_none(),
        "read-only got the envd token"
    );
    let r = http()
        .delete(url(a, &format!("/dashboard/api/sandboxes/{id}")))
        .headers(same_site(a, &reader))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("read-only"));
    assert!(running(a, &id).await);
    // Inside the sandbox is a member's: files, processes, terminal.
    for path in ["processes", "envd/files?path=/etc/hostname"] {
        let path = format!("/dashboard/api/sandboxes/{id}/{path}");
        assert_eq!(status(a, &reader, &path).await, 403, "{path}");
    }
    let r = http()
        .post(url(
            a,
            &format!("/dashboard/api/sandboxes/{id}/envd/filesystem.Filesystem/ListDir"),
        ))
        .headers(same_site(a, &reader))
        .json(&json!({"path": "/", "depth": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(matches!(terminal(a, &reader, &id).await, Err(403)));
    assert_eq!(status(a, &reader, "/dashboard/api/api-keys").await, 403);
    let member = sign_in(a, MEMBER).await;
    assert_eq!(status(a, &member, "/dashboard/api/audit").await, 403);
    // Another team sees none of it.
    let other = sign_in(a, OTHER).await;
    let list: Value = get(a, &other, "/dashboard/api/v2/sandboxes")
        .await
        .json()
        .await
        .unwrap();
    assert!(!list.to_string().contains(&id));
    for path in ["", "/processes", "/envd/files?path=/etc/hostname"] {
        let path = format!("/dashboard/api/sandboxes/{id}{path}");
        assert_eq!(status(a, &other, &path).await, 404, "{path}");
    }
    assert!(
        matches!(terminal(a, &other, &id).await, Err(404)),
        "another team's terminal"
    );
    kill(a, &id).await;
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a sandbox's terminal as the dashboard does; `Err(status)` when refused.
async fn terminal(a: SocketAddr, cookie: &str, id: &str) -> Result<Ws, u16> {
    let mut req = format!("ws://{a}/dashboard/api/sandboxes/{id}/terminal?cols=80&rows=24")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("origin", format!("http://{a}").parse().unwrap());
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("terminal: {e}"),
    }
}

/// Reads the terminal's output until it holds `want` (or panics after a while).
async fn read_until(ws: &mut Ws, seen: &mut String, want: &str) {
    let r = tokio::time::timeout(Duration::from_secs(30), async {
        while !seen.contains(want) {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) => seen.push_str(&String::from_utf8_lossy(&b)),
                Some(Ok(Message::Text(t))) => seen.push_str(&t),
                Some(Ok(_)) => {}
                other => panic!("the terminal ended: {other:?}; output so far: {seen}"),
            }
        }
    })
    .await;
    assert!(r.is_ok(), "no {want:?} in the terminal's output: {seen}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_terminal_runs_a_shell_with_utf8_and_resizes_and_its_shell_ends_with_it() {
    let s = server().await;
    let a = s.addr;
    let id = create(a, MEMBER).await;
    let cookie = sign_in(a, MEMBER).await;
    let mut ws = terminal(a, &cookie, &id).await.unwrap();
    let mut seen = String::new();
    ws.send(Message::Binary(
        "echo h''i-$((6*7)) ünï €\r".as_bytes().to_vec().into(),
    ))
    .await
    .unwrap();
    // The command's output (not its echo): the shell joined the quotes and did the sum.
    read_until(&mut ws, &mut seen, "hi-42 ünï €").await;
    ws.send(Message::Text(
        r#"{"type":"resize","cols":123,"rows":45}"#.into(),
    ))
    .await
    .unwrap();
    ws.send(Message::Binary(
        b"stty size; sleep 4242 &\r".to_vec().into(),
    ))
    .await
    .unwrap();
    read_until(&mut ws, &mut seen, "45 123").await;
    // Its processes, as the sandbox sees them: init is 1, the shell and its sleep are there
    // (read until the backgrounded sleep has exec'd: just forked, it is still "[bash]").
    let list = processes_until(a, &cookie, &id, |l| {
        l.iter().any(|p| p["cmd"] == "sleep 4242")
    })
    .await;
    let init = list.iter().find(|p| p["pid"] == 1).expect("pid 1");
    assert_eq!(init["ppid"], 0);
    assert_eq!(init["uid"], 0);
    let sleep = list
        .iter()
        .find(|p| p["cmd"] == "sleep 4242")
        .unwrap_or_else(|| panic!("no sleep in {list:?}"));
    assert!(sleep["pid"].as_i64().unwrap() > 1);
    assert!(
        list.iter().any(|p| p["pid"] == sleep["ppid"]),
        "the sleep's parent is not in the sandbox"
    );
    // `exit` ends the shell: the socket says so and closes.
    ws.send(Message::Binary(b"exit 3\r".to_vec().into()))
        .await
        .unwrap();
    read_until(&mut ws, &mut seen, r#""exitCode":3"#).await;
    // A terminal left open by a browser that goes away leaves no shell behind.
    let mut ws = terminal(a, &cookie, &id).await.unwrap();
    let mut seen = String::new();
    ws.send(Message::Binary(
        b"echo $$ > /tmp/shell.pid; echo sh-$((1+1))-ready\r"
            .to_vec()
            .into(),
    ))
    .await
    .unwrap();
    // (the sum, so that the echo of the typed line does not match)
    read_until(&mut ws, &mut seen, "sh-2-ready").await;
    drop(ws);
    let pid = file(a, &cookie, &id, "/tmp/shell.pid").await;
    let pid: i64 = String::from_utf8_lossy(&pid).trim().parse().unwrap();
    let left = processes_until(a, &cookie, &id, |l| !l.iter().any(|p| p["pid"] == pid)).await;
    let ended = !left.iter().any(|p| p["pid"] == pid);
    assert!(ended, "the shell {pid} of a closed terminal still runs");
    // The audit log has the terminal, with the key.
    let admin = sign_in(a, ADMIN).await;
    let log: Value = get(a, &admin, "/dashboard/api/audit?action=sandbox.terminal")
        .await
        .json()
        .await
        .unwrap();
    assert!(
        log.to_string().contains(&id),
        "no terminal in the audit log: {log}"
    );
    kill(a, &id).await;
}

/// The sandbox's processes once `done` holds of them (or as they are after 10 s).
async fn processes_until(
    a: SocketAddr,
    cookie: &str,
    id: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let path = format!("/dashboard/api/sandboxes/{id}/processes");
    let mut list = vec![];
    for _ in 0..100 {
        let v: Value = get(a, cookie, &path).await.json().await.unwrap();
        list = v["processes"].as_array().cloned().unwrap_or_default();
        if done(&list) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    list
}

async fn file(a: SocketAddr, cookie: &str, id: &str, path: &str) -> Vec<u8> {
    let r = get(
        a,
        cookie,
        &format!("/dashboard/api/sandboxes/{id}/envd/files?path={path}"),
    )
    .await;
    assert_eq!(r.status(), 200, "download {path}");
    r.bytes().await.unwrap().to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn files_go_up_and_down_and_a_download_is_never_a_page() {
    let s = server().await;
    let a = s.addr;
    let id = create(a, MEMBER).await;
    let cookie = sign_in(a, MEMBER).await;
    let base = format!("/dashboard/api/sandboxes/{id}/envd");
    // Upload (multipart, as the browser's file input sends it), bytes that are not text.
    // Larger than the control plane's body limit (1 MiB): uploads stream past it.
    let data: Vec<u8> = (0..=255u8).cycle().take(3_000_000).collect();
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(data.clone()).file_name("blob.bin"),
    );
    let r = http()
        .post(url(a, &format!("{base}/files?path=/tmp/up/blob.bin")))
        .headers(same_site(a, &cookie))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    // Listed, and back down byte for byte.
    let r = http()
        .post(url(a, &format!("{base}/filesystem.Filesystem/ListDir")))
        .headers(same_site(a, &cookie))
        .json(&json!({"path": "/tmp/up", "depth": 1}))
        .send()
        .await
        .unwrap();
    let list: Value = r.json().await.unwrap();
    assert_eq!(list["entries"][0]["name"], "blob.bin", "{list}");
    // int64 in Connect-JSON is a string.
    assert_eq!(list["entries"][0]["size"], "3000000");
    assert_eq!(file(a, &cookie, &id, "/tmp/up/blob.bin").await, data);
    // A file that is a web page comes down as a download, under a sandboxing policy.
    let page = b"<html><script>alert(document.cookie)</script></html>".to_vec();
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(page).file_name("x.html"),
    );
    let r = http()
        .post(url(a, &format!("{base}/files?path=/tmp/x.html")))
        .headers(same_site(a, &cookie))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = get(a, &cookie, &format!("{base}/files?path=/tmp/x.html")).await;
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    assert_eq!(r.headers()["content-disposition"], "attachment");
    assert!(r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .starts_with("sandbox"));
    // Only the file calls pass: not a process start, not an unknown path.
    for rpc in [
        "process.Process/Start",
        "process.Process/List",
        "../files",
        "envs",
    ] {
        let r = http()
            .post(url(a, &format!("{base}/{rpc}")))
            .headers(same_site(a, &cookie))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert!(
            matches!(r.status().as_u16(), 404 | 400),
            "{rpc}: {}",
            r.status()
        );
    }
    // A missing file is the agent's clear error, not a crash.
    let r = get(a, &cookie, &format!("{base}/files?path=/nope/none")).await;
    assert_eq!(r.status(), 404);
    // Every answer of the sandbox's, an error too, is under the sandboxing policy.
    assert!(r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .starts_with("sandbox"));
    // An upload is in the audit log; a listing is not.
    let admin = sign_in(a, ADMIN).await;
    let log: Value = get(a, &admin, "/dashboard/api/audit?action=sandbox.files")
        .await
        .json()
        .await
        .unwrap();
    let mine: Vec<&Value> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["target"].as_str().unwrap_or("").starts_with(&id))
        .collect();
    assert!(!mine.is_empty(), "no upload in the audit log: {log}");
    assert!(
        mine.iter()
            .all(|e| !e["target"].as_str().unwrap().contains("ListDir")),
        "a listing was logged: {log}"
    );
    kill(a, &id).await;
}
