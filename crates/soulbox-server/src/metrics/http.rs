//! The monitoring routes: `GET /metrics`, `GET /ready`, and per sandbox (team-scoped)
//! `GET /sandboxes/{id}/metrics`, `GET /sandboxes/metrics?sandbox_ids=` and the live
//! `GET /sandboxes/{id}/metrics/stream` (Server-Sent Events).

use super::families::{encode, Snapshot};
use super::ring::Sample;
use crate::api::Team;
use crate::error::{json_error, ApiError, ApiResult};
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

/// Most sandboxes one batch request may name.
const MAX_BATCH: usize = 1000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/metrics", get(scrape))
        .route("/ready", get(ready))
        .route("/sandboxes/metrics", get(batch))
        .route("/sandboxes/{id}/metrics", get(sandbox_metrics))
        .route("/sandboxes/{id}/metrics/stream", get(stream))
}

/// The bearer token, compared in constant time (as digests: the length is not told either).
fn authorized(headers: &HeaderMap, token: &str) -> bool {
    use sha2::{Digest, Sha256};
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let (a, b) = (Sha256::digest(given.trim()), Sha256::digest(token));
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

async fn scrape(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let m = &st.cfg.monitoring;
    if !m.metrics {
        return json_error(StatusCode::NOT_FOUND, "no such route");
    }
    if let Some(token) = &m.metrics_token {
        if !authorized(&headers, token) {
            let mut r = json_error(
                StatusCode::UNAUTHORIZED,
                "GET /metrics needs the header Authorization: Bearer <the server's metrics token>",
            );
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("valid"));
            return r;
        }
    }
    let live = match st.store.live_summaries(None).await {
        Ok(l) => l,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let mut snap = Snapshot::default();
    for l in &live {
        *snap
            .sandboxes
            .entry((l.state.clone(), l.template.clone()))
            .or_default() += 1;
    }
    snap.pool = st.pool.levels();
    // Not one killed since the last pass.
    let running: HashSet<&str> = live
        .iter()
        .filter(|l| l.state == "running")
        .map(|l| l.id.as_str())
        .collect();
    snap.running = st.metrics.samples.current();
    snap.running.retain(|c| running.contains(c.id.as_str()));
    // Tens of milliseconds at thousands of sandboxes: off the async workers.
    let m = st.metrics.clone();
    let body = match tokio::task::spawn_blocking(move || encode(&m.families, &snap)).await {
        Ok(b) => b,
        Err(e) => return ApiError::Internal(e.to_string()).into_response(),
    };
    (
        [(
            header::CONTENT_TYPE,
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )],
        body,
    )
        .into_response()
}

/// Readiness: the store answers and the runtime's data directory takes writes. (Liveness is
/// `/health`.)
async fn ready(State(st): State<AppState>) -> Response {
    let problem = match tokio::time::timeout(Duration::from_secs(2), st.store.ping()).await {
        Err(_) => Some("the store did not answer within 2 s".to_string()),
        Ok(Err(e)) => Some(format!("the store: {e}")),
        Ok(Ok(())) => runtime_problem(&st),
    };
    match problem {
        None => (StatusCode::OK, Json(json!({"status": "ready"}))).into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "unavailable", "reason": reason})),
        )
            .into_response(),
    }
}

fn runtime_problem(st: &AppState) -> Option<String> {
    use nix::sys::statvfs::{statvfs, FsFlags};
    let dir = st.backend.data_dir();
    match statvfs(dir) {
        Err(e) => Some(format!(
            "the runtime's data directory {}: {e}",
            dir.display()
        )),
        Ok(s) if s.flags().contains(FsFlags::ST_RDONLY) => Some(format!(
            "the runtime's data directory {} is read-only",
            dir.display()
        )),
        Ok(s) if s.blocks_available() == 0 => Some(format!(
            "the runtime's data directory {} is full",
            dir.display()
        )),
        Ok(_) => None,
    }
}

/// E2B's `SandboxMetric`, with SoulBox's network counters beside it.
pub fn metric_json(s: &Sample) -> Value {
    json!({
        "timestamp": crate::api::rfc3339_ms(s.at_ms),
        "timestampUnix": s.at_ms.div_euclid(1000),
        "cpuCount": s.cpu_count,
        "cpuUsedPct": (s.cpu_pct as f64 * 100.0).round() / 100.0,
        "memUsed": s.mem_used,
        "memTotal": s.mem_total,
        "memCache": s.mem_cache,
        "diskUsed": s.disk_used,
        "diskTotal": s.disk_total,
        "netRxBytes": s.net_rx,
        "netTxBytes": s.net_tx,
    })
}

fn seconds(q: &HashMap<String, String>, name: &str) -> ApiResult<Option<i64>> {
    match q.get(name).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            ApiError::BadRequest(format!("{name} must be a Unix time in seconds, not '{v}'"))
        }),
    }
}

/// `get_metrics(start, end)`: the samples kept in `[start, end]` (Unix seconds, both
/// optional), oldest first; a running sandbox not sampled yet answers one point taken now.
async fn sandbox_metrics(
    State(st): State<AppState>,
    Team(team): Team,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let r = crate::api::find(&st, &team, &id).await?;
    let start = seconds(&q, "start")?.map_or(i64::MIN, |s| s.saturating_mul(1000));
    let end = seconds(&q, "end")?.map_or(i64::MAX, |e| e.saturating_mul(1000).saturating_add(999));
    if start > end {
        return Err(ApiError::BadRequest("start is after end".into()));
    }
    let kept = st.metrics.samples.with(&r.id, |e| {
        (
            e.ring.is_empty(),
            e.ring
                .range(start, end)
                .map(metric_json)
                .collect::<Vec<_>>(),
        )
    });
    if let Some((false, points)) = kept {
        return Ok(Json(Value::Array(points)));
    }
    let live = super::samples::Live::of(&r);
    let now = match r.state.as_str() {
        "running" => super::sampler::fresh(&st, &live).await,
        _ => None,
    };
    Ok(Json(Value::Array(
        now.filter(|s| (start..=end).contains(&s.at_ms))
            .iter()
            .map(metric_json)
            .collect(),
    )))
}

/// `GET /sandboxes/metrics?sandbox_ids=a,b`: the latest point of each of the team's
/// sandboxes named (others are left out).
async fn batch(
    State(st): State<AppState>,
    Team(team): Team,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let ids: HashSet<&str> = q
        .get("sandbox_ids")
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if ids.len() > MAX_BATCH {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_BATCH} sandbox_ids at once"
        )));
    }
    let live = st.store.live_summaries(Some(&team)).await?;
    let mut out = serde_json::Map::new();
    for l in live.iter().filter(|l| ids.contains(l.id.as_str())) {
        if let Some(s) = latest_or_fresh(&st, l).await {
            out.insert(l.id.clone(), metric_json(&s));
        }
    }
    Ok(Json(json!({ "sandboxes": out })))
}

/// The live stream: the latest sample at once, then one `metric` event per sample; an `end`
/// event when the sandbox is gone, and the stream closes. A paused sandbox sends nothing
/// (keep-alive comments) until it runs again.
async fn stream(
    State(st): State<AppState>,
    Team(team): Team,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let r = crate::api::find(&st, &team, &id).await?;
    let rx = st.metrics.samples.subscribe();
    let latest = latest_sample(&st, &r.id);
    let first = match latest {
        Some(s) => Some(s),
        None => latest_or_fresh(&st, &super::samples::Live::of(&r)).await,
    };
    let s = Follow {
        last_ms: latest.map_or(i64::MIN, |s| s.at_ms),
        pending: first.into_iter().collect(),
        st,
        id: r.id,
        rx,
        ended: false,
    };
    let events = futures::stream::unfold(s, |mut s| async move {
        s.next()
            .await
            .map(|e| (Ok::<_, std::convert::Infallible>(e), s))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

struct Follow {
    st: AppState,
    id: String,
    rx: tokio::sync::watch::Receiver<u64>,
    /// Time of the newest sample sent from the ring.
    last_ms: i64,
    pending: VecDeque<Sample>,
    ended: bool,
}

impl Follow {
    async fn next(&mut self) -> Option<Event> {
        if self.ended {
            return None;
        }
        loop {
            if let Some(s) = self.pending.pop_front() {
                return Event::default()
                    .event("metric")
                    .json_data(metric_json(&s))
                    .ok();
            }
            self.rx.changed().await.ok()?;
            let last = self.last_ms;
            let new = self.st.metrics.samples.with(&self.id, |e| {
                e.ring.after(last).copied().collect::<Vec<_>>()
            });
            match new {
                Some(v) => {
                    if let Some(s) = v.last() {
                        self.last_ms = s.at_ms;
                    }
                    self.pending.extend(v);
                }
                // No samples kept: not sampled yet, or gone.
                None => {
                    if let Ok(Some(_)) = self.st.store.live_sandbox(&self.id).await {
                        continue;
                    }
                    self.ended = true;
                    return Some(Event::default().event("end").data(
                        json!({"sandboxID": self.id, "reason": "the sandbox is gone"}).to_string(),
                    ));
                }
            }
        }
    }
}

/// A sandbox's latest sample, if it has one.
fn latest_sample(st: &AppState, id: &str) -> Option<super::ring::Sample> {
    st.metrics
        .samples
        .with(id, |e| e.ring.latest().copied())
        .flatten()
}

/// Its latest sample, or one taken now if it runs and has none yet.
async fn latest_or_fresh(
    st: &AppState,
    live: &super::samples::Live,
) -> Option<super::ring::Sample> {
    match latest_sample(st, &live.id) {
        Some(s) => Some(s),
        None if live.state == "running" => super::sampler::fresh(st, live).await,
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metrics_token_is_a_bearer_token() {
        let mut h = HeaderMap::new();
        assert!(!authorized(&h, "s3cret"));
        h.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(authorized(&h, "s3cret"));
        assert!(!authorized(&h, "s3cre"));
        h.insert(header::AUTHORIZATION, "s3cret".parse().unwrap());
        assert!(!authorized(&h, "s3cret"));
        h.insert(header::AUTHORIZATION, "Bearer wrong!".parse().unwrap());
        assert!(!authorized(&h, "s3cret"));
    }
}
