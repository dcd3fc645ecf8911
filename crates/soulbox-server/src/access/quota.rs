//! Per-team quotas: running sandboxes, their vCPUs and memory, and the storage the team's
//! templates and snapshots take. A start (create, resume, fork) is admitted against what runs
//! plus what other starts of the team hold at that moment, so a burst of concurrent creates
//! cannot overshoot; over a limit is a 429 at once, never a wait.

use crate::error::{ApiError, ApiResult};
use crate::store::{now, Result, Store};
use crate::AppState;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::Row;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A team's limits; `None` is no limit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Quota {
    pub max_sandboxes: Option<i64>,
    pub max_vcpus: Option<i64>,
    pub max_memory_mb: Option<i64>,
    pub max_storage_mb: Option<i64>,
    pub rate_per_second: Option<f64>,
    pub rate_burst: Option<i64>,
}

/// What running sandboxes (or one start) take.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Use {
    pub sandboxes: i64,
    pub cpu_millis: i64,
    pub memory_mb: i64,
}

impl Use {
    pub fn one(cpu_millis: i64, memory_mb: i64) -> Use {
        Use {
            sandboxes: 1,
            cpu_millis,
            memory_mb,
        }
    }

    fn plus(self, o: Use) -> Use {
        Use {
            sandboxes: self.sandboxes + o.sandboxes,
            cpu_millis: self.cpu_millis + o.cpu_millis,
            memory_mb: self.memory_mb + o.memory_mb,
        }
    }

    fn minus(self, o: Use) -> Use {
        Use {
            sandboxes: self.sandboxes - o.sandboxes,
            cpu_millis: self.cpu_millis - o.cpu_millis,
            memory_mb: self.memory_mb - o.memory_mb,
        }
    }
}

impl Store {
    pub async fn quota(&self, team_id: &str) -> Result<Quota> {
        let r = sqlx::query("SELECT * FROM team_quotas WHERE team_id = ?")
            .bind(team_id)
            .fetch_optional(self.pool())
            .await?;
        Ok(r.map(|r| Quota {
            max_sandboxes: r.get("max_sandboxes"),
            max_vcpus: r.get("max_vcpus"),
            max_memory_mb: r.get("max_memory_mb"),
            max_storage_mb: r.get("max_storage_mb"),
            rate_per_second: r.get("rate_per_second"),
            rate_burst: r.get("rate_burst"),
        })
        .unwrap_or_default())
    }

    pub async fn set_quota(&self, team_id: &str, q: &Quota) -> Result<()> {
        sqlx::query(
            "INSERT INTO team_quotas (team_id, max_sandboxes, max_vcpus, max_memory_mb, max_storage_mb, rate_per_second, rate_burst, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (team_id) DO UPDATE SET max_sandboxes = excluded.max_sandboxes,
               max_vcpus = excluded.max_vcpus, max_memory_mb = excluded.max_memory_mb,
               max_storage_mb = excluded.max_storage_mb, rate_per_second = excluded.rate_per_second,
               rate_burst = excluded.rate_burst, updated_at = excluded.updated_at",
        )
        .bind(team_id)
        .bind(q.max_sandboxes)
        .bind(q.max_vcpus)
        .bind(q.max_memory_mb)
        .bind(q.max_storage_mb)
        .bind(q.rate_per_second)
        .bind(q.rate_burst)
        .bind(now())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// What the team's running sandboxes take.
    pub async fn running_use(&self, team_id: &str) -> Result<Use> {
        let r = sqlx::query(
            "SELECT COUNT(*) AS n, COALESCE(SUM(cpu_millis), 0) AS cpu, COALESCE(SUM(memory_mb), 0) AS mem
             FROM sandboxes WHERE team_id = ? AND state = 'running'",
        )
        .bind(team_id)
        .fetch_one(self.pool())
        .await?;
        Ok(Use {
            sandboxes: r.get("n"),
            cpu_millis: r.get("cpu"),
            memory_mb: r.get("mem"),
        })
    }

    /// Every team: id, name and creation time.
    pub async fn teams(&self) -> Result<Vec<(String, String, String)>> {
        let rows = sqlx::query("SELECT id, name, created_at FROM teams ORDER BY created_at")
            .fetch_all(self.pool())
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get("id"), r.get("name"), r.get("created_at")))
            .collect())
    }

    /// The team with this id or name.
    pub async fn find_team(&self, id_or_name: &str) -> Result<Option<String>> {
        let r = sqlx::query(
            "SELECT id FROM teams WHERE id = ?1 OR name = ?1 ORDER BY (id = ?1) DESC, created_at LIMIT 1",
        )
        .bind(id_or_name)
        .fetch_optional(self.pool())
        .await?;
        Ok(r.map(|r| r.get("id")))
    }
}

/// Bytes of the layers the team's templates and snapshots hold (a layer two of them share
/// counts once; one another team uses too counts for both).
pub async fn storage_bytes(st: &AppState, team_id: &str) -> Result<u64> {
    let rows = sqlx::query(
        "SELECT b.image FROM template_builds b JOIN templates t ON t.id = b.template_id
         WHERE t.team_id = ? AND b.image IS NOT NULL",
    )
    .bind(team_id)
    .fetch_all(st.store.pool())
    .await?;
    let mut layers = std::collections::HashSet::new();
    for r in rows {
        if let Ok(i) = serde_json::from_str::<crate::templates::Image>(r.get::<&str, _>("image")) {
            layers.extend(i.layers);
            layers.extend(i.memory);
        }
    }
    let store = st.backend.templates().layers();
    Ok(layers
        .iter()
        .filter_map(|l| store.meta(l).ok())
        .map(|m| m.size_bytes)
        .sum())
}

/// Starts being admitted, per team.
#[derive(Default)]
pub struct Admissions {
    held: Mutex<HashMap<String, Use>>,
    /// One admission decision at a time per team (a decision reads the store).
    turns: tokio::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// A start's hold on its share of the quota, given back when dropped (by then the sandbox's
/// record counts it, or it did not start).
pub struct Seat {
    admissions: Arc<Admissions>,
    team: String,
    need: Use,
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut held = self
            .admissions
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(h) = held.get_mut(&self.team) {
            *h = h.minus(self.need);
            if h.sandboxes <= 0 {
                held.remove(&self.team);
            }
        }
    }
}

/// A quota refusal: 429, with `Should-Retry: false` — a quota frees when a sandbox ends,
/// which retrying at once does not bring about.
fn over(what: String) -> ApiError {
    ApiError::OverQuota(format!(
        "{what}: kill or pause a sandbox, or ask the operator to raise the quota (`soulbox teams quota`)"
    ))
}

/// Admits a start of `need` for the team, or refuses it with a 429 naming the limit.
pub async fn admit(st: &AppState, team: &str, need: Use) -> ApiResult<Seat> {
    let q = st.store.quota(team).await?;
    admit_under(st, team, need, &q).await
}

/// As [`admit`], under a quota the caller read already (with the request's key).
pub async fn admit_under(st: &AppState, team: &str, need: Use, q: &Quota) -> ApiResult<Seat> {
    let adm = &st.admissions;
    let seat = |need| Seat {
        admissions: Arc::clone(adm),
        team: team.into(),
        need,
    };
    if q.max_sandboxes.is_none() && q.max_vcpus.is_none() && q.max_memory_mb.is_none() {
        return Ok(seat(Use::default()));
    }
    let turn = Arc::clone(adm.turns.lock().await.entry(team.into()).or_default());
    let _turn = turn.lock().await;
    let running = st.store.running_use(team).await?;
    let held = adm
        .held
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(team)
        .copied()
        .unwrap_or_default();
    let after = running.plus(held).plus(need);
    if let Some(m) = q.max_sandboxes.filter(|m| after.sandboxes > *m) {
        return Err(over(format!(
            "the team's quota of {m} running sandboxes is reached"
        )));
    }
    if let Some(m) = q.max_vcpus.filter(|m| after.cpu_millis > m * 1000) {
        return Err(over(format!(
            "this start would use {} vCPUs of the team's {m}",
            (after.cpu_millis + 999) / 1000
        )));
    }
    if let Some(m) = q.max_memory_mb.filter(|m| after.memory_mb > *m) {
        return Err(over(format!(
            "this start would use {} MiB of memory of the team's {m} MiB",
            after.memory_mb
        )));
    }
    let mut held = adm.held.lock().unwrap_or_else(|p| p.into_inner());
    let h = held.entry(team.into()).or_default();
    *h = h.plus(need);
    drop(held);
    Ok(seat(need))
}

/// Refuses new template and snapshot storage once the team's is used up (a build or
/// snapshot under way may end above it; the next is refused).
pub async fn check_storage(st: &AppState, team: &str) -> ApiResult<()> {
    let q = st.store.quota(team).await?;
    let Some(max_mb) = q.max_storage_mb else {
        return Ok(());
    };
    let used = storage_bytes(st, team).await?;
    if used >= (max_mb.max(0) as u64) << 20 {
        return Err(ApiError::OverQuota(format!(
            "the team's templates and snapshots use {} MiB of its {max_mb} MiB storage quota: delete some, or ask the operator to raise it",
            used >> 20
        )));
    }
    Ok(())
}

pub fn router() -> Router<AppState> {
    Router::new().route("/team", get(team))
}

/// `GET /team`: the caller's team, its quota and what it uses.
async fn team(State(st): State<AppState>, c: super::Caller) -> ApiResult<Response> {
    let q = st.store.quota(&c.team).await?;
    let running = st.store.running_use(&c.team).await?;
    let storage = storage_bytes(&st, &c.team).await?;
    let rate = q
        .rate_per_second
        .map(|r| json!({"perSecond": r, "burst": q.rate_burst}))
        .or_else(|| {
            st.cfg
                .rate_limit
                .map(|r| json!({"perSecond": r.per_second, "burst": r.burst}))
        });
    Ok(Json(json!({
        "teamID": c.team,
        "keyID": c.key_id,
        "role": c.role,
        "quota": {
            "maxSandboxes": q.max_sandboxes, "maxVcpus": q.max_vcpus,
            "maxMemoryMB": q.max_memory_mb, "maxStorageMB": q.max_storage_mb,
            "rateLimit": rate,
        },
        "usage": {
            "sandboxes": running.sandboxes,
            "vcpus": (running.cpu_millis + 999) / 1000,
            "memoryMB": running.memory_mb,
            "storageMB": storage.div_ceil(1 << 20),
        },
    }))
    .into_response())
}
