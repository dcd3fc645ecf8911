//! Attacks from inside a sandbox on the jail itself (issue 9: the agent's socket, host disk,
//! kernel budgets, terminals, descriptors, host facts). Each test performs the attack; it
//! failed on the code before the fix. Run as root on a host where `soulbox doctor` passes.

mod common;

use common::{text, Sandbox};
use soulbox_runtime::Limits;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

fn small() -> Limits {
    Limits {
        memory_bytes: 256 << 20,
        disk_bytes: 256 << 20,
        ..Limits::default()
    }
}

/// Bytes a directory tree takes on the host disk, not counting `skip`.
fn disk_usage(dir: &Path, skip: &str) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(md) = e.path().symlink_metadata() else {
                continue;
            };
            if e.file_name() == skip {
                continue;
            }
            total += md.blocks() * 512;
            if md.is_dir() {
                stack.push(e.path());
            }
        }
    }
    total
}

/// Starts `hog` (a background script that takes a budget, writes how much it holds to /tmp/n
/// and keeps it) as `user`, and returns what it reports.
async fn start_hog(sb: &Sandbox, hog: &str) -> String {
    sb.sh_as(Some("user"), hog).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        let held = text(
            &sb.sh_as(Some("user"), "cat /tmp/n 2>/dev/null")
                .await
                .stdout,
        );
        if !held.is_empty() {
            return held;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the hog never reported what it holds");
}

/// Item 1: sandbox root replaces the agent's socket with a symlink to a host socket. The host
/// must still reach the sandbox's own agent, and never the bait.
#[tokio::test]
async fn the_host_never_follows_a_socket_path_the_sandbox_controls() {
    let bait_path = std::env::temp_dir().join(format!("soulbox-bait-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&bait_path);
    let bait = tokio::net::UnixListener::bind(&bait_path).unwrap();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = bait.accept().await {
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(conn);
        }
    });
    let sb = Sandbox::new(small(), false).await;
    let bait = bait_path.display();
    // Every place the socket was or could be, inside.
    let out = sb
        .root(&format!(
            "for d in /.soulbox/run /.soulbox; do mkdir -p $d; cd $d; mv agent.sock x 2>/dev/null; \
             ln -sf {bait} agent.sock; done; ls -la /.soulbox /.soulbox/run"
        ))
        .await;
    assert_eq!(out.exit_code, 0, "{}", text(&out.stderr));
    let after = tokio::time::timeout(
        Duration::from_secs(20),
        sb.root("hostname; cat /proc/1/comm"),
    )
    .await
    .expect("the agent answers after the attack");
    let s = text(&after.stdout);
    assert!(s.contains(&sb.info.id), "another agent answered: {s}");
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the host connected to the sandbox's symlink"
    );
    assert!(
        !sb.info
            .socket
            .starts_with(sb.backend.sandbox_dir(&sb.info.id).join("run")),
        "the agent's socket is in a directory shared with the sandbox"
    );
    let _ = std::fs::remove_file(&bait_path);
}

/// Item 2: sandbox root writes wherever it can; nothing lands on the host outside its disk
/// image, and kill leaves no trace.
#[tokio::test]
async fn everything_a_sandbox_writes_counts_against_its_disk_and_is_removed() {
    let sb = Sandbox::new(small(), false).await;
    let dir = sb.backend.sandbox_dir(&sb.info.id);
    let before = disk_usage(&dir, "upper.img");
    let script = "for d in /.soulbox/run /.soulbox /dev /tmp; do mkdir -p $d 2>/dev/null; \
                  dd if=/dev/urandom of=$d/fill bs=1M count=32 2>/dev/null; \
                  for i in $(seq 2000); do : > $d/f$i 2>/dev/null || break; done; done; \
                  head -c 16777216 /dev/urandom >> /proc/1/fd/2 2>/dev/null; sync; echo done";
    let out = sb.root(script).await;
    assert!(text(&out.stdout).contains("done"), "{}", text(&out.stderr));
    let after = disk_usage(&dir, "upper.img");
    assert!(
        after < before + (1 << 20),
        "sandbox writes landed on the host outside its disk: {before} -> {after} bytes"
    );
    let df = sb.root("df -B1 --output=used / | tail -1").await;
    let used: u64 = text(&df.stdout).trim().parse().unwrap_or(0);
    assert!(
        used > 64 << 20,
        "the writes do not count against the disk: {used}"
    );
    sb.kill().await;
    assert!(!dir.exists(), "kill left {} behind", dir.display());
}

/// Item 3: one sandbox's `user` exhausts inotify instances (a per-user kernel budget); other
/// sandboxes and host root still get theirs.
#[tokio::test]
async fn kernel_budgets_are_per_sandbox() {
    let a = Sandbox::new(small(), false).await;
    let b = Sandbox::new(small(), false).await;
    let hog = r#"nohup python3 -c '
import ctypes, time
libc = ctypes.CDLL(None, use_errno=True)
n = 0
while libc.inotify_init1(0) >= 0:
    n += 1
open("/tmp/n.tmp", "w").write(str(n)); __import__("os").rename("/tmp/n.tmp", "/tmp/n")
time.sleep(3600)' >/dev/null 2>&1 &"#;
    let held = start_hog(&a, hog).await;
    let probe = "python3 -c 'import ctypes; print(ctypes.CDLL(None).inotify_init1(0))'";
    let other = b.sh_as(Some("user"), probe).await;
    let fd: i64 = text(&other.stdout).trim().parse().unwrap_or(-1);
    assert!(
        fd >= 0,
        "sandbox A's {held} inotify instances left none for sandbox B"
    );
    // SAFETY: inotify_init1 returns a new descriptor (closed right away) or -1.
    let host = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    assert!(
        host >= 0,
        "sandbox A's inotify instances left none for host root"
    );
    // SAFETY: closing the descriptor we just got.
    unsafe { libc::close(host) };
    // The namespace belongs to the sandbox's own host uid, not to host root.
    let owner = std::fs::metadata(format!("/proc/{}", a.info.pid))
        .unwrap()
        .uid();
    let owner_b = std::fs::metadata(format!("/proc/{}", b.info.pid))
        .unwrap()
        .uid();
    assert_ne!(owner, 0);
    assert_ne!(owner, owner_b, "two sandboxes share a host id range");
}

/// Item 4: a sandbox opens terminals until it cannot; another sandbox still gets one.
#[tokio::test]
async fn terminals_are_limited_per_sandbox() {
    let a = Sandbox::new(small(), false).await;
    let b = Sandbox::new(small(), false).await;
    let hog = r#"nohup python3 -c '
import os, time
fds = []
try:
    while True:
        fds.append(os.openpty())
except OSError:
    pass
open("/tmp/n.tmp", "w").write(str(len(fds))); os.rename("/tmp/n.tmp", "/tmp/n")
time.sleep(3600)' >/dev/null 2>&1 &"#;
    let held = start_hog(&a, hog).await;
    let n: u32 = held.trim().parse().expect("the hog reports its count");
    assert!(
        n <= soulbox_runtime::ns::DEFAULT_PTY_MAX,
        "one sandbox held {n} terminals"
    );
    let other = b
        .sh_as(
            Some("user"),
            "python3 -c 'import os; os.openpty(); print(\"ok\")'",
        )
        .await;
    assert!(
        text(&other.stdout).contains("ok"),
        "no terminal left for sandbox B: {}",
        text(&other.stderr)
    );
}

/// Item 6: a descriptor the server inherited (here: a pipe this test process opens without
/// close-on-exec) must not be open in the agent or in any command.
#[tokio::test]
async fn no_host_descriptor_crosses_into_the_sandbox() {
    let mut fds = [0; 2];
    // SAFETY: pipe writes two new descriptors into the array we own.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let ino = std::fs::metadata(format!("/proc/self/fd/{}", fds[1]))
        .unwrap()
        .ino();
    let sb = Sandbox::new(small(), false).await;
    let cmd = sb
        .sh_as(Some("user"), "ls /proc/self/fd | tr '\\n' ' '")
        .await;
    assert_eq!(
        text(&cmd.stdout).trim(),
        "0 1 2 3",
        "a command holds descriptors it was not given"
    );
    let agent = sb
        .root("ls -l /proc/1/fd/ | grep -o 'pipe:.*' || true")
        .await;
    let s = text(&agent.stdout);
    assert!(
        !s.contains(&format!("pipe:[{ino}]")),
        "the host's pipe is open in the agent: {s}"
    );
    for fd in fds {
        // SAFETY: closing the pipe we opened.
        unsafe { libc::close(fd) };
    }
}

/// Item 13: what a sandbox can read of the host: mount sources, the kernel command line, the
/// host's block devices.
#[tokio::test]
async fn host_facts_stay_outside() {
    let sb = Sandbox::new(small(), false).await;
    let out = sb
        .sh_as(
            Some("user"),
            "cat /proc/self/mountinfo; echo ---; cat /proc/cmdline; echo ---; \
             ls /sys/block /sys/class/block /sys/dev/block 2>/dev/null",
        )
        .await;
    let s = text(&out.stdout);
    let parts: Vec<_> = s.split("---\n").collect();
    assert_eq!(parts.len(), 3, "{s}");
    let data_dir = sb.backend.sandbox_dir("x");
    let data_dir = data_dir.parent().and_then(|p| p.parent()).unwrap();
    let exe = std::path::PathBuf::from(env!("CARGO_BIN_EXE_soulbox"));
    for host_path in [data_dir, exe.parent().unwrap()] {
        assert!(
            !parts[0].contains(&*host_path.to_string_lossy()),
            "mountinfo names {}: {}",
            host_path.display(),
            parts[0]
        );
    }
    assert_eq!(
        parts[1].trim(),
        "",
        "the host's kernel command line is readable"
    );
    assert!(
        !parts[2].contains("loop"),
        "the host's block devices are listed: {}",
        parts[2]
    );
}

/// The agent's binary: `user` cannot touch it, and what sandbox root does to its own copy
/// never reaches the host's layer.
#[tokio::test]
async fn the_agent_binary_is_the_sandboxs_own_copy() {
    let sb = Sandbox::new(small(), false).await;
    let out = sb
        .sh_as(Some("user"), "echo x > /.soulbox/agent 2>&1; echo rc=$?")
        .await;
    assert!(text(&out.stdout).contains("rc=1"), "user wrote the agent");
    let out = sb
        .root("rm -f /.soulbox/agent; echo x > /.soulbox/agent; head -c 16 /.soulbox/agent")
        .await;
    assert_eq!(text(&out.stdout).trim(), "x");
    let agent =
        std::path::PathBuf::from(env!("CARGO_BIN_EXE_soulbox")).with_file_name("soulbox-agent");
    let data_dir = sb.backend.sandbox_dir("x");
    let layers = data_dir
        .parent()
        .and_then(|p| p.parent())
        .unwrap()
        .join("agent");
    let want = std::fs::read(&agent).unwrap();
    let same = std::fs::read_dir(layers)
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("layer/.soulbox/agent")).ok())
        .any(|b| b == want);
    assert!(same, "the host's agent layer was changed");
    // The agent keeps serving.
    assert_eq!(sb.root("true").await.exit_code, 0);
}
