//! Roles, quotas, rate limits and the audit log of `soulbox serve`, through its API: what each
//! role is refused, a burst of concurrent creates against a quota, 429s with `Retry-After`,
//! and an audit entry for each change (root: real sandboxes).

mod common;

use serde_json::Value;
use soulbox_server::access::quota::Quota;
use soulbox_server::access::Role;
use soulbox_server::store::Store;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ADMIN: &str = "e2b_0000000000000000000000000000000000000a01";
const MEMBER: &str = "e2b_0000000000000000000000000000000000000a02";
const READER: &str = "e2b_0000000000000000000000000000000000000a03";
/// Keys of teams of their own, one per test that changes its team's quota.
const BURST: &str = "e2b_0000000000000000000000000000000000000b01";
const RATED: &str = "e2b_0000000000000000000000000000000000000c01";
const NEIGHBOUR: &str = "e2b_0000000000000000000000000000000000000c02";

struct Server {
    addr: SocketAddr,
    store: Store,
    dir: std::path::PathBuf,
}

async fn server() -> &'static Server {
    static S: tokio::sync::OnceCell<Server> = tokio::sync::OnceCell::const_new();
    S.get_or_init(|| async {
        let backend = common::backend();
        let dir = tempfile::tempdir().unwrap().keep();
        let store = Store::open(&dir).await.unwrap();
        let team = store.default_team().await.unwrap();
        for (key, role) in [
            (ADMIN, Role::Admin),
            (MEMBER, Role::Member),
            (READER, Role::ReadOnly),
        ] {
            store
                .add_key_with_role(&team, key, role.as_str(), role)
                .await
                .unwrap();
        }
        for (name, key) in [("burst", BURST), ("rated", RATED), ("neighbour", NEIGHBOUR)] {
            let t = store.create_team(name).await.unwrap();
            store.add_key(&t, key, name).await.unwrap();
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let st = store.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                let l = soulbox_server::listen("127.0.0.1:0".parse().unwrap()).unwrap();
                let addr = l.local_addr().unwrap();
                tx.send(addr).unwrap();
                let cfg = soulbox_server::ServerConfig::new(addr);
                soulbox_server::serve_on(l, cfg, st, backend).await.unwrap();
            });
        });
        Server {
            addr: rx.recv().unwrap(),
            store,
            dir,
        }
    })
    .await
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

async fn call(addr: SocketAddr, key: &str, method: &str, path: &str, body: &str) -> Resp {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nX-API-KEY: {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect::<Vec<_>>();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    Resp {
        status,
        headers,
        body: if chunked { dechunk(body) } else { body.into() },
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

async fn create(addr: SocketAddr, key: &str) -> Resp {
    call(
        addr,
        key,
        "POST",
        "/v2/sandboxes",
        r#"{"templateID":"tiny","timeout":300}"#,
    )
    .await
}

fn id_of(r: &Resp) -> String {
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()["sandboxID"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn each_role_is_refused_what_it_may_not_do() {
    let s = server().await;
    let a = s.addr;
    let mine = id_of(&create(a, MEMBER).await);
    // Read-only: reads work, the envd token is withheld, every change is refused (403).
    let r = call(a, READER, "GET", "/v2/sandboxes", "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains(&mine));
    let r = call(a, READER, "GET", &format!("/sandboxes/{mine}"), "").await;
    assert_eq!(r.status, 200);
    assert!(
        r.json().get("envdAccessToken").is_none(),
        "a read-only key must not get the envd token: {}",
        r.body
    );
    let r = call(a, MEMBER, "GET", &format!("/sandboxes/{mine}"), "").await;
    assert!(r.json()["envdAccessToken"].is_string(), "{}", r.body);
    let body = r#"{"templateID":"tiny"}"#;
    let changes = [
        ("POST", "/v2/sandboxes".to_string(), body),
        ("POST", "/sandboxes".to_string(), body),
        ("DELETE", format!("/sandboxes/{mine}"), ""),
        (
            "POST",
            format!("/sandboxes/{mine}/connect"),
            r#"{"timeout":60}"#,
        ),
        (
            "POST",
            format!("/v2/sandboxes/{mine}/connect"),
            r#"{"timeout":60}"#,
        ),
        (
            "POST",
            format!("/sandboxes/{mine}/timeout"),
            r#"{"timeout":60}"#,
        ),
        ("POST", format!("/sandboxes/{mine}/refreshes"), ""),
        ("POST", format!("/sandboxes/{mine}/pause"), ""),
        ("POST", format!("/sandboxes/{mine}/resume"), ""),
        ("PUT", format!("/sandboxes/{mine}/network"), "{}"),
        ("POST", format!("/sandboxes/{mine}/snapshots"), "{}"),
        ("POST", format!("/sandboxes/{mine}/fork"), "{}"),
        ("POST", "/v3/templates".to_string(), r#"{"name":"x"}"#),
        ("POST", "/v2/templates/t/builds/b".to_string(), "{}"),
        ("PATCH", "/templates/t".to_string(), "{}"),
        ("DELETE", "/templates/t".to_string(), ""),
        ("GET", "/templates/t/files/abc".to_string(), ""),
        ("POST", "/templates/tags".to_string(), "{}"),
        ("DELETE", "/templates/tags".to_string(), "{}"),
        (
            "POST",
            "/secrets".to_string(),
            r#"{"name":"n","value":"v"}"#,
        ),
        ("POST", "/secrets/x".to_string(), "{}"),
        ("DELETE", "/secrets/x".to_string(), ""),
        ("POST", "/api-keys".to_string(), "{}"),
    ];
    for (m, p, b) in &changes {
        let r = call(a, READER, m, p, b).await;
        assert_eq!(r.status, 403, "read-only {m} {p}: {}", r.body);
        assert!(r.body.contains("read-only"), "{}", r.body);
    }
    // Still running: nothing above reached it.
    assert_eq!(
        call(a, READER, "GET", &format!("/sandboxes/{mine}"), "")
            .await
            .json()["state"],
        "running"
    );
    // Member: the team's keys and audit log are the admin's.
    for (m, p, b) in [
        ("GET", "/api-keys", ""),
        ("POST", "/api-keys", "{}"),
        ("DELETE", "/api-keys/x", ""),
        ("PATCH", "/api-keys/x", r#"{"role":"admin"}"#),
        ("GET", "/audit", ""),
    ] {
        let r = call(a, MEMBER, m, p, b).await;
        assert_eq!(r.status, 403, "member {m} {p}: {}", r.body);
        let r = call(a, READER, m, p, b).await;
        assert_eq!(r.status, 403, "read-only {m} {p}: {}", r.body);
    }
    // Every role reads its team.
    for key in [READER, MEMBER, ADMIN] {
        let r = call(a, key, "GET", "/team", "").await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(call(a, ADMIN, "GET", "/api-keys", "").await.status, 200);
    assert_eq!(
        call(a, MEMBER, "DELETE", &format!("/sandboxes/{mine}"), "")
            .await
            .status,
        204
    );
}

#[tokio::test]
async fn a_team_admin_manages_keys_and_a_revoked_key_stops_at_once() {
    let s = server().await;
    let a = s.addr;
    let r = call(
        a,
        ADMIN,
        "POST",
        "/api-keys",
        r#"{"name":"ci","role":"read-only"}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let new = r.json();
    let (key, id) = (
        new["key"].as_str().unwrap().to_string(),
        new["id"].as_str().unwrap().to_string(),
    );
    assert_eq!(new["role"], "read-only");
    // Listed without the key itself.
    let list = call(a, ADMIN, "GET", "/api-keys", "").await;
    assert!(list.body.contains(&id) && !list.body.contains(&key));
    assert_eq!(
        call(a, &key, "POST", "/v2/sandboxes", "{}").await.status,
        403
    );
    let r = call(
        a,
        ADMIN,
        "PATCH",
        &format!("/api-keys/{id}"),
        r#"{"role":"member"}"#,
    )
    .await;
    assert_eq!(r.status, 204, "{}", r.body);
    // Now a member: the same request gets past the gate (and fails on its body instead).
    assert_eq!(
        call(a, &key, "POST", "/v2/sandboxes", "{}").await.status,
        400
    );
    let r = call(
        a,
        ADMIN,
        "PATCH",
        &format!("/api-keys/{id}"),
        r#"{"role":"root"}"#,
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        call(a, ADMIN, "DELETE", &format!("/api-keys/{id}"), "")
            .await
            .status,
        204
    );
    assert_eq!(call(a, &key, "GET", "/v2/sandboxes", "").await.status, 401);
    // Another team's key is not this admin's to revoke.
    let theirs = s.store.key_records(None).await.unwrap();
    let other = theirs.iter().find(|k| k.name == "neighbour").unwrap();
    let r = call(a, ADMIN, "DELETE", &format!("/api-keys/{}", other.id), "").await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(call(a, NEIGHBOUR, "GET", "/team", "").await.status, 200);
}

#[tokio::test]
async fn a_burst_of_creates_stops_at_the_quota_with_429s() {
    let s = server().await;
    let a = s.addr;
    let team = s.store.find_team("burst").await.unwrap().unwrap();
    s.store
        .set_quota(
            &team,
            &Quota {
                max_sandboxes: Some(3),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let all = futures_join((0..8).map(|_| create(a, BURST))).await;
    let made: Vec<String> = all.iter().filter(|r| r.status == 201).map(id_of).collect();
    let refused: Vec<&Resp> = all.iter().filter(|r| r.status == 429).collect();
    assert_eq!(
        (made.len(), refused.len()),
        (3, 5),
        "{:?}",
        all.iter().map(|r| (r.status, &r.body)).collect::<Vec<_>>()
    );
    for r in &refused {
        assert_eq!(r.header("retry-after"), Some("10"), "{:?}", r.headers);
        assert_eq!(r.header("should-retry"), Some("false"));
        assert!(
            r.body.contains("quota of 3 running sandboxes"),
            "{}",
            r.body
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "refusals must not wait"
    );
    // The quota is read live: the team sees its use.
    let t = call(a, BURST, "GET", "/team", "").await.json();
    assert_eq!(t["usage"]["sandboxes"], 3, "{t}");
    assert_eq!(t["quota"]["maxSandboxes"], 3);
    // One ends: one more fits, and no more.
    let r = call(a, BURST, "DELETE", &format!("/sandboxes/{}", made[0]), "").await;
    assert_eq!(r.status, 204);
    let again = id_of(&create(a, BURST).await);
    assert_eq!(create(a, BURST).await.status, 429);
    // vCPUs: the tiny template's sandboxes have 2 each; three run, and 6 allows no fourth.
    let mut q = s.store.quota(&team).await.unwrap();
    q.max_sandboxes = None;
    q.max_vcpus = Some(6);
    s.store.set_quota(&team, &q).await.unwrap();
    let r = create(a, BURST).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.body.contains("vCPUs"), "{}", r.body);
    // A resume counts too: pause one, fill its place, and its resume is refused.
    let paused = &made[1];
    let r = call(a, BURST, "POST", &format!("/sandboxes/{paused}/pause"), "").await;
    assert_eq!(r.status, 204, "{}", r.body);
    let filler = id_of(&create(a, BURST).await);
    let r = call(a, BURST, "POST", &format!("/sandboxes/{paused}/resume"), "").await;
    assert_eq!(r.status, 429, "{}", r.body);
    for id in [&made[1], &made[2], &again, &filler] {
        call(a, BURST, "DELETE", &format!("/sandboxes/{id}"), "").await;
    }
}

async fn futures_join<F: std::future::Future<Output = Resp> + Send + 'static>(
    it: impl Iterator<Item = F>,
) -> Vec<Resp> {
    let handles: Vec<_> = it.map(tokio::spawn).collect();
    let mut out = vec![];
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn a_key_over_its_rate_gets_429_with_retry_after() {
    let s = server().await;
    let a = s.addr;
    let team = s.store.find_team("rated").await.unwrap().unwrap();
    s.store
        .set_quota(
            &team,
            &Quota {
                rate_per_second: Some(2.0),
                rate_burst: Some(4),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut statuses = vec![];
    let mut limited = None;
    for _ in 0..10 {
        let r = call(a, RATED, "GET", "/v2/sandboxes", "").await;
        statuses.push(r.status);
        if r.status == 429 && limited.is_none() {
            limited = Some(r);
        }
    }
    assert_eq!(&statuses[..4], &[200; 4], "{statuses:?}");
    assert!(statuses[4..].contains(&429), "{statuses:?}");
    let r = limited.unwrap();
    assert_eq!(r.header("retry-after"), Some("1"), "{:?}", r.headers);
    assert_eq!(r.header("should-retry"), Some("true"));
    assert!(r.body.contains("too many requests"), "{}", r.body);
    // Another team's key has its own budget.
    for _ in 0..10 {
        assert_eq!(
            call(a, NEIGHBOUR, "GET", "/v2/sandboxes", "").await.status,
            200
        );
    }
    // A second later there is room again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(call(a, RATED, "GET", "/v2/sandboxes", "").await.status, 200);
}

#[tokio::test]
async fn every_change_is_in_the_audit_log_and_no_key_is() {
    let s = server().await;
    let a = s.addr;
    let id = id_of(&create(a, ADMIN).await);
    let p = |tail: &str| format!("/sandboxes/{id}{tail}");
    let steps = [
        ("POST", p("/timeout"), r#"{"timeout":200}"#, 204),
        ("POST", p("/pause"), "", 204),
        ("POST", p("/resume"), r#"{"timeout":200}"#, 201),
        ("POST", p("/connect"), r#"{"timeout":200}"#, 200),
        ("DELETE", p(""), "", 204),
        ("DELETE", p(""), "", 404),
    ];
    for (m, path, b, want) in &steps {
        let r = call(a, ADMIN, m, path, b).await;
        assert_eq!(r.status, *want, "{m} {path}: {}", r.body);
    }
    assert_eq!(call(a, READER, "DELETE", &p(""), "").await.status, 403);
    let r = call(a, ADMIN, "POST", "/api-keys", r#"{"role":"member"}"#).await;
    let key_id = r.json()["id"].as_str().unwrap().to_string();
    let r = call(a, ADMIN, "GET", &format!("/audit?target={id}"), "").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let entries = r.json();
    let got: Vec<(String, String)> = entries
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_string(),
                e["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("sandbox.create", "ok"),
        ("sandbox.timeout", "ok"),
        ("sandbox.pause", "ok"),
        ("sandbox.resume", "ok"),
        ("sandbox.connect", "ok"),
        ("sandbox.kill", "ok"),
        ("sandbox.kill", "error"),
        ("sandbox.kill", "denied"),
    ]
    .iter()
    .map(|(a, o)| (a.to_string(), o.to_string()))
    .collect();
    assert_eq!(got, want, "{entries:#}");
    let admin_id = s
        .store
        .key_records(None)
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.name == "admin")
        .unwrap()
        .id;
    let first = &entries.as_array().unwrap().last().unwrap();
    assert_eq!(first["keyID"], admin_id, "{first}");
    assert_eq!(first["source"], "127.0.0.1");
    assert_eq!(first["status"], 201);
    assert_eq!(first["detail"]["template"], "tiny");
    let failed = &entries[1];
    assert!(
        failed["detail"]["message"]
            .as_str()
            .unwrap()
            .contains("not found"),
        "{failed}"
    );
    // The key change, with the new key's id as its target.
    let r = call(a, ADMIN, "GET", "/audit?action=key", "").await;
    assert!(
        r.json()
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "key.create" && e["target"] == key_id.as_str()),
        "{}",
        r.body
    );
    // Paging: two at a time, by the next token, to the end.
    let mut seen = vec![];
    let mut token = String::new();
    loop {
        let r = call(
            a,
            ADMIN,
            "GET",
            &format!("/audit?target={id}&limit=3{token}"),
            "",
        )
        .await;
        seen.extend(
            r.json()
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["seq"].clone()),
        );
        match r.header("x-next-token") {
            Some(t) => token = format!("&nextToken={t}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), want.len(), "{seen:?}");
    // Export: JSON lines.
    let r = call(
        a,
        ADMIN,
        "GET",
        &format!("/audit?target={id}&format=jsonl"),
        "",
    )
    .await;
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    let lines: Vec<Value> = r
        .body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), want.len());
    // Bad filters are errors, not an unfiltered log.
    assert_eq!(
        call(a, ADMIN, "GET", "/audit?sandbox=x", "").await.status,
        400
    );
    assert_eq!(
        call(a, ADMIN, "GET", "/audit?since=yesterday", "")
            .await
            .status,
        400
    );
    // Another team sees none of it.
    let r = call(a, NEIGHBOUR, "GET", &format!("/audit?target={id}"), "").await;
    assert_eq!(r.json(), serde_json::json!([]), "{}", r.body);
    // No key is in the log, nor anywhere in the store's files.
    // Read by another process: closing a descriptor of the database in this one would drop
    // every POSIX lock the server's SQLite holds on it, and then another process (the CLI
    // test's) could checkpoint and reset the WAL under it.
    for f in std::fs::read_dir(&s.dir).unwrap() {
        let out = std::process::Command::new("cat")
            .arg(f.unwrap().path())
            .output()
            .unwrap();
        let bytes = out.stdout;
        for key in [ADMIN, MEMBER, READER] {
            assert!(
                !bytes.windows(key.len()).any(|w| w == key.as_bytes()),
                "a key is stored in clear"
            );
        }
    }
}

/// `soulbox teams`, `keys` and `audit` on the server's store: what the operator sets applies
/// to the running server at once, and is in the log.
#[tokio::test]
async fn the_operator_cli_sets_quotas_and_reads_the_log() {
    let s = server().await;
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_soulbox"))
            .arg("--data-dir")
            .arg(&s.dir)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = cli(&["teams", "create", "cli-team"]);
    assert!(ok, "{err}");
    let team = out.trim().to_string();
    let (ok, key, err) = cli(&["keys", "create", "--team", "cli-team", "--role", "member"]);
    assert!(ok, "{err}");
    let key = key.trim().to_string();
    let (ok, out, err) = cli(&["teams", "quota", "cli-team", "--sandboxes", "0"]);
    assert!(ok && out.contains("sandboxes    0"), "{out}{err}");
    let r = create(s.addr, &key).await;
    assert_eq!(r.status, 429, "{}", r.body);
    let (ok, _, err) = cli(&["teams", "quota", "cli-team", "--sandboxes", "none"]);
    assert!(ok, "{err}");
    let id = id_of(&create(s.addr, &key).await);
    assert_eq!(
        call(s.addr, &key, "DELETE", &format!("/sandboxes/{id}"), "")
            .await
            .status,
        204
    );
    let (ok, _, err) = cli(&["teams", "quota", "cli-team", "--sandboxes", "many"]);
    assert!(!ok && err.contains("whole number"), "{err}");
    let (ok, _, err) = cli(&["teams", "quota", "no-such-team"]);
    assert!(!ok && err.contains("no team 'no-such-team'"), "{err}");
    let (ok, out, err) = cli(&["audit", "--team", "cli-team", "--jsonl"]);
    assert!(ok, "{err}");
    let entries: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let seen: Vec<(&str, &str, &str)> = entries
        .iter()
        .rev()
        .map(|e| {
            (
                e["actor"].as_str().unwrap(),
                e["action"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("cli", "team.create", "ok"),
            ("cli", "key.create", "ok"),
            ("cli", "team.quota", "ok"),
            ("key", "sandbox.create", "denied"),
            ("cli", "team.quota", "ok"),
            ("key", "sandbox.create", "ok"),
            ("key", "sandbox.kill", "ok"),
        ],
        "{out}"
    );
    assert!(entries.iter().all(|e| e["teamID"] == team.as_str()));
    let (ok, out, _) = cli(&["audit", "--team", "cli-team", "--action", "sandbox.kill"]);
    assert!(
        ok && out.contains(&id) && !out.contains("team.quota"),
        "{out}"
    );
    let (ok, _, err) = cli(&["audit", "--since", "yesterday"]);
    assert!(!ok && err.contains("RFC 3339"), "{err}");
}
