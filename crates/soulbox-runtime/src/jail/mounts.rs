//! Mount steps. `prepare_root` runs as real root in the launcher's private mount namespace;
//! `finish_root` runs in the sandbox's init, inside its user and pid namespaces.

use super::loopdev;
use super::spec::{LaunchSpec, UpperLayer};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::unistd::{chown, Gid, Uid};
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

pub type Result<T> = std::result::Result<T, String>;

fn ctx<T, E: std::fmt::Display>(
    r: std::result::Result<T, E>,
    what: impl FnOnce() -> String,
) -> Result<T> {
    r.map_err(|e| format!("{}: {e}", what()))
}

fn mnt(
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

fn bind(src: &Path, target: &Path, extra: MsFlags) -> Result<()> {
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

pub fn root_dir(spec: &LaunchSpec) -> PathBuf {
    spec.dir.join("root")
}

/// Writable layer, overlay root, the agent's binary and socket directory, `/dev` and `/sys`.
pub fn prepare_root(spec: &LaunchSpec) -> Result<()> {
    let (uid, gid) = (Uid::from_raw(spec.id_base), Gid::from_raw(spec.id_base));
    let upper_mnt = spec.dir.join("upper");
    let root = root_dir(spec);
    for d in [&upper_mnt, &root] {
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
                &upper_mnt,
                Some("ext4"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                None,
            )?;
        }
        UpperLayer::Tmpfs { size_bytes } => {
            let opts = format!("size={size_bytes},mode=0755");
            mnt(
                Some("tmpfs"),
                &upper_mnt,
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
    let lower = spec
        .layers
        .iter()
        .map(|l| l.to_string_lossy())
        .collect::<Vec<_>>()
        .join(":");
    let opts = format!(
        "lowerdir={lower},upperdir={},workdir={}",
        up.display(),
        work.display()
    );
    mnt(
        Some("overlay"),
        &root,
        Some("overlay"),
        MsFlags::empty(),
        Some(&opts),
    )?;

    // The agent: read-only binary, socket directory closed to everyone but sandbox root.
    let agent_dir = root.join(".soulbox");
    let (agent_bin, run) = (agent_dir.join("agent"), agent_dir.join("run"));
    ctx(std::fs::create_dir_all(&run), || {
        format!("mkdir {}", run.display())
    })?;
    if !agent_bin.exists() {
        ctx(std::fs::write(&agent_bin, b""), || {
            format!("create {}", agent_bin.display())
        })?;
    }
    bind(
        &spec.agent,
        &agent_bin,
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
    )?;
    bind(
        &spec.dir.join("run"),
        &run,
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
    )?;

    prepare_dev(&root.join("dev"), spec.id_base)?;
    let sys = root.join("sys");
    ctx(std::fs::create_dir_all(&sys), || "mkdir sys".into())?;
    let ro = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mnt(Some("sysfs"), &sys, Some("sysfs"), ro, None)?;
    for masked in ["firmware", "kernel/security", "kernel/debug", "fs/cgroup"] {
        let p = sys.join(masked);
        if p.is_dir() {
            mnt(Some("tmpfs"), &p, Some("tmpfs"), ro, Some("size=0"))?;
        }
    }
    Ok(())
}

/// A minimal `/dev`: a few character devices, `pts`, `shm`, and the usual symlinks.
fn prepare_dev(dev: &Path, id_base: u32) -> Result<()> {
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
    let shm = format!("mode=1777,size=67108864,uid={id_base},gid={id_base}");
    mnt(
        Some("shm"),
        &dev.join("shm"),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(&shm),
    )?;
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
];
/// Paths of /proc made read-only.
const PROC_READONLY: &[&str] = &["sys", "sysrq-trigger", "irq", "bus", "fs"];

/// In the sandbox's namespaces: `/proc` for its pid namespace, a private devpts, then
/// pivot_root into the new root and drop the old one.
pub fn finish_root(root: &Path) -> Result<()> {
    // Mounts inherited from the launcher are locked in this less privileged namespace, and
    // pivot_root refuses a locked new root: stack a fresh bind of the root onto itself.
    bind(root, root, MsFlags::empty())?;
    let proc_ = root.join("proc");
    ctx(std::fs::create_dir_all(&proc_), || "mkdir proc".into())?;
    let nse = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mnt(Some("proc"), &proc_, Some("proc"), nse, None)?;
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
            Ok(_) => bind(&root.join("dev/null"), &p, MsFlags::empty())?,
            Err(_) => {}
        }
    }
    for r in PROC_READONLY {
        let p = proc_.join(r);
        if p.exists() {
            bind(&p, &p, nse | MsFlags::MS_RDONLY)?;
        }
    }
    mnt(
        Some("devpts"),
        &root.join("dev/pts"),
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
    )?;

    ctx(nix::unistd::chdir(root), || "chdir root".into())?;
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
