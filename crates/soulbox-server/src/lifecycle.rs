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
                match result {
                    Ok(()) => tracing::info!(sandbox_id = %s.id, "sandbox reached its end time"),
                    Err(e) => tracing::warn!(sandbox_id = %s.id, "ending sandbox: {e}"),
                }
            }
        }
    });
}
