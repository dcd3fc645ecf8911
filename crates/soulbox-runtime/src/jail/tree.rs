//! Detached mount trees (the new mount API, which nix does not wrap): clone a tree, id-map it,
//! attach it.

use super::mounts::Result;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn c_path(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| format!("{}: NUL in path", p.display()))
}

fn os_err(what: &str, p: &Path) -> String {
    format!(
        "{what} {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    )
}

/// A detached recursive copy of the mount tree at `src` (like `mount --rbind`, not attached).
pub fn clone(src: &Path) -> Result<OwnedFd> {
    let c = c_path(src)?;
    // SAFETY: open_tree with a valid NUL-terminated path; returns a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_RECURSIVE as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(os_err("open_tree", src));
    }
    // SAFETY: open_tree returned a descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Id-maps a detached tree through `userns`: files owned by `n` on disk appear as owned by
/// whatever host id `n` maps to in that namespace.
pub fn idmap(tree: &OwnedFd, userns: &OwnedFd) -> Result<()> {
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: mount_setattr on our detached tree with a mount_attr of the size we pass.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if rc < 0 {
        return Err(os_err("id-mapping", Path::new("layer")));
    }
    Ok(())
}

/// Attaches a detached tree at `dst`. The descriptor then names the attached tree's root.
pub fn attach(tree: &OwnedFd, dst: &Path) -> Result<()> {
    let c = c_path(dst)?;
    // SAFETY: move_mount of our detached tree onto a NUL-terminated target path.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc < 0 {
        return Err(os_err("attaching a mount on", dst));
    }
    Ok(())
}
