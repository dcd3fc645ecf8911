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
    common::assert_paused_and_released(&b, &id, slots);
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

/// What the kernel says of a host process: its seccomp mode, capabilities and host uid.
fn jail_of(pid: i32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .filter(|l| {
            ["Uid:", "Seccomp:", "CapEff:", "CapBnd:", "NoNewPrivs:"]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .map(String::from)
        .collect()
}

/// The host uid owning the user namespace of process `pid`: the kernel charges that user's
/// budgets (inotify instances, mqueue bytes, signals) for everything in the namespace.
fn userns_owner(pid: i32) -> u32 {
    use std::os::fd::AsRawFd;
    const NS_GET_OWNER_UID: libc::c_ulong = 0xb704;
    let f = std::fs::File::open(format!("/proc/{pid}/ns/user")).unwrap();
    let mut uid: libc::uid_t = u32::MAX;
    // SAFETY: NS_GET_OWNER_UID writes one uid_t through the pointer.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), NS_GET_OWNER_UID, &mut uid) };
    assert_eq!(
        r,
        0,
        "NS_GET_OWNER_UID: {}",
        std::io::Error::last_os_error()
    );
    uid
}

/// The host pid of the sandbox's `sleep 424242` (given a moment to start).
fn sleeper(b: &soulbox_runtime::ns::NsBackend, id: &str) -> i32 {
    let find = || {
        b.cgroups().pids(id).into_iter().find(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.ends_with(b"424242\0") && c.windows(5).any(|w| w == b"sleep"))
        })
    };
    for _ in 0..200 {
        if let Some(p) = find() {
            return p;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let all: Vec<String> = b
        .cgroups()
        .pids(id)
        .iter()
        .map(|p| {
            String::from_utf8_lossy(
                &std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default(),
            )
            .into_owned()
        })
        .collect();
    panic!("no sleep 424242 in {id}: {all:?}")
}

/// The isolation boundary across a checkpoint: a restored process is as jailed as before
/// (seccomp, capabilities, host uid), and a sandbox restored from another's memory snapshot
/// runs as its own ids and answers only its own envd token.
#[tokio::test]
async fn restored_processes_keep_their_jail_and_a_snapshots_children_their_own_ids() {
    with_criu();
    let sb = Sandbox::new(Limits::default(), false).await;
    let (b, id) = (backend(), sb.info.id.clone());
    sb.sh_as(None, "nohup sleep 424242 >/dev/null 2>&1 &").await;
    let before = jail_of(sleeper(&b, &id));
    assert!(
        before.iter().any(|l| l.starts_with("Seccomp:\t2")),
        "{before:?}"
    );
    assert_eq!(pause(&id, true).await, PauseMode::Full);
    b.resume_from_disk(&id, true).await.unwrap();
    assert_eq!(
        jail_of(sleeper(&b, &id)),
        before,
        "the same jail after the restore"
    );
    let base = b.state_of(&id).unwrap().id_base;
    assert_eq!(
        userns_owner(sleeper(&b, &id)),
        base,
        "its own user namespace, not root's"
    );
    let refused = sb
        .root("unshare -U true 2>&1; mount -t tmpfs x /mnt 2>&1; echo done")
        .await;
    let said = text(&refused.stdout);
    assert!(
        !said.contains("\n0\n") && said.ends_with("done\n"),
        "{said}"
    );
    assert!(
        said.contains("ermission") || said.contains("not permitted"),
        "{said}"
    );

    // A memory snapshot, and a new sandbox restored from it.
    let dir = b.data_dir().join(format!("test-snapshot-{id}"));
    let (files, images) = (dir.join("files"), dir.join("memory"));
    std::fs::create_dir_all(&files).unwrap();
    let (b2, id2, f2, i2) = (b.clone(), id.clone(), files.clone(), images.clone());
    let saved = tokio::task::spawn_blocking(move || b2.snapshot_blocking(&id2, &f2, Some(&i2)))
        .await
        .unwrap()
        .unwrap();
    assert!(saved, "the processes were checkpointed");
    let parent = b.state_of(&id).unwrap();
    let mut spec = common::spec(Limits::default(), false);
    spec.access_token = Some("child-token".into());
    spec.rootfs = Some(soulbox_runtime::Rootfs {
        layers: std::iter::once(files.clone())
            .chain(parent.layers.clone())
            .collect(),
        user: parent.init.default_user.clone(),
        workdir: parent.init.default_workdir.clone(),
        memory: Some(images.clone()),
    });
    let child = b.create(spec.clone()).await.unwrap();
    assert!(child.restored, "restored, not booted");
    let child_base = b.state_of(&child.id).unwrap().id_base;
    assert_ne!(child_base, parent.id_base);
    let uid: u32 = jail_of(sleeper(&b, &child.id))
        .iter()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|u| u.split_whitespace().next()?.parse().ok())
        .unwrap();
    assert!(
        (child_base..child_base + soulbox_runtime::jail::ID_RANGE).contains(&uid),
        "the child's process runs as its own ids: {uid} vs base {child_base}"
    );
    assert_eq!(userns_owner(sleeper(&b, &child.id)), child_base);
    // Its agent answers its own token only, not the parent's.
    let mut theirs = soulbox_runtime::agent_client::AgentClient::connect(
        &child.socket,
        parent.init.access_token.clone(),
    )
    .await
    .unwrap();
    assert!(
        theirs.sh("true", None).await.is_err(),
        "the parent's token is refused"
    );
    let mut mine = soulbox_runtime::agent_client::AgentClient::connect(
        &child.socket,
        child.access_token.clone(),
    )
    .await
    .unwrap();
    assert_eq!(
        text(&mine.sh("echo ok", None).await.unwrap().stdout),
        "ok\n"
    );
    assert!(
        !b.sandbox_dir(&child.id).join(CHECKPOINT_DIR).exists(),
        "the child's copy of the checkpoint is gone once restored"
    );
    b.kill(&child.id).await.unwrap();
    // A snapshot whose memory cannot be restored (an image lost) still starts, on its files.
    std::fs::remove_file(images.join("pstree.img")).unwrap();
    let booted = b.create(spec).await.unwrap();
    assert!(!booted.restored, "booted on the files");
    let mut agent = soulbox_runtime::agent_client::AgentClient::connect(
        &booted.socket,
        booted.access_token.clone(),
    )
    .await
    .unwrap();
    let out = agent
        .sh("pgrep -c -f '[s]leep 424242' || true", None)
        .await
        .unwrap();
    assert_eq!(text(&out.stdout), "0\n");
    b.kill(&booted.id).await.unwrap();
    sb.kill().await;
    std::fs::remove_dir_all(&dir).unwrap();
}
