//! The warm pool of `soulbox serve`: pooled sandboxes are invisible until claimed, a matching
//! create gets one (with its own env vars), and the pool refills.

mod common;

use common::http;

use soulbox_runtime::Backend;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const KEY: &str = "e2b_00000000000000000000000000000000000000cc";

fn ids(backend: &std::sync::Arc<soulbox_runtime::ns::NsBackend>) -> Vec<String> {
    backend.list().into_iter().map(|s| s.id).collect()
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_create_claims_a_warm_sandbox_and_the_pool_refills() {
    let backend = common::backend();
    let dir = tempfile::tempdir().unwrap();
    let store = soulbox_server::store::Store::open(dir.path())
        .await
        .unwrap();
    let team = store.default_team().await.unwrap();
    store.add_key(&team, KEY, "test").await.unwrap();
    let listener = soulbox_server::listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut cfg = soulbox_server::ServerConfig::new(addr);
    cfg.warm_pool = BTreeMap::from([("tiny".to_string(), 1)]);
    let server = tokio::spawn(soulbox_server::serve_on(
        listener,
        cfg,
        store,
        backend.clone(),
    ));

    wait_for("the pool to fill", || ids(&backend).len() == 1).await;
    let pooled = ids(&backend)[0].clone();

    // Unclaimed: no team lists it, and the proxy does not reach it.
    let (status, body) = http(addr, "GET", "/v2/sandboxes", &[("X-API-KEY", KEY)], b"").await;
    assert_eq!((status, body.trim()), (200, "[]"));
    let route = [
        ("E2b-Sandbox-Id", pooled.as_str()),
        ("E2b-Sandbox-Port", "49983"),
    ];
    let (status, _) = http(addr, "GET", "/health", &route, b"").await;
    assert_eq!(status, 502, "an unclaimed sandbox is not reachable");

    // A matching create gets it, with the env vars it asked for.
    let create = r#"{"templateID":"tiny","timeout":60,"envVars":{"FROM_CREATE":"yes"},"metadata":{"k":"v"}}"#;
    let (status, body) = http(
        addr,
        "POST",
        "/v2/sandboxes",
        &[("X-API-KEY", KEY), ("Content-Type", "application/json")],
        create.as_bytes(),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["sandboxID"], pooled.as_str());
    let token = v["envdAccessToken"].as_str().unwrap().to_string();
    let with_token = [route[0], route[1], ("X-Access-Token", token.as_str())];
    let (status, envs) = http(addr, "GET", "/envs", &with_token, b"").await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&envs).unwrap()["FROM_CREATE"],
        "yes"
    );
    let (status, _) = http(addr, "GET", "/envs", &route, b"").await;
    assert_eq!(status, 401, "the pooled sandbox keeps its own token");

    // The pool refills with a new sandbox.
    wait_for("the pool to refill", || ids(&backend).len() == 2).await;
    let refill: Vec<String> = ids(&backend).into_iter().filter(|i| *i != pooled).collect();

    // A create the pool does not match (no internet) leaves the warm sandbox where it is.
    let (status, body) = http(
        addr,
        "POST",
        "/v2/sandboxes",
        &[("X-API-KEY", KEY), ("Content-Type", "application/json")],
        br#"{"templateID":"tiny","allow_internet_access":false}"#,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let other: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_ne!(other["sandboxID"], refill[0].as_str());
    assert!(ids(&backend).contains(&refill[0]));

    server.abort();
    for id in ids(&backend) {
        backend.kill(&id).await.unwrap();
    }
}
