//! Pausing to disk. A *filesystem* pause ends every process of the sandbox and keeps its
//! writable layer (synced) with its state; resuming boots it again on the same files, with
//! the same envd token. A *full* pause first checkpoints its processes with CRIU
//! ([`super::checkpoint`]); resuming restores them, memory and all. Either way all else it
//! held on the host (cgroups, network slot, memory) is given back, and a paused sandbox
//! survives restarts of the server and of the host; it keeps its id range, since its files
//! are owned by those ids.

use super::checkpoint::{self, CheckpointInfo, CHECKPOINT_DIR};
use super::commit::wait_detached;
use super::manifest::{self, Manifest};
use super::state::{Paused, SandboxState, UpperKind};
use super::{io_err, CreateGuard, Entry, NsBackend, READY_TIMEOUT, UPPER_IMAGE};
use crate::agent_client::AgentClient;
use crate::jail::RestoreSpec;
use crate::{Result, RuntimeError, SandboxInfo};
use std::sync::Arc;

/// Free space a pause needs on the data directory's disk before it stops anything (its state
/// and manifest; the writable layer is written already). A full pause needs room for the
/// sandbox's memory on top.
const PAUSE_FREE_BYTES: u64 = 64 << 20;

/// How a sandbox was paused or resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseMode {
    /// Processes and memory kept.
    Full,
    /// Files kept; processes ended (or started afresh, on a resume).
    Filesystem,
}

impl NsBackend {
    /// Whether full pauses are possible (a usable CRIU).
    pub fn can_checkpoint(&self) -> bool {
        self.cfg.criu.is_some()
    }

    /// Pauses sandbox `id` to disk, with its memory if `memory` and CRIU can; blocking. The
    /// paused state is written before any process is stopped: if it cannot be (a full disk),
    /// the sandbox runs on as it was. A checkpoint that fails (a resource CRIU cannot save)
    /// leaves a filesystem pause, and says so in the mode returned.
    pub fn pause_to_disk_blocking(&self, id: &str, memory: bool) -> Result<PauseMode> {
        let dir = self.sandbox_dir(id);
        if self.get_info(id).is_none() {
            return Err(RuntimeError::NotFound(id.to_string()));
        }
        let mut state = SandboxState::read(&dir).ok_or_else(|| RuntimeError::Io {
            path: dir.join(super::state::STATE_FILE),
            source: std::io::Error::other("the sandbox's state is missing or unreadable"),
        })?;
        if state.upper != UpperKind::Ext4 {
            return Err(RuntimeError::InvalidSpec(
                "only a sandbox with an ext4 writable layer can be paused to disk".into(),
            ));
        }
        let criu = self.cfg.criu.as_ref().filter(|_| memory);
        let needed = PAUSE_FREE_BYTES
            + criu
                .and_then(|_| self.cgroups.stats(id).ok())
                .map_or(0, |s| s.memory_bytes);
        let free = nix::sys::statvfs::statvfs(&dir)
            .map(|s| s.blocks_available() * s.fragment_size())
            .unwrap_or(u64::MAX);
        if free < needed {
            let hint = if criu.is_some() {
                " (or pause without memory, which needs less)"
            } else {
                ""
            };
            return Err(RuntimeError::Capacity(format!(
                "the disk of {} has {} MiB free, less than the {} MiB this pause needs; the sandbox runs on: free some space and pause again{hint}",
                self.cfg.data_dir.display(),
                free >> 20,
                needed.div_ceil(1 << 20)
            )));
        }
        state.paused = Some(Paused {
            at_unix_ms: crate::layer::now_ms(),
            manifest: false,
            checkpoint: false,
        });
        state.write(&dir)?;
        let entry = self
            .sandboxes
            .lock()
            .map_err(|_| poisoned())?
            .remove(id)
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
        let images = dir.join(CHECKPOINT_DIR);
        let dumped = criu
            .map(|c| checkpoint::dump(c, entry.info.pid, &state, &images, checkpoint::After::End));
        let mode = match dumped {
            Some(Ok(_)) => PauseMode::Full,
            Some(Err(e)) => {
                tracing::warn!(
                    sandbox_id = id,
                    "full pause impossible, pausing files only: {e}"
                );
                PauseMode::Filesystem
            }
            None => PauseMode::Filesystem,
        };
        // After a checkpoint CRIU has ended the processes; this reaps the init.
        self.stop_processes(id, Some(entry.info.pid));
        let image = dir.join(UPPER_IMAGE);
        // Once the loop device is gone every write is in the image; then onto the disk.
        let synced = wait_detached(&image).and_then(|()| {
            std::fs::File::open(&image)
                .and_then(|f| f.sync_all())
                .map_err(io_err(&image))
        });
        self.release_host(id, entry.slot);
        state.running = None;
        // Every file, hashed, for the resume to check.
        let listed =
            synced.and_then(|()| manifest::scan_image(&image, &dir.join("verify"))?.write(&dir));
        if let Some(p) = state.paused.as_mut() {
            p.manifest = listed.is_ok();
            p.checkpoint = mode == PauseMode::Full;
        }
        // The processes are gone either way: say so on disk (if the disk takes it).
        let written = state.write(&dir);
        if let Ok(mut p) = self.paused.lock() {
            p.insert(id.to_string(), state);
        }
        listed.and(written).map(|()| mode)
    }

    /// Checks a sandbox paused to disk against the manifest taken when it paused.
    pub fn verify_blocking(&self, id: &str) -> Result<usize> {
        let state = self.paused.lock().ok().and_then(|p| p.get(id).cloned());
        match state {
            Some(s) if s.paused.as_ref().is_some_and(|p| p.manifest) => {
                let dir = self.sandbox_dir(id);
                manifest::verify(id, &dir, &dir.join(UPPER_IMAGE))?;
                Ok(Manifest::read(&dir)?.entries.len())
            }
            Some(_) => Err(RuntimeError::InvalidSpec(format!(
                "sandbox {id} was paused without a manifest (its pause could not write one)"
            ))),
            None if self.get_info(id).is_some() => Err(RuntimeError::InvalidSpec(format!(
                "sandbox {id} is running: its files are checked when it pauses and resumes"
            ))),
            None => Err(RuntimeError::NotFound(id.to_string())),
        }
    }

    /// Resumes a sandbox paused to disk: restores its checkpoint if it has one and `memory`,
    /// else (or if the restore fails) boots it again on its files; returns once its agent
    /// answers, and how. On failure it stays paused, its files untouched.
    pub async fn resume_from_disk(
        self: &Arc<Self>,
        id: &str,
        memory: bool,
    ) -> Result<(SandboxInfo, PauseMode)> {
        let restore = self.restore_spec(id).filter(|_| memory);
        let mut check = true;
        if let Some(r) = restore {
            match self.resume_once(id, Some(r), true).await {
                Ok(info) => {
                    crate::fs_util::remove_tree(&self.sandbox_dir(id).join(CHECKPOINT_DIR));
                    return Ok((info, PauseMode::Full));
                }
                Err(e @ RuntimeError::Corrupt { .. }) => return Err(e),
                Err(e) => {
                    tracing::warn!(
                        sandbox_id = id,
                        "restoring the checkpoint failed, booting on the files: {e}"
                    );
                    // Checked before the restore; what its processes did since is theirs.
                    check = false;
                }
            }
        }
        let info = self.resume_once(id, None, check).await?;
        crate::fs_util::remove_tree(&self.sandbox_dir(id).join(CHECKPOINT_DIR));
        Ok((info, PauseMode::Filesystem))
    }

    /// The restore of `id`'s checkpoint, if it has one and CRIU is here.
    fn restore_spec(&self, id: &str) -> Option<RestoreSpec> {
        let checkpointed = self
            .paused
            .lock()
            .ok()?
            .get(id)?
            .paused
            .as_ref()
            .is_some_and(|p| p.checkpoint);
        let criu = self.cfg.criu.as_ref().filter(|_| checkpointed)?;
        let dir = self.sandbox_dir(id);
        match CheckpointInfo::read(&dir) {
            Ok(info) => Some(RestoreSpec {
                criu: criu.path.clone(),
                images: dir.join(CHECKPOINT_DIR),
                listener: info.listener,
                external_mounts: info.external_mounts,
            }),
            Err(e) => {
                tracing::warn!(sandbox_id = id, "its checkpoint is unreadable: {e}");
                None
            }
        }
    }

    /// One attempt at a resume (see [`NsBackend::resume_from_disk`]); `check`: against the
    /// manifest first.
    async fn resume_once(
        self: &Arc<Self>,
        id: &str,
        restore: Option<RestoreSpec>,
        check: bool,
    ) -> Result<SandboxInfo> {
        let mut state = self
            .paused
            .lock()
            .map_err(|_| poisoned())?
            .remove(id)
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
        let me = Arc::clone(self);
        let booted = tokio::task::spawn_blocking(move || {
            let mut guard = CreateGuard::default();
            let dir = me.sandbox_dir(&state.id);
            let checked = match &state.paused {
                _ if !check => Ok(()),
                Some(p) if p.manifest => manifest::verify(&state.id, &dir, &dir.join(UPPER_IMAGE)),
                _ => {
                    tracing::warn!(sandbox_id = %state.id, "resuming without a manifest to check");
                    Ok(())
                }
            };
            let r = checked
                .and_then(|()| me.admission.admit(&state.id))
                .and_then(|()| me.boot(&mut state, &mut guard, restore));
            (r, state, guard)
        })
        .await
        .map_err(|e| RuntimeError::Launch(e.to_string()))?;
        let (result, mut state, mut guard) = booted;
        let ready = match result {
            Ok((pid, socket, stderr)) => {
                let r = AgentClient::wait_ready(
                    &socket,
                    state.init.access_token.clone(),
                    READY_TIMEOUT,
                )
                .await
                .map_err(RuntimeError::from);
                drop(stderr);
                r.and_then(|_agent| {
                    state.paused = None;
                    state.write(&self.sandbox_dir(id))
                })
                .map(|()| pid)
            }
            Err(e) => Err(e),
        };
        match ready {
            Ok(pid) => {
                let info = self.info_of(&state, pid);
                if let Ok(mut s) = self.sandboxes.lock() {
                    s.insert(
                        id.to_string(),
                        Entry {
                            info: info.clone(),
                            slot: guard.slot.take(),
                            ids: Some(state.id_base),
                            adopted: false,
                            net_base: guard.net_base,
                        },
                    );
                }
                Ok(info)
            }
            Err(e) => {
                let me = Arc::clone(self);
                let (id2, pid, slot) = (id.to_string(), guard.pid, guard.slot.take());
                let _ = tokio::task::spawn_blocking(move || {
                    me.stop_processes(&id2, pid);
                    me.release_host(&id2, slot);
                })
                .await;
                state.running = None;
                if let Ok(mut p) = self.paused.lock() {
                    p.insert(id.to_string(), state);
                }
                Err(e)
            }
        }
    }

    /// Whether `id` is paused to disk.
    pub fn is_paused_on_disk(&self, id: &str) -> bool {
        self.paused.lock().is_ok_and(|p| p.contains_key(id))
    }

    /// The ids of the sandboxes paused to disk.
    pub fn paused_on_disk(&self) -> Vec<String> {
        self.paused
            .lock()
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Removes a sandbox paused to disk, files and all; false if there is none.
    pub(super) fn remove_paused(&self, id: &str) -> bool {
        let Some(state) = self.paused.lock().ok().and_then(|mut p| p.remove(id)) else {
            return false;
        };
        crate::fs_util::remove_tree(&self.sandbox_dir(id));
        self.ids.release(state.id_base);
        true
    }
}

fn poisoned() -> RuntimeError {
    RuntimeError::Launch("the runtime's sandbox table is poisoned".into())
}
