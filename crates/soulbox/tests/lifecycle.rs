//! Sandbox lifecycle: ids, hostnames, pause/resume; one runtime per host.

mod common;

use common::{backend, text, Sandbox};
use soulbox_runtime::ns::{NsBackend, RuntimeConfig};
use soulbox_runtime::{Backend, Limits, RuntimeError};
use std::path::PathBuf;
use std::time::Duration;

#[tokio::test]
async fn sandbox_ids_and_hostnames() {
    let sb = Sandbox::new(Limits::default(), false).await;
    assert_eq!(sb.info.id.len(), 20);
    assert!(sb
        .info
        .id
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
    let out = sb.sh_as(None, "hostname; id -un; echo $HOME; pwd").await;
    assert_eq!(
        text(&out.stdout),
        format!("{}\nuser\n/home/user\n/home/user\n", sb.info.id)
    );
    assert!(backend().list().iter().any(|s| s.id == sb.info.id));
}

#[tokio::test]
async fn a_second_runtime_is_refused() {
    let b = backend();
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_soulbox"));
    let cfg = RuntimeConfig::new(
        b.sandbox_dir("x")
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .to_path_buf(),
        exe.with_file_name("soulbox-agent"),
        exe,
    );
    let err = NsBackend::new(cfg).unwrap_err();
    assert!(matches!(err, RuntimeError::Locked(_)), "{err}");
}

#[tokio::test]
async fn pause_freezes_and_resume_thaws() {
    let sb = Sandbox::new(Limits::default(), false).await;
    let b = backend();
    b.pause(&sb.info.id).await.unwrap();
    // While frozen, the agent cannot answer.
    let r = tokio::time::timeout(Duration::from_millis(300), sb.sh_as(None, "echo hi")).await;
    assert!(r.is_err(), "a frozen sandbox answered");
    b.resume(&sb.info.id).await.unwrap();
    let out = sb.sh_as(None, "echo thawed").await;
    assert_eq!(text(&out.stdout).trim(), "thawed");
}

/// Issue 10 item 2: killing a paused sandbox used to hang (its frozen init never died).
#[tokio::test]
async fn killing_a_paused_sandbox_leaves_nothing() {
    let sb = Sandbox::new(Limits::default(), false).await;
    let b = backend();
    let out = sb
        .sh_as(None, "nohup sleep 1000 >/dev/null 2>&1 & echo $!")
        .await;
    assert_eq!(out.exit_code, 0);
    let pids = b.cgroups().pids(&sb.info.id);
    assert!(pids.len() >= 2, "{pids:?}");
    let dir = b.sandbox_dir(&sb.info.id);
    b.pause(&sb.info.id).await.unwrap();
    let id = sb.info.id.clone();
    tokio::time::timeout(Duration::from_secs(30), sb.kill())
        .await
        .expect("kill of a paused sandbox finishes");
    for p in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{p}")).exists(),
            "process {p} outlived the kill"
        );
    }
    assert!(!b.cgroups().existing().contains(&id), "cgroups are left");
    assert!(!dir.exists(), "{} is left", dir.display());
}
