//! Pausing to disk (issue 12 item 2, filesystem mode), at the runtime: the processes end, the
//! files stay byte for byte, everything else goes back to the host, and a resume boots the
//! sandbox again on its files with its envd token.

mod common;

use common::{backend, text, Sandbox};
use soulbox_runtime::ns::PauseMode;
use soulbox_runtime::{Backend, Limits, RuntimeError};
use std::path::Path;

async fn pause(id: &str) -> Result<(), RuntimeError> {
    let (b, id) = (backend(), id.to_string());
    tokio::task::spawn_blocking(move || b.pause_to_disk_blocking(&id, false))
        .await
        .unwrap()
        .map(|mode| assert_eq!(mode, PauseMode::Filesystem))
}

#[tokio::test]
async fn a_pause_to_disk_keeps_every_file_and_gives_the_host_back_the_rest() {
    let sb = Sandbox::new(Limits::default(), true).await;
    let (b, id) = (backend(), sb.info.id.clone());
    let made = sb
        .sh_as(
            None,
            "echo kept > ~/f; head -c 3000000 /dev/urandom > /tmp/blob; chmod 640 /tmp/blob; \
             ln -s f ~/link; find / -xdev -newer /proc/1 -type f ! -path /tmp/sums 2>/dev/null | sort | xargs sha256sum > /tmp/sums; \
             nohup sleep 100000 >/dev/null 2>&1 & cat /tmp/sums",
        )
        .await;
    let before = text(&made.stdout);
    assert!(
        before.contains("/tmp/blob") && before.contains("/home/user/f"),
        "{before}"
    );
    let slots = b.network().free_slots();
    pause(&id).await.unwrap();
    common::assert_paused_and_released(&b, &id, slots);
    assert!(b.sandbox_dir(&id).join("upper.img").exists());
    assert_eq!(
        traces(&id),
        Vec::<String>::new(),
        "a paused sandbox holds no mount or loop device"
    );
    assert!(
        matches!(pause(&id).await, Err(RuntimeError::NotFound(_))),
        "pausing twice"
    );

    let (info, how) = b.resume_from_disk(&id, true).await.unwrap();
    assert_ne!(info.pid, sb.info.pid, "booted again");
    assert_eq!(how, PauseMode::Filesystem);
    let after = sb
        .sh_as(
            None,
            "cat ~/f; readlink ~/link; stat -c '%a %U' /tmp/blob ~/f; pgrep -c sleep || true",
        )
        .await;
    assert_eq!(
        text(&after.stdout),
        "kept\nf\n640 user\n644 user\n0\n",
        "{}",
        text(&after.stderr)
    );
    // Every file written before the pause, hash for hash.
    let hashes = sb
        .sh_as(None, "sha256sum -c --quiet /tmp/sums && echo same")
        .await;
    assert_eq!(text(&hashes.stdout), "same\n", "{}", text(&hashes.stderr));
    sb.kill().await;
    assert!(!b.sandbox_dir(&id).exists());
    assert_eq!(traces(&id), Vec::<String>::new());
}

/// Mounts (ours: the manifest's and snapshots' private ones included) and loop devices that
/// name sandbox `id`.
fn traces(id: &str) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(id))
        .map(String::from)
        .collect();
    for e in std::fs::read_dir("/sys/block").unwrap().flatten() {
        if let Ok(b) = std::fs::read_to_string(e.path().join("loop/backing_file")) {
            if b.contains(id) {
                out.push(b);
            }
        }
    }
    out
}

#[tokio::test]
async fn killing_a_sandbox_paused_to_disk_removes_it() {
    let sb = Sandbox::new(Limits::default(), false).await;
    let (b, id) = (backend(), sb.info.id.clone());
    pause(&id).await.unwrap();
    b.kill(&id).await.unwrap();
    assert!(!b.is_paused_on_disk(&id) && !b.sandbox_dir(&id).exists());
    assert!(matches!(
        b.resume_from_disk(&id, true).await,
        Err(RuntimeError::NotFound(_))
    ));
    assert!(matches!(b.kill(&id).await, Err(RuntimeError::NotFound(_))));
}

#[tokio::test]
async fn a_tmpfs_sandbox_cannot_be_paused_to_disk_and_runs_on() {
    let b = backend();
    let mut spec = common::spec(Limits::default(), false);
    spec.writable_layer = Some(soulbox_runtime::ns::WritableLayer::Tmpfs);
    let info = b.create(spec).await.unwrap();
    assert!(matches!(
        pause(&info.id).await,
        Err(RuntimeError::InvalidSpec(_))
    ));
    assert!(b.get(&info.id).is_some() && Path::new(&format!("/proc/{}", info.pid)).exists());
    b.kill(&info.id).await.unwrap();
}

/// Issue 12 item 5: a file changed, removed or added behind a paused sandbox's back is named
/// by `verify` and by the resume, which refuses to boot on it; the sandbox stays paused.
#[tokio::test]
async fn a_resume_checks_the_manifest_and_names_what_changed() {
    let sb = Sandbox::new(Limits::default(), false).await;
    let (b, id) = (backend(), sb.info.id.clone());
    sb.sh_as(None, "echo one > ~/a; echo two > ~/b").await;
    pause(&id).await.unwrap();
    let (b2, id2) = (b.clone(), id.clone());
    let n = tokio::task::spawn_blocking(move || b2.verify_blocking(&id2))
        .await
        .unwrap()
        .unwrap();
    assert!(n >= 4, "{n} paths");
    // Behind its back: the image mounted privately, one file changed, one gone, one new.
    let image = b.sandbox_dir(&id).join("upper.img");
    let tamper = std::process::Command::new("unshare")
        .args(["-m", "sh", "-c"])
        .arg(format!(
            "mkdir -p /tmp/tamper-{id} && mount -o loop {} /tmp/tamper-{id} && u=/tmp/tamper-{id}/upper/home/user && \
             echo uno > $u/a && rm $u/b && echo new > $u/c && umount /tmp/tamper-{id} && rmdir /tmp/tamper-{id}",
            image.display()
        ))
        .status()
        .unwrap();
    assert!(tamper.success());
    let err = b.resume_from_disk(&id, true).await.unwrap_err().to_string();
    for named in [
        "changed (content): /home/user/a",
        "missing: /home/user/b",
        "unexpected: /home/user/c",
    ] {
        assert!(err.contains(named), "{named} in: {err}");
    }
    assert!(
        b.is_paused_on_disk(&id) && b.get(&id).is_none(),
        "it stays paused"
    );
    let (b2, id2) = (b.clone(), id.clone());
    let verified = tokio::task::spawn_blocking(move || b2.verify_blocking(&id2))
        .await
        .unwrap();
    assert!(
        matches!(verified, Err(RuntimeError::Corrupt { total: 3, .. })),
        "{verified:?}"
    );
    sb.kill().await;
}
