//! Template builds through the API (an in-process `soulbox serve`): hostile build steps are
//! contained like any sandbox, bad input gets a clear 4xx, and another team sees nothing.

mod common;

use common::http;
use serde_json::{json, Value};
use soulbox_runtime::Backend;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const KEY: &str = "e2b_00000000000000000000000000000000000000c1";
const OTHER_KEY: &str = "e2b_00000000000000000000000000000000000000c2";
/// The build sandboxes' disk here: small, so filling it is quick.
const BUILD_DISK_MB: u64 = 256;

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
                cfg.build_disk_mb = BUILD_DISK_MB;
                cfg.warm_pool = Default::default();
            })
        })
        .await
}

fn parse(body: &str) -> Value {
    let start = body.find(['{', '[']).unwrap_or(0);
    let end = body.rfind(['}', ']']).map(|e| e + 1).unwrap_or(body.len());
    serde_json::from_str(&body[start..end]).unwrap_or(Value::Null)
}

async fn call(key: &str, method: &str, path: &str, body: &Value) -> (u16, Value, String) {
    let raw = if body.is_null() {
        vec![]
    } else {
        body.to_string().into_bytes()
    };
    let (status, text) = http(
        server().await,
        method,
        path,
        &[("X-API-KEY", key), ("Content-Type", "application/json")],
        &raw,
    )
    .await;
    (status, parse(&text), text)
}

/// The tests of this binary take turns: each checks that nothing of its builds is left.
async fn turn() -> tokio::sync::MutexGuard<'static, ()> {
    static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    TURN.lock().await
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &soulbox_runtime::ns::new_id()[..8])
}

/// Requests a build of `name`; returns (templateID, buildID).
async fn request(name: &str) -> (String, String) {
    let (s, v, t) = call(KEY, "POST", "/v3/templates", &json!({"name": name})).await;
    assert_eq!(s, 202, "{t}");
    (
        v["templateID"].as_str().unwrap().into(),
        v["buildID"].as_str().unwrap().into(),
    )
}

/// Starts a build (its steps run again, never from the cache of an earlier run) and waits for
/// its end; returns the final status body.
async fn build(name: &str, mut start: Value) -> Value {
    start["force"] = true.into();
    let (tid, bid) = request(name).await;
    let (s, _, t) = call(
        KEY,
        "POST",
        &format!("/v2/templates/{tid}/builds/{bid}"),
        &start,
    )
    .await;
    assert_eq!(s, 202, "{t}");
    wait(&tid, &bid).await
}

async fn wait(tid: &str, bid: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let (s, v, t) = call(
            KEY,
            "GET",
            &format!("/templates/{tid}/builds/{bid}/status?logsOffset=0"),
            &Value::Null,
        )
        .await;
        assert_eq!(s, 200, "{t}");
        if v["status"] == "ready" || v["status"] == "error" {
            return v;
        }
        assert!(Instant::now() < deadline, "the build did not end: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn log_text(v: &Value) -> String {
    v["logEntries"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["message"].as_str().unwrap_or("").to_string())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

fn run(cmd: &str) -> Value {
    json!({"type": "RUN", "args": [cmd, "root"]})
}

/// Nothing of a finished build is left running, mounted or in the sandboxes directory.
fn assert_nothing_left() {
    let b = common::backend();
    assert!(
        b.list().is_empty(),
        "sandboxes left: {:?}",
        b.list().iter().map(|s| &s.id).collect::<Vec<_>>()
    );
    let sandboxes = b.data_dir().join("sandboxes");
    let left: Vec<_> = std::fs::read_dir(&sandboxes)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "left in {}: {left:?}", sandboxes.display());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&sandboxes.display().to_string()),
        "a sandbox mount is left"
    );
    let layers = b.templates().layers().dir().to_path_buf();
    let half: Vec<_> = std::fs::read_dir(&layers)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".new-"))
        .collect();
    assert!(half.is_empty(), "half-made layers: {half:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_build_step_is_a_sandbox_and_cannot_reach_the_host() {
    let _turn = turn().await;
    let marker = format!(
        "/tmp/soulbox-build-escape-{}",
        soulbox_runtime::ns::new_id()
    );
    let v = build(
        &unique("escape"),
        json!({"fromTemplate": "tiny", "steps": [run(&format!(
            "touch {marker}; mount -t tmpfs x /mnt 2>/dev/null && echo MOUNTED || echo mount-refused; \
             ls /proc/1/root/ >/dev/null && echo root-listed; \
             echo $(ls -d /var/lib/soulbox* 2>/dev/null | wc -l) soulbox-dirs-seen; id -u"
        ))]}),
    )
    .await;
    let logs = log_text(&v);
    assert_eq!(v["status"], "ready", "{v}");
    assert!(logs.contains("mount-refused"), "{logs}");
    assert!(logs.contains("0 soulbox-dirs-seen"), "{logs}");
    assert!(
        !std::path::Path::new(&marker).exists(),
        "the build step wrote {marker} on the host"
    );
    assert_nothing_left();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_step_that_fills_its_disk_fails_and_leaves_nothing() {
    let _turn = turn().await;
    let free_before = nix::sys::statvfs::statvfs(common::backend().data_dir())
        .unwrap()
        .blocks_available();
    let v = build(
        &unique("fill"),
        json!({"fromTemplate": "tiny", "steps": [run(&format!(
            "head -c {}M /dev/zero > /fill", BUILD_DISK_MB * 2
        ))]}),
    )
    .await;
    assert_eq!(v["status"], "error", "{v}");
    assert_eq!(v["reason"]["step"], "1", "{v}");
    let logs = log_text(&v);
    assert!(logs.contains("No space left"), "{logs}");
    assert_nothing_left();
    let free_after = nix::sys::statvfs::statvfs(common::backend().data_dir())
        .unwrap()
        .blocks_available();
    // No more than a few MiB less: the step's writes went to its own disk, which is gone.
    // (More may be free: an earlier test's layer collection can finish meanwhile.)
    assert!(
        free_before.saturating_sub(free_after) * 4096 < (64 << 20),
        "{free_before} → {free_after}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fork_bomb_in_a_step_is_contained() {
    let _turn = turn().await;
    // Forks until refused; the children hold no output pipe, so the step ends with its parent.
    let bomb = r#"python3 -c "exec('import os,time\nn=0\ntry:\n while n<5000:\n  if os.fork()==0:\n   os.closerange(0,3); time.sleep(60); os._exit(0)\n  n+=1\nexcept OSError as e:\n print(\'refused after\', n, e.strerror)')""#;
    let v = build(
        &unique("forks"),
        json!({"fromTemplate": "tiny", "steps": [run(bomb)]}),
    )
    .await;
    let logs = log_text(&v);
    let n: u64 = logs
        .lines()
        .find_map(|l| {
            l.strip_prefix("refused after ")
                .and_then(|r| r.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or_else(|| panic!("the forks were never refused: {logs}"));
    assert!(n < soulbox_runtime::Limits::default().pids, "{n} processes");
    assert_eq!(v["status"], "ready", "{v}");
    assert_nothing_left();
}

fn tar_with(name: &str, data: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    let n = name.as_bytes();
    h.as_old_mut().name[..n.len()].copy_from_slice(n);
    h.set_cksum();
    b.append(&h, data).unwrap();
    b.into_inner().unwrap()
}

/// Gets an upload link and PUTs `archive` to it; returns the PUT's status and body.
async fn upload(tid: &str, hash: &str, archive: &[u8]) -> (u16, String) {
    let (s, v, t) = call(
        KEY,
        "GET",
        &format!("/templates/{tid}/files/{hash}"),
        &Value::Null,
    )
    .await;
    assert_eq!(s, 201, "{t}");
    assert_eq!(v["present"], false, "{v}");
    let token = v["headers"]["x-soulbox-upload-token"]
        .as_str()
        .unwrap()
        .to_string();
    let path = v["url"]
        .as_str()
        .unwrap()
        .split_once("/templates/")
        .map(|x| format!("/templates/{}", x.1))
        .unwrap();
    http(
        server().await,
        "PUT",
        &path,
        &[("x-soulbox-upload-token", &token)],
        archive,
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_a_clear_4xx() {
    // A bad name or tag, an unknown step type, an unknown template.
    let (s, _, t) = call(KEY, "POST", "/v3/templates", &json!({"name": "Bad Name"})).await;
    assert!(s == 400 && t.contains("invalid template name"), "{s} {t}");
    let (s, _, t) = call(KEY, "POST", "/v3/templates", &json!({"name": "ok:bad/tag"})).await;
    assert!(s == 400 && t.contains("invalid template tag"), "{s} {t}");
    let (tid, bid) = request(&unique("bad")).await;
    let path = format!("/v2/templates/{tid}/builds/{bid}");
    let (s, _, t) = call(
        KEY,
        "POST",
        &path,
        &json!({"fromTemplate": "tiny", "steps": [{"type": "FROB"}]}),
    )
    .await;
    assert!(
        s == 400 && t.contains("unknown step type 'FROB'"),
        "{s} {t}"
    );
    let (s, _, _) = call(
        KEY,
        "GET",
        "/templates/nosuchtemplate00000/builds/x/status",
        &Value::Null,
    )
    .await;
    assert_eq!(s, 404);

    // A COPY whose files were never uploaded.
    let hash = "ab".repeat(32);
    let copy = json!({"type": "COPY", "args": ["app", "/app", "", ""], "filesHash": hash});
    let (s, _, t) = call(
        KEY,
        "POST",
        &path,
        &json!({"fromTemplate": "tiny", "steps": [copy]}),
    )
    .await;
    assert!(s == 400 && t.contains("were not uploaded"), "{s} {t}");

    // Uploads: no token, a path out of the layer, a tar bomb. (Files an earlier run left
    // under other teams' directories do not count.)
    let files = common::backend().data_dir().join("build-files");
    let before = walk_files(&files);
    let (s, _) = http(
        server().await,
        "PUT",
        &format!("/templates/{tid}/files/{hash}"),
        &[],
        b"x",
    )
    .await;
    assert_eq!(s, 401);
    let (s, t) = upload(&tid, &hash, &tar_with("../../etc/evil", b"x")).await;
    assert!(s == 400 && t.contains("outside"), "{s} {t}");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    {
        let mut b = tar::Builder::new(&mut gz);
        let mut h = tar::Header::new_gnu();
        h.set_size((BUILD_DISK_MB + 1) << 20);
        h.set_mode(0o644);
        h.set_cksum();
        let zeros = std::io::repeat(0).take((BUILD_DISK_MB + 1) << 20);
        b.append_data(&mut h, "bomb", zeros).unwrap();
        b.finish().unwrap();
    }
    let bomb = gz.finish().unwrap();
    assert!(bomb.len() < 2 << 20, "the bomb is small: {}", bomb.len());
    let (s, t) = upload(&tid, &hash, &bomb).await;
    assert!(s == 413 && t.contains("more than"), "{s} {t}");
    let kept: Vec<_> = walk_files(&files)
        .into_iter()
        .filter(|p| !before.contains(p))
        .filter(|p| {
            p.file_name().is_some_and(|n| {
                n.to_string_lossy().contains(&hash) || n.to_string_lossy().starts_with(".upload-")
            })
        })
        .collect();
    assert!(kept.is_empty(), "refused uploads were kept: {kept:?}");
}

fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                out.extend(walk_files(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

use std::io::Read;

#[tokio::test(flavor = "multi_thread")]
async fn another_team_sees_nothing_of_a_template() {
    let _turn = turn().await;
    let name = unique("private");
    let v = build(
        &name,
        json!({"fromTemplate": "tiny", "steps": [run("echo mine > /mine")]}),
    )
    .await;
    assert_eq!(v["status"], "ready", "{v}");
    let tid = v["templateID"].as_str().unwrap();
    for (m, p) in [
        ("GET", format!("/templates/{tid}")),
        ("DELETE", format!("/templates/{tid}")),
        ("GET", format!("/templates/aliases/{name}")),
    ] {
        let (s, _, t) = call(OTHER_KEY, m, &p, &Value::Null).await;
        assert_eq!(s, 404, "{m} {p}: {t}");
    }
    let (s, _, t) = call(
        OTHER_KEY,
        "POST",
        "/v2/sandboxes",
        &json!({"templateID": name}),
    )
    .await;
    assert!((400..500).contains(&s), "{s} {t}");
    let (s, v, t) = call(KEY, "POST", "/v2/sandboxes", &json!({"templateID": name})).await;
    assert_eq!(s, 201, "{t}");
    let id = v["sandboxID"].as_str().unwrap().to_string();
    let _ = call(KEY, "DELETE", &format!("/sandboxes/{id}"), &Value::Null).await;
}

/// The layer ids of a template's latest build, bottom first.
async fn layers_of(tid: &str) -> Vec<String> {
    let (s, v, t) = call(KEY, "GET", &format!("/templates/{tid}"), &Value::Null).await;
    assert_eq!(s, 200, "{t}");
    v["builds"][0]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn templates_share_layers_and_deleting_frees_only_unused_ones() {
    let _turn = turn().await;
    let shared = run(&format!("echo {} > /shared", soulbox_runtime::ns::new_id()));
    let a = build(
        &unique("share-a"),
        json!({"fromTemplate": "tiny", "steps": [shared, run("echo a > /a")]}),
    )
    .await;
    assert_eq!(a["status"], "ready", "{a}");
    // The same first step on the same base, without force: found, not made again.
    let (tid, bid) = request(&unique("share-b")).await;
    let start = json!({"fromTemplate": "tiny", "steps": [shared, run("echo b > /b")]});
    let (s, _, t) = call(
        KEY,
        "POST",
        &format!("/v2/templates/{tid}/builds/{bid}"),
        &start,
    )
    .await;
    assert_eq!(s, 202, "{t}");
    let b = wait(&tid, &bid).await;
    assert_eq!(b["status"], "ready", "{b}");
    assert!(log_text(&b).contains("CACHED"), "{}", log_text(&b));
    let (la, lb) = (
        layers_of(a["templateID"].as_str().unwrap()).await,
        layers_of(&tid).await,
    );
    assert_eq!(la.len(), 3, "tiny + two steps: {la:?}");
    assert_eq!(
        la[..2],
        lb[..2],
        "the base and the shared step are the same layers"
    );
    assert_ne!(la[2], lb[2]);
    let store = common::backend().templates().layers().clone();
    let exists = |id: &str| store.exists(&soulbox_runtime::layer::LayerId::parse(id).unwrap());
    // Deleting A frees only A's own layer; B keeps the shared one.
    let (s, _, t) = call(
        KEY,
        "DELETE",
        &format!("/templates/{}", a["templateID"].as_str().unwrap()),
        &Value::Null,
    )
    .await;
    assert_eq!(s, 204, "{t}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while exists(&la[2]) {
        assert!(Instant::now() < deadline, "A's own layer was not freed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        exists(&la[0]) && exists(&la[1]) && exists(&lb[2]),
        "B's layers were freed"
    );
    let (s, _, _) = call(KEY, "DELETE", &format!("/templates/{tid}"), &Value::Null).await;
    assert_eq!(s, 204);
    while exists(&lb[1]) || exists(&lb[2]) {
        assert!(Instant::now() < deadline, "B's layers were not freed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(exists(&la[0]), "the built-in template's layer stays");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_public_template_is_started_by_every_team_and_changed_only_by_its_own() {
    let _turn = turn().await;
    let name = unique("public");
    let v = build(
        &name,
        json!({"fromTemplate": "tiny", "steps": [run("echo shared > /shared")]}),
    )
    .await;
    assert_eq!(v["status"], "ready", "{v}");
    let tid = v["templateID"].as_str().unwrap().to_string();
    let create = json!({"templateID": name});
    let (s, _, t) = call(OTHER_KEY, "POST", "/v2/sandboxes", &create).await;
    assert!((400..500).contains(&s), "private: {s} {t}");
    // Only its team may make it public.
    let (s, _, _) = call(
        OTHER_KEY,
        "PATCH",
        &format!("/templates/{tid}"),
        &json!({"public": true}),
    )
    .await;
    assert_eq!(s, 404);
    let (s, _, t) = call(
        KEY,
        "PATCH",
        &format!("/templates/{tid}"),
        &json!({"public": true}),
    )
    .await;
    assert_eq!(s, 200, "{t}");
    let (s, v, t) = call(OTHER_KEY, "POST", "/v2/sandboxes", &create).await;
    assert_eq!(s, 201, "public: {t}");
    let id = v["sandboxID"].as_str().unwrap().to_string();
    let _ = call(
        OTHER_KEY,
        "DELETE",
        &format!("/sandboxes/{id}"),
        &Value::Null,
    )
    .await;
    // Public is for starting, not for changing: another team still cannot delete or rebuild it.
    let (s, _, _) = call(
        OTHER_KEY,
        "DELETE",
        &format!("/templates/{tid}"),
        &Value::Null,
    )
    .await;
    assert_eq!(s, 404);
    let (s, _, _) = call(KEY, "DELETE", &format!("/templates/{tid}"), &Value::Null).await;
    assert_eq!(s, 204);
}
