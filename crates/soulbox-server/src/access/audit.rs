//! The audit log: every control-plane change — by a key through the API, by the server
//! itself (a sandbox reaching its end time) or by the operator's CLI — with its time, team,
//! key id (never the key), source address, target and outcome. Append-only in the store (its
//! triggers refuse updates and deletes); `GET /audit` pages through a team's entries and
//! exports them as JSON lines.

use super::{Caller, Peer};
use crate::error::{ApiError, ApiResult};
use crate::store::{now, Result, Store};
use crate::AppState;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::Row;

/// One entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    #[serde(default)]
    pub seq: i64,
    pub at: String,
    #[serde(rename = "teamID")]
    pub team_id: Option<String>,
    #[serde(rename = "keyID")]
    pub key_id: Option<String>,
    /// `key`, `server` or `cli`.
    pub actor: String,
    pub source: String,
    pub action: String,
    pub target: String,
    /// `ok`, `denied` or `error`.
    pub outcome: String,
    pub status: Option<i64>,
    pub detail: Value,
}

impl Entry {
    /// An entry for something the server or the CLI did on its own.
    pub fn by(actor: &str, team: Option<&str>, action: &str, target: &str, ok: bool) -> Entry {
        Entry {
            seq: 0,
            at: now(),
            team_id: team.map(str::to_string),
            key_id: None,
            actor: actor.into(),
            source: if actor == "cli" { "local" } else { "server" }.into(),
            action: action.into(),
            target: target.into(),
            outcome: if ok { "ok" } else { "error" }.into(),
            status: None,
            detail: json!({}),
        }
    }

    pub fn with_detail(mut self, detail: Value) -> Entry {
        self.detail = detail;
        self
    }
}

/// What `GET /audit` and `soulbox audit` select.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub action: Option<String>,
    pub target: Option<String>,
    pub key_id: Option<String>,
    pub outcome: Option<String>,
    /// RFC 3339 times, inclusive.
    pub since: Option<String>,
    pub until: Option<String>,
    /// Entries older than this sequence number (the page token).
    pub before: Option<i64>,
    pub limit: Option<i64>,
}

impl Store {
    pub async fn append_audit(&self, e: &Entry) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit_log (at, team_id, key_id, actor, source, action, target, outcome, status, detail)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&e.at)
        .bind(&e.team_id)
        .bind(&e.key_id)
        .bind(&e.actor)
        .bind(&e.source)
        .bind(&e.action)
        .bind(&e.target)
        .bind(&e.outcome)
        .bind(e.status)
        .bind(e.detail.to_string())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Entries of a team (or all, for the operator), newest first.
    pub async fn audit(&self, team_id: Option<&str>, f: &Filter) -> Result<Vec<Entry>> {
        let action_prefix = f.action.as_ref().map(|a| {
            // `sandbox` selects every `sandbox.*` action.
            if a.contains('.') {
                a.clone()
            } else {
                format!("{a}.%")
            }
        });
        let rows = sqlx::query(
            "SELECT * FROM audit_log
             WHERE (?1 IS NULL OR team_id = ?1)
               AND (?2 IS NULL OR action LIKE ?2)
               AND (?3 IS NULL OR target = ?3)
               AND (?4 IS NULL OR key_id = ?4)
               AND (?5 IS NULL OR outcome = ?5)
               AND (?6 IS NULL OR at >= ?6)
               AND (?7 IS NULL OR at <= ?7)
               AND (?8 IS NULL OR seq < ?8)
             ORDER BY seq DESC LIMIT ?9",
        )
        .bind(team_id)
        .bind(action_prefix)
        .bind(&f.target)
        .bind(&f.key_id)
        .bind(&f.outcome)
        .bind(f.since.as_deref().map(normal_time).transpose()?)
        .bind(f.until.as_deref().map(normal_time).transpose()?)
        .bind(f.before)
        .bind(f.limit.unwrap_or(100).clamp(1, 10_000))
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| Entry {
                seq: r.get("seq"),
                at: r.get("at"),
                team_id: r.get("team_id"),
                key_id: r.get("key_id"),
                actor: r.get("actor"),
                source: r.get("source"),
                action: r.get("action"),
                target: r.get("target"),
                outcome: r.get("outcome"),
                status: r.get("status"),
                detail: serde_json::from_str(r.get::<&str, _>("detail")).unwrap_or(Value::Null),
            })
            .collect())
    }
}

/// Whether `s` is a time a filter can take (RFC 3339).
pub fn check_time(s: &str) -> std::result::Result<(), String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|_| ())
        .map_err(|e| format!("'{s}' is not an RFC 3339 time ({e}), e.g. 2026-12-01T08:00:00Z"))
}

/// A time as the log writes them (UTC, milliseconds), so they compare as text.
fn normal_time(s: &str) -> Result<String> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        })
        .map_err(|e| crate::store::StoreError::Corrupt(format!("time '{s}': {e}")))
}

/// Records an entry; a failure to write is logged, never the cause of a failed change.
pub async fn record(store: &Store, e: Entry) {
    if let Err(err) = store.append_audit(&e).await {
        tracing::error!(action = %e.action, target = %e.target, "writing the audit log: {err}");
    }
}

pub fn is_change(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// What a handler adds to its response for the log: the target when the path does not name
/// it (the id of what a create made), and details.
#[derive(Debug, Clone)]
pub struct Target {
    pub id: String,
    pub detail: Value,
}

pub fn target(resp: &mut Response, id: &str, detail: Value) {
    resp.extensions_mut().insert(Target {
        id: id.into(),
        detail,
    });
}

/// The action a route is, in the log's words.
pub fn action(method: &Method, path: &str) -> String {
    let m = method.as_str();
    let named = match (m, path) {
        ("POST", "/sandboxes" | "/v2/sandboxes") => "sandbox.create",
        ("DELETE", "/sandboxes/{id}") => "sandbox.kill",
        ("POST", "/sandboxes/{id}/connect" | "/v2/sandboxes/{id}/connect") => "sandbox.connect",
        ("POST", "/sandboxes/{id}/timeout") => "sandbox.timeout",
        ("POST", "/sandboxes/{id}/refreshes") => "sandbox.refresh",
        ("POST", "/sandboxes/{id}/pause") => "sandbox.pause",
        ("POST", "/sandboxes/{id}/resume") => "sandbox.resume",
        ("PUT", "/sandboxes/{id}/network") => "sandbox.network",
        ("POST", "/sandboxes/{id}/fork") => "sandbox.fork",
        ("POST", "/sandboxes/{id}/snapshots") => "snapshot.create",
        ("POST", "/v3/templates") => "template.create",
        ("POST", "/v2/templates/{id}/builds/{build}") => "template.build",
        ("PATCH", "/templates/{id}") => "template.update",
        ("DELETE", "/templates/{id}") => "template.delete",
        ("POST", "/templates/tags") => "template.tag",
        ("DELETE", "/templates/tags") => "template.untag",
        ("POST", "/secrets") => "secret.create",
        ("POST", "/secrets/{id}") => "secret.update",
        ("DELETE", "/secrets/{id}") => "secret.delete",
        ("POST", "/api-keys") => "key.create",
        ("PATCH", "/api-keys/{id}") => "key.update",
        ("DELETE", "/api-keys/{id}") => "key.revoke",
        ("POST", "/sandboxes/{id}/envd/{*rpc}") => "sandbox.files",
        ("GET", "/sandboxes/{id}/terminal") => "sandbox.terminal",
        _ => return format!("{m} {path}"),
    };
    named.to_string()
}

/// The values of a route's parameters in the request's path, joined by `/`.
fn path_target(pattern: &str, path: &str) -> String {
    pattern
        .split('/')
        .zip(path.split('/'))
        .filter(|(p, _)| p.starts_with('{'))
        .map(|(_, v)| percent_encoding::percent_decode_str(v).decode_utf8_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// An entry being made for one request: started before the handler, finished with its
/// response.
pub struct Pending(Entry);

impl Pending {
    pub fn new(req: &Request, c: &Caller, method: &Method, pattern: &str) -> Pending {
        let source = req
            .extensions()
            .get::<Peer>()
            .map(|p| p.0.ip().to_string())
            .unwrap_or_else(|| "unknown".into());
        Pending(Entry {
            seq: 0,
            at: now(),
            team_id: Some(c.team.clone()),
            key_id: Some(c.key_id.clone()),
            actor: "key".into(),
            source,
            action: action(method, pattern),
            target: path_target(pattern, req.uri().path()),
            outcome: String::new(),
            status: None,
            detail: json!({}),
        })
    }

    pub async fn denied(mut self, st: &AppState, message: &str) {
        self.0.outcome = "denied".into();
        self.0.status = Some(403);
        self.0.detail = json!({ "message": message });
        record(&st.store, self.0).await;
    }

    /// Records the outcome and hands the response on (an error's message is kept).
    pub async fn finish(mut self, st: &AppState, resp: Response) -> Response {
        let status = resp.status();
        let mut e = self.0;
        e.status = Some(status.as_u16() as i64);
        e.outcome = match status.as_u16() {
            s if s < 400 => "ok",
            401 | 403 | 429 => "denied",
            _ => "error",
        }
        .into();
        if let Some(t) = resp.extensions().get::<Target>() {
            if !t.id.is_empty() {
                e.target = t.id.clone();
            }
            e.detail = t.detail.clone();
        }
        let resp = if status.is_client_error() || status.is_server_error() {
            let (parts, body) = resp.into_parts();
            // Error bodies are small JSON; one larger than this is passed on unread.
            match axum::body::to_bytes(body, 16 << 10).await {
                Ok(bytes) => {
                    if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
                        if let Some(m) = v.get("message") {
                            e.detail = json!({ "message": m });
                        }
                    }
                    Response::from_parts(parts, axum::body::Body::from(bytes))
                }
                Err(_) => Response::from_parts(parts, axum::body::Body::empty()),
            }
        } else {
            resp
        };
        self = Pending(e);
        record(&st.store, self.0).await;
        resp
    }
}

pub fn router() -> Router<AppState> {
    Router::new().route("/audit", get(list))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AuditQuery {
    action: Option<String>,
    target: Option<String>,
    #[serde(rename = "keyID")]
    key_id: Option<String>,
    outcome: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<i64>,
    next_token: Option<String>,
    /// `jsonl`: every matching entry (up to `limit`, default 10000) as JSON lines.
    format: Option<String>,
}

/// `GET /audit?action=&target=&keyID=&outcome=&since=&until=&limit=&nextToken=&format=`.
async fn list(
    State(st): State<AppState>,
    c: Caller,
    q: std::result::Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Response> {
    let Query(q) = q.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let mut f = Filter {
        action: q.action,
        target: q.target,
        key_id: q.key_id,
        outcome: q.outcome,
        since: q.since,
        until: q.until,
        before: None,
        limit: q.limit,
    };
    if let Some(t) = q.next_token.as_deref() {
        f.before = Some(
            t.parse()
                .map_err(|_| ApiError::BadRequest(format!("invalid nextToken '{t}'")))?,
        );
    }
    for (name, t) in [("since", &f.since), ("until", &f.until)] {
        if let Some(t) = t {
            check_time(t).map_err(|e| ApiError::BadRequest(format!("{name}: {e}")))?;
        }
    }
    if q.format.as_deref() == Some("jsonl") {
        f.limit = Some(f.limit.unwrap_or(10_000));
        let rows = st.store.audit(Some(&c.team), &f).await?;
        let mut out = String::new();
        for e in &rows {
            out.push_str(&serde_json::to_string(e).unwrap_or_default());
            out.push('\n');
        }
        return Ok((
            StatusCode::OK,
            [("content-type", "application/x-ndjson")],
            out,
        )
            .into_response());
    } else if let Some(other) = q.format {
        return Err(ApiError::BadRequest(format!(
            "format '{other}': only jsonl (or none, for JSON pages)"
        )));
    }
    let limit = f.limit.unwrap_or(100).clamp(1, 1000);
    f.limit = Some(limit);
    let rows = st.store.audit(Some(&c.team), &f).await?;
    let mut headers = HeaderMap::new();
    if rows.len() as i64 == limit {
        if let Some(last) = rows.last() {
            if let Ok(v) = HeaderValue::from_str(&last.seq.to_string()) {
                headers.insert("x-next-token", v);
            }
        }
    }
    Ok((headers, Json(rows)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_and_targets_come_from_the_route() {
        assert_eq!(action(&Method::POST, "/v2/sandboxes"), "sandbox.create");
        assert_eq!(action(&Method::DELETE, "/sandboxes/{id}"), "sandbox.kill");
        assert_eq!(action(&Method::POST, "/new/{x}"), "POST /new/{x}");
        assert_eq!(
            path_target(
                "/v2/templates/{id}/builds/{build}",
                "/v2/templates/t1/builds/b2"
            ),
            "t1/b2"
        );
        assert_eq!(path_target("/sandboxes", "/sandboxes"), "");
    }

    #[tokio::test]
    async fn the_log_is_append_only_and_filters() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path()).await.unwrap();
        let team = s.default_team().await.unwrap();
        for (i, action) in ["sandbox.create", "sandbox.kill", "template.build"]
            .iter()
            .enumerate()
        {
            let mut e = Entry::by("server", Some(&team), action, &format!("t{i}"), i != 1);
            e.key_id = Some("k1".into());
            s.append_audit(&e).await.unwrap();
        }
        let all = s.audit(Some(&team), &Filter::default()).await.unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].action, "template.build", "newest first");
        let f = Filter {
            action: Some("sandbox".into()),
            ..Default::default()
        };
        assert_eq!(s.audit(Some(&team), &f).await.unwrap().len(), 2);
        let f = Filter {
            outcome: Some("error".into()),
            ..Default::default()
        };
        let failed = s.audit(Some(&team), &f).await.unwrap();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].target, "t1");
        let f = Filter {
            before: Some(all[0].seq),
            limit: Some(1),
            ..Default::default()
        };
        assert_eq!(s.audit(Some(&team), &f).await.unwrap()[0].seq, all[1].seq);
        assert!(s
            .audit(Some("other"), &Filter::default())
            .await
            .unwrap()
            .is_empty());
        // The store itself refuses to rewrite history.
        for sql in [
            "UPDATE audit_log SET outcome = 'ok'",
            "DELETE FROM audit_log",
        ] {
            let err = sqlx::query(sql).execute(s.pool()).await.unwrap_err();
            assert!(err.to_string().contains("append-only"), "{err}");
        }
        assert_eq!(s.audit(None, &Filter::default()).await.unwrap().len(), 3);
    }
}
