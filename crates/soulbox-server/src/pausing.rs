//! Pausing and resuming (spec §2.3, §2.8). A pause is to disk and survives restarts of the
//! server and of the host. A *full* pause (`memory`, E2B's default) checkpoints the processes
//! with CRIU and resumes them where they were; without CRIU, or when a checkpoint fails, the
//! pause keeps the files only and says so (`pauseMode: "filesystem"`), and the resume boots
//! the sandbox again on them. Only a sandbox on a tmpfs writable layer (an operator's choice)
//! is frozen in memory instead, since its files live in RAM (`pauseMode: "full"`).
//!
//! One transition per sandbox at a time; file uploads in flight finish before the processes
//! end, and new ones are refused while a pause runs: a file is in the paused sandbox whole, or
//! its upload failed.

use crate::error::{ApiError, ApiResult};
use crate::store::SandboxRecord;
use crate::AppState;
use soulbox_runtime::ns::PauseMode;
use soulbox_runtime::{Backend, RuntimeError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// How long a pause waits for file uploads in flight.
const UPLOADS_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub struct Pausing {
    /// One lock per sandbox in transition.
    locks: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
    gates: Mutex<HashMap<String, Gate>>,
    uploads_done: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Gate {
    uploads: usize,
    pausing: bool,
}

/// Held while a file upload is forwarded to a sandbox.
pub struct Upload<'a> {
    pausing: &'a Pausing,
    id: String,
}

impl Drop for Upload<'_> {
    fn drop(&mut self) {
        if let Ok(mut g) = self.pausing.gates.lock() {
            if let Some(gate) = g.get_mut(&self.id) {
                gate.uploads = gate.uploads.saturating_sub(1);
                if gate.uploads == 0 && !gate.pausing {
                    g.remove(&self.id);
                }
            }
        }
        self.pausing.uploads_done.notify_waiters();
    }
}

impl Pausing {
    /// The lock of one sandbox's transitions (pause, resume).
    pub(crate) async fn lock(&self, id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let m = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            locks.retain(|_, w| w.strong_count() > 0);
            match locks.get(id).and_then(Weak::upgrade) {
                Some(m) => m,
                None => {
                    let m = Arc::new(tokio::sync::Mutex::new(()));
                    locks.insert(id.to_string(), Arc::downgrade(&m));
                    m
                }
            }
        };
        m.lock_owned().await
    }

    /// Admits a file upload to sandbox `id`, unless it is being paused.
    pub fn upload(&self, id: &str) -> Result<Upload<'_>, String> {
        let mut g = self.gates.lock().unwrap_or_else(|e| e.into_inner());
        let gate = g.entry(id.to_string()).or_default();
        if gate.pausing {
            return Err(format!(
                "sandbox {id} is being paused; upload the file after it resumes"
            ));
        }
        gate.uploads += 1;
        Ok(Upload {
            pausing: self,
            id: id.to_string(),
        })
    }

    /// Closes the gate for uploads and waits for those in flight.
    pub(crate) async fn close(&self, id: &str) -> ApiResult<()> {
        let deadline = tokio::time::Instant::now() + UPLOADS_TIMEOUT;
        {
            let mut g = self.gates.lock().unwrap_or_else(|e| e.into_inner());
            g.entry(id.to_string()).or_default().pausing = true;
        }
        loop {
            let wait = self.uploads_done.notified();
            let busy = self
                .gates
                .lock()
                .map(|g| g.get(id).map_or(0, |g| g.uploads))
                .unwrap_or(0);
            if busy == 0 {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, wait).await.is_err() {
                self.open(id);
                return Err(ApiError::Conflict(format!(
                    "sandbox {id} has {busy} file upload(s) still running after {UPLOADS_TIMEOUT:?}; pause it again once they finish"
                )));
            }
        }
    }

    pub(crate) fn open(&self, id: &str) {
        if let Ok(mut g) = self.gates.lock() {
            if g.get(id).is_some_and(|g| g.uploads == 0) {
                g.remove(id);
            } else if let Some(g) = g.get_mut(id) {
                g.pausing = false;
            }
        }
    }
}

/// Pauses a running sandbox; returns how (`full` or `filesystem`). `409` if it is paused.
pub async fn pause(st: &AppState, id: &str, memory: bool) -> ApiResult<&'static str> {
    let r = pause_sandbox(st, id, memory).await;
    st.metrics.paused(&r);
    r
}

async fn pause_sandbox(st: &AppState, id: &str, memory: bool) -> ApiResult<&'static str> {
    let _one = st.pausing.lock(id).await;
    let rec = live(st, id).await?;
    if rec.state == "paused" {
        return Err(ApiError::Conflict(format!(
            "sandbox {id} is already paused"
        )));
    }
    st.pausing.close(id).await?;
    let (backend, id2) = (st.backend.clone(), id.to_string());
    let to_disk = tokio::task::spawn_blocking(move || backend.pause_to_disk_blocking(&id2, memory))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()));
    let mode = match to_disk {
        Ok(Ok(mode)) => {
            if memory && mode == PauseMode::Filesystem && !st.backend.can_checkpoint() {
                tracing::info!(sandbox_id = id, "paused to disk without memory: a full pause needs CRIU 4 or newer, which this server does not have");
            }
            Ok(mode_name(mode))
        }
        Ok(Err(RuntimeError::InvalidSpec(_))) => st
            .backend
            .pause(id)
            .await
            .map(|()| "full")
            .map_err(Into::into),
        Ok(Err(e)) => Err(e.into()),
        Err(e) => Err(e),
    };
    st.pausing.open(id);
    if mode.is_err() && st.backend.is_paused_on_disk(id) {
        // Its processes ended before the error (the disk would not take the last write):
        // it is paused, whatever else went wrong.
        st.store.set_paused(id, Some("filesystem"), None).await?;
    }
    let mode = mode?;
    st.store.set_paused(id, Some(mode), None).await?;
    tracing::info!(sandbox_id = id, mode, "sandbox paused");
    Ok(mode)
}

/// Resumes a paused sandbox (restored with its memory, unless `!memory`; booted again on its
/// files; or thawed) and records it running until `end_ms`. A sandbox that is running already
/// is left as it is.
pub async fn resume(st: &AppState, id: &str, end_ms: i64, memory: bool) -> ApiResult<()> {
    let r = resume_sandbox(st, id, end_ms, memory).await;
    st.metrics.resumed(&r);
    r
}

async fn resume_sandbox(st: &AppState, id: &str, end_ms: i64, memory: bool) -> ApiResult<()> {
    let _one = st.pausing.lock(id).await;
    let rec = live(st, id).await?;
    if rec.state != "paused" {
        return Ok(());
    }
    let _seat = crate::access::quota::admit(
        st,
        &rec.team_id,
        crate::access::quota::Use::one(rec.cpu_millis, rec.memory_mb),
    )
    .await?;
    let pid = if st.backend.is_paused_on_disk(id) {
        let (info, how) = st.backend.resume_from_disk(id, memory).await?;
        // Booted again: its template's start command runs again, as at create. Restored, it
        // runs on where it was.
        if how == PauseMode::Filesystem {
            if let Err(e) = crate::templates::api::restart_start_cmd(st, &rec, &info).await {
                tracing::warn!(sandbox_id = id, "start command after the resume: {e}");
            }
        }
        Some(info.pid as i64)
    } else {
        st.backend.resume(id).await?;
        None
    };
    st.store.set_paused(id, None, pid).await?;
    st.store.set_end(id, end_ms).await?;
    // A CA made while it was paused (rules given then) goes into its trust store now.
    if let (Some(ca), Some(info)) = (
        &rec.egress_ca,
        soulbox_runtime::Backend::get(&st.backend, id),
    ) {
        if let Ok(stored) = serde_json::from_str::<crate::egress::tls::StoredCa>(ca) {
            if let Err(e) = crate::network_api::install_ca(&info, &stored.cert_pem).await {
                tracing::warn!(sandbox_id = id, "egress CA after the resume: {e}");
            }
        }
    }
    tracing::info!(sandbox_id = id, "sandbox resumed");
    Ok(())
}

/// `pauseMode` as the API names it.
pub fn mode_name(mode: PauseMode) -> &'static str {
    match mode {
        PauseMode::Full => "full",
        PauseMode::Filesystem => "filesystem",
    }
}

async fn live(st: &AppState, id: &str) -> ApiResult<SandboxRecord> {
    st.store
        .live_sandbox(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("sandbox {id} not found")))
}
