//! Issue 12 item 7: the disk filling up when a sandbox is paused gives a clear error and leaves
//! the sandbox as it was. This binary's runtime keeps its data on a small tmpfs of its own
//! (the `tiny` template copied in), which the test fills.

mod common;

use common::{backend, text, Sandbox};
use soulbox_runtime::{Backend, Limits, RuntimeError};
use std::path::Path;
use std::process::Command;

const DATA: &str = "/run/soulbox-test-full-disk";

/// Runs before the runtime starts: a 512 MiB tmpfs as the data directory, with `tiny`.
fn small_disk(cfg: &mut soulbox_runtime::ns::RuntimeConfig) {
    let _ = Command::new("umount").arg("-l").arg(DATA).status();
    std::fs::create_dir_all(DATA).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=512m,mode=0700", "tmpfs", DATA])
        .status()
        .unwrap()
        .success();
    assert!(ok, "mounting a tmpfs at {DATA}");
    let tiny = soulbox_runtime::template::recipe::find("tiny").unwrap();
    let id = soulbox_runtime::template::TemplateStore::layer_id(tiny).to_string();
    let from = cfg.data_dir.join("layers").join(&id);
    assert!(from.exists(), "{} (build `tiny` first)", from.display());
    std::fs::create_dir_all(Path::new(DATA).join("layers")).unwrap();
    let copied = Command::new("cp")
        .arg("-a")
        .arg(&from)
        .arg(Path::new(DATA).join("layers"))
        .status()
        .unwrap()
        .success();
    assert!(copied);
    cfg.data_dir = DATA.into();
}

fn free_bytes() -> u64 {
    let s = nix::sys::statvfs::statvfs(DATA).unwrap();
    s.blocks_available() * s.fragment_size()
}

#[tokio::test]
async fn a_pause_on_a_full_disk_is_refused_and_the_sandbox_runs_on() {
    common::configure(small_disk);
    let sb = Sandbox::new(Limits::default(), false).await;
    let (b, id) = (backend(), sb.info.id.clone());
    sb.sh_as(None, "echo kept > ~/f").await;
    // Fill the disk to 16 MiB short.
    let filler = Path::new(DATA).join("filler");
    let fill = free_bytes().saturating_sub(16 << 20);
    let f = std::fs::File::create(&filler).unwrap();
    nix::fcntl::fallocate(&f, nix::fcntl::FallocateFlags::empty(), 0, fill as i64).unwrap();
    drop(f);
    let (b2, id2) = (b.clone(), id.clone());
    let err = tokio::task::spawn_blocking(move || b2.pause_to_disk_blocking(&id2, false))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, RuntimeError::Capacity(_)), "{err}");
    assert!(err.to_string().contains("free some space"), "{err}");
    // As it was: running, answering, its file there.
    assert!(b.get(&id).is_some() && !b.is_paused_on_disk(&id));
    assert_eq!(text(&sb.sh_as(None, "cat ~/f").await.stdout), "kept\n");
    // With room again, the pause goes through and the file comes back with the resume.
    std::fs::remove_file(&filler).unwrap();
    let (b2, id2) = (b.clone(), id.clone());
    tokio::task::spawn_blocking(move || b2.pause_to_disk_blocking(&id2, false))
        .await
        .unwrap()
        .unwrap();
    b.resume_from_disk(&id, true).await.unwrap();
    assert_eq!(text(&sb.sh_as(None, "cat ~/f").await.stdout), "kept\n");
    sb.kill().await;
    let _ = Command::new("umount").arg("-l").arg(DATA).status();
}
