//! Full pause (issue 12 item 2, memory kept), at the runtime, with the CRIU that
//! `scripts/install.sh` builds: the processes are checkpointed to disk and end, the host gets
//! everything back, and the resume restores them where they were — their memory, their
//! files in `/dev/shm` (RAM), their place in a loop.

mod common;

use common::{backend, text, Sandbox};
use soulbox_runtime::ns::checkpoint::{Criu, CHECKPOINT_DIR};
use soulbox_runtime::ns::PauseMode;
use soulbox_runtime::{Backend, Limits};

fn with_criu() {
    common::configure(|c| {
        c.criu = Some(Criu::find().expect("CRIU 4 is installed (scripts/install.sh builds it)"));
    });
}

async fn pause(id: &str, memory: bool) -> PauseMode {
    let (b, id) = (backend(), id.to_string());
    tokio::task::spawn_blocking(move || b.pause_to_disk_blocking(&id, memory))
        .await
        .unwrap()
        .expect("the pause works")
}

/// Starts (in the background) a loop whose state lives only in its shell's memory: a random
/// word picked once, and a count, written to /tmp/c.
const LOOP: &str = r#"cat > /tmp/loop.sh <<'END'
w=$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' 
'); i=0
while :; do i=$((i+1)); echo "$w $i" > /tmp/c; sleep 0.02; done
END
nohup sh /tmp/loop.sh >/dev/null 2>&1 &
"#;

async fn counter(sb: &Sandbox) -> (String, u64) {
    let out = text(&sb.sh_as(None, "cat /tmp/c").await.stdout);
    let mut it = out.split_whitespace();
    let word = it.next().unwrap_or_default().to_string();
    let n = it.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    (word, n)
}

#[tokio::test]
async fn a_full_pause_keeps_processes_and_memory_and_gives_the_host_back_the_rest() {
    with_criu();
    let sb = Sandbox::new(Limits::default(), true).await;
    let (b, id) = (backend(), sb.info.id.clone());
    sb.sh_as(
        None,
        &format!("{LOOP} head -c 20000000 /dev/urandom > /dev/shm/blob; sha256sum /dev/shm/blob > /tmp/shm.sum; echo kept > ~/f"),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (word, n) = counter(&sb).await;
    assert!(word.len() == 16 && n > 0, "{word} {n}");
    let slots = b.network().free_slots();

    assert_eq!(pause(&id, true).await, PauseMode::Full);
    assert!(b.get(&id).is_none() && b.is_paused_on_disk(&id));
    assert!(
        b.cgroups().pids(&id).is_empty(),
        "a process outlived the pause"
    );
    assert_eq!(
        b.network().free_slots(),
        slots + 1,
        "the network slot is free"
    );
    let dir = b.sandbox_dir(&id);
    assert!(dir.join(CHECKPOINT_DIR).join("pstree.img").exists());
    // Nothing of it runs while paused, so its counter stands still on disk too.
    let (w_paused, n_paused) = {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        (word.clone(), n)
    };

    let (info, how) = b.resume_from_disk(&id, true).await.unwrap();
    assert_eq!(how, PauseMode::Full, "restored, not booted again");
    assert_ne!(info.pid, sb.info.pid);
    assert!(
        !dir.join(CHECKPOINT_DIR).exists(),
        "the checkpoint is gone once restored"
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (w_after, n_after) = counter(&sb).await;
    assert_eq!(w_after, w_paused, "the same process, with the same memory");
    assert!(
        n_after > n_paused,
        "it counts on from {n_paused}: {n_after}"
    );
    let checked = sb
        .sh_as(
            None,
            "sha256sum -c --quiet /tmp/shm.sum && cat ~/f && pgrep -c -f '[l]oop.sh'",
        )
        .await;
    assert_eq!(
        text(&checked.stdout),
        "kept\n1\n",
        "/dev/shm (RAM) kept, one loop: {}",
        text(&checked.stderr)
    );
    // It pauses and resumes again.
    assert_eq!(pause(&id, true).await, PauseMode::Full);
    assert_eq!(
        b.resume_from_disk(&id, true).await.unwrap().1,
        PauseMode::Full
    );
    assert_eq!(counter(&sb).await.0, word);
    sb.kill().await;
    assert!(!dir.exists());
}

#[tokio::test]
async fn a_pause_without_memory_ends_the_processes_even_with_criu() {
    with_criu();
    let sb = Sandbox::new(Limits::default(), false).await;
    let (b, id) = (backend(), sb.info.id.clone());
    sb.sh_as(None, LOOP).await;
    assert_eq!(pause(&id, false).await, PauseMode::Filesystem);
    assert!(!b.sandbox_dir(&id).join(CHECKPOINT_DIR).exists());
    let (_, how) = b.resume_from_disk(&id, true).await.unwrap();
    assert_eq!(how, PauseMode::Filesystem);
    let n = text(
        &sb.sh_as(None, "pgrep -c -f '[l]oop.sh' || true")
            .await
            .stdout,
    );
    assert_eq!(n, "0\n");
    sb.kill().await;
}

/// A checkpoint that cannot be restored (here: an image lost) is not a lost sandbox: the
/// resume boots it again on its files and says so.
#[tokio::test]
async fn a_checkpoint_that_cannot_be_restored_falls_back_to_the_files() {
    with_criu();
    let sb = Sandbox::new(Limits::default(), false).await;
    let (b, id) = (backend(), sb.info.id.clone());
    sb.sh_as(None, &format!("echo kept > ~/f; {LOOP}")).await;
    assert_eq!(pause(&id, true).await, PauseMode::Full);
    let images = b.sandbox_dir(&id).join(CHECKPOINT_DIR);
    std::fs::remove_file(images.join("pstree.img")).unwrap();
    let (_, how) = b.resume_from_disk(&id, true).await.unwrap();
    assert_eq!(how, PauseMode::Filesystem);
    let out = sb
        .sh_as(None, "cat ~/f; pgrep -c -f '[l]oop.sh' || true")
        .await;
    assert_eq!(text(&out.stdout), "kept\n0\n");
    sb.kill().await;
}
