//! SoulBox's node runtime: sandboxes behind the [`Backend`] trait, the Linux-namespace
//! backend ([`ns::NsBackend`]), and the templates sandboxes start from.

pub mod admission;
pub mod agent_client;
pub mod cgroup;
mod fs_util;
pub mod ids;
pub mod jail;
pub mod layer;
pub mod lxcfs;
pub mod network;
pub mod ns;
pub mod template;

pub use fs_util::private_data_dir;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;

/// Resource limits of one sandbox, fixed at creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub memory_bytes: u64,
    /// CPU quota in thousandths of a CPU (2000 = two CPUs' worth of time).
    pub cpu_millis: u64,
    pub pids: u64,
    /// Size of the writable layer.
    pub disk_bytes: u64,
    /// Open files per process (never above the host's own hard limit).
    pub nofile: u64,
}

impl Default for Limits {
    /// E2B's defaults: 2 vCPU and 512 MiB.
    fn default() -> Self {
        Limits {
            memory_bytes: 512 << 20,
            cpu_millis: 2000,
            pids: 1024,
            disk_bytes: 5 << 30,
            nofile: 16384,
        }
    }
}

impl Limits {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(RuntimeError::InvalidSpec(m.to_string()));
        if self.memory_bytes < 16 << 20 {
            return bad("memory must be at least 16 MiB");
        }
        if self.cpu_millis < 10 {
            return bad("cpu must be at least 0.01 CPU");
        }
        if self.pids < 8 {
            return bad("pids must be at least 8");
        }
        if self.disk_bytes < 64 << 20 {
            return bad("disk must be at least 64 MiB");
        }
        if self.nofile < 64 || self.nofile > 1 << 20 {
            return bad("open files must be between 64 and 1048576");
        }
        Ok(())
    }
}

/// What to create.
#[derive(Debug, Clone, Default)]
pub struct SandboxSpec {
    pub template: String,
    pub limits: Limits,
    pub internet: bool,
    /// Egress beyond the baseline (with `internet`): what the firewall refuses, and which
    /// connections go to the egress proxy.
    pub egress: Option<network::SlotPolicy>,
    pub env_vars: BTreeMap<String, String>,
    /// envd access token the agent will demand; `None` leaves it unsecured.
    pub access_token: Option<String>,
    /// The root filesystem as a stack of layers (a custom template's); `None` uses the
    /// built-in template named by `template`.
    pub rootfs: Option<Rootfs>,
    /// The writable layer's kind, if not the runtime's default (a build step needs ext4: its
    /// writable layer becomes a layer).
    pub writable_layer: Option<ns::WritableLayer>,
    /// Who asks for it (`api`, `pool`, `build`, …), kept with it: after a restart the owner
    /// tells its sandboxes from the others by it.
    pub label: String,
}

/// A root filesystem made of store layers, and the defaults of the processes started in it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rootfs {
    /// Layer directories, topmost first.
    pub layers: Vec<PathBuf>,
    /// The user commands run as when a request names none.
    pub user: Option<String>,
    /// Their working directory when a request names none.
    pub workdir: Option<String>,
    /// A checkpoint of processes to restore on these layers (a memory snapshot's images);
    /// `None`: a fresh init.
    pub memory: Option<PathBuf>,
}

/// A running sandbox as the runtime knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SandboxInfo {
    pub id: String,
    pub template: String,
    /// The spec's label.
    pub label: String,
    /// Host pid of the sandbox's init (the agent).
    pub pid: i32,
    /// The agent's socket, reachable from the host.
    pub socket: PathBuf,
    pub internet: bool,
    pub limits: Limits,
    #[serde(skip)]
    pub access_token: Option<String>,
    pub created_unix_ms: u64,
    /// The read-only layers it runs on, topmost first (kept while it runs).
    #[serde(skip)]
    pub layers: Vec<PathBuf>,
    /// Its processes were restored from a memory snapshot when it was created (rather than
    /// started afresh).
    pub restored: bool,
}

/// Usage of one sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SandboxStats {
    pub cgroup: cgroup::Stats,
    pub disk_used: u64,
    pub disk_total: u64,
    /// Bytes the sandbox received and sent on its network slot since the slot's veth was
    /// made (0 for a sandbox without a slot).
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("sandbox {0} not found")]
    NotFound(String),
    #[error("invalid sandbox spec: {0}")]
    InvalidSpec(String),
    #[error(transparent)]
    Template(#[from] template::TemplateError),
    #[error(transparent)]
    Cgroup(#[from] cgroup::CgroupError),
    #[error(transparent)]
    Network(#[from] network::NetError),
    #[error(transparent)]
    Agent(#[from] agent_client::ClientError),
    #[error("starting the sandbox failed: {0}")]
    Launch(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("another SoulBox runtime holds {0}; stop it first (one runtime per host)")]
    Locked(PathBuf),
    /// A sandbox's files are not what they were when it was paused.
    #[error("sandbox {id}: its files differ from the manifest saved when it was paused ({total} difference(s)): {}", problems.join("; "))]
    Corrupt {
        id: String,
        problems: Vec<String>,
        total: usize,
    },
    /// The host is (nearly) full: a new sandbox would run into a host limit.
    #[error("no capacity for another sandbox: {0}")]
    Capacity(String),
}

pub type Result<T> = std::result::Result<T, RuntimeError>;

/// What the control plane needs from a way of isolating sandboxes.
pub trait Backend: Send + Sync {
    /// Creates a sandbox and returns once its agent answers.
    fn create(&self, spec: SandboxSpec) -> impl Future<Output = Result<SandboxInfo>> + Send;
    /// Kills a sandbox and removes every trace of it.
    fn kill(&self, id: &str) -> impl Future<Output = Result<()>> + Send;
    fn get(&self, id: &str) -> Option<SandboxInfo>;
    fn list(&self) -> Vec<SandboxInfo>;
    fn stats(&self, id: &str) -> Result<SandboxStats>;
    /// Freezes every process of the sandbox.
    fn pause(&self, id: &str) -> impl Future<Output = Result<()>> + Send;
    fn resume(&self, id: &str) -> impl Future<Output = Result<()>> + Send;
}
