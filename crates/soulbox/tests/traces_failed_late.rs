//! A start that fails after everything was acquired (sandbox directory and disk, id range,
//! cgroup, network slot, the launched init) gives it all back. Its own test binary: the
//! runtime runs with an agent that exits at once.

mod common;

use common::{backend, eventually, traces};
use soulbox_runtime::{Backend, Limits, RuntimeError};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

fn exiting_agent() -> PathBuf {
    std::env::temp_dir().join("soulbox-test-exiting-agent")
}

#[tokio::test]
async fn a_start_that_fails_late_returns_everything() {
    let agent = exiting_agent();
    std::fs::write(&agent, "#!/bin/sh\necho agent exits >&2\nexit 7\n").unwrap();
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
    common::configure(|cfg| cfg.agent = exiting_agent());
    let b = backend();
    // A slot outlives its sandbox by design (it is reused): warm the pool first.
    b.network().prefill(1).unwrap();
    let before = traces();
    let free = b.network().free_slots();
    let err = b
        .create(common::spec(Limits::default(), true))
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::Launch(_)), "{err}");
    let settled = eventually(Duration::from_secs(5), || traces() == before).await;
    assert!(
        settled,
        "traces left: before {before:?}, after {:?}",
        traces()
    );
    assert_eq!(b.network().free_slots(), free, "the slot went back");
    assert!(b.list().is_empty());
}
