//! Changing a sandbox's egress policy while it lives, and finding the sandbox behind a slot
//! (for the egress proxy, which sees only the slot's address).

use super::state::SandboxState;
use super::NsBackend;
use crate::network::{Slot, SlotPolicy};
use crate::{Result, RuntimeError};

impl NsBackend {
    /// Makes `policy` the egress policy of sandbox `id`, running or paused to disk: written
    /// to its state first (a later runtime, or its resume, applies it), then to its slot's
    /// firewall in one transaction. A sandbox without internet has no slot to apply it to.
    pub fn set_egress(&self, id: &str, policy: Option<SlotPolicy>) -> Result<()> {
        let dir = self.sandbox_dir(id);
        let mut state = SandboxState::read(&dir)
            .filter(|s| s.id == id)
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
        if !state.internet && policy.is_some() {
            return Err(RuntimeError::InvalidSpec(
                "the sandbox was created without internet access: it has no network to open".into(),
            ));
        }
        state.egress = policy.clone();
        state.write(&dir)?;
        if let Ok(mut p) = self.paused.lock() {
            if let Some(s) = p.get_mut(id) {
                s.egress = policy.clone();
            }
        }
        let slot = self
            .sandboxes
            .lock()
            .ok()
            .and_then(|s| s.get(id).and_then(|e| e.slot.clone()));
        match slot {
            Some(slot) => Ok(self.net.set_policy(&slot, policy)?),
            None => Ok(()),
        }
    }

    /// The running sandbox that holds network slot `index`.
    pub fn sandbox_of_slot(&self, index: u32) -> Option<String> {
        let s = self.sandboxes.lock().ok()?;
        s.iter()
            .find(|(_, e)| e.slot.as_ref().is_some_and(|s: &Slot| s.index == index))
            .map(|(id, _)| id.clone())
    }
}
