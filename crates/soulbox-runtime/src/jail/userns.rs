//! The sandbox's user namespace and the id-mapped views of its template layers.
//!
//! Each sandbox has a host id range of its own (`base .. base + 65536`), and its user
//! namespace is created by a process running as `base`, so the namespace's owner is that
//! unprivileged host uid: per-user kernel budgets (inotify instances, message queues, queued
//! signals, processes) are charged to the sandbox alone, never to host root or to a range that
//! other sandboxes share. Template layers stay owned by their natural ids (0 = root) on disk and
//! are mounted id-mapped through the namespace, so one copy serves every sandbox.

use super::mounts::Result;
use nix::sched::CloneFlags;
use nix::unistd::{ForkResult, Gid, Uid};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;

/// Ids mapped into every sandbox: 0..65536 inside.
pub const RANGE: u32 = 65536;

/// Creates a user namespace owned by host uid `base` that maps ids `0..RANGE` to
/// `base..base + RANGE`, and returns a descriptor that keeps it alive.
///
/// A short-lived child takes the unprivileged identity and unshares; this process (real root)
/// writes the maps, opens the namespace and lets the child go.
pub fn create(base: u32) -> Result<OwnedFd> {
    let (ready_r, ready_w) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    let (hold_r, hold_w) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: the launcher is single-threaded; the child only makes syscalls and exits.
    match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop((ready_r, hold_w));
            let ok = nix::unistd::setgroups(&[]).is_ok()
                && nix::unistd::setresgid(
                    Gid::from_raw(base),
                    Gid::from_raw(base),
                    Gid::from_raw(base),
                )
                .is_ok()
                && nix::unistd::setresuid(
                    Uid::from_raw(base),
                    Uid::from_raw(base),
                    Uid::from_raw(base),
                )
                .is_ok()
                && nix::sched::unshare(CloneFlags::CLONE_NEWUSER).is_ok();
            let _ = std::fs::File::from(ready_w).write_all(if ok { b"y" } else { b"n" });
            let mut b = [0u8; 1];
            let _ = std::fs::File::from(hold_r).read(&mut b);
            // SAFETY: leave without running the parent's destructors.
            unsafe { libc::_exit(0) };
        }
        ForkResult::Parent { child } => {
            drop((ready_w, hold_r));
            let finish = |r: Result<OwnedFd>| {
                drop(hold_w);
                let _ = nix::sys::wait::waitpid(child, None);
                r
            };
            let mut b = [0u8; 1];
            let said = std::fs::File::from(ready_r).read_exact(&mut b);
            if said.is_err() || b[0] != b'y' {
                return finish(Err(format!(
                    "creating the user namespace as uid {base} failed (is \
                     user.max_user_namespaces 0?)"
                )));
            }
            let map = format!("0 {base} {RANGE}\n");
            for f in ["uid_map", "gid_map"] {
                if let Err(e) = std::fs::write(format!("/proc/{child}/{f}"), &map) {
                    return finish(Err(format!("writing {f}: {e}")));
                }
            }
            let ns = std::fs::File::open(format!("/proc/{child}/ns/user"))
                .map(OwnedFd::from)
                .map_err(|e| format!("opening the user namespace: {e}"));
            finish(ns)
        }
    }
}
