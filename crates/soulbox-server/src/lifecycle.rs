//! Sandboxes are killed (or paused, when asked) at their end time.

use crate::AppState;
use std::time::Duration;

pub fn spawn(st: AppState) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            let now = chrono::Utc::now().timestamp_millis();
            let Ok(expired) = st.store.expired(now).await else {
                continue;
            };
            for s in expired {
                if s.state == "paused" {
                    continue;
                }
                let action = if s.auto_pause {
                    "sandbox.pause"
                } else {
                    "sandbox.kill"
                };
                st.metrics
                    .timed_out(if s.auto_pause { "pause" } else { "kill" });
                let result = if s.auto_pause {
                    crate::pausing::pause(&st, &s.id, s.auto_pause_memory)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                } else {
                    st.kill(&s.id).await.map_err(|e| e.to_string())
                };
                let entry = crate::access::audit::Entry::by(
                    "server",
                    Some(&s.team_id),
                    action,
                    &s.id,
                    result.is_ok(),
                );
                let detail = match &result {
                    Ok(()) => serde_json::json!({"reason": "end time"}),
                    Err(e) => serde_json::json!({"reason": "end time", "message": e}),
                };
                crate::access::audit::record(&st.store, entry.with_detail(detail)).await;
                match result {
                    Ok(()) => tracing::info!(sandbox_id = %s.id, "sandbox reached its end time"),
                    Err(e) => tracing::warn!(sandbox_id = %s.id, "ending sandbox: {e}"),
                }
            }
        }
    });
}
