//! The launcher: runs in `soulbox __launch`, a fresh single-threaded process.
//!
//! 1. join the sandbox's cgroups and network namespace (or make a loopback-only one);
//! 2. make the sandbox's user namespace, owned by the sandbox's own host uid ([`userns`]);
//! 3. in a private mount namespace, as real root: writable layer, id-mapped template layers,
//!    overlay root, `/dev`, `/sys`; the agent's listening socket at a host-only path;
//! 4. enter the user namespace and clone the init into new mount, pid, uts, ipc and cgroup
//!    namespaces;
//! 5. the init mounts `/proc` (LXCFS's files over the host-wide ones) and devpts, pivots into the root, drops privileges, closes every
//!    descriptor it does not pass, installs seccomp and execs the agent, which reads its init
//!    spec from fd 3 and accepts on fd 4.
//!
//! Failures in the init travel back over a close-on-exec pipe: EOF means the exec happened.
//!
//! To resume a full pause, steps 4 and 5 are CRIU's instead ([`super::restore`]).

use super::mounts::{self, Result};
use super::spec::{LaunchResult, LaunchSpec};
use super::{seccomp, userns, KEPT_CAPS};
use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::unistd::{pipe2, Pid};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// The agent's listening socket's descriptor (its `--listen-fd`).
pub const AGENT_LISTEN_FD: i32 = 4;

/// Reads a `LaunchSpec` from stdin, builds the sandbox, prints a `LaunchResult`.
pub fn run_launcher() -> i32 {
    let mut input = String::new();
    let result = std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| format!("reading launch spec: {e}"))
        .and_then(|_| {
            serde_json::from_str::<LaunchSpec>(&input)
                .map_err(|e| format!("parsing launch spec: {e}"))
        })
        .and_then(|spec| launch(&spec));
    let (out, code) = match result {
        Ok(pid) => (LaunchResult::Started { pid: pid.as_raw() }, 0),
        Err(error) => (LaunchResult::Failed { error }, 1),
    };
    println!("{}", serde_json::to_string(&out).unwrap_or_default());
    code
}

fn launch(spec: &LaunchSpec) -> Result<Pid> {
    let me = std::process::id().to_string();
    for procs in &spec.cgroup_procs {
        std::fs::write(procs, &me)
            .map_err(|e| format!("joining cgroup {}: {e}", procs.display()))?;
    }
    // The agent (inheriting this) should outlive an OOM in the sandbox; it resets the value for
    // every process it starts. Lowering it needs CAP_SYS_RESOURCE, which some hosts withhold
    // even from root; the OOM killer then still prefers the large process to the small agent.
    let _ = std::fs::write("/proc/self/oom_score_adj", "-1000");
    match &spec.netns {
        Some(path) => {
            let f = std::fs::File::open(path)
                .map_err(|e| format!("opening netns {}: {e}", path.display()))?;
            nix::sched::setns(f, CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("joining netns: {e}"))?;
        }
        None => {
            nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(|e| format!("new netns: {e}"))?;
            mounts::loopback_up().map_err(|e| format!("loopback up: {e}"))?;
        }
    }
    nix::sched::unshare(CloneFlags::CLONE_NEWNS)
        .map_err(|e| format!("new mount namespace: {e}"))?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("making mounts private: {e}"))?;
    let ns = userns::create(spec.id_base)?;
    if let Some(r) = &spec.restore {
        let listener = agent_listener(&spec.socket)?;
        return super::restore::restore(spec, r, &ns, listener);
    }
    mounts::prepare_root(spec, &ns)?;
    let listener = agent_listener(&spec.socket)?;

    // Everything the init needs is prepared here, before the clone.
    let filters = if spec.seccomp {
        seccomp::programs()?
    } else {
        vec![]
    };
    let init_json = serde_json::to_vec(&spec.init).map_err(|e| e.to_string())?;
    let (init_r, init_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let fds = InitFds {
        init: init_r,
        listener,
    };

    // From here on this process acts inside the sandbox's user namespace: the namespaces
    // cloned below belong to it, so sandbox root has no power over anything of the host's.
    nix::sched::setns(&ns, CloneFlags::CLONE_NEWUSER)
        .map_err(|e| format!("entering the user namespace: {e}"))?;
    drop(ns);
    let flags = libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWCGROUP;
    // SAFETY: a fork-style clone (no shared memory, no new stack) of a single-threaded
    // process; the child continues on its own copy of this stack.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        return Err(format!("clone: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        drop((err_r, init_w));
        let e = init(spec, &filters, fds).unwrap_err();
        let mut w = std::fs::File::from(err_w);
        let _ = w.write_all(e.as_bytes());
        // SAFETY: leave without running the parent's destructors or atexit handlers.
        unsafe { libc::_exit(127) };
    }
    let pid = Pid::from_raw(pid as i32);
    drop((err_w, fds));
    let fail = |e: String| {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
        e
    };
    let mut w = std::fs::File::from(init_w);
    w.write_all(&init_json)
        .map_err(|e| fail(format!("writing init spec: {e}")))?;
    drop(w);

    let mut msg = String::new();
    let _ = std::fs::File::from(err_r).read_to_string(&mut msg);
    if !msg.is_empty() {
        return Err(fail(format!("sandbox init: {msg}")));
    }
    Ok(pid)
}

/// The agent's listening socket, made here at a host path the sandbox never sees, and handed
/// to the agent as a descriptor: the host connects to what the launcher made, whatever sandbox
/// root does inside.
fn agent_listener(path: &Path) -> Result<OwnedFd> {
    use nix::sys::socket::{bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType};
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| format!("agent socket: {e}"))?;
    let _ = std::fs::remove_file(path);
    let addr = nix::sys::socket::UnixAddr::new(path)
        .map_err(|e| format!("agent socket {}: {e}", path.display()))?;
    bind(fd.as_raw_fd(), &addr).map_err(|e| format!("binding {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("chmod {}: {e}", path.display()))?;
    listen(&fd, Backlog::MAXCONN).map_err(|e| format!("listen: {e}"))?;
    Ok(fd)
}

/// Descriptors the init hands to the agent; everything else is closed before the exec.
struct InitFds {
    init: OwnedFd,
    listener: OwnedFd,
}

/// In the child: returns only on failure.
fn init(spec: &LaunchSpec, filters: &[seccompiler::BpfProgram], fds: InitFds) -> Result<()> {
    nix::unistd::setresgid(0.into(), 0.into(), 0.into()).map_err(|e| format!("setresgid: {e}"))?;
    nix::unistd::setresuid(0.into(), 0.into(), 0.into()).map_err(|e| format!("setresuid: {e}"))?;
    nix::unistd::setgroups(&[]).map_err(|e| format!("setgroups: {e}"))?;
    // Its own session, so nothing of the host's session reaches in, and a checkpoint of the
    // sandbox (full pause) holds every session and process group it refers to.
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    nix::unistd::sethostname(&spec.id).map_err(|e| format!("sethostname: {e}"))?;
    mounts::finish_root(spec.pty_max, spec.lxcfs.as_deref())?;
    // The sandbox's own /dev/null: nothing the agent holds refers to a host file.
    let null = std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("/dev/null: {e}"))?;

    let nofile = nix::sys::resource::Resource::RLIMIT_NOFILE;
    // Raising past the inherited hard limit needs CAP_SYS_RESOURCE on the host: never exceed it.
    let (_, hard) =
        nix::sys::resource::getrlimit(nofile).map_err(|e| format!("RLIMIT_NOFILE: {e}"))?;
    let n = spec.nofile.min(hard);
    nix::sys::resource::setrlimit(nofile, n, n).map_err(|e| format!("RLIMIT_NOFILE: {e}"))?;
    // stdin and stdout from /dev/null, stderr stays the launcher's (the runtime reads the
    // agent's start-up errors there), the init spec on fd 3, the listening socket on fd 4.
    let (null, init, listener) = (
        null.as_raw_fd(),
        fds.init.as_raw_fd(),
        fds.listener.as_raw_fd(),
    );
    place_fds(&[(null, 0), (null, 1), (init, 3), (listener, AGENT_LISTEN_FD)])?;
    // Nothing else crosses into the sandbox, whatever the server inherited.
    // SAFETY: close_range on a range of descriptors; none of them is used afterwards.
    if unsafe { libc::syscall(libc::SYS_close_range, 5u32, u32::MAX, 0u32) } < 0 {
        return Err(format!("close_range: {}", std::io::Error::last_os_error()));
    }
    std::mem::forget((fds, null));
    // No no-new-privileges: setuid `sudo` works inside, as in E2B's templates; it reaches sandbox
    // root, which is an unprivileged host uid of the sandbox's own range.
    seccomp::install(filters)?;
    drop_capabilities()?;

    let prog = c"/.soulbox/agent";
    let argv = [
        c"soulbox-agent".as_ptr(),
        c"--init-fd".as_ptr(),
        c"3".as_ptr(),
        c"--listen-fd".as_ptr(),
        c"4".as_ptr(),
        std::ptr::null(),
    ];
    let envp = [std::ptr::null()];
    // SAFETY: NUL-terminated argv/envp of static C strings.
    unsafe { libc::execve(prog.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    Err(format!("exec agent: {}", std::io::Error::last_os_error()))
}

/// Puts each `(from, to)` descriptor at `to`, without close-on-exec. Sources are first copied
/// above every target, so one move never clobbers another's source.
fn place_fds(moves: &[(i32, i32)]) -> Result<()> {
    let mut high = Vec::with_capacity(moves.len());
    for &(from, _) in moves {
        // SAFETY: F_DUPFD_CLOEXEC on an open descriptor returns a new one (or -1).
        let fd = unsafe { libc::fcntl(from, libc::F_DUPFD_CLOEXEC, 64) };
        if fd < 0 {
            return Err(format!("dup: {}", std::io::Error::last_os_error()));
        }
        high.push(fd);
    }
    for (&fd, &(_, to)) in high.iter().zip(moves) {
        // SAFETY: dup2 of an open descriptor onto a fixed number; clears close-on-exec.
        if unsafe { libc::dup2(fd, to) } < 0 {
            return Err(format!("dup2: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

fn drop_capabilities() -> Result<()> {
    use caps::{CapSet, CapsHashSet};
    let keep: CapsHashSet = KEPT_CAPS.iter().copied().collect();
    for c in caps::all() {
        if !keep.contains(&c) {
            caps::drop(None, CapSet::Bounding, c)
                .map_err(|e| format!("dropping {c} from bounding set: {e}"))?;
        }
    }
    for set in [CapSet::Effective, CapSet::Permitted] {
        caps::set(None, set, &keep).map_err(|e| format!("setting {set:?} capabilities: {e}"))?;
    }
    caps::clear(None, CapSet::Inheritable)
        .map_err(|e| format!("clearing inheritable capabilities: {e}"))?;
    caps::clear(None, CapSet::Ambient)
        .map_err(|e| format!("clearing ambient capabilities: {e}"))?;
    Ok(())
}
