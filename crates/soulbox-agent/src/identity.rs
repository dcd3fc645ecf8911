//! Doing file work as the requesting user.
//!
//! The agent runs as sandbox root. File operations switch the calling thread's filesystem
//! identity (fsuid, fsgid, supplementary groups) to the request's user, so the kernel does the
//! permission checks and new files belong to that user. These syscalls are per-thread when
//! made raw (glibc's `setgroups` wrapper would change every thread), so the work runs on a
//! blocking-pool thread and the identity is restored before the thread is handed back.

use crate::users::User;

struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        set_fs_identity(0, 0, &[0]);
    }
}

fn set_fs_identity(uid: u32, gid: u32, groups: &[u32]) {
    // SAFETY: raw per-thread credential syscalls with valid arguments; setgroups reads
    // `groups.len()` ids from a live slice.
    unsafe {
        libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr());
        libc::syscall(libc::SYS_setfsgid, gid);
        libc::syscall(libc::SYS_setfsuid, uid);
    }
}

/// Runs `f` on a blocking thread with the filesystem identity of `user`.
pub async fn as_user<T, F>(user: &User, f: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let (uid, gid, groups) = (user.uid, user.gid, user.groups.clone());
    let task = tokio::task::spawn_blocking(move || {
        let running_as_root = nix::unistd::geteuid().is_root();
        let _restore = running_as_root.then(|| {
            set_fs_identity(uid, gid, &groups);
            Restore
        });
        f()
    });
    match task.await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
