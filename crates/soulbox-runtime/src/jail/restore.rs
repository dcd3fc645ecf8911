//! Restoring a checkpoint (the resume of a full pause): the launcher prepares the sandbox's
//! files and namespaces as for a fresh start, then CRIU recreates its processes in them.
//!
//! CRIU runs as real root in the launcher's cgroups, network namespace and private mount
//! namespace, so the restored processes land in the sandbox's cgroups and network slot, and
//! the overlay root and `/dev` made here are what their mount namespace is built on. The
//! agent's listening socket is made fresh at the host path (its old one named a path outside
//! the sandbox) and handed to CRIU in place of the checkpoint's.

use super::mounts::{self, Result};
use super::spec::{mount_key, LaunchSpec, RestoreSpec};
use nix::unistd::Pid;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The descriptor the fresh listener has in CRIU.
const LISTENER_FD: i32 = 3;

pub fn restore(spec: &LaunchSpec, r: &RestoreSpec, ns: &OwnedFd, listener: OwnedFd) -> Result<Pid> {
    let (root, dev) = mounts::prepare_restore(spec, ns)?;
    let (root, dev) = reachable(&root, &dev)?;
    open_images(&r.images)?;
    let pidfile = r.images.join("restored.pid");
    let _ = std::fs::remove_file(&pidfile);
    let mut cmd = Command::new(&r.criu);
    cmd.arg("restore")
        .arg("--images-dir")
        .arg(&r.images)
        .args(["--log-file", "restore.log", "-v2"])
        .arg("--root")
        .arg(&root)
        .arg("--pidfile")
        .arg(&pidfile)
        // The processes are the runtime's (a child subreaper) once CRIU is done.
        .arg("--restore-detached")
        // Already in the sandbox's cgroups, as CRIU is.
        .arg("--manage-cgroups=ignore")
        // Connections open at the pause are closed: their peers are long gone.
        .arg("--tcp-close")
        // The sandbox's user namespace is the sandbox's own host uid's, as at a fresh start
        // (our CRIU's patch): its per-user budgets are never root's.
        .env(
            "CRIU_USERNS_OWNER",
            format!("{}:{}", spec.id_base, spec.id_base),
        )
        .arg("--inherit-fd")
        .arg(format!("fd[{LISTENER_FD}]:{}", r.listener));
    for m in &r.external_mounts {
        let source = external_source(spec, m, &dev)?;
        cmd.arg("--external")
            .arg(format!("mnt[{}]:{}", mount_key(m), source.display()));
    }
    // Inherited descriptors keep their flags, not the checkpoint's: the agent's event loop
    // needs a non-blocking listener.
    nix::fcntl::fcntl(
        &listener,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .map_err(|e| format!("listener O_NONBLOCK: {e}"))?;
    let raw = listener.as_raw_fd();
    // SAFETY: between fork and exec only async-signal-safe calls (dup2).
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            if libc::dup2(raw, LISTENER_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("running {}: {e}", r.criu.display()))?;
    drop(listener);
    if !out.status.success() {
        return Err(format!(
            "criu restore exited with {}: {}",
            out.status,
            log_errors(&r.images.join("restore.log"))
        ));
    }
    let pid = std::fs::read_to_string(&pidfile)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .ok_or_else(|| format!("criu restore left no pid in {}", pidfile.display()))?;
    Ok(Pid::from_raw(pid))
}

/// Where, in this launcher's private mount namespace only, the root and `/dev` are bound for
/// CRIU: it opens them from inside the sandbox's user namespace, by path, and the sandbox's
/// directory (0700) is closed to that namespace's ids. The host sees an empty directory.
const RESTORE_POINT: &str = "/run/soulbox/restore";

/// Binds `root` and `dev` under [`RESTORE_POINT`], with a sysfs beside them; returns their
/// paths there.
fn reachable(root: &Path, dev: &Path) -> Result<(PathBuf, PathBuf)> {
    use nix::mount::MsFlags;
    let point = Path::new(RESTORE_POINT);
    let mkdir =
        |p: &Path| std::fs::create_dir_all(p).map_err(|e| format!("mkdir {}: {e}", p.display()));
    mkdir(point)?;
    let nse = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mounts::mnt(
        Some("tmpfs"),
        point,
        Some("tmpfs"),
        nse,
        Some("mode=0711,size=64k"),
    )?;
    let (root_at, dev_at, sys) = (point.join("root"), point.join("dev"), point.join("sys"));
    for (src, at) in [(root, &root_at), (dev, &dev_at)] {
        mkdir(at)?;
        mounts::bind(src, at, MsFlags::empty())?;
    }
    // A bare sysfs: CRIU mounts the masks over it again, as they were.
    mkdir(&sys)?;
    mounts::mnt(
        Some("sysfs"),
        &sys,
        Some("sysfs"),
        nse | MsFlags::MS_RDONLY,
        None,
    )?;
    Ok((root_at, dev_at))
}

/// CRIU reads images from inside the sandbox's user namespace, partly before its ids are
/// mapped: they must be readable by anyone who holds the way to them. The sandbox's
/// directory around them stays the host's alone (0700), and no restored process holds a way
/// to them (CRIU's descriptor on the directory is closed before the processes run).
fn open_images(images: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let set = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("chmod {}: {e}", p.display()))
    };
    let entries = std::fs::read_dir(images).map_err(|e| format!("{}: {e}", images.display()))?;
    for e in entries.flatten() {
        set(&e.path(), 0o644)?;
    }
    set(images, 0o755)
}

/// What the host provides again at an external mount point of the checkpoint.
fn external_source(spec: &LaunchSpec, mount_point: &str, dev: &Path) -> Result<PathBuf> {
    if mount_point == "/dev" {
        return Ok(dev.to_path_buf());
    }
    if mount_point == "/sys" {
        return Ok(Path::new(RESTORE_POINT).join("sys"));
    }
    let lxcfs = spec.lxcfs.as_ref().ok_or_else(|| {
        format!("the checkpoint has {mount_point} from LXCFS, which this runtime does not run")
    })?;
    let rel = mount_point.trim_start_matches('/');
    if rel.starts_with("proc/") || rel.starts_with("sys/") {
        Ok(lxcfs.join(rel))
    } else {
        Err(format!(
            "the checkpoint has an unknown external mount {mount_point}"
        ))
    }
}

/// The error lines of a CRIU log, for a message.
pub fn log_errors(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Error"))
        .take(5)
        .collect();
    if errors.is_empty() {
        format!("see {}", log.display())
    } else {
        errors.join("; ")
    }
}
