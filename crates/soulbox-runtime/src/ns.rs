//! The Linux-namespace backend.
//!
//! A sandbox is a host-only directory `<data>/sandboxes/<id>/` (writable-layer image, the
//! agent's socket, mount points), a host id range of its own, a cgroup per controller,
//! optionally a pooled network slot, and a process tree whose init is the agent. Everything
//! else (mounts, loop device) lives only in the sandbox's own mount namespace and disappears
//! with its last process. Nothing in the directory is reachable from inside the sandbox.

use crate::admission::{Admission, HostLimits};
use crate::agent_client::AgentClient;
use crate::cgroup::{self, CgroupManager};
use crate::ids::IdRanges;
use crate::jail::{LaunchResult, LaunchSpec, RestoreSpec, UpperLayer};
use crate::lxcfs::{self, Lxcfs};
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
use std::process::{ChildStderr, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod adopt;
pub mod checkpoint;
mod commit;
mod egress;
pub mod manifest;
mod pause;
pub mod processes;
pub use pause::PauseMode;
pub mod state;

use state::SandboxState;

/// The ext4 image of a sandbox's writable layer, in its directory.
const UPPER_IMAGE: &str = "upper.img";

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

/// First host id of the sandboxes' id ranges (65536 ids each, one range per sandbox), far above
/// the ids of host users and of the usual subordinate ranges (/etc/subuid from 100000).
pub const DEFAULT_ID_BASE: u32 = 1 << 30;
/// How many id ranges: enough for `DEFAULT_ID_BASE` ranges to end below 2^31.
pub const DEFAULT_ID_RANGES: u32 = 16383;
/// Terminals one sandbox may hold at once.
pub const DEFAULT_PTY_MAX: u32 = 256;

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub data_dir: PathBuf,
    /// The static agent binary.
    pub agent: PathBuf,
    /// A program that runs the launcher when called as `<launcher> __launch`.
    pub launcher: PathBuf,
    /// First host id of the sandboxes' id ranges; each sandbox gets 65536 ids of its own.
    pub id_base: u32,
    pub id_ranges: u32,
    /// Pseudo-terminals per sandbox.
    pub pty_max: u32,
    pub writable_layer: WritableLayer,
    pub cgroup_root: PathBuf,
    pub seccomp: bool,
    /// What all sandboxes together may take from the host; when creates are refused.
    pub host_limits: HostLimits,
    /// Where the runtime mounts (or finds) its LXCFS, whose files show each sandbox its own
    /// memory, CPUs, uptime and load; `None`: sandboxes see the host's figures.
    pub lxcfs: Option<PathBuf>,
    /// Take over the sandboxes an earlier runtime left running (else they are killed).
    pub adopt: bool,
    /// The CRIU that full pauses use; `None`: pauses keep files only.
    pub criu: Option<checkpoint::Criu>,
}

impl RuntimeConfig {
    pub fn new(data_dir: PathBuf, agent: PathBuf, launcher: PathBuf) -> Self {
        RuntimeConfig {
            data_dir,
            agent,
            launcher,
            id_base: DEFAULT_ID_BASE,
            id_ranges: DEFAULT_ID_RANGES,
            pty_max: DEFAULT_PTY_MAX,
            writable_layer: WritableLayer::Ext4,
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            seccomp: true,
            host_limits: HostLimits::default(),
            lxcfs: Some(PathBuf::from(lxcfs::DEFAULT_MOUNT_POINT)),
            adopt: true,
            criu: None,
        }
    }
}

struct Entry {
    info: SandboxInfo,
    slot: Option<Slot>,
    /// First host id of the sandbox's id range.
    ids: Option<u32>,
    /// Started by an earlier runtime and taken over.
    adopted: bool,
    /// The slot's veth counters when the sandbox got it: slots are reused, their counters
    /// are not reset.
    net_base: (u64, u64),
}

pub struct NsBackend {
    cfg: RuntimeConfig,
    cgroups: Arc<dyn CgroupManager>,
    net: Arc<NetworkPool>,
    ids: IdRanges,
    /// The read-only layer that holds `/.soulbox/agent`, topmost in every sandbox.
    agent_layer: PathBuf,
    templates: TemplateStore,
    sandboxes: Mutex<HashMap<String, Entry>>,
    /// Sandboxes paused to disk: no process, their files and state in their directory.
    paused: Mutex<HashMap<String, SandboxState>>,
    admission: Admission,
    /// SoulBox's LXCFS, if it runs (restarted when it stops answering).
    lxcfs: Mutex<Option<Lxcfs>>,
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
    /// us when their launcher exits), takes over the sandboxes an earlier run left running
    /// and removes whatever else it left behind.
    pub fn new(cfg: RuntimeConfig) -> Result<Self> {
        fs_util::private_data_dir(&cfg.data_dir).map_err(io_err(&cfg.data_dir))?;
        let sandboxes = cfg.data_dir.join("sandboxes");
        std::fs::create_dir_all(&sandboxes).map_err(io_err(&sandboxes))?;
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
        let agent_layer = agent_layer(&cfg.data_dir, &cfg.agent)?;
        let admission = Admission::new(&cfg.host_limits, Arc::clone(&cgroups));
        let lxcfs = cfg.lxcfs.as_deref().and_then(|mount| {
            Lxcfs::start(mount)
                .inspect_err(|e| tracing::warn!("{e}"))
                .ok()
        });
        let backend = NsBackend {
            templates: TemplateStore::new(&cfg.data_dir),
            ids: IdRanges::new(cfg.id_base, cfg.id_ranges),
            agent_layer,
            cfg,
            cgroups,
            net: Arc::new(NetworkPool::new(crate::network::NetLimits {
                flows_per_sandbox: admission.limits().flows_per_sandbox,
                rate_mbit: admission.limits().rate_mbit,
            })),
            admission,
            sandboxes: Mutex::new(HashMap::new()),
            paused: Mutex::new(HashMap::new()),
            lxcfs: Mutex::new(lxcfs),
            _lock: lock,
        };
        backend.adopt_leftovers();
        backend.templates.layers().remove_interrupted();
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

    pub fn data_dir(&self) -> &Path {
        &self.cfg.data_dir
    }

    /// The LXCFS mount point new sandboxes read their figures from, if one answers. An
    /// instance that stopped answering is started again (once per call); one that never ran
    /// (not installed) is not looked for again.
    pub fn lxcfs(&self) -> Option<PathBuf> {
        let mut l = self.lxcfs.lock().ok()?;
        if l.as_ref()?.is_healthy() {
            return l.as_ref().map(|l| l.mount_point().to_path_buf());
        }
        let mount = l.take()?.mount_point().to_path_buf();
        tracing::warn!(mount = %mount.display(), "lxcfs stopped answering; starting it again");
        match Lxcfs::start(&mount) {
            Ok(new) => {
                *l = Some(new);
                Some(mount)
            }
            Err(e) => {
                tracing::warn!("{e}");
                None
            }
        }
    }

    pub fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.cfg.data_dir.join("sandboxes").join(id)
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
    fn start(&self, id: &str, spec: &SandboxSpec, guard: &mut CreateGuard) -> Result<Started> {
        spec.limits.validate()?;
        let (layers, user, workdir) = match &spec.rootfs {
            Some(r) => (r.layers.clone(), r.user.clone(), r.workdir.clone()),
            None => (self.templates.get(&spec.template)?.layers, None, None),
        };
        let memory = spec.rootfs.as_ref().and_then(|r| r.memory.clone());
        let dir = self.sandbox_dir(id);
        std::fs::create_dir(&dir).map_err(io_err(&dir))?;
        guard.dir = Some(dir.clone());
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err(&dir))?;
        let ids = self.ids.acquire().ok_or_else(|| {
            RuntimeError::Launch(format!(
                "all {} sandbox id ranges are in use",
                self.cfg.id_ranges
            ))
        })?;
        guard.ids = Some(ids);
        self.admission.admit(id)?;
        let upper = match spec.writable_layer.unwrap_or(self.cfg.writable_layer) {
            WritableLayer::Ext4 => {
                let image = dir.join(UPPER_IMAGE);
                fs_util::sparse_copy(&self.blank_image(spec.limits.disk_bytes)?, &image)
                    .map_err(io_err(&image))?;
                state::UpperKind::Ext4
            }
            WritableLayer::Tmpfs => state::UpperKind::Tmpfs,
        };
        let mut state = SandboxState {
            version: SandboxState::new_version(),
            id: id.to_string(),
            template: spec.template.clone(),
            label: spec.label.clone(),
            limits: spec.limits,
            internet: spec.internet,
            egress: spec.egress.clone(),
            init: InitSpec {
                env_vars: spec.env_vars.clone(),
                access_token: spec.access_token.clone(),
                default_user: user,
                default_workdir: workdir,
            },
            layers,
            upper,
            id_base: ids,
            created_unix_ms: crate::layer::now_ms(),
            running: None,
            paused: None,
        };
        let restored = memory.is_some();
        let (restore, agent_token) = match &memory {
            Some(images) => {
                let (r, token) = self.restore_into(images, &dir, ids)?;
                (Some(r), token)
            }
            None => (None, state.init.access_token.clone()),
        };
        let (pid, socket, stderr) = self.boot(&mut state, guard, restore)?;
        Ok(Started {
            pid,
            socket,
            stderr,
            state,
            agent_token,
            restored,
        })
    }

    /// Prepares the restore of a memory snapshot's `images` as the processes of a new sandbox
    /// in `dir` with the id range at `ids`: its own copy of the images (hard links, but for
    /// the user namespace's, moved to its ids). Returns the restore and the envd token the
    /// restored agent holds.
    fn restore_into(
        &self,
        images: &Path,
        dir: &Path,
        ids: u32,
    ) -> Result<(RestoreSpec, Option<String>)> {
        let criu = self.cfg.criu.as_ref().ok_or_else(|| {
            RuntimeError::InvalidSpec(
                "a memory snapshot needs CRIU, which this runtime lacks".into(),
            )
        })?;
        let info = checkpoint::CheckpointInfo::read_from(images)?;
        let mine = dir.join(checkpoint::CHECKPOINT_DIR);
        std::fs::create_dir(&mine).map_err(io_err(&mine))?;
        for e in std::fs::read_dir(images).map_err(io_err(images))? {
            let e = e.map_err(io_err(images))?;
            let to = mine.join(e.file_name());
            std::fs::hard_link(e.path(), &to).map_err(io_err(&to))?;
        }
        checkpoint::remap_ids(&mine, info.id_base, ids)?;
        Ok((
            RestoreSpec {
                criu: criu.path.clone(),
                images: mine,
                listener: info.listener,
                external_mounts: info.external_mounts,
            },
            info.access_token,
        ))
    }

    /// Starts the processes of a sandbox whose directory, id range and writable layer exist
    /// (a new one, or one paused to disk): its cgroups, network slot and init. Fills in
    /// `state.running`; what it took is in `guard`.
    fn boot(
        &self,
        state: &mut SandboxState,
        guard: &mut CreateGuard,
        restore: Option<RestoreSpec>,
    ) -> Result<(i32, PathBuf, ChildStderr)> {
        let id = state.id.clone();
        let dir = self.sandbox_dir(&id);
        let upper = match state.upper {
            state::UpperKind::Ext4 => UpperLayer::Ext4 {
                image: dir.join(UPPER_IMAGE),
            },
            state::UpperKind::Tmpfs => UpperLayer::Tmpfs {
                size_bytes: state.limits.disk_bytes,
            },
        };
        guard.cgroup = Some(id.clone());
        let cgroup_procs = self.cgroups.create(&id, &state.limits)?;
        if state.internet {
            let slot = self.net.acquire()?;
            // Before any process of it runs (a restored one runs at once).
            let policy = self.net.set_policy(&slot, state.egress.clone());
            guard.net_base = crate::network::veth_bytes(&slot);
            guard.slot = Some(slot);
            policy?;
        }
        let socket = dir.join(soulbox_protocol::AGENT_SOCKET_NAME);
        let _ = std::fs::remove_file(&socket);
        let launch = LaunchSpec {
            id: id.clone(),
            layers: std::iter::once(self.agent_layer.clone())
                .chain(state.layers.iter().cloned())
                .collect(),
            dir,
            upper,
            socket: socket.clone(),
            cgroup_procs,
            netns: guard.slot.as_ref().map(|s| s.netns_path()),
            id_base: state.id_base,
            nofile: state.limits.nofile,
            pty_max: self.cfg.pty_max,
            seccomp: self.cfg.seccomp,
            lxcfs: self.lxcfs(),
            init: state.init.clone(),
            restore,
        };
        let (pid, stderr) = self.launch(&launch)?;
        guard.pid = Some(pid);
        state.running = Some(state::Running {
            pid,
            pid_start: state::pid_start(pid).unwrap_or(0),
            slot: guard.slot.as_ref().map(|s| s.index),
        });
        Ok((pid, socket, stderr))
    }

    /// Runs the launcher; returns the init's pid and the agent's stderr (its start-up errors;
    /// the agent moves its log into the sandbox once it serves).
    fn launch(&self, spec: &LaunchSpec) -> Result<(i32, ChildStderr)> {
        let json = serde_json::to_vec(spec).map_err(|e| RuntimeError::Launch(e.to_string()))?;
        let mut child = Command::new(&self.cfg.launcher)
            .arg("__launch")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                RuntimeError::Launch(format!("running {}: {e}", self.cfg.launcher.display()))
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(&json)
                .map_err(|e| RuntimeError::Launch(format!("sending the launch spec: {e}")))?;
        }
        let stderr = child.stderr.take();
        let mut out = String::new();
        if let Some(mut stdout) = child.stdout.take() {
            let _ = std::io::Read::read_to_string(&mut stdout, &mut out);
        }
        let status = child
            .wait()
            .map_err(|e| RuntimeError::Launch(e.to_string()))?;
        let result = serde_json::from_str::<LaunchResult>(out.trim());
        match (result, stderr) {
            (Ok(LaunchResult::Started { pid }), Some(stderr)) => Ok((pid, stderr)),
            (Ok(LaunchResult::Failed { error }), _) => Err(RuntimeError::Launch(error)),
            (_, stderr) => {
                let said = stderr.map(read_tail).unwrap_or_default();
                Err(RuntimeError::Launch(format!(
                    "launcher exited with {status} and said: {out}{said}"
                )))
            }
        }
    }

    /// Kills and removes everything of a sandbox; blocking, idempotent.
    fn teardown(&self, id: &str, pid: Option<i32>, slot: Option<Slot>, ids: Option<u32>) {
        self.stop_processes(id, pid);
        self.release(id, slot, ids);
    }

    /// Kills every process of a sandbox and waits for its init.
    fn stop_processes(&self, id: &str, pid: Option<i32>) {
        if let Some(pid) = pid {
            let pid = Pid::from_raw(pid);
            // Killing a pid namespace's init kills every process in it. A paused sandbox's
            // processes are frozen and die only once thawed: every one gets its SIGKILL while
            // still frozen, so none runs again before it dies.
            for p in self.cgroups.pids(id) {
                let _ = nix::sys::signal::kill(Pid::from_raw(p), nix::sys::signal::Signal::SIGKILL);
            }
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            if let Err(e) = self.cgroups.set_frozen(id, false) {
                tracing::warn!(sandbox_id = id, "thawing to kill: {e}");
            }
            let _ = nix::sys::wait::waitpid(pid, None);
        }
    }

    /// Gives back what a sandbox whose processes are gone held.
    fn release(&self, id: &str, slot: Option<Slot>, ids: Option<u32>) {
        self.release_host(id, slot);
        fs_util::remove_tree(&self.sandbox_dir(id));
        // Only once every process of the range is gone may another sandbox have its ids.
        if let Some(ids) = ids {
            self.ids.release(ids);
        }
    }
}

impl NsBackend {
    /// Gives back what a sandbox held while it ran (its cgroups, network slot, admission),
    /// keeping its directory and id range.
    fn release_host(&self, id: &str, slot: Option<Slot>) {
        if let Err(e) = self.cgroups.destroy(id) {
            tracing::warn!(sandbox_id = id, "removing cgroups: {e}");
        }
        if let Some(slot) = slot {
            self.net.release(slot);
        }
        self.admission.release(id);
    }
}

/// A sandbox whose init runs, before its agent answered.
struct Started {
    pid: i32,
    socket: PathBuf,
    stderr: ChildStderr,
    state: SandboxState,
    /// The envd token its agent holds now: a restored one's is its snapshot's.
    agent_token: Option<String>,
    restored: bool,
}

/// What a create has taken so far, given back if it fails.
#[derive(Default)]
struct CreateGuard {
    dir: Option<PathBuf>,
    cgroup: Option<String>,
    slot: Option<Slot>,
    pid: Option<i32>,
    ids: Option<u32>,
    net_base: (u64, u64),
}

/// Gives a restored agent the configuration of its new sandbox (envd token, env vars), in
/// place of its snapshot's.
async fn rekey(mut agent: AgentClient, init: &InitSpec) -> Result<()> {
    let body = serde_json::to_value(init).map_err(|e| RuntimeError::Launch(e.to_string()))?;
    let r = agent.post_json("/init", &body).await?;
    if r.status().is_success() {
        Ok(())
    } else {
        Err(RuntimeError::Launch(format!(
            "the restored agent refused its new configuration: {}",
            r.status()
        )))
    }
}

/// The last 16 KiB of what a pipe carries until its writers are gone.
fn read_tail(r: impl std::io::Read) -> String {
    use std::io::Read;
    let mut buf = Vec::new();
    let _ = r.take(1 << 20).read_to_end(&mut buf);
    let start = buf.len().saturating_sub(16 << 10);
    String::from_utf8_lossy(&buf[start..]).into_owned()
}

/// Makes (once per agent binary) the layer that puts the agent at `/.soulbox/agent`:
/// `<data>/agent/<hash>/layer`, named by the binary's content hash.
fn agent_layer(data_dir: &Path, agent: &Path) -> Result<PathBuf> {
    use sha2::Digest;
    let bytes = std::fs::read(agent).map_err(io_err(agent))?;
    let hash: String = sha2::Sha256::digest(&bytes)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    let parent = data_dir.join("agent");
    let dir = parent.join(&hash);
    if dir.join("complete").exists() {
        return Ok(dir.join("layer"));
    }
    let tmp = parent.join(format!(".making-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let bin_dir = tmp.join("layer").join(".soulbox");
    std::fs::create_dir_all(&bin_dir).map_err(io_err(&bin_dir))?;
    let bin = bin_dir.join("agent");
    std::fs::write(&bin, &bytes).map_err(io_err(&bin))?;
    for (p, mode) in [
        (&bin, 0o755),
        (&bin_dir, 0o755),
        (&tmp.join("layer"), 0o755),
    ] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).map_err(io_err(p))?;
    }
    std::fs::write(tmp.join("complete"), &hash).map_err(io_err(&tmp))?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir).map_err(io_err(&dir))?;
    Ok(dir.join("layer"))
}

impl NsBackend {
    /// One attempt at a create (see [`Backend::create`]); on error nothing of it is left.
    async fn create_once(self: &Arc<Self>, spec: &SandboxSpec) -> Result<SandboxInfo> {
        let id = new_id();
        let me = Arc::clone(self);
        let (id2, spec2) = (id.clone(), spec.clone());
        let started = tokio::task::spawn_blocking(move || {
            let mut guard = CreateGuard::default();
            match me.start(&id2, &spec2, &mut guard) {
                Ok(v) => Ok((v, guard)),
                Err(e) => {
                    if guard.dir.is_some() || guard.cgroup.is_some() {
                        me.teardown(&id2, guard.pid, guard.slot.take(), guard.ids);
                    }
                    Err(e)
                }
            }
        })
        .await
        .map_err(|e| RuntimeError::Launch(e.to_string()))?;
        let (started, mut guard) = started?;
        let Started {
            pid,
            socket,
            stderr,
            state,
            agent_token,
            restored,
        } = started;
        let ready = match AgentClient::wait_ready(&socket, agent_token.clone(), READY_TIMEOUT).await
        {
            Ok(c) if agent_token != spec.access_token => rekey(c, &state.init).await,
            r => r.map(|_| ()).map_err(RuntimeError::from),
        };
        if let Err(e) = ready {
            let me = Arc::clone(self);
            let (id2, slot, ids) = (id.clone(), guard.slot.take(), guard.ids);
            // The agent is killed first, so its stderr ends.
            let log = tokio::task::spawn_blocking(move || {
                me.teardown(&id2, Some(pid), slot, ids);
                read_tail(stderr)
            })
            .await
            .unwrap_or_default();
            return Err(RuntimeError::Launch(format!(
                "{e}; agent log: {}",
                log.trim()
            )));
        }
        drop(stderr);
        // Known on disk before the create returns: a later runtime takes it over from here.
        if let Err(e) = state.write(&self.sandbox_dir(&id)) {
            let me = Arc::clone(self);
            let (id2, slot, ids) = (id.clone(), guard.slot.take(), guard.ids);
            let _ =
                tokio::task::spawn_blocking(move || me.teardown(&id2, Some(pid), slot, ids)).await;
            return Err(e);
        }
        if restored {
            fs_util::remove_tree(&self.sandbox_dir(&id).join(checkpoint::CHECKPOINT_DIR));
        }
        let mut info = self.info_of(&state, pid);
        info.restored = restored;
        if let Ok(mut s) = self.sandboxes.lock() {
            s.insert(
                id,
                Entry {
                    info: info.clone(),
                    slot: guard.slot.take(),
                    ids: guard.ids,
                    adopted: false,
                    net_base: guard.net_base,
                },
            );
        }
        Ok(info)
    }
}

impl Backend for Arc<NsBackend> {
    async fn create(&self, spec: SandboxSpec) -> Result<SandboxInfo> {
        match self.create_once(&spec).await {
            // A memory snapshot that cannot be restored (or whose restored agent does not
            // answer) still has its files.
            Err(e) if spec.rootfs.as_ref().is_some_and(|r| r.memory.is_some()) => {
                tracing::warn!("restoring a snapshot's memory failed, starting on its files: {e}");
                let mut files_only = spec;
                if let Some(r) = files_only.rootfs.as_mut() {
                    r.memory = None;
                }
                self.create_once(&files_only).await
            }
            r => r,
        }
    }

    async fn kill(&self, id: &str) -> Result<()> {
        let Some(entry) = self.sandboxes.lock().ok().and_then(|mut s| s.remove(id)) else {
            let (me, id2) = (Arc::clone(self), id.to_string());
            let removed = tokio::task::spawn_blocking(move || me.remove_paused(&id2))
                .await
                .map_err(|e| RuntimeError::Launch(e.to_string()))?;
            return match removed {
                true => Ok(()),
                false => Err(RuntimeError::NotFound(id.to_string())),
            };
        };
        let me = Arc::clone(self);
        let id = id.to_string();
        tokio::task::spawn_blocking(move || {
            me.teardown(&id, Some(entry.info.pid), entry.slot, entry.ids)
        })
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
        let (info, slot, base) = self
            .sandboxes
            .lock()
            .ok()
            .and_then(|s| {
                s.get(id)
                    .map(|e| (e.info.clone(), e.slot.clone(), e.net_base))
            })
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
        let (rx, tx) = slot.map_or((0, 0), |s| crate::network::veth_bytes(&s));
        let (net_rx_bytes, net_tx_bytes) = (rx.saturating_sub(base.0), tx.saturating_sub(base.1));
        Ok(SandboxStats {
            cgroup,
            disk_used,
            disk_total,
            net_rx_bytes,
            net_tx_bytes,
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

    /// The runtime's view of a sandbox running as `pid`, from its state.
    fn info_of(&self, state: &SandboxState, pid: i32) -> SandboxInfo {
        SandboxInfo {
            id: state.id.clone(),
            template: state.template.clone(),
            label: state.label.clone(),
            pid,
            socket: self
                .sandbox_dir(&state.id)
                .join(soulbox_protocol::AGENT_SOCKET_NAME),
            internet: state.internet,
            limits: state.limits,
            access_token: state.init.access_token.clone(),
            created_unix_ms: state.created_unix_ms,
            layers: state.layers.clone(),
            restored: false,
        }
    }

    /// The layer directories every sandbox stands on, running or paused to disk: what layer
    /// collection must keep.
    pub fn layers_in_use(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = self
            .sandboxes
            .lock()
            .map(|s| {
                s.values()
                    .flat_map(|e| e.info.layers.iter().cloned())
                    .collect()
            })
            .unwrap_or_default();
        if let Ok(p) = self.paused.lock() {
            out.extend(p.values().flat_map(|s| s.layers.iter().cloned()));
        }
        out
    }

    /// The runtime's state of a sandbox (running or paused to disk), as on disk.
    pub fn state_of(&self, id: &str) -> Option<SandboxState> {
        SandboxState::read(&self.sandbox_dir(id)).filter(|s| s.id == id)
    }

    /// Leaves the sandboxes running when the runtime goes (a restart or an upgrade of the
    /// server): the LXCFS they read stays up too, for the next runtime to take over.
    pub fn detach(&self) {
        if let Ok(mut l) = self.lxcfs.lock() {
            if let Some(l) = l.take() {
                std::mem::forget(l);
            }
        }
    }

    fn get_info(&self, id: &str) -> Option<SandboxInfo> {
        self.sandboxes.lock().ok()?.get(id).map(|e| e.info.clone())
    }

    /// Kills every sandbox this runtime started, removes the network slots and the firewall
    /// table and stops the lxcfs it started: for one-shot commands. Sandboxes it took over
    /// from a server that stopped are left running, with their slots and LXCFS, for that
    /// server's next start.
    pub async fn shutdown(self: &Arc<Self>) {
        for s in self.list() {
            if !self.is_adopted(&s.id) {
                let _ = self.kill(&s.id).await;
            }
        }
        let me = Arc::clone(self);
        let _ = tokio::task::spawn_blocking(move || {
            // What is left now are the sandboxes taken over: their slots and LXCFS stay.
            let (kept, others): (std::collections::BTreeSet<u32>, bool) = me
                .sandboxes
                .lock()
                .map(|s| {
                    let slots = s.values().filter_map(|e| e.slot.as_ref().map(|s| s.index));
                    (slots.collect(), !s.is_empty())
                })
                .unwrap_or_default();
            let policies = me.net.policies();
            me.net.adopt(&kept, policies);
            if others {
                me.detach();
            } else if let Ok(mut l) = me.lxcfs.lock() {
                // An lxcfs this runtime started stops and its mount goes (one found running stays).
                l.take();
            }
        })
        .await;
    }

    /// Whether sandbox `id` was started by an earlier runtime and taken over.
    pub fn is_adopted(&self, id: &str) -> bool {
        self.sandboxes
            .lock()
            .map(|s| s.get(id).is_some_and(|e| e.adopted))
            .unwrap_or(false)
    }

    /// Default limits, for callers that do not set their own.
    pub fn default_limits() -> Limits {
        Limits::default()
    }
}
