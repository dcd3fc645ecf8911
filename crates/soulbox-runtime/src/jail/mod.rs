//! Building a sandbox around a process: namespaces, mounts, identity, hardening.
//!
//! `launch` runs in a short-lived helper process (`soulbox __launch`), never in the
//! multi-threaded runtime: forking a threaded process and then allocating is unsafe, and the
//! helper's own namespace changes (joining the network namespace, a private mount namespace)
//! must not touch the runtime. The helper exits once the sandbox's init has exec'd the agent;
//! the init is then adopted by the runtime, which is a child subreaper.

mod launch;
pub(crate) mod loopdev;
mod mounts;
pub(crate) mod restore;
pub mod seccomp;
pub mod spec;
mod tree;
mod userns;

pub use launch::{run_launcher, AGENT_LISTEN_FD};
pub use spec::{mount_key, LaunchResult, LaunchSpec, RestoreSpec, UpperLayer};
pub use userns::RANGE as ID_RANGE;

/// Capabilities sandbox root keeps (Docker's default set). All others are dropped from every
/// set, including the bounding set, before the agent runs.
pub const KEPT_CAPS: &[caps::Capability] = &[
    caps::Capability::CAP_CHOWN,
    caps::Capability::CAP_DAC_OVERRIDE,
    caps::Capability::CAP_FSETID,
    caps::Capability::CAP_FOWNER,
    caps::Capability::CAP_MKNOD,
    caps::Capability::CAP_NET_RAW,
    caps::Capability::CAP_SETGID,
    caps::Capability::CAP_SETUID,
    caps::Capability::CAP_SETFCAP,
    caps::Capability::CAP_SETPCAP,
    caps::Capability::CAP_NET_BIND_SERVICE,
    caps::Capability::CAP_SYS_CHROOT,
    caps::Capability::CAP_KILL,
    caps::Capability::CAP_AUDIT_WRITE,
];
