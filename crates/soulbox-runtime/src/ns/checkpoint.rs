//! Checkpoints of a running sandbox with CRIU (E2B's *full* pause): every process with its
//! memory, descriptors and terminals is written to `<sandbox>/checkpoint/` and the sandbox's
//! RAM is released; the resume restores them on the same files ([`crate::jail::restore`]).
//!
//! CRIU runs in the sandbox's network namespace: that namespace belongs to the host, not to
//! the sandbox's user namespace (sandbox root holds no power over its own network), and CRIU
//! dumps only namespaces of the target's user namespace. Run from inside it, the network is
//! simply CRIU's own and stays out of the checkpoint; the resume joins a slot again. The
//! mounts the host provides — the sandbox's `/dev` (its children locked, which CRIU cannot
//! copy), `/sys` and LXCFS's files — are marked external and provided again at the restore.

use crate::jail::{mount_key, restore::log_errors};
use crate::{Result, RuntimeError};
use serde::{Deserialize, Serialize};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The checkpoint's directory in the sandbox's directory.
pub const CHECKPOINT_DIR: &str = "checkpoint";
/// What the runtime records beside CRIU's images.
const INFO_FILE: &str = "soulbox.json";
/// The oldest CRIU that works on current kernels (Debian 12's 3.17 does not).
const MIN_MAJOR: u32 = 4;
/// Where `scripts/install.sh` puts the CRIU it builds.
pub const INSTALLED_CRIU: &str = "/usr/local/sbin/criu";

/// A usable CRIU.
#[derive(Debug, Clone)]
pub struct Criu {
    pub path: PathBuf,
    pub version: String,
}

impl Criu {
    /// `SOULBOX_CRIU`, else the installed one, else `criu` on the PATH; only version 4 or newer.
    pub fn find() -> std::result::Result<Criu, String> {
        let candidates: Vec<PathBuf> = match std::env::var_os("SOULBOX_CRIU") {
            Some(p) => vec![PathBuf::from(p)],
            None => vec![
                PathBuf::from(INSTALLED_CRIU),
                PathBuf::from("/usr/sbin/criu"),
                PathBuf::from("/usr/bin/criu"),
            ],
        };
        let mut seen = Vec::new();
        for path in candidates {
            if !path.exists() {
                continue;
            }
            let out = Command::new(&path).arg("--version").output();
            let text = out
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            let version = text
                .lines()
                .find_map(|l| l.strip_prefix("Version:"))
                .map(|v| v.trim().to_string())
                .unwrap_or_default();
            let major = version
                .split('.')
                .next()
                .and_then(|m| m.parse::<u32>().ok())
                .unwrap_or(0);
            if major >= MIN_MAJOR {
                return Ok(Criu { path, version });
            }
            seen.push(format!("{} is version {version:?}", path.display()));
        }
        Err(if seen.is_empty() {
            format!("no CRIU found (install {MIN_MAJOR}.x with scripts/install.sh, or set SOULBOX_CRIU)")
        } else {
            format!(
                "{}; full pause needs CRIU {MIN_MAJOR} or newer (scripts/install.sh builds one)",
                seen.join(", ")
            )
        })
    }
}

/// What the resume needs besides CRIU's images.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointInfo {
    /// The agent's listening socket (`socket:[inode]`).
    pub listener: String,
    pub external_mounts: Vec<String>,
    /// The sandbox's first host id when it was checkpointed: a sandbox restored from it with
    /// another id range (a fork) has its user namespace's map moved ([`remap_ids`]).
    #[serde(default)]
    pub id_base: u32,
    /// The envd token its agent holds: a sandbox restored from it with a token of its own
    /// authenticates once with this one to replace it.
    #[serde(default)]
    pub access_token: Option<String>,
}

impl CheckpointInfo {
    /// The checkpoint in `images`.
    pub fn read_from(images: &Path) -> Result<CheckpointInfo> {
        let path = images.join(INFO_FILE);
        let bytes = std::fs::read(&path).map_err(|source| RuntimeError::Io {
            path: path.clone(),
            source,
        })?;
        serde_json::from_slice(&bytes)
            .map_err(|e| RuntimeError::Launch(format!("{}: {e}", path.display())))
    }

    /// The checkpoint of the sandbox whose directory is `dir`.
    pub fn read(dir: &Path) -> Result<CheckpointInfo> {
        Self::read_from(&dir.join(CHECKPOINT_DIR))
    }
}

/// How a dump leaves the processes.
pub enum After<'a> {
    /// Ended (a full pause).
    End,
    /// Running on (a snapshot or fork). They are in this freezer cgroup, frozen by the caller
    /// while it copied their files (after [`drop_host_connections`]), and CRIU leaves it
    /// frozen.
    RunOn { frozen_cgroup: &'a Path },
}

/// Checkpoints the processes under init `pid`, of the sandbox described by `state`, into
/// `images` (made afresh). If CRIU fails they run on (it resumes them) and no checkpoint is
/// left; an error after CRIU succeeded (syncing the images) leaves them as `after` says.
pub fn dump(
    criu: &Criu,
    pid: i32,
    state: &super::state::SandboxState,
    images: &Path,
    after: After,
) -> Result<CheckpointInfo> {
    crate::fs_util::remove_tree(images);
    std::fs::create_dir(images).map_err(super::io_err(images))?;
    let fd = format!("/proc/{pid}/fd/{}", crate::jail::AGENT_LISTEN_FD);
    let listener = std::fs::read_link(&fd)
        .map_err(super::io_err(Path::new(&fd)))?
        .to_string_lossy()
        .into_owned();
    let info = CheckpointInfo {
        listener,
        external_mounts: external_mounts(pid)?,
        id_base: state.id_base,
        access_token: state.init.access_token.clone(),
    };
    if matches!(after, After::End) {
        drop_host_connections(pid)?;
    }
    let netns_path = format!("/proc/{pid}/ns/net");
    let netns = std::fs::File::open(&netns_path).map_err(super::io_err(Path::new(&netns_path)))?;
    let mut cmd = Command::new(&criu.path);
    cmd.arg("dump")
        .arg("--tree")
        .arg(pid.to_string())
        .arg("--images-dir")
        .arg(images)
        .args(["--log-file", "dump.log", "-v2"])
        // Open connections are saved (and closed at the restore) rather than refusing the dump.
        .arg("--tcp-established")
        // No firewall lock: the namespace is the sandbox's alone and its processes are frozen;
        // CRIU's rules would stay behind in the pooled slot.
        .args(["--network-lock", "skip"])
        // Deleted files still open (a common temp-file pattern) travel in the checkpoint.
        .args(["--ghost-limit", "64M"]);
    for m in &info.external_mounts {
        cmd.arg("--external")
            .arg(format!("mnt[{m}]:{}", mount_key(m)));
    }
    if let After::RunOn { frozen_cgroup } = after {
        cmd.arg("--leave-running")
            .arg("--freeze-cgroup")
            .arg(frozen_cgroup);
    }
    let raw = netns.as_raw_fd();
    // SAFETY: only setns (async-signal-safe) between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            if libc::setns(raw, libc::CLONE_NEWNET) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| RuntimeError::Launch(format!("running {}: {e}", criu.path.display())))?;
    if !out.status.success() {
        let why = log_errors(&images.join("dump.log"));
        crate::fs_util::remove_tree(images);
        return Err(RuntimeError::Launch(format!("criu dump failed: {why}")));
    }
    sync_dir(images)?;
    let bytes = serde_json::to_vec(&info).map_err(|e| RuntimeError::Launch(e.to_string()))?;
    let path = images.join(INFO_FILE);
    crate::fs_util::write_atomic(&path, &bytes, 0o600)
        .map_err(|source| RuntimeError::Io { path, source })?;
    Ok(info)
}

/// How long the agent may take to drop the host's connections.
const DROP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Has the agent (init `pid`) drop its connections with the host and waits until their
/// sockets are gone. They live in the host's network namespace (a unix connection's accepted
/// end belongs to the connecting side's namespace), where the checkpoint cannot reach. A
/// dump that leaves the processes running needs this done before they are frozen.
pub fn drop_host_connections(pid: i32) -> Result<()> {
    let agent = nix::unistd::Pid::from_raw(pid);
    nix::sys::signal::kill(agent, nix::sys::signal::Signal::SIGUSR1)
        .map_err(|e| RuntimeError::Launch(format!("signalling the agent: {e}")))?;
    let deadline = std::time::Instant::now() + DROP_TIMEOUT;
    loop {
        let host = host_unix_inodes();
        let open = socket_inodes(pid)
            .into_iter()
            .filter(|i| host.contains(i))
            .count();
        if open == 0 {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(RuntimeError::Launch(format!(
                "the agent still holds {open} connection(s) with the host after {DROP_TIMEOUT:?}"
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// Inodes of the unix sockets of this process's (the host's) network namespace.
fn host_unix_inodes() -> std::collections::HashSet<u64> {
    let text = std::fs::read_to_string("/proc/self/net/unix").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(6)?.parse().ok())
        .collect()
}

/// Inodes of the sockets process `pid` holds.
fn socket_inodes(pid: i32) -> Vec<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return vec![];
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            l.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// The sandbox's mounts the host provides: `/dev`, `/sys` (a sysfs can be mounted only by
/// the owner of the network namespace, the host) and LXCFS's files.
fn external_mounts(pid: i32) -> Result<Vec<String>> {
    let path = PathBuf::from(format!("/proc/{pid}/mountinfo"));
    let text = std::fs::read_to_string(&path).map_err(super::io_err(&path))?;
    let mut out = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (mount_point, fstype) = (fields.get(4), fields.get(sep + 1));
        if let (Some(mp), Some(fs)) = (mount_point, fstype) {
            if *mp == "/dev" || (*mp == "/sys" && *fs == "sysfs") || fs.starts_with("fuse.lxcfs") {
                out.push(mp.to_string());
            }
        }
    }
    Ok(out)
}

/// Every image on the disk before the pause is called done.
fn sync_dir(dir: &Path) -> Result<()> {
    for e in std::fs::read_dir(dir).map_err(super::io_err(dir))? {
        let p = e.map_err(super::io_err(dir))?.path();
        std::fs::File::open(&p)
            .and_then(|f| f.sync_all())
            .map_err(super::io_err(&p))?;
    }
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(super::io_err(dir))
}

/// CRIU's image of a user namespace (images/userns.proto).
#[derive(Clone, PartialEq, prost::Message)]
struct UsernsEntry {
    #[prost(message, repeated, tag = "1")]
    uid_map: Vec<IdExtent>,
    #[prost(message, repeated, tag = "2")]
    gid_map: Vec<IdExtent>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct IdExtent {
    #[prost(uint32, required, tag = "1")]
    first: u32,
    #[prost(uint32, required, tag = "2")]
    lower_first: u32,
    #[prost(uint32, required, tag = "3")]
    count: u32,
}

/// Moves the user namespace of the checkpoint in `images` from the host ids at `from` to
/// those at `to` (a range of [`crate::jail::ID_RANGE`] ids each): the processes of a fork run
/// as the fork's own ids. An image is two magic words, then entries, each a little-endian
/// length and a protobuf message.
pub fn remap_ids(images: &Path, from: u32, to: u32) -> Result<()> {
    use prost::Message;
    let bad = |p: &Path, what: &str| RuntimeError::Launch(format!("{}: {what}", p.display()));
    let entries = std::fs::read_dir(images).map_err(super::io_err(images))?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("userns-") && name.ends_with(".img")) {
            continue;
        }
        let path = e.path();
        let raw = std::fs::read(&path).map_err(super::io_err(&path))?;
        if raw.len() < 12 {
            return Err(bad(&path, "too short"));
        }
        let len = u32::from_le_bytes([raw[8], raw[9], raw[10], raw[11]]) as usize;
        let body = raw
            .get(12..12 + len)
            .ok_or_else(|| bad(&path, "truncated"))?;
        let mut entry = UsernsEntry::decode(body).map_err(|e| bad(&path, &e.to_string()))?;
        for x in entry.uid_map.iter_mut().chain(entry.gid_map.iter_mut()) {
            let off = x
                .lower_first
                .checked_sub(from)
                .filter(|o| {
                    o.checked_add(x.count)
                        .is_some_and(|end| end <= crate::jail::ID_RANGE)
                })
                .ok_or_else(|| bad(&path, "an id outside the sandbox's range"))?;
            x.lower_first = to + off;
        }
        let mut out = raw[..8].to_vec();
        let body = entry.encode_to_vec();
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        out.extend_from_slice(&raw[12 + len..]);
        // Renamed over the old name, a new inode: the old one may be a hard link to a memory
        // snapshot's image, which stays as it was.
        crate::fs_util::write_atomic(&path, &out, 0o644)
            .map_err(|source| RuntimeError::Io { path, source })?;
    }
    Ok(())
}
