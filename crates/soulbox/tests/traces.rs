//! Creating and killing sandboxes leaves nothing behind. These tests count host-wide
//! resources, so they live in their own test binary and run one at a time.

mod common;

use common::{backend, eventually, traces, Sandbox};
use soulbox_runtime::{Backend, Limits, RuntimeError};
use std::time::Duration;
use tokio::sync::Mutex;

static EXCLUSIVE: Mutex<()> = Mutex::const_new(());

#[tokio::test]
async fn kill_removes_every_trace() {
    let _one_at_a_time = EXCLUSIVE.lock().await;
    let b = backend();
    // Warm the network pool first: a slot outlives its sandbox by design (it is reused).
    b.network().prefill(2).unwrap();
    let before = traces();
    let mut sbs = vec![];
    for internet in [false, true, false] {
        sbs.push(
            Sandbox::new(
                Limits {
                    disk_bytes: 128 << 20,
                    ..Limits::default()
                },
                internet,
            )
            .await,
        );
    }
    for sb in &sbs {
        // Leave work behind: a background process, a file, an orphan.
        sb.sh_as(
            None,
            "(sleep 300 &) ; nohup sleep 300 >/dev/null 2>&1 & echo data > $HOME/f",
        )
        .await;
    }
    let during = traces();
    assert!(during.loop_devices >= before.loop_devices + 3, "{during:?}");
    assert_eq!(during.cgroups.len(), before.cgroups.len() + 3);
    for sb in sbs {
        sb.kill().await;
    }
    let settled = eventually(Duration::from_secs(5), || traces() == before).await;
    assert!(
        settled,
        "traces left: before {before:?}, after {:?}",
        traces()
    );
    assert_eq!(
        b.network().free_slots(),
        2,
        "the slot went back to the pool"
    );
}

#[tokio::test]
async fn a_failed_start_returns_everything() {
    let _one_at_a_time = EXCLUSIVE.lock().await;
    let b = backend();
    let before = traces();
    let err = b
        .create(common::spec(
            Limits {
                memory_bytes: 1,
                ..Limits::default()
            },
            false,
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::InvalidSpec(_)), "{err}");
    let mut spec = common::spec(Limits::default(), false);
    spec.template = "no-such-template".into();
    let err = b.create(spec).await.unwrap_err();
    assert!(err.to_string().contains("unknown template"), "{err}");
    assert_eq!(traces(), before);
}
