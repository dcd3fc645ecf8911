//! SoulBox's own LXCFS: the FUSE file system (Debian package `lxcfs`) that answers reads of
//! `proc/meminfo`, `proc/cpuinfo`, … with the figures of the reader's cgroups, so a sandbox
//! sees its memory limit, its CPU quota as CPUs and its own uptime instead of the host's.
//!
//! The runtime mounts one instance at [`DEFAULT_MOUNT_POINT`] (a name of SoulBox's own; the
//! distribution's service uses `/var/lib/lxcfs`), or reuses one that is already mounted there
//! and answers. An instance SoulBox started is stopped, and its mount removed, when the
//! runtime drops it; a stale mount (its daemon gone) is removed before a new one is made.
//!
//! LXCFS finds the reader's cgroup from its host pid, through the init of its pid namespace.
//! It takes the `cpuset` cgroup's path as the path of the CPU figures too, so on cgroup v1 a
//! sandbox has a `cpuset` group beside its `cpu` group (with every CPU: it limits nothing).

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the runtime mounts its LXCFS.
pub const DEFAULT_MOUNT_POINT: &str = "/run/soulbox/lxcfs";

/// Files of `/proc` a sandbox reads from LXCFS (`<mount>/proc/<name>`).
pub const PROC_FILES: &[&str] = &["meminfo", "cpuinfo", "stat", "uptime", "loadavg", "swaps"];

/// Files of `/sys` a sandbox reads from LXCFS (`<mount>/sys/<path>`): glibc's
/// `sysconf(_SC_NPROCESSORS_ONLN)` (Python's `os.cpu_count`) reads this one.
pub const SYS_FILES: &[&str] = &["devices/system/cpu/online"];

/// How long a new instance may take to mount.
const START_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a stopped instance may take to exit before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum LxcfsError {
    /// The `lxcfs` program is not installed.
    #[error("lxcfs is not installed (apt-get install lxcfs); sandboxes see the host's memory, CPUs and uptime")]
    Missing,
    /// The daemon did not start or did not mount.
    #[error("lxcfs at {mount}: {reason}")]
    Failed { mount: PathBuf, reason: String },
}

/// A mounted LXCFS the runtime uses; stops it on drop if the runtime started it.
#[derive(Debug)]
pub struct Lxcfs {
    mount: PathBuf,
    /// The daemon, if SoulBox started it (`None`: an instance found mounted and reused).
    child: Option<Child>,
}

impl Lxcfs {
    /// Reuses a healthy instance at `mount`, or starts one there.
    pub fn start(mount: &Path) -> Result<Lxcfs, LxcfsError> {
        let fail = |reason: String| LxcfsError::Failed {
            mount: mount.to_path_buf(),
            reason,
        };
        if is_mounted(mount) {
            if is_healthy(mount) {
                return Ok(Lxcfs {
                    mount: mount.to_path_buf(),
                    child: None,
                });
            }
            // Its daemon is gone (reads fail with ENOTCONN): remove the dead mount.
            let _ = nix::mount::umount2(mount, nix::mount::MntFlags::MNT_DETACH);
        }
        let program = find_program("lxcfs").ok_or(LxcfsError::Missing)?;
        let parent = mount.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(mount).map_err(|e| fail(format!("mkdir: {e}")))?;
        // Sandbox processes (unprivileged host uids) walk here before their root is pivoted.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| fail(format!("chmod {}: {e}", parent.display())))?;
        let name = mount
            .file_name()
            .map_or("lxcfs".into(), |n| n.to_string_lossy());
        let pidfile = parent.join(format!("{name}.pid"));
        let log = std::fs::File::create(parent.join(format!("{name}.log")))
            .map_err(|e| fail(format!("log file: {e}")))?;
        let mut cmd = Command::new(&program);
        // SAFETY: between fork and exec only async-signal-safe syscalls are made.
        unsafe {
            cmd.pre_exec(|| {
                // Its own session: a terminal's ^C reaches the runtime, which stops lxcfs
                // after its sandboxes. And no descriptor of ours stays open in a daemon that
                // may outlive us (a lock held by the caller, say): mark 3 and up close-on-exec.
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                if libc::syscall(
                    libc::SYS_close_range,
                    3u32,
                    u32::MAX,
                    libc::CLOSE_RANGE_CLOEXEC,
                ) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        };
        let mut child = cmd
            .args([
                "--foreground",
                "--enable-cfs",
                "--enable-loadavg",
                "--enable-pidfd",
            ])
            .arg("--pidfile")
            .arg(&pidfile)
            .arg(mount)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| fail(format!("running {}: {e}", program.display())))?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if is_mounted(mount) && is_healthy(mount) {
                tracing::info!(mount = %mount.display(), "lxcfs started");
                return Ok(Lxcfs {
                    mount: mount.to_path_buf(),
                    child: Some(child),
                });
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(fail(format!(
                    "lxcfs exited with {status}; see {}",
                    parent.join(format!("{name}.log")).display()
                )));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                let _ = nix::mount::umount2(mount, nix::mount::MntFlags::MNT_DETACH);
                return Err(fail("did not mount in time".into()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn mount_point(&self) -> &Path {
        &self.mount
    }

    /// Whether SoulBox started this instance (and so stops it).
    pub fn is_owned(&self) -> bool {
        self.child.is_some()
    }

    /// Whether the instance still answers.
    pub fn is_healthy(&self) -> bool {
        is_healthy(&self.mount)
    }
}

impl Drop for Lxcfs {
    fn drop(&mut self) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        // On SIGTERM lxcfs leaves its loop, unmounts and removes its pidfile.
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while !matches!(child.try_wait(), Ok(Some(_)) | Err(_)) {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if is_mounted(&self.mount) {
            let _ = nix::mount::umount2(&self.mount, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Whether an LXCFS file system is mounted at `mount` (per this process's mount table).
pub fn is_mounted(mount: &Path) -> bool {
    let want = mount.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let mut f = l.split(' ');
            let at = f.nth(4);
            let fstype = l.split(" - ").nth(1).and_then(|r| r.split(' ').next());
            at == Some(&*want) && fstype == Some("fuse.lxcfs")
        })
}

/// Whether the instance at `mount` answers a read of its `proc/uptime`, within a second (a
/// hung daemon would block the reader: the read runs on a thread of its own).
pub fn is_healthy(mount: &Path) -> bool {
    let file = mount.join("proc/uptime");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut s = String::new();
        let ok = std::fs::File::open(&file)
            .and_then(|mut f| f.read_to_string(&mut s))
            .is_ok();
        let _ = tx.send(ok && !s.trim().is_empty());
    });
    rx.recv_timeout(Duration::from_secs(1)).unwrap_or(false)
}

/// `name` in one of the directories of `PATH` (or the usual system ones).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/bin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_mounted_at_a_fresh_path() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_mounted(dir.path()));
        assert!(!is_healthy(dir.path()));
    }

    /// Start, reuse, stale mount, stop (root and lxcfs needed; skipped without them).
    #[test]
    fn an_instance_is_started_reused_replaced_when_dead_and_stopped() {
        if !nix::unistd::geteuid().is_root() || find_program("lxcfs").is_none() {
            eprintln!("skipped: needs root and lxcfs");
            return;
        }
        let mount = PathBuf::from(format!("/run/soulbox-test-{}/lxcfs", std::process::id()));
        let a = Lxcfs::start(&mount).expect("lxcfs starts");
        assert!(a.is_owned() && a.is_healthy() && is_mounted(&mount));
        let b = Lxcfs::start(&mount).expect("a running instance is reused");
        assert!(!b.is_owned());
        drop(b);
        assert!(a.is_healthy(), "dropping a reused instance stopped it");
        // A daemon that died leaves a mount that fails every read: it is replaced.
        let mut a = a;
        let mut child = a.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(is_mounted(&mount) && !is_healthy(&mount));
        let c = Lxcfs::start(&mount).expect("a dead mount is replaced");
        assert!(c.is_owned() && c.is_healthy());
        let pid = c.child.as_ref().unwrap().id();
        drop((a, c));
        assert!(!is_mounted(&mount), "the mount outlived the instance");
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "lxcfs still runs"
        );
        let _ = std::fs::remove_dir_all(mount.parent().unwrap());
    }
}
