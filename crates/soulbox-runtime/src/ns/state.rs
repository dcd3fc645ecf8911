//! What the runtime knows of a sandbox, on disk: `<data>/sandboxes/<id>/state.json`.
//!
//! Written (atomically) before a create returns and whenever the sandbox changes, so that a
//! runtime started later (after a restart, a crash or an upgrade) can take the sandbox over
//! with everything it holds — its process, id range, network slot and envd token — or, if
//! its processes are gone, knows what to clean up. The directory is the host's only (0700).

use crate::{Limits, Result, RuntimeError};
use serde::{Deserialize, Serialize};
use soulbox_protocol::init::InitSpec;
use std::path::{Path, PathBuf};

pub const STATE_FILE: &str = "state.json";
/// Bumped when the format changes incompatibly; a newer runtime reads every older version.
const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxState {
    pub version: u32,
    pub id: String,
    pub template: String,
    /// Who made it (`api`, `pool`, `build`): what a later runtime's owner does with it.
    pub label: String,
    pub limits: Limits,
    pub internet: bool,
    /// Its egress policy beyond the baseline, if it has one.
    #[serde(default)]
    pub egress: Option<crate::network::SlotPolicy>,
    /// The agent's start-up configuration, envd token included.
    pub init: InitSpec,
    /// Read-only layers, topmost first, the agent's layer excluded.
    pub layers: Vec<PathBuf>,
    pub upper: UpperKind,
    /// First host id of its id range: kept while it is paused, since its files are owned by
    /// those ids.
    pub id_base: u32,
    pub created_unix_ms: u64,
    /// The running sandbox's init, or `None` while it is paused to disk.
    pub running: Option<Running>,
    /// Set while it is paused to disk.
    #[serde(default)]
    pub paused: Option<Paused>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paused {
    pub at_unix_ms: u64,
    /// Whether the manifest of its writable layer was written (a resume then checks it).
    #[serde(default)]
    pub manifest: bool,
    /// Whether its processes were checkpointed (a full pause): the resume restores them.
    #[serde(default)]
    pub checkpoint: bool,
}

/// What a running sandbox holds on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Running {
    pub pid: i32,
    /// The init's start time (clock ticks after boot, /proc/PID/stat field 22): a pid
    /// reused by another process after a reboot or a long downtime is not mistaken for it.
    pub pid_start: u64,
    pub slot: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpperKind {
    Ext4,
    Tmpfs,
}

impl SandboxState {
    pub fn new_version() -> u32 {
        VERSION
    }

    /// Writes the state into `dir` atomically (a new file renamed over the old, synced): a
    /// crash leaves the old state or the new, never a torn one.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(STATE_FILE);
        let bytes =
            serde_json::to_vec_pretty(self).map_err(|e| RuntimeError::Launch(e.to_string()))?;
        crate::fs_util::write_atomic(&path, &bytes, 0o600)
            .map_err(|source| RuntimeError::Io { path, source })
    }

    /// The state in `dir`; `None` if there is none (a create that never finished) or it
    /// cannot be read.
    pub fn read(dir: &Path) -> Option<SandboxState> {
        let bytes = std::fs::read(dir.join(STATE_FILE)).ok()?;
        match serde_json::from_slice::<SandboxState>(&bytes) {
            Ok(s) if s.version <= VERSION => Some(s),
            Ok(s) => {
                tracing::warn!(dir = %dir.display(), version = s.version, "sandbox state of a newer SoulBox: left alone");
                None
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), "unreadable sandbox state: {e}");
                None
            }
        }
    }
}

/// The start time of process `pid` (field 22 of /proc/PID/stat), if it runs and is not a
/// zombie.
pub fn pid_start(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state).
    if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    fields.get(22 - 3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let s = SandboxState {
            version: VERSION,
            id: "abc".into(),
            template: "base".into(),
            label: "api".into(),
            limits: Limits::default(),
            internet: true,
            egress: None,
            init: InitSpec {
                access_token: Some("t".into()),
                ..Default::default()
            },
            layers: vec![PathBuf::from("/x/root")],
            upper: UpperKind::Ext4,
            id_base: 4,
            created_unix_ms: 5,
            running: Some(Running {
                pid: 1,
                pid_start: 2,
                slot: Some(3),
            }),
            paused: Some(Paused {
                at_unix_ms: 6,
                manifest: true,
                checkpoint: true,
            }),
        };
        s.write(dir.path()).unwrap();
        assert_eq!(SandboxState::read(dir.path()), Some(s));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(STATE_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(dir.path().join(STATE_FILE), "{torn").unwrap();
        assert_eq!(SandboxState::read(dir.path()), None);
    }

    #[test]
    fn our_own_start_time_is_read() {
        let me = std::process::id() as i32;
        assert!(pid_start(me).is_some_and(|t| t > 0));
        assert_eq!(pid_start(i32::MAX), None);
    }
}
