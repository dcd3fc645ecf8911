//! The Linux-namespace backend.
//!
//! A sandbox is a directory `<data>/sandboxes/<id>/` (writable-layer image, agent socket
//! directory, mount points), a cgroup per controller, optionally a pooled network slot, and a
//! process tree whose init is the agent. Everything else (mounts, loop device) lives only in
//! the sandbox's own mount namespace and disappears with its last process.

use crate::admission::{Admission, HostLimits};
use crate::agent_client::AgentClient;
use crate::cgroup::{self, CgroupManager};
use crate::jail::{LaunchResult, LaunchSpec, UpperLayer};
use crate::network::{NetworkPool, Slot};
use crate::template::TemplateStore;
use crate::{
    fs_util, Backend, Limits, Result, RuntimeError, SandboxInfo, SandboxSpec, SandboxStats,
};
use nix::unistd::Pid;
use rand::distr::SampleString;
use soulbox_protocol::init::InitSpec;
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long an agent may take to answer after its init exec'd.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WritableLayer {
    /// A sparse ext4 image per sandbox, loop-mounted: real disk, limited by its size.
    #[default]
    Ext4,
    /// A size-limited tmpfs: fastest, but its data counts as the sandbox's memory.
    Tmpfs,
}

/// Host uid/gid that sandbox root maps to by default; 65536 ids from here are sandboxes'.
pub const DEFAULT_ID_BASE: u32 = 100_000;

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub data_dir: PathBuf,
    /// The static agent binary.
    pub agent: PathBuf,
    /// A program that runs the launcher when called as `<launcher> __launch`.
    pub launcher: PathBuf,
    /// Host uid/gid of sandbox root; 65536 ids from here are the sandbox's.
    pub id_base: u32,
    pub writable_layer: WritableLayer,
    pub cgroup_root: PathBuf,
    pub seccomp: bool,
    /// What all sandboxes together may take from the host; when creates are refused.
    pub host_limits: HostLimits,
}

impl RuntimeConfig {
    pub fn new(data_dir: PathBuf, agent: PathBuf, launcher: PathBuf) -> Self {
        RuntimeConfig {
            data_dir,
            agent,
            launcher,
            id_base: DEFAULT_ID_BASE,
            writable_layer: WritableLayer::Ext4,
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            seccomp: true,
            host_limits: HostLimits::default(),
        }
    }
}

struct Entry {
    info: SandboxInfo,
    slot: Option<Slot>,
}

pub struct NsBackend {
    cfg: RuntimeConfig,
    cgroups: Arc<dyn CgroupManager>,
    net: Arc<NetworkPool>,
    templates: TemplateStore,
    sandboxes: Mutex<HashMap<String, Entry>>,
    admission: Admission,
    /// Held for the runtime's life: one runtime per data directory and host.
    _lock: std::fs::File,
}

impl std::fmt::Debug for NsBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NsBackend")
            .field("data_dir", &self.cfg.data_dir)
            .finish()
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RuntimeError + '_ {
    move |source| RuntimeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A random sandbox id: 20 characters of `[a-z0-9]`, as E2B's.
pub fn new_id() -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..20)
        .map(|_| CHARS[rand::Rng::random_range(&mut rng, 0..CHARS.len())] as char)
        .collect()
}

/// A random envd access token.
pub fn new_token() -> String {
    rand::distr::Alphanumeric.sample_string(&mut rand::rng(), 32)
}

impl NsBackend {
    /// Takes the host's runtime lock, becomes a child subreaper (sandbox inits are adopted by
    /// us when their launcher exits) and removes whatever an earlier run left behind.
    pub fn new(cfg: RuntimeConfig) -> Result<Self> {
        for d in [cfg.data_dir.clone(), cfg.data_dir.join("sandboxes")] {
            std::fs::create_dir_all(&d).map_err(io_err(&d))?;
        }
        // The lock lives in /run: the network slots and cgroups it guards are host-wide.
        let lock_path = PathBuf::from("/run/soulbox.lock");
        let lock = std::fs::File::create(&lock_path).map_err(io_err(&lock_path))?;
        nix::fcntl::Flock::lock(
            lock.try_clone().map_err(io_err(&lock_path))?,
            nix::fcntl::FlockArg::LockExclusiveNonblock,
        )
        .map(std::mem::forget)
        .map_err(|_| RuntimeError::Locked(lock_path.clone()))?;
        nix::sys::prctl::set_child_subreaper(true)
            .map_err(|e| RuntimeError::Launch(format!("PR_SET_CHILD_SUBREAPER: {e}")))?;
        for p in [&cfg.agent, &cfg.launcher] {
            if !p.is_file() {
                return Err(RuntimeError::Io {
                    path: p.clone(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "not found (build with `cargo build --release`)",
                    ),
                });
            }
        }
        let cgroups: Arc<dyn CgroupManager> = Arc::from(cgroup::detect(&cfg.cgroup_root)?);
        let admission = Admission::new(&cfg.host_limits, Arc::clone(&cgroups));
        let backend = NsBackend {
            templates: TemplateStore::new(&cfg.data_dir, cfg.id_base),
            cfg,
            cgroups,
            net: Arc::new(NetworkPool::new(admission.limits().flows_per_sandbox)),
            admission,
            sandboxes: Mutex::new(HashMap::new()),
            _lock: lock,
        };
        backend.remove_leftovers();
        backend.admission.apply_totals()?;
        Ok(backend)
    }

    pub fn templates(&self) -> &TemplateStore {
        &self.templates
    }

    pub fn cgroups(&self) -> &dyn CgroupManager {
        self.cgroups.as_ref()
    }

    pub fn network(&self) -> &NetworkPool {
        &self.net
    }

    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    pub fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.cfg.data_dir.join("sandboxes").join(id)
    }

    /// Sandboxes of an earlier run cannot be re-adopted yet: kill and remove them.
    fn remove_leftovers(&self) {
        for id in self.cgroups.existing() {
            let _ = self.cgroups.destroy(&id);
        }
        if let Ok(rd) = std::fs::read_dir(self.cfg.data_dir.join("sandboxes")) {
            for e in rd.flatten() {
                remove_sandbox_dir(&e.path());
            }
        }
        self.net.cleanup_stale();
    }

    /// A blank ext4 image of `size` bytes, made once per size and copied sparsely per sandbox.
    fn blank_image(&self, size: u64) -> Result<PathBuf> {
        let dir = self.cfg.data_dir.join("images");
        let path = dir.join(format!("blank-ext4-{size}.img"));
        if path.exists() {
            return Ok(path);
        }
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let tmp = dir.join(format!(".blank-{}-{}", std::process::id(), new_id()));
        let f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
        f.set_len(size).map_err(io_err(&tmp))?;
        let out = Command::new("mkfs.ext4")
            .args([
                "-q",
                "-F",
                "-O",
                "^has_journal",
                "-E",
                "lazy_itable_init=1,nodiscard",
                "-m",
                "0",
            ])
            .arg(&tmp)
            .output()
            .map_err(|e| {
                RuntimeError::Launch(format!("running mkfs.ext4 ({e}); install e2fsprogs"))
            })?;
        if !out.status.success() {
            let _ = std::fs::remove_file(&tmp);
            return Err(RuntimeError::Launch(format!(
                "mkfs.ext4: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
        Ok(path)
    }

    /// Everything before the agent answers; blocking. On error, `guard` undoes it all.
    fn start(
        &self,
        id: &str,
        spec: &SandboxSpec,
        guard: &mut CreateGuard,
    ) -> Result<(i32, PathBuf)> {
        spec.limits.validate()?;
        let template = self.templates.get(&spec.template)?;
        let dir = self.sandbox_dir(id);
        std::fs::create_dir(&dir).map_err(io_err(&dir))?;
        guard.dir = Some(dir.clone());
        self.admission.admit(id)?;
        let run = dir.join("run");
        std::fs::create_dir(&run).map_err(io_err(&run))?;
        // Only sandbox root may reach the agent's socket from inside.
        std::os::unix::fs::chown(&run, Some(self.cfg.id_base), Some(self.cfg.id_base))
            .map_err(io_err(&run))?;
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err(&run))?;

        let upper = match self.cfg.writable_layer {
            WritableLayer::Ext4 => {
                let image = dir.join("upper.img");
                fs_util::sparse_copy(&self.blank_image(spec.limits.disk_bytes)?, &image)
                    .map_err(io_err(&image))?;
                UpperLayer::Ext4 { image }
            }
            WritableLayer::Tmpfs => UpperLayer::Tmpfs {
                size_bytes: spec.limits.disk_bytes,
            },
        };
        guard.cgroup = Some(id.to_string());
        let cgroup_procs = self.cgroups.create(id, &spec.limits)?;
        if spec.internet {
            guard.slot = Some(self.net.acquire()?);
        }
        let launch = LaunchSpec {
            id: id.to_string(),
            layers: template.layers.clone(),
            dir: dir.clone(),
            upper,
            agent: self.cfg.agent.clone(),
            cgroup_procs,
            netns: guard.slot.as_ref().map(|s| s.netns_path()),
            id_base: self.cfg.id_base,
            nofile: spec.limits.nofile,
            seccomp: self.cfg.seccomp,
            init: InitSpec {
                env_vars: spec.env_vars.clone(),
                access_token: spec.access_token.clone(),
                default_user: None,
                default_workdir: None,
            },
        };
        let pid = self.launch(&launch)?;
        guard.pid = Some(pid);
        Ok((pid, run.join(soulbox_protocol::AGENT_SOCKET_NAME)))
    }

    fn launch(&self, spec: &LaunchSpec) -> Result<i32> {
        let json = serde_json::to_vec(spec).map_err(|e| RuntimeError::Launch(e.to_string()))?;
        let mut child = Command::new(&self.cfg.launcher)
            .arg("__launch")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                RuntimeError::Launch(format!("running {}: {e}", self.cfg.launcher.display()))
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(&json)
                .map_err(|e| RuntimeError::Launch(format!("sending the launch spec: {e}")))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| RuntimeError::Launch(e.to_string()))?;
        let line = String::from_utf8_lossy(&out.stdout);
        match serde_json::from_str::<LaunchResult>(line.trim()) {
            Ok(LaunchResult::Started { pid }) => Ok(pid),
            Ok(LaunchResult::Failed { error }) => Err(RuntimeError::Launch(error)),
            Err(_) => Err(RuntimeError::Launch(format!(
                "launcher exited with {} and said: {line}",
                out.status
            ))),
        }
    }

    /// Kills and removes everything of a sandbox; blocking, idempotent.
    fn teardown(&self, id: &str, pid: Option<i32>, slot: Option<Slot>) {
        if let Some(pid) = pid {
            let pid = Pid::from_raw(pid);
            // Killing a pid namespace's init kills every process in it.
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
        }
        if let Err(e) = self.cgroups.destroy(id) {
            tracing::warn!(sandbox_id = id, "removing cgroups: {e}");
        }
        if let Some(slot) = slot {
            self.net.release(slot);
        }
        remove_sandbox_dir(&self.sandbox_dir(id));
        self.admission.release(id);
    }
}

/// Removes a sandbox directory without ever descending into a mount point: `root/` and
/// `upper/` are only removed if empty, so a stray mount can never lead to deleting a template.
fn remove_sandbox_dir(dir: &Path) {
    for name in ["root", "upper"] {
        let _ = std::fs::remove_dir(dir.join(name));
    }
    for name in ["upper.img", "agent.log", "run/agent.sock"] {
        let _ = std::fs::remove_file(dir.join(name));
    }
    let _ = std::fs::remove_dir(dir.join("run"));
    if let Err(e) = std::fs::remove_dir(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(dir = %dir.display(), "sandbox directory not removed: {e}");
        }
    }
}

/// What a create has taken so far, given back if it fails.
#[derive(Default)]
struct CreateGuard {
    dir: Option<PathBuf>,
    cgroup: Option<String>,
    slot: Option<Slot>,
    pid: Option<i32>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Backend for Arc<NsBackend> {
    async fn create(&self, spec: SandboxSpec) -> Result<SandboxInfo> {
        let id = new_id();
        let me = Arc::clone(self);
        let (id2, spec2) = (id.clone(), spec.clone());
        let started = tokio::task::spawn_blocking(move || {
            let mut guard = CreateGuard::default();
            match me.start(&id2, &spec2, &mut guard) {
                Ok(v) => Ok((v, guard)),
                Err(e) => {
                    if guard.dir.is_some() || guard.cgroup.is_some() {
                        me.teardown(&id2, guard.pid, guard.slot.take());
                    }
                    Err(e)
                }
            }
        })
        .await
        .map_err(|e| RuntimeError::Launch(e.to_string()))?;
        let ((pid, socket), mut guard) = started?;
        if let Err(e) =
            AgentClient::wait_ready(&socket, spec.access_token.clone(), READY_TIMEOUT).await
        {
            let me = Arc::clone(self);
            let (id2, slot) = (id.clone(), guard.slot.take());
            let log = std::fs::read_to_string(self.sandbox_dir(&id).join("agent.log"))
                .unwrap_or_default();
            let _ = tokio::task::spawn_blocking(move || me.teardown(&id2, Some(pid), slot)).await;
            return Err(RuntimeError::Launch(format!(
                "{e}; agent log: {}",
                log.trim()
            )));
        }
        let info = SandboxInfo {
            id: id.clone(),
            template: spec.template.clone(),
            pid,
            socket,
            internet: spec.internet,
            limits: spec.limits,
            access_token: spec.access_token.clone(),
            created_unix_ms: now_ms(),
        };
        if let Ok(mut s) = self.sandboxes.lock() {
            s.insert(
                id,
                Entry {
                    info: info.clone(),
                    slot: guard.slot.take(),
                },
            );
        }
        Ok(info)
    }

    async fn kill(&self, id: &str) -> Result<()> {
        let entry = self
            .sandboxes
            .lock()
            .ok()
            .and_then(|mut s| s.remove(id))
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
        let me = Arc::clone(self);
        let id = id.to_string();
        tokio::task::spawn_blocking(move || me.teardown(&id, Some(entry.info.pid), entry.slot))
            .await
            .map_err(|e| RuntimeError::Launch(e.to_string()))
    }

    fn get(&self, id: &str) -> Option<SandboxInfo> {
        self.sandboxes.lock().ok()?.get(id).map(|e| e.info.clone())
    }

    fn list(&self) -> Vec<SandboxInfo> {
        let mut v: Vec<_> = self
            .sandboxes
            .lock()
            .map(|s| s.values().map(|e| e.info.clone()).collect())
            .unwrap_or_default();
        v.sort_by_key(|i| i.created_unix_ms);
        v
    }

    fn stats(&self, id: &str) -> Result<SandboxStats> {
        let info = self
            .get(id)
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
        let cgroup = self.cgroups.stats(id)?;
        // The sandbox's root as its init sees it: statvfs reports the writable layer.
        let (disk_total, disk_used) =
            nix::sys::statvfs::statvfs(&PathBuf::from(format!("/proc/{}/root/", info.pid)))
                .map(|s| {
                    let f = s.fragment_size();
                    (s.blocks() * f, (s.blocks() - s.blocks_free()) * f)
                })
                .unwrap_or((0, 0));
        Ok(SandboxStats {
            cgroup,
            disk_used,
            disk_total,
        })
    }

    async fn pause(&self, id: &str) -> Result<()> {
        self.set_frozen(id, true).await
    }

    async fn resume(&self, id: &str) -> Result<()> {
        self.set_frozen(id, false).await
    }
}

impl NsBackend {
    async fn set_frozen(self: &Arc<Self>, id: &str, frozen: bool) -> Result<()> {
        if self.get_info(id).is_none() {
            return Err(RuntimeError::NotFound(id.to_string()));
        }
        let (me, id) = (Arc::clone(self), id.to_string());
        tokio::task::spawn_blocking(move || me.cgroups.set_frozen(&id, frozen))
            .await
            .map_err(|e| RuntimeError::Launch(e.to_string()))?
            .map_err(Into::into)
    }

    fn get_info(&self, id: &str) -> Option<SandboxInfo> {
        self.sandboxes.lock().ok()?.get(id).map(|e| e.info.clone())
    }

    /// Kills every sandbox and removes the network slots and the firewall table: for one-shot
    /// commands (a long-running runtime keeps its pool, and the next start clears it anyway).
    pub async fn shutdown(self: &Arc<Self>) {
        for s in self.list() {
            let _ = self.kill(&s.id).await;
        }
        let me = Arc::clone(self);
        let _ = tokio::task::spawn_blocking(move || me.net.cleanup_stale()).await;
    }

    /// Default limits, for callers that do not set their own.
    pub fn default_limits() -> Limits {
        Limits::default()
    }
}
