//! The E2B-compatible REST API (spec §2): sandboxes' lifecycle, listing, metrics.

use crate::access::quota::Use;
use crate::error::{ApiError, ApiResult, Body};
use crate::store::SandboxRecord;
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use soulbox_runtime::{Backend, SandboxSpec};
use std::collections::{BTreeMap, HashMap};

const CLIENT_ID: &str = "6532622b";

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(crate::templates::api::router())
        .merge(crate::snapshots::router())
        .merge(crate::team_secrets::router())
        .merge(crate::network_api::router())
        .merge(crate::access::keys::router())
        .merge(crate::access::audit::router())
        .merge(crate::access::quota::router())
        .merge(crate::inside::router())
        .route("/health", get(|| async { StatusCode::NO_CONTENT }))
        .route("/sandboxes", post(create_v1).get(list_v1))
        .route("/v2/sandboxes", post(create_v2).get(list_v2))
        .route("/sandboxes/{id}", get(info).delete(kill))
        .route("/sandboxes/{id}/connect", post(connect))
        .route("/v2/sandboxes/{id}/connect", post(connect))
        .route("/sandboxes/{id}/timeout", post(set_timeout))
        .route("/sandboxes/{id}/refreshes", post(refresh))
        .route("/sandboxes/{id}/pause", post(pause))
        .route("/sandboxes/{id}/verify", get(verify))
        .route("/sandboxes/{id}/resume", post(resume))
        .merge(crate::metrics::http::router())
}

use crate::access::Caller;
pub use crate::access::Team;

/// A JSON body, an empty one meaning the defaults.
pub(crate) fn parse<T: DeserializeOwned + Default>(body: &[u8]) -> ApiResult<T> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewSandbox {
    #[serde(rename = "templateID")]
    template_id: Option<String>,
    timeout: Option<i64>,
    auto_pause: Option<bool>,
    auto_pause_memory: Option<bool>,
    auto_resume: Option<AutoResume>,
    #[serde(rename = "allow_internet_access")]
    allow_internet_access: Option<bool>,
    metadata: Option<BTreeMap<String, String>>,
    env_vars: Option<BTreeMap<String, String>>,
    network: Option<crate::egress::policy::NetworkConfig>,
}

#[derive(Debug, Default, Deserialize)]
struct AutoResume {
    enabled: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
struct PauseBody {
    memory: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
struct TimeoutBody {
    timeout: Option<i64>,
    /// On a resume: `false` boots the sandbox afresh on its files, dropping the memory a
    /// full pause kept (the SDKs' `on_resume="reboot"`).
    memory: Option<bool>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub(crate) fn rfc3339_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Longest timeout when the operator sets none: a thousand years (no cap, without overflow).
const UNLIMITED_TIMEOUT_S: i64 = 1000 * 365 * 24 * 3600;

/// A timeout in seconds within the operator's cap (`serve --max-timeout`; none by default).
pub(crate) fn check_timeout(st: &AppState, t: i64) -> ApiResult<i64> {
    let max = st
        .cfg
        .max_timeout
        .map_or(UNLIMITED_TIMEOUT_S, |d| d.as_secs() as i64);
    if !(0..=max).contains(&t) {
        return Err(ApiError::BadRequest(format!(
            "timeout must be between 0 and {max} seconds"
        )));
    }
    Ok(t)
}

async fn create_v1(
    state: State<AppState>,
    caller: Caller,
    Body(body): Body,
) -> ApiResult<Response> {
    let timer = crate::metrics::CreateTimer::start(&state);
    timer.done(create(state, caller, &body, 15).await)
}

async fn create_v2(
    state: State<AppState>,
    caller: Caller,
    Body(body): Body,
) -> ApiResult<Response> {
    let timer = crate::metrics::CreateTimer::start(&state);
    timer.done(create(state, caller, &body, 300).await)
}

async fn create(
    State(st): State<AppState>,
    caller: Caller,
    body: &[u8],
    default_timeout: i64,
) -> ApiResult<Response> {
    let team = caller.team.clone();
    let req: NewSandbox = parse(body)?;
    let alias = req
        .template_id
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::BadRequest("templateID is required".into()))?;
    let builtin = soulbox_runtime::template::recipe::find(&alias).is_some();
    let custom = if builtin {
        None
    } else {
        crate::templates::api::resolve(&st, &team, &alias).await?
    };
    let template = match &custom {
        Some((t, _)) => t.id.clone(),
        None => soulbox_runtime::template::recipe::resolve_alias(&alias).to_string(),
    };
    let timeout = check_timeout(&st, req.timeout.unwrap_or(default_timeout))?;
    let mut limits = crate::limits::builtin(&st.cfg);
    let token = soulbox_runtime::ns::new_token();
    let env_vars = req.env_vars.unwrap_or_default();
    soulbox_protocol::env::check(&env_vars)
        .map_err(|e| ApiError::BadRequest(format!("invalid envVars: {e}")))?;
    let metadata = req.metadata.unwrap_or_default();
    check_metadata(&metadata)?;
    let net = crate::network_api::plan(&st, &team, req.network, req.allow_internet_access).await?;
    let internet = net.internet;
    let mut env_vars = env_vars;
    if net.has_rules() {
        // Tools that keep their own trust store, pointed at the system's (which holds the
        // sandbox's egress CA); the user's own settings win.
        for (k, v) in [
            ("NODE_EXTRA_CA_CERTS", crate::egress::tls::SANDBOX_CA_PATH),
            ("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt"),
        ] {
            env_vars.entry(k.into()).or_insert_with(|| v.into());
        }
    }
    let spec = SandboxSpec {
        template: template.clone(),
        label: crate::LABEL_API.into(),
        limits,
        internet,
        egress: net.slot_policy(),
        env_vars: env_vars.clone(),
        access_token: Some(token.clone()),
        ..Default::default()
    };
    // Its share of the team's quota, held until its record counts it.
    let applied = match &custom {
        Some((t, _)) => crate::limits::custom(&st.cfg, t),
        None => limits,
    };
    let need = Use::one(
        applied.cpu_millis as i64,
        (applied.memory_bytes >> 20) as i64,
    );
    let _seat = crate::access::quota::admit_under(&st, &team, need, &caller.quota).await?;
    let claimed = if custom.is_some() {
        None
    } else {
        let c = st.pool.claim(&st.backend, &spec);
        st.metrics.pool_claim(&st.pool, &spec.template, c.is_some());
        c
    };
    let info = match claimed {
        _ if custom.is_some() => {
            let (t, image) = custom.as_ref().expect("checked");
            limits = crate::limits::custom(&st.cfg, t);
            crate::templates::api::start_sandbox(
                &st,
                t,
                image,
                Some(token.clone()),
                env_vars.clone(),
                internet,
                net.slot_policy(),
            )
            .await?
        }
        Some(info)
            if crate::pool::WarmPool::hand_over(&info, &env_vars).await
                && claimed_policy(&st, &info.id, &net).await =>
        {
            info
        }
        claimed => {
            if let Some(bad) = claimed {
                let _ = st.backend.kill(&bad.id).await;
            }
            st.backend.create(spec).await?
        }
    };
    let token = info.access_token.clone().unwrap_or(token);
    let started = now_ms();
    let rec = SandboxRecord {
        id: info.id.clone(),
        team_id: team,
        template,
        alias,
        state: "running".into(),
        metadata,
        env_vars,
        access_token: token,
        internet,
        cpu_millis: limits.cpu_millis as i64,
        memory_mb: (limits.memory_bytes >> 20) as i64,
        disk_mb: (limits.disk_bytes >> 20) as i64,
        started_at: rfc3339_ms(started),
        end_at_ms: started.saturating_add(timeout.saturating_mul(1000)),
        auto_pause: req.auto_pause.unwrap_or(false),
        pid: Some(info.pid as i64),
        pause_mode: None,
        auto_pause_memory: req.auto_pause_memory.unwrap_or(true),
        auto_resume: req.auto_resume.and_then(|a| a.enabled).unwrap_or(false),
        timeout_ms: timeout * 1000,
        network: net.config.clone(),
        public_traffic: net.public_traffic,
        egress_ca: None,
    };
    let mut rec = rec;
    match crate::network_api::started(&st, &rec, &info, &net).await {
        Ok(ca) => rec.egress_ca = ca,
        Err(e) => {
            let _ = st.backend.kill(&info.id).await;
            return Err(e);
        }
    }
    if let Err(e) = st.store.insert_sandbox(&rec).await {
        let _ = st.backend.kill(&info.id).await;
        return Err(e.into());
    }
    tracing::info!(sandbox_id = %rec.id, template = %rec.template, "sandbox created");
    let mut resp = (StatusCode::CREATED, Json(sandbox_json(&st, &rec))).into_response();
    crate::access::audit::target(&mut resp, &rec.id, json!({"template": rec.alias}));
    Ok(resp)
}

/// Gives a sandbox claimed from the warm pool the create's egress policy, before anyone
/// runs anything in it.
async fn claimed_policy(st: &AppState, id: &str, net: &crate::network_api::Plan) -> bool {
    let Some(p) = net.slot_policy() else {
        return true;
    };
    let (backend, id) = (st.backend.clone(), id.to_string());
    match tokio::task::spawn_blocking(move || backend.set_egress(&id, Some(p))).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            tracing::warn!("egress policy for a pooled sandbox: {e}");
            false
        }
        Err(_) => false,
    }
}

/// Bounds on a sandbox's metadata: it is stored, listed and matched by every filtered list.
pub const MAX_METADATA_KEYS: usize = 64;
pub const MAX_METADATA_KEY_BYTES: usize = 256;
pub const MAX_METADATA_VALUE_BYTES: usize = 4 << 10;
pub const MAX_METADATA_TOTAL_BYTES: usize = 16 << 10;

/// Refuses metadata beyond the bounds above, empty keys and control characters (which break
/// the logs and terminals that show metadata).
fn check_metadata(m: &BTreeMap<String, String>) -> ApiResult<()> {
    let bad = |msg: String| Err(ApiError::BadRequest(format!("invalid metadata: {msg}")));
    if m.len() > MAX_METADATA_KEYS {
        return bad(format!("{} keys (at most {MAX_METADATA_KEYS})", m.len()));
    }
    let mut total = 0;
    for (k, v) in m {
        let shown: String = k.chars().take(32).collect();
        if k.is_empty() {
            return bad("a key is empty".into());
        }
        if k.len() > MAX_METADATA_KEY_BYTES {
            return bad(format!(
                "key {shown:?}… is longer than {MAX_METADATA_KEY_BYTES} bytes"
            ));
        }
        if v.len() > MAX_METADATA_VALUE_BYTES {
            return bad(format!(
                "the value of {shown:?} is longer than {MAX_METADATA_VALUE_BYTES} bytes"
            ));
        }
        if k.chars().chain(v.chars()).any(char::is_control) {
            return bad(format!("{shown:?} contains a control character"));
        }
        total += k.len() + v.len();
    }
    if total > MAX_METADATA_TOTAL_BYTES {
        return bad(format!(
            "{total} bytes in all (at most {MAX_METADATA_TOTAL_BYTES})"
        ));
    }
    Ok(())
}

/// The `Sandbox` shape returned by create and connect.
/// The record of a sandbox forked from `parent`: its team, template, metadata, env vars and
/// limits, with its own id, token and end time.
pub(crate) fn child_record(
    parent: &SandboxRecord,
    info: &soulbox_runtime::SandboxInfo,
    token: String,
    timeout_s: i64,
) -> SandboxRecord {
    let started = now_ms();
    SandboxRecord {
        id: info.id.clone(),
        access_token: token,
        state: "running".into(),
        started_at: rfc3339_ms(started),
        end_at_ms: started.saturating_add(timeout_s.saturating_mul(1000)),
        pid: Some(info.pid as i64),
        pause_mode: None,
        timeout_ms: timeout_s.saturating_mul(1000),
        ..parent.clone()
    }
}

pub(crate) fn sandbox_json(st: &AppState, r: &SandboxRecord) -> Value {
    json!({
        "sandboxID": r.id,
        "templateID": r.template,
        "clientID": CLIENT_ID,
        "envdVersion": soulbox_protocol::ENVD_VERSION,
        "envdAccessToken": r.access_token,
        // The code-interpreter SDKs send this (not the envd token) on /contexts.
        "trafficAccessToken": soulbox_protocol::signature::traffic_token(&r.access_token),
        "domain": st.cfg.domain,
        "alias": r.alias,
    })
}

fn listed_json(r: &SandboxRecord) -> Value {
    json!({
        "sandboxID": r.id,
        "templateID": r.template,
        "alias": r.alias,
        "clientID": CLIENT_ID,
        "startedAt": r.started_at,
        "endAt": rfc3339_ms(r.end_at_ms),
        "cpuCount": (r.cpu_millis + 999) / 1000,
        "memoryMB": r.memory_mb,
        "diskSizeMB": r.disk_mb,
        "state": r.state,
        "envdVersion": soulbox_protocol::ENVD_VERSION,
        "metadata": r.metadata,
    })
}

/// A page token that is the number of items before the page (opaque to clients); none is 0.
pub(crate) fn offset_token(token: Option<&str>, what: &str) -> ApiResult<u64> {
    token.map_or(Ok(0), |t| {
        t.parse()
            .map_err(|_| ApiError::BadRequest(format!("invalid {what} '{t}'")))
    })
}

/// A live sandbox of the team.
pub(crate) async fn find(st: &AppState, team: &str, id: &str) -> ApiResult<SandboxRecord> {
    st.store
        .sandbox(team, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("sandbox {id} not found")))
}

async fn info(
    State(st): State<AppState>,
    caller: crate::access::Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let r = find(&st, &caller.team, &id).await?;
    let mut v = listed_json(&r);
    // The envd token runs commands in the sandbox: not for a key that may only read.
    if caller.role >= crate::access::Role::Member {
        v["envdAccessToken"] = json!(r.access_token);
    }
    v["allowInternetAccess"] = json!(r
        .network
        .as_ref()
        .and_then(|n| n.allow_internet_access)
        .unwrap_or(true));
    if let Some(n) = &r.network {
        let mut n = n.clone();
        n.allow_internet_access = None;
        v["network"] = json!(n);
    }
    v["domain"] = json!(st.cfg.domain);
    v["lifecycle"] = json!({"autoResume": r.auto_resume, "onTimeout": if r.auto_pause { "pause" } else { "kill" }});
    if let Some(m) = &r.pause_mode {
        v["pauseMode"] = json!(m);
    }
    Ok(Json(v))
}

async fn kill(
    State(st): State<AppState>,
    Team(team): Team,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let r = find(&st, &team, &id).await?;
    st.kill(&r.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn set_timeout(
    State(st): State<AppState>,
    Team(team): Team,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<StatusCode> {
    let req: TimeoutBody = parse(&body)?;
    let t = check_timeout(
        &st,
        req.timeout
            .ok_or_else(|| ApiError::BadRequest("timeout is required".into()))?,
    )?;
    let r = find(&st, &team, &id).await?;
    st.store.set_end(&r.id, now_ms() + t * 1000).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize)]
struct RefreshBody {
    duration: Option<i64>,
}

async fn refresh(
    State(st): State<AppState>,
    Team(team): Team,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<StatusCode> {
    let req: RefreshBody = parse(&body)?;
    let r = find(&st, &team, &id).await?;
    let end = now_ms()
        .saturating_add(check_timeout(&st, req.duration.unwrap_or(0))?.saturating_mul(1000));
    st.store.set_end(&r.id, end.max(r.end_at_ms)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Connect: a running sandbox answers 200 (its end time only ever extended); a paused one is
/// resumed and answers 201.
async fn connect(
    State(st): State<AppState>,
    Team(team): Team,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<Response> {
    let req: TimeoutBody = parse(&body)?;
    let t = check_timeout(&st, req.timeout.unwrap_or(300))?;
    let r = find(&st, &team, &id).await?;
    let end = now_ms() + t * 1000;
    let status = if r.state == "paused" {
        crate::pausing::resume(&st, &r.id, end, req.memory.unwrap_or(true)).await?;
        StatusCode::CREATED
    } else {
        st.store.set_end(&r.id, end.max(r.end_at_ms)).await?;
        StatusCode::OK
    };
    // The answer names the sandbox and its token, which a resume does not change.
    Ok((status, Json(sandbox_json(&st, &r))).into_response())
}

async fn resume(
    State(st): State<AppState>,
    Team(team): Team,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<Response> {
    let req: TimeoutBody = parse(&body)?;
    let r = find(&st, &team, &id).await?;
    if r.state != "paused" {
        return Err(ApiError::Conflict(format!(
            "sandbox {id} is already running"
        )));
    }
    let end = now_ms()
        .saturating_add(check_timeout(&st, req.timeout.unwrap_or(15))?.saturating_mul(1000));
    crate::pausing::resume(&st, &r.id, end, req.memory.unwrap_or(true)).await?;
    Ok((StatusCode::CREATED, Json(sandbox_json(&st, &r))).into_response())
}

async fn pause(
    State(st): State<AppState>,
    Team(team): Team,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<StatusCode> {
    let req: PauseBody = parse(&body)?;
    let r = find(&st, &team, &id).await?;
    crate::pausing::pause(&st, &r.id, req.memory.unwrap_or(true)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// SoulBox's own: checks a paused sandbox's files against the manifest its pause wrote.
async fn verify(
    State(st): State<AppState>,
    Team(team): Team,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let r = find(&st, &team, &id).await?;
    let (b, id2) = (st.backend.clone(), r.id.clone());
    let n = tokio::task::spawn_blocking(move || b.verify_blocking(&id2))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(Json(json!({"sandboxID": r.id, "ok": true, "entries": n})))
}

async fn list_v1(
    State(st): State<AppState>,
    Team(team): Team,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<Value>> {
    let filter = metadata_filter(q.get("metadata"))?;
    let all = st.store.live_sandboxes(Some(&team)).await?;
    Ok(Json(Value::Array(
        all.iter()
            .filter(|r| r.state == "running" && matches_metadata(r, &filter))
            .map(listed_json)
            .collect(),
    )))
}

/// `metadata` query: a query string inside a parameter (spec §2.4).
fn metadata_filter(raw: Option<&String>) -> ApiResult<Vec<(String, String)>> {
    let Some(raw) = raw.filter(|r| !r.is_empty()) else {
        return Ok(vec![]);
    };
    let unescape = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let once = unescape(raw);
    once.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let mut it = pair.split('=');
            match (it.next(), it.next(), it.next()) {
                (Some(k), Some(v), None) => Ok((unescape(k), unescape(v))),
                _ => Err(ApiError::BadRequest(format!(
                    "invalid metadata filter '{pair}'"
                ))),
            }
        })
        .collect()
}

fn matches_metadata(r: &SandboxRecord, filter: &[(String, String)]) -> bool {
    filter.iter().all(|(k, v)| r.metadata.get(k) == Some(v))
}

async fn list_v2(
    State(st): State<AppState>,
    Team(team): Team,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let states: Vec<String> = q
        .get("state")
        .map(|s| {
            s.split(',')
                .map(|x| x.trim().to_string())
                .filter(|x| !x.is_empty())
                .collect()
        })
        .unwrap_or_default();
    for s in &states {
        if s != "running" && s != "paused" {
            return Err(ApiError::BadRequest(format!(
                "invalid state '{s}' (running, paused)"
            )));
        }
    }
    let filter = metadata_filter(q.get("metadata"))?;
    let started_after = match q.get("startedAfter").filter(|a| !a.is_empty()) {
        Some(a) => Some(chrono::DateTime::parse_from_rfc3339(a).map_err(|_| {
            ApiError::BadRequest(format!("startedAfter '{a}' is not an RFC 3339 time"))
        })?),
        None => None,
    };
    let limit: usize = match q.get("limit") {
        Some(l) => l
            .parse()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| ApiError::BadRequest("limit must be 1..100".into()))?,
        None => 100,
    };
    let offset: usize = match q.get("nextToken").filter(|t| !t.is_empty()) {
        Some(t) => t
            .strip_prefix("o")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| ApiError::BadRequest("invalid nextToken".into()))?,
        None => 0,
    };
    let mut all: Vec<SandboxRecord> = st
        .store
        .live_sandboxes(Some(&team))
        .await?
        .into_iter()
        .filter(|r| states.is_empty() || states.contains(&r.state))
        .filter(|r| matches_metadata(r, &filter))
        .filter(|r| {
            q.get("template")
                .is_none_or(|t| &r.template == t || &r.alias == t)
        })
        // Inclusive, as E2B's: a sandbox's own `startedAt` finds it.
        .filter(|r| {
            started_after.is_none_or(|a| {
                chrono::DateTime::parse_from_rfc3339(&r.started_at).is_ok_and(|s| s >= a)
            })
        })
        .collect();
    all.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.id.cmp(&b.id)));
    if q.get("order").map(|o| o.as_str()) != Some("asc") {
        all.reverse();
    }
    let page: Vec<Value> = all
        .iter()
        .skip(offset)
        .take(limit)
        .map(listed_json)
        .collect();
    let mut headers = HeaderMap::new();
    if offset + limit < all.len() {
        if let Ok(v) = HeaderValue::from_str(&format!("o{}", offset + limit)) {
            headers.insert("x-next-token", v);
        }
    }
    Ok((headers, Json(Value::Array(page))).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_filter_decodes_twice() {
        // `{"user":"abc def","k&":"v="}` as the SDK sends it (after normal query decoding).
        let f = metadata_filter(Some(&"user=abc%2520def&k%2526=v%253D".to_string())).unwrap();
        assert_eq!(
            f,
            vec![
                ("user".into(), "abc def".into()),
                ("k&".into(), "v=".into())
            ]
        );
        assert!(metadata_filter(Some(&"a%3Db%3Dc".to_string())).is_err());
    }

    #[test]
    fn metadata_is_bounded() {
        let one = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
        assert!(check_metadata(&one("user", "abc def")).is_ok());
        assert!(check_metadata(&one("", "x")).is_err());
        assert!(check_metadata(&one("k", "a\nb")).is_err());
        assert!(check_metadata(&one(&"k".repeat(257), "x")).is_err());
        assert!(check_metadata(&one("k", &"v".repeat(4097))).is_err());
        let many: BTreeMap<_, _> = (0..65).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(check_metadata(&many).is_err());
        let wide: BTreeMap<_, _> = (0..5)
            .map(|i| (format!("k{i}"), "v".repeat(4000)))
            .collect();
        assert!(check_metadata(&wide).is_err());
    }
}
