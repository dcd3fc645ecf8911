//! The sandbox's seccomp filter: Docker's default profile in spirit, as a deny list.
//!
//! Everything is allowed except syscalls that manage the kernel or the machine, escape or
//! reshape namespaces, or widen the kernel attack surface for no common use. Denied calls fail
//! with EPERM; `clone3` fails with ENOSYS so that libc falls back to `clone`, whose flags a
//! classic filter can inspect.
//!
//! Two gaps a list of syscall numbers leaves are closed by their own programs: sockets of
//! address families a sandbox has no use for (`AF_VSOCK` is not namespaced and bypasses the
//! firewall), and syscall numbers with the x32 bit set (the same calls under other numbers,
//! which no rule names). Every program first checks the architecture: anything but x86_64
//! (e.g. `int 0x80` from a 64-bit process) kills the process.

use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};
use std::collections::BTreeMap;

/// Syscalls refused outright.
const DENIED: &[(&str, libc::c_long)] = &[
    ("acct", libc::SYS_acct),
    ("add_key", libc::SYS_add_key),
    ("bpf", libc::SYS_bpf),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("clock_settime", libc::SYS_clock_settime),
    ("delete_module", libc::SYS_delete_module),
    ("finit_module", libc::SYS_finit_module),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fsopen", libc::SYS_fsopen),
    ("fspick", libc::SYS_fspick),
    ("init_module", libc::SYS_init_module),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("ioperm", libc::SYS_ioperm),
    ("iopl", libc::SYS_iopl),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("kexec_load", libc::SYS_kexec_load),
    ("keyctl", libc::SYS_keyctl),
    ("lookup_dcookie", libc::SYS_lookup_dcookie),
    ("mount", libc::SYS_mount),
    ("mount_setattr", libc::SYS_mount_setattr),
    ("move_mount", libc::SYS_move_mount),
    ("name_to_handle_at", libc::SYS_name_to_handle_at),
    ("nfsservctl", libc::SYS_nfsservctl),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("open_tree", libc::SYS_open_tree),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("pivot_root", libc::SYS_pivot_root),
    ("quotactl", libc::SYS_quotactl),
    ("reboot", libc::SYS_reboot),
    ("request_key", libc::SYS_request_key),
    ("setns", libc::SYS_setns),
    ("settimeofday", libc::SYS_settimeofday),
    ("swapoff", libc::SYS_swapoff),
    ("swapon", libc::SYS_swapon),
    ("syslog", libc::SYS_syslog),
    ("umount2", libc::SYS_umount2),
    ("unshare", libc::SYS_unshare),
    ("uselib", libc::SYS_uselib),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("ustat", libc::SYS_ustat),
    ("vhangup", libc::SYS_vhangup),
];

/// `clone` flags that would make new namespaces.
const NAMESPACE_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    0x80, // CLONE_NEWTIME
];

/// Socket address families a sandbox may create; `socket` and `socketpair` of any other fail
/// with EAFNOSUPPORT, as on a kernel without them. `AF_NETLINK` stays for `ip`, `ss` and
/// glibc's `getifaddrs`. `AF_PACKET` is refused: it only serves sniffing or forging frames on
/// a link that carries the sandbox's own traffic anyway, and it has been a repeated kernel
/// privilege-escalation path (CVE-2016-8655, CVE-2017-7308, CVE-2020-14386); ping and
/// traceroute use `AF_INET` sockets.
const ALLOWED_FAMILIES: &[(&str, i32)] = &[
    ("AF_UNIX", libc::AF_UNIX),
    ("AF_INET", libc::AF_INET),
    ("AF_INET6", libc::AF_INET6),
    ("AF_NETLINK", libc::AF_NETLINK),
];

/// Set in the syscall number by x32 programs (`__X32_SYSCALL_BIT`).
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

fn build(rules: BTreeMap<i64, Vec<SeccompRule>>, errno: i32) -> Result<BpfProgram, String> {
    let arch =
        TargetArch::try_from(std::env::consts::ARCH).map_err(|e| format!("seccomp: {e:?}"))?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        arch,
    )
    .map_err(|e| format!("seccomp filter: {e}"))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| format!("seccomp compile: {e}"))
}

/// The programs to install, in order.
pub fn programs() -> Result<Vec<BpfProgram>, String> {
    let mut deny: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED.iter().map(|(_, nr)| (*nr, vec![])).collect();
    let clone_rules = NAMESPACE_FLAGS
        .iter()
        .map(|f| {
            let c =
                SeccompCondition::new(0, SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(*f), *f)
                    .map_err(|e| format!("seccomp condition: {e}"))?;
            SeccompRule::new(vec![c]).map_err(|e| format!("seccomp rule: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    deny.insert(libc::SYS_clone, clone_rules);
    let enosys = BTreeMap::from([(libc::SYS_clone3, vec![])]);
    Ok(vec![
        x32_and_arch(),
        build(deny, libc::EPERM)?,
        build(enosys, libc::ENOSYS)?,
        build(socket_families()?, libc::EAFNOSUPPORT)?,
    ])
}

/// Matches `socket`/`socketpair` whose domain (argument 0, an `int`) is none of
/// [`ALLOWED_FAMILIES`].
fn socket_families() -> Result<BTreeMap<i64, Vec<SeccompRule>>, String> {
    let not_allowed = ALLOWED_FAMILIES
        .iter()
        .map(|(_, f)| {
            SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, *f as u64)
                .map_err(|e| format!("seccomp condition: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let rule = SeccompRule::new(not_allowed).map_err(|e| format!("seccomp rule: {e}"))?;
    Ok([libc::SYS_socket, libc::SYS_socketpair]
        .into_iter()
        .map(|nr| (nr, vec![rule.clone()]))
        .collect())
}

/// A hand-written program, since rules match exact numbers only: kill on any architecture but
/// x86_64, refuse (EPERM) every number with the x32 bit, allow the rest to the other programs.
fn x32_and_arch() -> BpfProgram {
    const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    // Offsets in `struct seccomp_data`: nr at 0, arch at 4.
    let op = |code, jt, jf, k| sock_filter { code, jt, jf, k };
    vec![
        op(LD_W_ABS, 0, 0, 4),
        op(JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        op(RET_K, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
        op(LD_W_ABS, 0, 0, 0),
        op(JGE_K, 0, 1, X32_SYSCALL_BIT),
        op(RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        op(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ]
}

/// `AUDIT_ARCH_X86_64`: `EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`.
const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;

/// Installs the filters on the calling thread (and everything it later runs).
/// Installs the programs without setting no-new-privileges (seccompiler's `apply_filter` always
/// sets it): setuid programs such as `sudo` keep working inside the sandbox, where they can only
/// reach sandbox root. Needs CAP_SYS_ADMIN in the caller's user namespace, so it runs before the
/// capabilities are dropped.
pub fn install(programs: &[BpfProgram]) -> Result<(), String> {
    for p in programs {
        let prog = libc::sock_fprog {
            len: u16::try_from(p.len()).map_err(|_| "seccomp program too long".to_string())?,
            filter: p.as_ptr() as *mut libc::sock_filter,
        };
        // SAFETY: SECCOMP_SET_MODE_FILTER reads the program we own for the length we pass;
        // seccompiler's instructions have the layout of `struct sock_filter`.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc != 0 {
            return Err(format!(
                "installing seccomp filter: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// Names of the refused syscalls, for `soulbox doctor` and the docs.
pub fn denied_names() -> impl Iterator<Item = &'static str> {
    DENIED.iter().map(|(n, _)| *n)
}

/// Names of the socket address families a sandbox may use.
pub fn allowed_families() -> impl Iterator<Item = &'static str> {
    ALLOWED_FAMILIES.iter().map(|(n, _)| *n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_program_compiles() {
        let p = programs().unwrap();
        assert_eq!(p.len(), 4);
        assert!(p.iter().all(|p| !p.is_empty() && p.len() < 4096));
    }
}
