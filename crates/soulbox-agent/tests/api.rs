//! Every agent method through its socket, including bad input. The agent runs on the host
//! here (as root, with a token); the sandbox tests in `crates/soulbox/tests` run it as PID 1.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use serde_json::{json, Value};
use soulbox_protocol::connect;
use soulbox_protocol::signature::{sign, Operation};
use soulbox_runtime::agent_client::{AgentClient, ClientError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const TOKEN: &str = "secret-token";

struct Agent {
    child: Child,
    socket: PathBuf,
    dir: tempfile::TempDir,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn agent() -> Agent {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agent.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_soulbox-agent"))
        .args(["--socket", socket.to_str().unwrap(), "--init-fd", "0"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let init = json!({"envVars": {"GLOBAL": "g"}, "accessToken": TOKEN});
    child
        .stdin
        .take()
        .unwrap()
        .write_all(init.to_string().as_bytes())
        .unwrap();
    AgentClient::wait_ready(&socket, Some(TOKEN.into()), Duration::from_secs(10))
        .await
        .unwrap();
    Agent { child, socket, dir }
}

impl Agent {
    async fn client(&self) -> AgentClient {
        AgentClient::connect(&self.socket, Some(TOKEN.into()))
            .await
            .unwrap()
    }

    /// A raw request, for the cases the client does not build (bad input, streams).
    async fn raw(&self, req: Request<Full<Bytes>>) -> (u16, hyper::HeaderMap, Bytes) {
        let stream = tokio::net::UnixStream::connect(&self.socket).await.unwrap();
        let (mut tx, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let resp = tx.send_request(req).await.unwrap();
        let (parts, body) = resp.into_parts();
        (
            parts.status.as_u16(),
            parts.headers,
            body.collect().await.unwrap().to_bytes(),
        )
    }

    /// `method uri` with these headers and body; returns (status, body).
    async fn send(
        &self,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> (u16, Bytes) {
        let mut r = req(method, uri);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let (status, _, body) = self.raw(r.body(Full::new(body.into())).unwrap()).await;
        (status, body)
    }

    /// Opens a streaming call and returns its live body.
    async fn open_stream(&self, method: &str, msg: &Value) -> hyper::body::Incoming {
        let stream = tokio::net::UnixStream::connect(&self.socket).await.unwrap();
        let (mut tx, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let r = req("POST", method)
            .header("x-access-token", TOKEN)
            .header("content-type", "application/connect+json")
            .body(Full::new(connect::encode_message(msg)))
            .unwrap();
        tx.send_request(r).await.unwrap().into_body()
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }
}

const TOKEN_HEADER: (&str, &str) = ("x-access-token", TOKEN);
const OCTETS: (&str, &str) = ("content-type", "application/octet-stream");

fn req(method: &str, uri: &str) -> hyper::http::request::Builder {
    Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "agent")
}

fn code(e: ClientError) -> String {
    match e {
        ClientError::Rpc(e) => serde_json::to_value(e.code)
            .unwrap()
            .as_str()
            .unwrap()
            .to_string(),
        other => panic!("not a Connect error: {other}"),
    }
}

fn start(cmd: &str, extra: Value) -> Value {
    let mut v = json!({"process": {"cmd": "/bin/bash", "args": ["-c", cmd]}, "stdin": false});
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    v
}

/// The pid of the first process `List` shows, polled until it shows one (or the test fails).
async fn first_listed_pid(c: &mut AgentClient) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let l = c
            .unary("/process.Process/List", &json!({}), None)
            .await
            .unwrap();
        if let Some(p) = l["processes"].as_array().unwrap().first() {
            return p["pid"].as_u64().unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no process listed within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Reads the next envelopes of a live stream until `want` is satisfied or time runs out.
async fn read_stream_until(
    body: &mut hyper::body::Incoming,
    d: &mut connect::Decoder,
    out: &mut Vec<Value>,
    want: impl Fn(&[Value]) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !want(out) {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .expect("stream produced in time");
        let Some(Ok(frame)) = frame else { return };
        if let Some(data) = frame.data_ref() {
            d.push(data);
            while let Some(env) = d.next_envelope().unwrap() {
                out.push(serde_json::from_slice(&env.payload).unwrap());
            }
        }
    }
}

#[tokio::test]
async fn start_streams_output_and_exit() {
    let a = agent().await;
    let mut c = a.client().await;
    let out = c
        .sh(
            "echo out; echo err >&2; echo $GLOBAL $LOCAL; pwd; exit 3",
            None,
        )
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\ng\n/root\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    assert_eq!((out.exit_code, out.status.as_str()), (3, "exit status 3"));
    // envs and cwd of the request.
    let msgs = c.stream("/process.Process/Start", &start("echo $LOCAL; pwd", json!({"process": {"cmd": "/bin/bash", "args": ["-c", "echo $LOCAL $GLOBAL; pwd"], "envs": {"LOCAL": "l", "GLOBAL": "override"}, "cwd": "/tmp"}})), None).await.unwrap();
    assert!(
        msgs[0]["event"]["start"]["pid"].as_u64().unwrap() > 0,
        "first event is start: {msgs:?}"
    );
    let data: String = msgs
        .iter()
        .filter_map(|m| m["event"]["data"]["stdout"].as_str())
        .map(|b| String::from_utf8(soulbox_protocol::json::b64::decode(b).unwrap()).unwrap())
        .collect();
    assert_eq!(data, "l override\n/tmp\n");
    assert_eq!(msgs.last().unwrap()["event"]["end"]["exitCode"], 0);
}

#[tokio::test]
async fn start_reports_bad_input_in_the_stream() {
    let a = agent().await;
    let mut c = a.client().await;
    let bad_cwd = json!({"process": {"cmd": "/bin/true", "cwd": "/no/such/dir"}});
    assert_eq!(
        code(
            c.stream("/process.Process/Start", &bad_cwd, None)
                .await
                .unwrap_err()
        ),
        "invalid_argument"
    );
    let bad_user = start("true", json!({}));
    assert_eq!(
        code(
            c.stream("/process.Process/Start", &bad_user, Some("no-such-user"))
                .await
                .unwrap_err()
        ),
        "unauthenticated"
    );
    let bad_cmd = json!({"process": {"cmd": "/no/such/binary"}});
    assert_eq!(
        code(
            c.stream("/process.Process/Start", &bad_cmd, None)
                .await
                .unwrap_err()
        ),
        "invalid_argument"
    );
    // A body that is not an envelope: HTTP 200 with the error in the end-of-stream frame.
    let (status, headers, body) = a
        .raw(
            req("POST", "/process.Process/Start")
                .header("x-access-token", TOKEN)
                .header("content-type", "application/connect+json")
                .body(Full::new(Bytes::from_static(b"{not an envelope")))
                .unwrap(),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/connect+json");
    assert_eq!(body[0], connect::FLAG_END_STREAM);
    assert!(String::from_utf8_lossy(&body[5..]).contains("invalid_argument"));
}

#[tokio::test]
async fn unary_calls_reject_malformed_json_and_unknown_methods() {
    let a = agent().await;
    let json_type = ("content-type", "application/json");
    let (status, body) = a
        .send(
            "POST",
            "/filesystem.Filesystem/Stat",
            &[TOKEN_HEADER, json_type],
            "{bad json",
        )
        .await;
    assert_eq!(status, 400);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["code"], "invalid_argument");
    let (status, body) = a
        .send("POST", "/process.Process/Nope", &[TOKEN_HEADER], "{}")
        .await;
    assert_eq!(status, 501, "{body:?}");
    // Wrong field types are invalid arguments too.
    let mut c = a.client().await;
    assert_eq!(
        code(
            c.unary(
                "/process.Process/SendSignal",
                &json!({"process": {"pid": "x"}}),
                None
            )
            .await
            .unwrap_err()
        ),
        "invalid_argument"
    );
    // And the agent is still serving.
    assert_eq!(c.get("/health").await.unwrap().status(), 204);
}

#[tokio::test]
async fn the_token_is_required() {
    let a = agent().await;
    for (uri, method) in [
        ("/process.Process/List", "POST"),
        ("/envs", "GET"),
        ("/files?path=/etc/hostname", "GET"),
        ("/contexts", "GET"),
        ("/contexts", "POST"),
        ("/contexts/x/restart", "POST"),
        ("/contexts/x", "DELETE"),
        ("/execute", "POST"),
    ] {
        let (status, body) = a
            .send(method, uri, &[("content-type", "application/json")], "{}")
            .await;
        assert_eq!(status, 401, "{uri}: {body:?}");
    }
    let (status, _) = a
        .send(
            "POST",
            "/process.Process/List",
            &[("x-access-token", "wrong")],
            "{}",
        )
        .await;
    assert_eq!(status, 401);
    let (status, _) = a.send("GET", "/health", &[], "").await;
    assert_eq!(status, 204, "health needs no token");
    // The traffic token (what the interpreter SDKs send on /contexts) opens the interpreter's
    // routes only.
    let traffic = soulbox_protocol::signature::traffic_token(TOKEN);
    let header = [("e2b-traffic-access-token", traffic.as_str())];
    let (status, body) = a.send("GET", "/contexts", &header, "").await;
    assert_eq!(status, 200, "{body:?}");
    let (status, _) = a.send("GET", "/envs", &header, "").await;
    assert_eq!(status, 401);
    let mut c = a.client().await;
    let envs: Value = serde_json::from_slice(c.get("/envs").await.unwrap().body()).unwrap();
    assert_eq!(envs, json!({"GLOBAL": "g"}));
}

#[tokio::test]
async fn background_process_list_connect_input_signal() {
    let a = agent().await;
    let mut c = a.client().await;
    // A background `cat` with stdin, tagged.
    let body = json!({"process": {"cmd": "/bin/cat"}, "stdin": true, "tag": "my-cat"});
    let mut resp = a.open_stream("/process.Process/Start", &body).await;
    let (mut d, mut events) = (connect::Decoder::new(1 << 20), vec![]);
    read_stream_until(&mut resp, &mut d, &mut events, |e| !e.is_empty()).await;
    let pid = events[0]["event"]["start"]["pid"].as_u64().unwrap();

    let list = c
        .unary("/process.Process/List", &json!({}), None)
        .await
        .unwrap();
    let p = list["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == pid)
        .expect("listed");
    assert_eq!(p["tag"], "my-cat");
    assert_eq!(p["config"]["cmd"], "/bin/cat");

    // Input goes to stdin and comes back on the Start stream and a second Connect stream.
    let (mut d2, mut ev2) = (connect::Decoder::new(1 << 20), vec![]);
    let mut cresp = a
        .open_stream(
            "/process.Process/Connect",
            &json!({"process": {"pid": pid}}),
        )
        .await;
    read_stream_until(&mut cresp, &mut d2, &mut ev2, |e| !e.is_empty()).await;
    assert_eq!(ev2[0]["event"]["start"]["pid"], pid);

    c.unary(
        "/process.Process/SendInput",
        &json!({"process": {"pid": pid}, "input": {"stdin": "aGVsbG8K"}}),
        None,
    )
    .await
    .unwrap();
    let has_hello = |e: &[Value]| e.iter().any(|m| m["event"]["data"]["stdout"] == "aGVsbG8K");
    read_stream_until(&mut resp, &mut d, &mut events, has_hello).await;
    read_stream_until(&mut cresp, &mut d2, &mut ev2, has_hello).await;
    assert!(has_hello(&events) && has_hello(&ev2));

    // Closing stdin ends `cat`; both streams see the end.
    c.unary(
        "/process.Process/CloseStdin",
        &json!({"process": {"pid": pid}}),
        None,
    )
    .await
    .unwrap();
    let ended = |e: &[Value]| e.iter().any(|m| m["event"].get("end").is_some());
    read_stream_until(&mut resp, &mut d, &mut events, ended).await;
    read_stream_until(&mut cresp, &mut d2, &mut ev2, ended).await;
    assert!(ended(&events) && ended(&ev2));

    // Unknown pids are not_found everywhere.
    for m in ["SendInput", "SendSignal", "CloseStdin", "Update"] {
        let e = c
            .unary(
                &format!("/process.Process/{m}"),
                &json!({"process": {"pid": 999999}, "signal": "SIGNAL_SIGKILL"}),
                None,
            )
            .await
            .unwrap_err();
        assert_eq!(code(e), "not_found", "{m}");
    }
    assert_eq!(
        code(
            c.stream(
                "/process.Process/Connect",
                &json!({"process": {"pid": 999999}}),
                None
            )
            .await
            .unwrap_err()
        ),
        "not_found"
    );
}

#[tokio::test]
async fn signals_and_deadlines_kill() {
    let a = agent().await;
    let mut c = a.client().await;
    // Connect-Timeout-Ms bounds the process's life.
    let body = start("sleep 30", json!({}));
    let r = req("POST", "/process.Process/Start")
        .header("x-access-token", TOKEN)
        .header("connect-timeout-ms", "300")
        .header("content-type", "application/connect+json")
        .body(Full::new(connect::encode_message(&body)))
        .unwrap();
    let t = std::time::Instant::now();
    let (_, _, bytes) = a.raw(r).await;
    assert!(t.elapsed() < Duration::from_secs(10));
    let s = String::from_utf8_lossy(&bytes);
    assert!(s.contains("signal: killed"), "{s}");

    // SendSignal kills a background process group (the shell and its child).
    let mut bg = a.client().await;
    let h = tokio::spawn(async move {
        bg.stream(
            "/process.Process/Start",
            &start("sleep 30; echo never", json!({})),
            None,
        )
        .await
    });
    let pid = first_listed_pid(&mut c).await;
    c.unary(
        "/process.Process/SendSignal",
        &json!({"process": {"pid": pid}, "signal": "SIGNAL_SIGKILL"}),
        None,
    )
    .await
    .unwrap();
    let msgs = h.await.unwrap().unwrap();
    let end = &msgs.last().unwrap()["event"]["end"];
    assert_eq!(end["exitCode"], -1);
    assert_eq!(end["status"], "signal: killed");
}

#[tokio::test]
async fn pty_takes_input_and_resizes() {
    let a = agent().await;
    let body = json!({"process": {"cmd": "/bin/bash", "args": ["--norc", "-i"], "envs": {"TERM": "xterm", "PS1": "$ "}}, "pty": {"size": {"cols": 80, "rows": 24}}});
    let mut resp = a.open_stream("/process.Process/Start", &body).await;
    let (mut d, mut ev) = (connect::Decoder::new(1 << 20), vec![]);
    read_stream_until(&mut resp, &mut d, &mut ev, |e| !e.is_empty()).await;
    let pid = ev[0]["event"]["start"]["pid"].as_u64().unwrap();
    let pty_text = |e: &[Value]| -> String {
        e.iter()
            .filter_map(|m| m["event"]["data"]["pty"].as_str())
            .map(|b| {
                String::from_utf8_lossy(&soulbox_protocol::json::b64::decode(b).unwrap())
                    .into_owned()
            })
            .collect()
    };
    let mut c = a.client().await;
    c.unary(
        "/process.Process/Update",
        &json!({"process": {"pid": pid}, "pty": {"size": {"cols": 123, "rows": 45}}}),
        None,
    )
    .await
    .unwrap();
    let input = base64_encode(b"stty size; echo done-$((40+2))\n");
    c.unary(
        "/process.Process/SendInput",
        &json!({"process": {"pid": pid}, "input": {"pty": input}}),
        None,
    )
    .await
    .unwrap();
    read_stream_until(&mut resp, &mut d, &mut ev, |e| {
        pty_text(e).contains("done-42")
    })
    .await;
    let out = pty_text(&ev);
    assert!(out.contains("45 123"), "resize not seen: {out}");
    c.unary(
        "/process.Process/SendInput",
        &json!({"process": {"pid": pid}, "input": {"pty": base64_encode(b"exit\n")}}),
        None,
    )
    .await
    .unwrap();
    read_stream_until(&mut resp, &mut d, &mut ev, |e| {
        e.iter().any(|m| m["event"].get("end").is_some())
    })
    .await;
    assert_eq!(
        ev.iter()
            .find_map(|m| m["event"]["end"]["exitCode"].as_i64()),
        Some(0)
    );
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[tokio::test]
async fn stream_input_feeds_stdin() {
    let a = agent().await;
    let mut bg = a.client().await;
    let h = tokio::spawn(async move {
        bg.stream(
            "/process.Process/Start",
            &json!({"process": {"cmd": "/bin/cat"}, "stdin": true}),
            None,
        )
        .await
    });
    let mut c = a.client().await;
    let pid = first_listed_pid(&mut c).await;
    let mut body = Vec::new();
    for m in [
        json!({"start": {"process": {"pid": pid}}}),
        json!({"data": {"input": {"stdin": base64_encode(b"streamed\n")}}}),
        json!({"keepalive": {}}),
    ] {
        body.extend_from_slice(&connect::encode_message(&m));
    }
    body.extend_from_slice(&connect::encode_end(None));
    let (status, _, resp) = a
        .raw(
            req("POST", "/process.Process/StreamInput")
                .header("x-access-token", TOKEN)
                .header("content-type", "application/connect+json")
                .body(Full::new(Bytes::from(body)))
                .unwrap(),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(resp[resp.len() - 7], connect::FLAG_END_STREAM, "{resp:?}");
    c.unary(
        "/process.Process/CloseStdin",
        &json!({"process": {"pid": pid}}),
        None,
    )
    .await
    .unwrap();
    let msgs = h.await.unwrap().unwrap();
    assert!(
        msgs.iter()
            .any(|m| m["event"]["data"]["stdout"] == base64_encode(b"streamed\n")),
        "{msgs:?}"
    );
}

#[tokio::test]
async fn filesystem_methods() {
    let a = agent().await;
    let mut c = a.client().await;
    let dir = a.path("fs");
    let made = c
        .unary(
            "/filesystem.Filesystem/MakeDir",
            &json!({"path": format!("{dir}/a/b")}),
            None,
        )
        .await
        .unwrap();
    assert_eq!(made["entry"]["type"], "FILE_TYPE_DIRECTORY");
    assert_eq!(made["entry"]["permissions"], "drwxr-xr-x");
    assert_eq!(
        code(
            c.unary(
                "/filesystem.Filesystem/MakeDir",
                &json!({"path": format!("{dir}/a/b")}),
                None
            )
            .await
            .unwrap_err()
        ),
        "already_exists"
    );
    std::fs::write(format!("{dir}/a/b/f.txt"), "12345").unwrap();
    std::os::unix::fs::symlink("b/f.txt", format!("{dir}/a/link")).unwrap();
    assert_eq!(
        code(
            c.unary(
                "/filesystem.Filesystem/MakeDir",
                &json!({"path": format!("{dir}/a/b/f.txt")}),
                None
            )
            .await
            .unwrap_err()
        ),
        "invalid_argument"
    );

    let st = c
        .unary(
            "/filesystem.Filesystem/Stat",
            &json!({"path": format!("{dir}/a/b/f.txt")}),
            None,
        )
        .await
        .unwrap();
    assert_eq!(st["entry"]["size"], "5");
    assert_eq!(st["entry"]["name"], "f.txt");
    assert_eq!(st["entry"]["owner"], "root");
    let st = c
        .unary(
            "/filesystem.Filesystem/Stat",
            &json!({"path": format!("{dir}/a/link")}),
            None,
        )
        .await
        .unwrap();
    // As envd: a link reports its target's type and the resolved target path.
    assert_eq!(
        (
            st["entry"]["type"].as_str(),
            st["entry"]["symlinkTarget"].as_str()
        ),
        (
            Some("FILE_TYPE_FILE"),
            Some(format!("{dir}/a/b/f.txt").as_str())
        )
    );
    assert_eq!(
        code(
            c.unary(
                "/filesystem.Filesystem/Stat",
                &json!({"path": format!("{dir}/missing")}),
                None
            )
            .await
            .unwrap_err()
        ),
        "not_found"
    );

    let l1 = c
        .unary(
            "/filesystem.Filesystem/ListDir",
            &json!({"path": format!("{dir}/a"), "depth": 1}),
            None,
        )
        .await
        .unwrap();
    let names: Vec<_> = l1["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, vec!["b", "link"]);
    let l2 = c
        .unary(
            "/filesystem.Filesystem/ListDir",
            &json!({"path": format!("{dir}/a"), "depth": 2}),
            None,
        )
        .await
        .unwrap();
    assert_eq!(l2["entries"].as_array().unwrap().len(), 3);
    assert_eq!(
        code(
            c.unary(
                "/filesystem.Filesystem/ListDir",
                &json!({"path": format!("{dir}/a/b/f.txt")}),
                None
            )
            .await
            .unwrap_err()
        ),
        "invalid_argument"
    );
    assert_eq!(
        code(
            c.unary(
                "/filesystem.Filesystem/ListDir",
                &json!({"path": format!("{dir}/nope")}),
                None
            )
            .await
            .unwrap_err()
        ),
        "not_found"
    );

    let mv = c
        .unary(
            "/filesystem.Filesystem/Move",
            &json!({"source": format!("{dir}/a/b/f.txt"), "destination": format!("{dir}/c/g.txt")}),
            None,
        )
        .await
        .unwrap();
    assert_eq!(mv["entry"]["path"], format!("{dir}/c/g.txt"));
    assert_eq!(
        code(
            c.unary(
                "/filesystem.Filesystem/Move",
                &json!({"source": format!("{dir}/nope"), "destination": format!("{dir}/x")}),
                None
            )
            .await
            .unwrap_err()
        ),
        "not_found"
    );

    c.unary(
        "/filesystem.Filesystem/Remove",
        &json!({"path": format!("{dir}/a")}),
        None,
    )
    .await
    .unwrap();
    c.unary(
        "/filesystem.Filesystem/Remove",
        &json!({"path": format!("{dir}/never-existed")}),
        None,
    )
    .await
    .unwrap();
    assert!(!Path::new(&format!("{dir}/a")).exists());

    // Another user's identity applies: `nobody` cannot create files under a root-only dir.
    std::fs::create_dir(format!("{dir}/private")).unwrap();
    std::fs::set_permissions(
        format!("{dir}/private"),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let e = c
        .unary(
            "/filesystem.Filesystem/MakeDir",
            &json!({"path": format!("{dir}/private/x")}),
            Some("nobody"),
        )
        .await
        .unwrap_err();
    assert_eq!(code(e), "permission_denied");
}

#[tokio::test]
async fn watchers_polled_and_streamed() {
    let a = agent().await;
    let mut c = a.client().await;
    let dir = a.path("w");
    std::fs::create_dir(&dir).unwrap();
    let w = c
        .unary(
            "/filesystem.Filesystem/CreateWatcher",
            &json!({"path": dir, "recursive": true}),
            None,
        )
        .await
        .unwrap();
    let id = w["watcherId"].as_str().unwrap().to_string();
    std::fs::create_dir(format!("{dir}/sub")).unwrap();
    // Let the watcher add its watch on the new subdirectory.
    let mut events = vec![];
    for _ in 0..100 {
        let e = c
            .unary(
                "/filesystem.Filesystem/GetWatcherEvents",
                &json!({"watcherId": id}),
                None,
            )
            .await
            .unwrap();
        events.extend(e["events"].as_array().unwrap().clone());
        if !events.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    std::fs::write(format!("{dir}/sub/f"), "x").unwrap();
    for _ in 0..100 {
        let e = c
            .unary(
                "/filesystem.Filesystem/GetWatcherEvents",
                &json!({"watcherId": id}),
                None,
            )
            .await
            .unwrap();
        events.extend(e["events"].as_array().unwrap().clone());
        if events
            .iter()
            .any(|e| e["name"] == "sub/f" && e["type"] == "EVENT_TYPE_WRITE")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        events
            .iter()
            .any(|e| e["name"] == "sub" && e["type"] == "EVENT_TYPE_CREATE"),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["name"] == "sub/f" && e["type"] == "EVENT_TYPE_CREATE"),
        "{events:?}"
    );
    c.unary(
        "/filesystem.Filesystem/RemoveWatcher",
        &json!({"watcherId": id}),
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        code(
            c.unary(
                "/filesystem.Filesystem/GetWatcherEvents",
                &json!({"watcherId": id}),
                None
            )
            .await
            .unwrap_err()
        ),
        "not_found"
    );
    assert_eq!(
        code(
            c.unary(
                "/filesystem.Filesystem/CreateWatcher",
                &json!({"path": format!("{dir}/nope")}),
                None
            )
            .await
            .unwrap_err()
        ),
        "not_found"
    );

    // Streaming watch: start event, then the change, with its entry when asked.
    let mut body = a
        .open_stream(
            "/filesystem.Filesystem/WatchDir",
            &json!({"path": dir, "includeEntry": true}),
        )
        .await;
    let (mut d, mut ev) = (connect::Decoder::new(1 << 20), vec![]);
    read_stream_until(&mut body, &mut d, &mut ev, |e| !e.is_empty()).await;
    assert!(ev[0].get("start").is_some(), "{ev:?}");
    std::fs::write(format!("{dir}/streamed"), "y").unwrap();
    read_stream_until(&mut body, &mut d, &mut ev, |e| {
        e.iter().any(|m| m["filesystem"]["name"] == "streamed")
    })
    .await;
    let fe = ev
        .iter()
        .find(|m| m["filesystem"]["name"] == "streamed")
        .unwrap();
    assert_eq!(fe["filesystem"]["type"], "EVENT_TYPE_CREATE");
    assert_eq!(fe["filesystem"]["entry"]["name"], "streamed");
}

#[tokio::test]
async fn files_upload_download_and_signatures() {
    let a = agent().await;
    let dir = a.path("files");
    // Multipart with two files; the part filename is the destination path.
    let boundary = "XBOUNDARY";
    let body = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{dir}/one.txt\"\r\nContent-Type: text/plain\r\n\r\nfirst\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{dir}/deep/two.txt\"\r\n\r\nsecond\r\n--{boundary}--\r\n");
    let (status, _, resp) = a
        .raw(
            req("POST", "/files")
                .header("x-access-token", TOKEN)
                .header(
                    "content-type",
                    format!("multipart/form-data; boundary={boundary}"),
                )
                .header("x-metadata-kind", "note")
                .body(Full::new(Bytes::from(body)))
                .unwrap(),
        )
        .await;
    assert_eq!(status, 200, "{resp:?}");
    let v: Value = serde_json::from_slice(&resp).unwrap();
    assert_eq!(v[0]["path"], format!("{dir}/one.txt"));
    assert_eq!(v[1]["name"], "two.txt");
    assert_eq!(v[0]["metadata"]["kind"], "note");
    assert_eq!(
        std::fs::read_to_string(format!("{dir}/deep/two.txt")).unwrap(),
        "second"
    );

    // octet-stream, gzip-encoded.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"zipped content").unwrap();
    let (status, _) = a
        .send(
            "POST",
            &format!("/files?path={dir}/z.txt"),
            &[TOKEN_HEADER, OCTETS, ("content-encoding", "gzip")],
            gz.finish().unwrap(),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        std::fs::read_to_string(format!("{dir}/z.txt")).unwrap(),
        "zipped content"
    );
    let (status, _) = a.send("POST", "/files", &[TOKEN_HEADER, OCTETS], "x").await;
    assert_eq!(status, 400, "octet-stream needs a path");
    let text = ("content-type", "text/plain");
    let (status, _) = a
        .send(
            "POST",
            &format!("/files?path={dir}/q"),
            &[TOKEN_HEADER, text],
            "x",
        )
        .await;
    assert_eq!(status, 400, "other content types are refused");
    let (status, _) = a
        .send(
            "POST",
            &format!("/files?path={dir}"),
            &[TOKEN_HEADER, OCTETS],
            "x",
        )
        .await;
    assert_eq!(status, 400, "uploading onto a directory");

    // Downloads: token, signature, expired signature, wrong signature.
    let p = format!("{dir}/one.txt");
    let (status, body) = a
        .send("GET", &format!("/files?path={p}"), &[TOKEN_HEADER], "")
        .await;
    assert_eq!((status, &body[..]), (200, &b"first"[..]));
    let enc = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let signed = |sig: &str| format!("/files?path={}&signature={}", enc(&p), enc(sig));
    let sig = sign(&p, Operation::Read, "", TOKEN, None);
    let (status, body) = a.send("GET", &signed(&sig), &[], "").await;
    assert_eq!((status, &body[..]), (200, &b"first"[..]));
    let past = chrono_now() - 10;
    let sig = sign(&p, Operation::Read, "", TOKEN, Some(past));
    let uri = format!("{}&signature_expiration={past}", signed(&sig));
    let (status, _) = a.send("GET", &uri, &[], "").await;
    assert_eq!(status, 401, "expired signature");
    let sig = sign(&p, Operation::Write, "", TOKEN, None);
    let (status, _) = a.send("GET", &signed(&sig), &[], "").await;
    assert_eq!(status, 401, "a write signature does not allow reads");
    let target = format!("{dir}/signed.txt");
    let wsig = sign(&target, Operation::Write, "", TOKEN, None);
    let uri = format!("/files?path={}&signature={}", enc(&target), enc(&wsig));
    let (status, _) = a.send("POST", &uri, &[OCTETS], "signed").await;
    assert_eq!(status, 200);
    let (status, _) = a
        .send(
            "GET",
            &format!("/files?path={dir}/nope"),
            &[TOKEN_HEADER],
            "",
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = a
        .send("GET", &format!("/files?path={dir}"), &[TOKEN_HEADER], "")
        .await;
    assert_eq!(status, 400);
    // Still healthy after all of it.
    let mut c = a.client().await;
    assert_eq!(c.get("/health").await.unwrap().status(), 204);
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A multipart upload with bytes after its closing boundary (an epilogue, as some clients
/// send): the upload succeeds and the connection stays usable, because the agent reads the body
/// to its end instead of closing under a client still writing.
#[tokio::test]
async fn multipart_epilogue_is_read_and_the_connection_kept() {
    let a = agent().await;
    let dir = a.path("epilogue");
    let boundary = "EPIBOUNDARY";
    let mut body = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{dir}/e.txt\"\r\n\r\nkept\r\n--{boundary}--\r\n").into_bytes();
    body.extend(std::iter::repeat_n(b'\n', 512 << 10));
    let stream = tokio::net::UnixStream::connect(&a.socket).await.unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let upload = req("POST", "/files")
        .header("x-access-token", TOKEN)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = tx
        .send_request(upload)
        .await
        .expect("the upload is answered");
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap();
    assert_eq!(
        std::fs::read_to_string(format!("{dir}/e.txt")).unwrap(),
        "kept"
    );
    tx.ready().await.expect("the connection is still open");
    let again = req("GET", "/health").body(Full::new(Bytes::new())).unwrap();
    assert_eq!(tx.send_request(again).await.unwrap().status(), 204);
}
