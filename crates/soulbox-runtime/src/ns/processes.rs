//! What runs in a sandbox, read from the host: the pids of its cgroup and their `/proc`
//! entries, each translated into the sandbox's view (its pid namespace, its user ids). Nothing
//! runs inside the sandbox for it, so it works whatever the template has (no `ps` needed) and
//! sees every process, not only those the agent started.

use super::NsBackend;
use crate::RuntimeError;
use serde::Serialize;
use std::collections::HashMap;

/// One process, as the sandbox sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessInfo {
    pub pid: i64,
    /// 0 for the sandbox's init (its parent is outside).
    pub ppid: i64,
    /// The real user id inside the sandbox.
    pub uid: i64,
    /// One letter, as `ps` shows it (R running, S sleeping, Z zombie, …).
    pub state: String,
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
    /// The command line (arguments joined by spaces), or `[name]` when it has none.
    pub cmd: String,
}

/// Longest command line reported (and read: a sandbox's processes choose their own).
const MAX_CMD: usize = 4096;
/// Most processes reported in one listing (a sandbox can fork as many as its pids limit).
pub const MAX_PROCESSES: usize = 2000;

impl NsBackend {
    /// The processes of a running sandbox, by pid: at most [`MAX_PROCESSES`] (the lowest
    /// host pids), each read bounded, so what a listing costs the host does not grow with
    /// what the sandbox puts in its command lines.
    pub fn processes(&self, id: &str) -> Result<Vec<ProcessInfo>, RuntimeError> {
        let init = self
            .sandboxes
            .lock()
            .ok()
            .and_then(|s| s.get(id).map(|e| e.info.pid))
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
        let uid_map = std::fs::read_to_string(format!("/proc/{init}/uid_map"))
            .map(|m| parse_id_map(&m))
            .unwrap_or_default();
        let mut host_pids = self.cgroups().pids(id);
        host_pids.sort_unstable();
        host_pids.truncate(MAX_PROCESSES);
        let raw: Vec<(i32, Raw)> = host_pids
            .iter()
            .filter_map(|&p| read_raw(p).map(|r| (p, r)))
            .collect();
        // Host pid → pid inside, to translate parents.
        let inside: HashMap<i32, i64> = raw.iter().map(|(p, r)| (*p, r.ns_pid)).collect();
        let tick = clock_ticks();
        let page = page_size();
        let mut out: Vec<ProcessInfo> = raw
            .into_iter()
            .map(|(_, r)| ProcessInfo {
                pid: r.ns_pid,
                ppid: inside.get(&r.host_ppid).copied().unwrap_or(0),
                uid: to_inside(&uid_map, r.host_uid),
                state: r.state,
                cpu_seconds: r.cpu_ticks as f64 / tick,
                rss_bytes: r.rss_pages.saturating_mul(page),
                cmd: r.cmd,
            })
            .collect();
        out.sort_by_key(|p| p.pid);
        Ok(out)
    }
}

struct Raw {
    ns_pid: i64,
    host_ppid: i32,
    host_uid: i64,
    state: String,
    cpu_ticks: u64,
    rss_pages: u64,
    cmd: String,
}

/// A process's entries; `None` if it ended meanwhile.
fn read_raw(pid: i32) -> Option<Raw> {
    let dir = format!("/proc/{pid}");
    let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
    let (name, fields) = parse_stat(&stat)?;
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    // After the name: state(0) ppid(1) … utime(11) stime(12) … rss(21).
    let ns_pid = status_field(&status, "NSpid:")
        .and_then(|v| v.split_whitespace().last()?.parse().ok())
        .unwrap_or(pid as i64);
    let host_uid = status_field(&status, "Uid:")
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(-1);
    let cmdline = read_bounded(&format!("{dir}/cmdline"), MAX_CMD);
    Some(Raw {
        ns_pid,
        host_ppid: field(1).unwrap_or(0) as i32,
        host_uid,
        state: fields.first().map(|s| s.to_string()).unwrap_or_default(),
        cpu_ticks: field(11).unwrap_or(0) + field(12).unwrap_or(0),
        rss_pages: field(21).unwrap_or(0),
        cmd: command_line(&cmdline, name),
    })
}

/// `pid (name) state ppid …`: the name may hold spaces and parentheses, so it ends at the
/// last `)`.
fn parse_stat(stat: &str) -> Option<(&str, Vec<&str>)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?;
    Some((name, stat.get(close + 1..)?.split_whitespace().collect()))
}

fn status_field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status.lines().find_map(|l| l.strip_prefix(name))
}

/// At most `max` bytes of a file (a process's arguments can be megabytes).
fn read_bounded(path: &str, max: usize) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.take(max as u64).read_to_end(&mut out);
    }
    out
}

fn command_line(raw: &[u8], name: &str) -> String {
    let mut s: String = String::from_utf8_lossy(raw)
        .split('\0')
        .filter(|a| !a.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if s.is_empty() {
        s = format!("[{name}]");
    }
    if s.len() > MAX_CMD {
        let mut end = MAX_CMD;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// `inside outside count` lines of a `uid_map`.
fn parse_id_map(m: &str) -> Vec<(i64, i64, i64)> {
    m.lines()
        .filter_map(|l| {
            let v: Vec<i64> = l
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            (v.len() == 3).then(|| (v[0], v[1], v[2]))
        })
        .collect()
}

/// A host id as the sandbox sees it (-1: not mapped into it).
fn to_inside(map: &[(i64, i64, i64)], host: i64) -> i64 {
    map.iter()
        .find(|(_, out, n)| host >= *out && host < out + n)
        .map(|(inside, out, _)| inside + host - out)
        .unwrap_or(-1)
}

fn clock_ticks() -> f64 {
    sysconf(libc::_SC_CLK_TCK, 100) as f64
}

fn page_size() -> u64 {
    sysconf(libc::_SC_PAGESIZE, 4096)
}

/// A constant of the system, or `default` if it has none.
fn sysconf(name: libc::c_int, default: u64) -> u64 {
    // SAFETY: sysconf reads a constant of the system; it touches no memory of ours.
    let v = unsafe { libc::sysconf(name) };
    if v > 0 {
        v as u64
    } else {
        default
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_with_parentheses_and_spaces() {
        let (name, f) = parse_stat("42 (my (odd) name) S 1 42 42 0 -1").unwrap();
        assert_eq!(name, "my (odd) name");
        assert_eq!(f[0], "S");
        assert_eq!(f[1], "1");
    }

    #[test]
    fn ids_map_into_the_sandbox() {
        let m = parse_id_map("         0     200000      65536\n");
        assert_eq!(to_inside(&m, 200000), 0);
        assert_eq!(to_inside(&m, 201000), 1000);
        assert_eq!(to_inside(&m, 0), -1);
    }

    #[test]
    fn command_lines_join_and_fall_back_to_the_name() {
        assert_eq!(
            command_line(b"python3\0-c\0print(1)\0", "py"),
            "python3 -c print(1)"
        );
        assert_eq!(command_line(b"", "kworker"), "[kworker]");
        let long = "é".repeat(MAX_CMD);
        assert!(command_line(long.as_bytes(), "x").len() <= MAX_CMD);
    }

    #[test]
    fn a_long_file_is_read_only_so_far() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cmdline");
        std::fs::write(&p, vec![b'a'; 1 << 20]).unwrap();
        assert_eq!(read_bounded(p.to_str().unwrap(), MAX_CMD).len(), MAX_CMD);
        assert!(read_bounded("/nonexistent", MAX_CMD).is_empty());
    }

    #[test]
    fn this_process_reads() {
        let r = read_raw(std::process::id() as i32).unwrap();
        assert!(!r.cmd.is_empty());
        assert!(r.rss_pages > 0);
    }
}
