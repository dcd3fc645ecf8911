//! The launcher: runs in `soulbox __launch`, a fresh single-threaded process.
//!
//! 1. join the sandbox's cgroups and network namespace (or make a loopback-only one);
//! 2. in a private mount namespace, as real root: writable layer, overlay root, `/dev`, `/sys`;
//! 3. clone the init into new user, mount, pid, uts, ipc and cgroup namespaces;
//! 4. map its ids, shield it from the OOM killer, and let it go;
//! 5. the init mounts `/proc` and devpts, pivots into the root, drops privileges, installs
//!    seccomp and execs the agent, which reads its init spec from fd 3.
//!
//! Failures in the init travel back over a close-on-exec pipe: EOF means the exec happened.

use super::mounts::{self, Result};
use super::spec::{LaunchResult, LaunchSpec};
use super::{seccomp, KEPT_CAPS};
use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::unistd::{pipe2, Pid};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};

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
    mounts::prepare_root(spec)?;

    // Everything the init needs is prepared here, before the clone.
    let filters = if spec.seccomp {
        seccomp::programs()?
    } else {
        vec![]
    };
    let init_json = serde_json::to_vec(&spec.init).map_err(|e| e.to_string())?;
    let (init_r, init_w) = pipe2(OFlag::empty()).map_err(|e| format!("pipe: {e}"))?;
    let (go_r, go_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let (err_r, err_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let root = mounts::root_dir(spec);
    let null = std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("/dev/null: {e}"))?;
    let log_path = spec.dir.join("agent.log");
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| format!("{}: {e}", log_path.display()))?;
    let stdio = (OwnedFd::from(null), OwnedFd::from(log));

    let flags = libc::CLONE_NEWUSER
        | libc::CLONE_NEWNS
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
        drop((go_w, err_r, init_w));
        let e = init(spec, &root, &filters, go_r, init_r, stdio).unwrap_err();
        let mut w = std::fs::File::from(err_w);
        let _ = w.write_all(e.as_bytes());
        // SAFETY: leave without running the parent's destructors or atexit handlers.
        unsafe { libc::_exit(127) };
    }
    let pid = Pid::from_raw(pid as i32);
    drop((go_r, err_w, init_r, stdio));
    let fail = |e: String| {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
        e
    };

    let map = format!("0 {} 65536\n", spec.id_base);
    for f in ["uid_map", "gid_map"] {
        std::fs::write(format!("/proc/{pid}/{f}"), &map)
            .map_err(|e| fail(format!("writing {f}: {e}")))?;
    }
    let mut w = std::fs::File::from(init_w);
    w.write_all(&init_json)
        .map_err(|e| fail(format!("writing init spec: {e}")))?;
    drop(w);
    std::fs::File::from(go_w)
        .write_all(b"g")
        .map_err(|e| fail(format!("releasing init: {e}")))?;

    let mut msg = String::new();
    let _ = std::fs::File::from(err_r).read_to_string(&mut msg);
    if !msg.is_empty() {
        return Err(fail(format!("sandbox init: {msg}")));
    }
    Ok(pid)
}

/// In the child: returns only on failure.
fn init(
    spec: &LaunchSpec,
    root: &std::path::Path,
    filters: &[seccompiler::BpfProgram],
    go: OwnedFd,
    init_fd: OwnedFd,
    stdio: (OwnedFd, OwnedFd),
) -> Result<()> {
    let mut b = [0u8; 1];
    std::fs::File::from(go)
        .read_exact(&mut b)
        .map_err(|e| format!("waiting for id maps: {e}"))?;
    nix::unistd::setresgid(0.into(), 0.into(), 0.into()).map_err(|e| format!("setresgid: {e}"))?;
    nix::unistd::setresuid(0.into(), 0.into(), 0.into()).map_err(|e| format!("setresuid: {e}"))?;
    nix::unistd::setgroups(&[]).map_err(|e| format!("setgroups: {e}"))?;
    nix::unistd::sethostname(&spec.id).map_err(|e| format!("sethostname: {e}"))?;
    mounts::finish_root(root)?;

    let nofile = nix::sys::resource::Resource::RLIMIT_NOFILE;
    // Raising past the inherited hard limit needs CAP_SYS_RESOURCE on the host: never exceed it.
    let (_, hard) =
        nix::sys::resource::getrlimit(nofile).map_err(|e| format!("RLIMIT_NOFILE: {e}"))?;
    let n = spec.nofile.min(hard);
    nix::sys::resource::setrlimit(nofile, n, n).map_err(|e| format!("RLIMIT_NOFILE: {e}"))?;
    // stdin and stdout from /dev/null, stderr to the agent's log, the init spec on fd 3.
    let moves = [
        (stdio.0.as_raw_fd(), 0),
        (stdio.0.as_raw_fd(), 1),
        (stdio.1.as_raw_fd(), 2),
        (init_fd.as_raw_fd(), 3),
    ];
    for (from, to) in moves {
        // SAFETY: both descriptors are open; dup2 onto a fixed number is what exec expects.
        if from != to && unsafe { libc::dup2(from, to) } < 0 {
            return Err(format!("dup2: {}", std::io::Error::last_os_error()));
        }
    }
    if init_fd.as_raw_fd() == 3 {
        std::mem::forget(init_fd);
    }
    drop_capabilities()?;
    nix::sys::prctl::set_no_new_privs().map_err(|e| format!("no_new_privs: {e}"))?;
    seccomp::install(filters)?;

    let prog = c"/.soulbox/agent";
    let argv = [
        c"soulbox-agent".as_ptr(),
        c"--init-fd".as_ptr(),
        c"3".as_ptr(),
        std::ptr::null(),
    ];
    let envp = [std::ptr::null()];
    // SAFETY: NUL-terminated argv/envp of static C strings.
    unsafe { libc::execve(prog.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    Err(format!("exec agent: {}", std::io::Error::last_os_error()))
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
