//! Turning a sandbox's writable layer (an overlayfs upper directory, its files owned by the
//! sandbox's host id range) into a store layer (natural ids): a copy that keeps types, modes,
//! times, hard links, whiteouts, opaque directories and file capabilities, and shifts every id
//! from `[base, base+65536)` back to `[0, 65536)`.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// Extended attributes a layer keeps; overlayfs's bookkeeping of the upper directory
/// (`origin`, `impure`, …) refers to the mount it came from and is dropped.
fn keep_xattr(name: &OsStr) -> bool {
    let n = name.as_bytes();
    n == b"trusted.overlay.opaque"
        || n == b"security.capability"
        || n.starts_with(b"user.")
        || n.starts_with(b"system.posix_acl")
}

/// Copies `src` (an upper directory) into `dst` (an empty layer root).
pub fn copy_shifted(src: &Path, dst: &Path, base: u32) -> io::Result<()> {
    let shift = |id: u32| {
        if id >= base && id - base < 65536 {
            id - base
        } else {
            // Ids outside the range (a whiteout made by overlayfs as host root) stay as they
            // are if natural, else become nobody.
            if id < 65536 {
                id
            } else {
                65534
            }
        }
    };
    let mut links: HashMap<(u64, u64), std::path::PathBuf> = HashMap::new();
    let mut dirs = vec![];
    let walk = walkdir::WalkDir::new(src)
        .follow_links(false)
        .same_file_system(true)
        .sort_by_file_name();
    for e in walk {
        let e = e.map_err(io::Error::other)?;
        let rel = e.path().strip_prefix(src).map_err(io::Error::other)?;
        let to = dst.join(rel);
        let m = std::fs::symlink_metadata(e.path())?;
        let ft = m.file_type();
        if ft.is_dir() {
            if !rel.as_os_str().is_empty() {
                std::fs::create_dir(&to)?;
            }
            dirs.push((to.clone(), m.clone()));
        } else if m.nlink() > 1 && !ft.is_dir() {
            if let Some(first) = links.get(&(m.dev(), m.ino())) {
                std::fs::hard_link(first, &to)?;
                continue;
            }
            links.insert((m.dev(), m.ino()), to.clone());
            copy_entry(e.path(), &to, &m)?;
        } else {
            copy_entry(e.path(), &to, &m)?;
        }
        copy_xattrs(e.path(), &to)?;
        std::os::unix::fs::lchown(&to, Some(shift(m.uid())), Some(shift(m.gid())))?;
        if !ft.is_symlink() && !ft.is_dir() {
            // chown clears setuid bits: the mode goes on after it.
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(m.mode() & 0o7777))?;
            set_times(&to, &m)?;
        } else if ft.is_symlink() {
            set_times(&to, &m)?;
        }
    }
    // Directories last, deepest first: writing into them changed their times.
    for (to, m) in dirs.iter().rev() {
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(m.mode() & 0o7777))?;
        set_times(to, m)?;
    }
    Ok(())
}

fn copy_entry(from: &Path, to: &Path, m: &std::fs::Metadata) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let ft = m.file_type();
    if ft.is_file() {
        std::fs::copy(from, to)?;
    } else if ft.is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(from)?, to)?;
    } else if ft.is_char_device() || ft.is_block_device() || ft.is_fifo() {
        let kind = if ft.is_char_device() {
            nix::sys::stat::SFlag::S_IFCHR
        } else if ft.is_block_device() {
            nix::sys::stat::SFlag::S_IFBLK
        } else {
            nix::sys::stat::SFlag::S_IFIFO
        };
        nix::sys::stat::mknod(
            to,
            kind,
            nix::sys::stat::Mode::from_bits_truncate(m.mode() & 0o7777),
            m.rdev(),
        )
        .map_err(io::Error::from)?;
    }
    // Sockets are not files a layer can keep; they are skipped.
    Ok(())
}

fn copy_xattrs(from: &Path, to: &Path) -> io::Result<()> {
    let Ok(names) = xattr::list(from) else {
        return Ok(());
    };
    for n in names.filter(|n| keep_xattr(n)) {
        if let Ok(Some(v)) = xattr::get(from, &n) {
            xattr::set(to, &n, &v)?;
        }
    }
    Ok(())
}

fn set_times(p: &Path, m: &std::fs::Metadata) -> io::Result<()> {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    utimensat(
        nix::fcntl::AT_FDCWD,
        p,
        &TimeSpec::new(m.atime(), m.atime_nsec()),
        &TimeSpec::new(m.mtime(), m.mtime_nsec()),
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_shift_back_and_links_and_modes_survive() {
        let base = 1 << 30;
        let s = tempfile::tempdir().unwrap();
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(s.path().join("home")).unwrap();
        std::fs::write(s.path().join("home/a"), "a").unwrap();
        std::fs::hard_link(s.path().join("home/a"), s.path().join("home/b")).unwrap();
        std::os::unix::fs::symlink("a", s.path().join("home/l")).unwrap();
        std::os::unix::fs::lchown(
            s.path().join("home/a"),
            Some(base + 1000),
            Some(base + 1000),
        )
        .unwrap();
        std::fs::set_permissions(
            s.path().join("home/a"),
            std::fs::Permissions::from_mode(0o4750),
        )
        .unwrap();
        copy_shifted(s.path(), d.path(), base).unwrap();
        let a = std::fs::metadata(d.path().join("home/a")).unwrap();
        let b = std::fs::metadata(d.path().join("home/b")).unwrap();
        assert_eq!((a.uid(), a.gid()), (1000, 1000));
        assert_eq!(a.mode() & 0o7777, 0o4750);
        assert_eq!(a.ino(), b.ino(), "hard links stay linked");
        assert_eq!(
            std::fs::read_link(d.path().join("home/l")).unwrap(),
            Path::new("a")
        );
    }
}
