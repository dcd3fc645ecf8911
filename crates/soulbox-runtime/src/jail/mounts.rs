//! Mount steps. `prepare_root` runs as real root in the launcher's private mount namespace;
//! `finish_root` runs in the sandbox's init, inside its user and pid namespaces.

use super::spec::{LaunchSpec, UpperLayer};
use super::{loopdev, tree};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::unistd::{chown, Gid, Uid};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

pub type Result<T> = std::result::Result<T, String>;

fn ctx<T, E: std::fmt::Display>(
    r: std::result::Result<T, E>,
    what: impl FnOnce() -> String,
) -> Result<T> {
    r.map_err(|e| format!("{}: {e}", what()))
}

pub(super) fn mnt(
    src: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    ctx(mount(src, target, fstype, flags, data), || {
        format!(
            "mount {} on {}",
            fstype.or(src).unwrap_or("bind"),
            target.display()
        )
    })
}

pub(super) fn bind(src: &Path, target: &Path, extra: MsFlags) -> Result<()> {
    ctx(
        mount(
            Some(src),
            target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        ),
        || format!("bind {} on {}", src.display(), target.display()),
    )?;
    if !extra.is_empty() {
        // Bind mounts ignore flags on creation; they take effect on a remount.
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra;
        ctx(
            mount(None::<&str>, target, None::<&str>, flags, None::<&str>),
            || format!("remount {}", target.display()),
        )?;
    }
    Ok(())
}

fn root_dir(spec: &LaunchSpec) -> PathBuf {
    spec.dir.join("root")
}

/// A directory `name` right under the fresh overlay root, to mount on. The root comes from
/// template layers (custom templates are untrusted), so a symlink there is refused, never
/// followed: the mount must land inside the sandbox.
fn mount_point(root: &Path, name: &str) -> Result<PathBuf> {
    let p = root.join(name);
    match std::fs::symlink_metadata(&p) {
        Ok(md) if md.is_dir() => Ok(p),
        Ok(_) => Err(format!("the template's /{name} is not a directory")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            ctx(std::fs::create_dir(&p), || format!("mkdir {}", p.display()))?;
            Ok(p)
        }
        Err(e) => Err(format!("{}: {e}", p.display())),
    }
}

/// Writable layer, id-mapped layers, overlay root, `/dev` and `/sys`.
pub fn prepare_root(spec: &LaunchSpec, userns: &OwnedFd) -> Result<()> {
    let root = prepare_overlay(spec, userns)?;
    prepare_dev(&mount_point(&root, "dev")?, spec.id_base, true)?;
    let sys = mount_point(&root, "sys")?;
    let ro = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mnt(Some("sysfs"), &sys, Some("sysfs"), ro, None)?;
    for masked in SYS_MASKED {
        let p = sys.join(masked);
        if p.is_dir() {
            mnt(Some("tmpfs"), &p, Some("tmpfs"), ro, Some("size=0"))?;
        }
    }
    // Made here, as real root, these binds are locked in the sandbox's namespaces.
    if let Some(lxcfs) = &spec.lxcfs {
        for f in crate::lxcfs::SYS_FILES {
            let p = sys.join(f);
            if p.is_file() {
                bind(&lxcfs.join("sys").join(f), &p, ro)?;
            }
        }
    }
    mount_point(&root, "proc")?;
    // The init starts here: it cannot walk the host path to the root.
    ctx(nix::unistd::chdir(&root), || "chdir root".into())?;
    Ok(())
}

/// What a checkpoint's restore needs on the host: the bare overlay root (CRIU mounts the
/// rest as it was) and a fresh `/dev` without its `shm` (restored with its files) at
/// `restore-dev` in the sandbox's directory. Returns both.
pub fn prepare_restore(spec: &LaunchSpec, userns: &OwnedFd) -> Result<(PathBuf, PathBuf)> {
    let root = prepare_overlay(spec, userns)?;
    let dev = spec.dir.join("restore-dev");
    prepare_dev(&dev, spec.id_base, false)?;
    Ok((root, dev))
}

/// Writable layer, id-mapped layers and the overlay root on `root/` in the sandbox's
/// directory, which becomes the working directory. Paths of the overlay's layers are given
/// relative to it, so the sandbox's mountinfo names no host path.
fn prepare_overlay(spec: &LaunchSpec, userns: &OwnedFd) -> Result<PathBuf> {
    let (uid, gid) = (Uid::from_raw(spec.id_base), Gid::from_raw(spec.id_base));
    ctx(nix::unistd::chdir(&spec.dir), || {
        format!("chdir {}", spec.dir.display())
    })?;
    let upper_mnt = Path::new("upper");
    let root = root_dir(spec);
    for d in [upper_mnt, &root] {
        ctx(std::fs::create_dir_all(d), || {
            format!("mkdir {}", d.display())
        })?;
    }
    match &spec.upper {
        UpperLayer::Ext4 { image } => {
            let (dev, _hold) = ctx(loopdev::attach(image), || {
                format!("attach {}", image.display())
            })?;
            let dev = dev.to_string_lossy().into_owned();
            mnt(
                Some(&dev),
                upper_mnt,
                Some("ext4"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                None,
            )?;
        }
        UpperLayer::Tmpfs { size_bytes } => {
            let opts = format!("size={size_bytes},mode=0755");
            mnt(
                Some("tmpfs"),
                upper_mnt,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some(&opts),
            )?;
        }
    }
    let (up, work) = (upper_mnt.join("upper"), upper_mnt.join("work"));
    for d in [&up, &work] {
        ctx(std::fs::create_dir_all(d), || {
            format!("mkdir {}", d.display())
        })?;
        ctx(chown(d, Some(uid), Some(gid)), || {
            format!("chown {}", d.display())
        })?;
    }
    let mut lower = Vec::with_capacity(spec.layers.len());
    for (i, layer) in spec.layers.iter().enumerate() {
        let at = PathBuf::from(format!("l{i}"));
        ctx(std::fs::create_dir_all(&at), || {
            format!("mkdir {}", at.display())
        })?;
        let t = tree::clone(layer)?;
        tree::idmap(&t, userns)?;
        tree::attach(&t, &at)?;
        lower.push(at.to_string_lossy().into_owned());
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        up.display(),
        work.display()
    );
    mnt(
        Some("overlay"),
        Path::new("root"),
        Some("overlay"),
        MsFlags::MS_NODEV,
        Some(&opts),
    )?;
    Ok(root)
}

/// Paths of /sys hidden behind an empty read-only tmpfs: firmware and security interfaces, and
/// the host's block devices (one loop device per sandbox that ever ran).
const SYS_MASKED: &[&str] = &[
    "firmware",
    "kernel/security",
    "kernel/debug",
    "fs/cgroup",
    "block",
    "class/block",
    "dev/block",
    "devices/virtual/block",
];

/// A minimal `/dev`: a few character devices, `pts`, `shm` (mounted if `shm`), and the usual
/// symlinks.
fn prepare_dev(dev: &Path, id_base: u32, shm: bool) -> Result<()> {
    ctx(std::fs::create_dir_all(dev), || "mkdir dev".into())?;
    let opts = format!("mode=0755,size=65536,uid={id_base},gid={id_base}");
    mnt(
        Some("tmpfs"),
        dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some(&opts),
    )?;
    let owner = (Some(Uid::from_raw(id_base)), Some(Gid::from_raw(id_base)));
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        let p = dev.join(name);
        ctx(
            mknod(
                &p,
                SFlag::S_IFCHR,
                Mode::from_bits_truncate(0o666),
                makedev(major, minor),
            ),
            || format!("mknod {name}"),
        )?;
        // mknod honours the umask; devices must be usable by every user.
        ctx(
            nix::sys::stat::fchmodat(
                nix::fcntl::AT_FDCWD,
                &p,
                Mode::from_bits_truncate(0o666),
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            ),
            || format!("chmod {name}"),
        )?;
        ctx(chown(&p, owner.0, owner.1), || format!("chown {name}"))?;
    }
    for d in ["pts", "shm", "mqueue"] {
        ctx(std::fs::create_dir_all(dev.join(d)), || {
            format!("mkdir dev/{d}")
        })?;
        ctx(chown(&dev.join(d), owner.0, owner.1), || {
            format!("chown dev/{d}")
        })?;
    }
    if shm {
        let shm = format!("mode=1777,size=67108864,uid={id_base},gid={id_base}");
        mnt(
            Some("shm"),
            &dev.join("shm"),
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(&shm),
        )?;
    }
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        ctx(symlink(target, dev.join(link)), || {
            format!("symlink dev/{link}")
        })?;
        ctx(
            nix::unistd::fchownat(
                nix::fcntl::AT_FDCWD,
                &dev.join(link),
                owner.0,
                owner.1,
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            ),
            || format!("chown dev/{link}"),
        )?;
    }
    Ok(())
}

/// Paths of /proc hidden behind /dev/null (files) or an empty read-only tmpfs (directories).
const PROC_MASKED: &[&str] = &[
    "kcore",
    "keys",
    "latency_stats",
    "timer_list",
    "timer_stats",
    "sched_debug",
    "acpi",
    "scsi",
    "kallsyms",
    "cmdline",
    // The host's block devices and their I/O (LXCFS's view of diskstats is the host's on
    // kernels without the CFQ-era blkio statistics, so it is not used).
    "diskstats",
    "partitions",
];
/// Paths of /proc made read-only.
const PROC_READONLY: &[&str] = &["sys", "sysrq-trigger", "irq", "bus", "fs"];

/// In the sandbox's namespaces, with the root as working directory (its host path is not
/// reachable from here: the sandbox's directory is private to host root): `/proc` for its pid
/// namespace with LXCFS's files over the host-wide ones, a private devpts, then pivot_root
/// into the root and drop the old one.
pub fn finish_root(pty_max: u32, lxcfs: Option<&Path>) -> Result<()> {
    // Mounts inherited from the launcher are locked in this less privileged namespace, and
    // pivot_root refuses a locked new root: stack a fresh copy of the root onto itself, and
    // step onto it through the copy's descriptor.
    let here = Path::new(".");
    let t = tree::clone(here)?;
    tree::attach(&t, here)?;
    ctx(nix::unistd::fchdir(&t), || "entering the root".into())?;
    drop(t);
    let proc_ = Path::new("proc");
    let nse = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mnt(Some("proc"), proc_, Some("proc"), nse, None)?;
    for m in PROC_MASKED {
        let p = proc_.join(m);
        match std::fs::metadata(&p) {
            Ok(md) if md.is_dir() => mnt(
                Some("tmpfs"),
                &p,
                Some("tmpfs"),
                nse | MsFlags::MS_RDONLY,
                Some("size=0"),
            )?,
            Ok(_) => bind(Path::new("dev/null"), &p, MsFlags::empty())?,
            Err(_) => {}
        }
    }
    for r in PROC_READONLY {
        let p = proc_.join(r);
        if p.exists() {
            bind(&p, &p, nse | MsFlags::MS_RDONLY)?;
        }
    }
    // The sandbox's own figures, from the host's LXCFS mount (still reachable by its host
    // path until the pivot below). Like the masks, these binds hold because sandbox root has
    // no CAP_SYS_ADMIN and seccomp refuses mount and umount.
    if let Some(lxcfs) = lxcfs {
        for f in crate::lxcfs::PROC_FILES {
            bind(
                &lxcfs.join("proc").join(f),
                &proc_.join(f),
                nse | MsFlags::MS_RDONLY,
            )?;
        }
    }
    // `max` bounds this sandbox's terminals: the host's pool (kernel.pty.max) is shared.
    let pts = format!("newinstance,ptmxmode=0666,mode=0620,gid=5,max={pty_max}");
    mnt(
        Some("devpts"),
        Path::new("dev/pts"),
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some(&pts),
    )?;

    ctx(nix::unistd::pivot_root(".", "."), || "pivot_root".into())?;
    ctx(umount2(".", MntFlags::MNT_DETACH), || {
        "detach old root".into()
    })?;
    ctx(nix::unistd::chdir("/"), || "chdir /".into())?;
    Ok(())
}

/// Brings the loopback interface of the current network namespace up.
pub fn loopback_up() -> io::Result<()> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    use std::os::fd::AsRawFd;
    let s = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(io::Error::from)?;
    // SAFETY: an all-zero ifreq is valid; the name fits in IFNAMSIZ.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we own.
    unsafe {
        if libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
