//! What the runtime hands to the launcher (`soulbox __launch`) on its stdin.

use serde::{Deserialize, Serialize};
use soulbox_protocol::init::InitSpec;
use std::path::PathBuf;

/// Everything needed to build one sandbox. Paths are host paths.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LaunchSpec {
    pub id: String,
    /// Read-only layers, topmost first: the agent's layer (`/.soulbox/agent`), then the
    /// template's. Owned by their natural ids on disk; mounted id-mapped.
    pub layers: Vec<PathBuf>,
    /// The sandbox's directory (host-only): holds `root/` (the overlay mount point), the
    /// layers' mount points and the writable layer.
    pub dir: PathBuf,
    pub upper: UpperLayer,
    /// Where the agent's listening socket is made: a host path outside the sandbox.
    pub socket: PathBuf,
    /// `cgroup.procs` files to join before the namespaces are made.
    pub cgroup_procs: Vec<PathBuf>,
    /// A pooled network namespace to join (internet on); `None` makes a fresh one with only
    /// loopback (internet off).
    pub netns: Option<PathBuf>,
    /// Host uid/gid that sandbox root maps to, and the owner of its user namespace; 65536 ids
    /// from here are this sandbox's alone.
    pub id_base: u32,
    pub nofile: u64,
    /// Pseudo-terminals the sandbox may hold at once (its devpts instance's `max`).
    pub pty_max: u32,
    pub seccomp: bool,
    /// A mounted LXCFS whose `proc/…` and `sys/…` files are bound over the sandbox's own
    /// ([`crate::lxcfs::PROC_FILES`], [`crate::lxcfs::SYS_FILES`]); `None`: the host's figures.
    pub lxcfs: Option<PathBuf>,
    /// Handed to the agent over a pipe on fd 3.
    pub init: InitSpec,
    /// Restore this checkpoint (a full pause) instead of starting a fresh init.
    #[serde(default)]
    pub restore: Option<RestoreSpec>,
}

/// A checkpoint to restore with CRIU, on the sandbox's files and in its namespaces.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestoreSpec {
    pub criu: PathBuf,
    /// The checkpoint's images (host-only, in the sandbox's directory).
    pub images: PathBuf,
    /// The agent's listening socket as the checkpoint names it (`socket:[inode]`): the fresh
    /// one made at `socket` takes its place.
    pub listener: String,
    /// Mount points the checkpoint left to the host (`/dev`, LXCFS's files): the launcher
    /// provides each again.
    pub external_mounts: Vec<String>,
}

/// The name a checkpoint gives the external mount at `mount_point`.
pub fn mount_key(mount_point: &str) -> String {
    format!("m{}", mount_point.replace('/', "_"))
}

/// The per-sandbox writable layer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum UpperLayer {
    /// A sparse ext4 image file, loop-mounted; its size is the disk limit.
    Ext4 { image: PathBuf },
    /// A size-limited tmpfs (memory-backed; charged to the sandbox's memory cgroup).
    Tmpfs { size_bytes: u64 },
}

/// The launcher's one line of output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum LaunchResult {
    /// Host pid of the sandbox's init (the agent).
    Started {
        pid: i32,
    },
    Failed {
        error: String,
    },
}
