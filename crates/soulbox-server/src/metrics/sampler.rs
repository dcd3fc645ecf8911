//! The sampler: one task, one pass over every running sandbox each `sample_interval`.
//!
//! A pass is one store query and, on a blocking thread, a few small file reads per sandbox
//! (cgroup counters, statvfs, the veth's counters); the rings are then updated under one
//! short lock. Its duration is exported (`soulbox_sampler_pass_seconds`).

use crate::AppState;
use soulbox_runtime::Backend;
use std::time::Instant;

pub fn spawn(st: AppState) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(st.metrics.samples.interval);
        // A slow pass (a loaded host) delays the next one instead of piling them up.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            pass(&st).await;
        }
    });
}

async fn pass(st: &AppState) {
    let started = Instant::now();
    let live = match st.store.live_summaries(None).await {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("sampler: reading the live sandboxes: {e}");
            return;
        }
    };
    let running: Vec<String> = live
        .iter()
        .filter(|l| l.state == "running")
        .map(|l| l.id.clone())
        .collect();
    let backend = st.backend.clone();
    let read = tokio::task::spawn_blocking(move || {
        running
            .into_iter()
            .filter_map(|id| {
                let created = backend.get(&id)?.created_unix_ms as i64;
                let stats = backend.stats(&id).ok()?;
                let at = chrono::Utc::now().timestamp_millis();
                Some((id, at, created, stats))
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    st.metrics.samples.record(&live, read);
    st.metrics
        .families
        .sampler_seconds
        .observe(started.elapsed().as_secs_f64());
}

/// A sample taken now, for a sandbox that has none yet (created since the last pass).
pub async fn fresh(st: &AppState, live: &super::samples::Live) -> Option<super::ring::Sample> {
    let (backend, id, cpus) = (st.backend.clone(), live.id.clone(), live.cpus());
    tokio::task::spawn_blocking(move || {
        let created = backend.get(&id)?.created_unix_ms as i64;
        let stats = backend.stats(&id).ok()?;
        let at = chrono::Utc::now().timestamp_millis();
        let before = super::ring::Reading {
            at_ms: created,
            cpu_ns: 0,
        };
        Some(super::samples::sample(before, at, &stats, cpus))
    })
    .await
    .ok()
    .flatten()
}
