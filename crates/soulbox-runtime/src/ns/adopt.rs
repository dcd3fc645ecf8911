//! Taking over what an earlier runtime left: its sandboxes keep running when the server
//! stops, crashes or is upgraded, and the next runtime adopts them from their state files.

use super::state::{pid_start, SandboxState};
use super::{Entry, NsBackend};
use crate::fs_util;
use crate::network::Slot;
use std::collections::{BTreeSet, HashMap};

impl NsBackend {
    /// Adopts every sandbox whose init still runs (the same process: pid and start time, in
    /// the sandbox's own cgroup) and removes the rest: sandboxes whose processes died while no
    /// runtime watched, creates that never finished, cgroups and network slots nothing owns.
    /// With `adopt` off, everything of an earlier run is removed.
    pub(super) fn adopt_leftovers(&self) {
        let mut kept_slots = BTreeSet::new();
        let mut kept = BTreeSet::new();
        let mut policies = HashMap::new();
        let dirs = std::fs::read_dir(self.cfg.data_dir.join("sandboxes"))
            .into_iter()
            .flatten()
            .flatten();
        for e in dirs {
            let id = e.file_name().to_string_lossy().into_owned();
            let state = SandboxState::read(&e.path()).filter(|_| self.cfg.adopt);
            let egress = state.as_ref().and_then(|s| s.egress.clone());
            match state.and_then(|s| self.adopt_one(&id, s)) {
                Some(slot) => {
                    kept.insert(id);
                    kept_slots.extend(slot);
                    if let (Some(slot), Some(p)) = (slot, egress) {
                        policies.insert(slot, p);
                    }
                }
                None => {
                    if let Err(e) = self.cgroups.destroy(&id) {
                        tracing::warn!(sandbox_id = %id, "removing cgroups: {e}");
                    }
                    fs_util::remove_tree(&e.path());
                }
            }
        }
        for id in self.cgroups.existing() {
            if !kept.contains(&id) {
                let _ = self.cgroups.destroy(&id);
            }
        }
        self.net.adopt(&kept_slots, policies);
        if !kept.is_empty() {
            tracing::info!(
                count = kept.len(),
                "sandboxes of the earlier run taken over"
            );
        }
    }

    /// Registers one sandbox of an earlier run if its init still runs; returns its network
    /// slot (`Some(None)` without one), or `None` if it must be removed.
    fn adopt_one(&self, id: &str, state: SandboxState) -> Option<Option<u32>> {
        if state.id != id {
            return None;
        }
        if state.paused.is_some() {
            // Paused to disk (a stop may have been cut short: any process left is ended).
            let _ = self.cgroups.destroy(id);
            if !self.ids.claim(state.id_base) {
                return None;
            }
            if let Ok(mut p) = self.paused.lock() {
                p.insert(id.to_string(), state);
            }
            return Some(None);
        }
        let r = state.running.clone()?;
        let alive = pid_start(r.pid) == Some(r.pid_start) && self.cgroups.pids(id).contains(&r.pid);
        if !alive {
            tracing::info!(
                sandbox_id = id,
                "sandbox died while no runtime watched: removing it"
            );
            return None;
        }
        if !self.ids.claim(state.id_base) {
            tracing::warn!(sandbox_id = id, "sandbox state does not match: removing it");
            return None;
        }
        self.admission.readmit(id);
        let info = self.info_of(&state, r.pid);
        if let Ok(mut s) = self.sandboxes.lock() {
            s.insert(
                id.to_string(),
                Entry {
                    info,
                    slot: r.slot.map(|index| Slot { index }),
                    ids: Some(state.id_base),
                    adopted: true,
                    // What it sent before the takeover is not known apart from the slot's
                    // earlier users: its counters start again here.
                    net_base: r
                        .slot
                        .map_or((0, 0), |index| crate::network::veth_bytes(&Slot { index })),
                },
            );
        }
        Some(r.slot)
    }
}
