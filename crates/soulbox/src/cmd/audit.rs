//! `soulbox audit`: the audit log, read from the local store (every team's, or one's).

use super::Context;
use clap::Args;
use soulbox_server::access::audit::Filter;

#[derive(Args, Debug)]
pub struct AuditArgs {
    /// Only this team's (id or name).
    #[arg(long)]
    team: Option<String>,
    /// Only this action (`sandbox.kill`) or kind of action (`sandbox`).
    #[arg(long)]
    action: Option<String>,
    /// Only entries about this sandbox, template or key id.
    #[arg(long)]
    target: Option<String>,
    /// Only what this key id did.
    #[arg(long)]
    key: Option<String>,
    /// Only entries with this outcome: ok, denied or error.
    #[arg(long)]
    outcome: Option<String>,
    /// From this time on (RFC 3339, e.g. 2026-12-01T00:00:00Z).
    #[arg(long)]
    since: Option<String>,
    /// Up to this time (RFC 3339).
    #[arg(long)]
    until: Option<String>,
    /// At most this many entries, newest first.
    #[arg(long, default_value_t = 50)]
    limit: i64,
    /// Print JSON lines (one entry per line), for export.
    #[arg(long)]
    jsonl: bool,
}

pub async fn audit(ctx: &Context, a: AuditArgs) -> anyhow::Result<()> {
    let store = super::serve::open_store(ctx).await?;
    let team = match &a.team {
        Some(t) => Some(super::teams::team_id(&store, t).await?),
        None => None,
    };
    for (name, t) in [("--since", &a.since), ("--until", &a.until)] {
        if let Some(t) = t {
            soulbox_server::access::audit::check_time(t)
                .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        }
    }
    let f = Filter {
        action: a.action,
        target: a.target,
        key_id: a.key,
        outcome: a.outcome,
        since: a.since,
        until: a.until,
        before: None,
        limit: Some(a.limit),
    };
    let entries = store.audit(team.as_deref(), &f).await?;
    if a.jsonl {
        for e in &entries {
            println!("{}", serde_json::to_string(e)?);
        }
        return Ok(());
    }
    println!(
        "{:<24} {:<18} {:<18} {:<16} {:<18} {:<26} {:<7} DETAIL",
        "TIME", "TEAM", "BY", "SOURCE", "ACTION", "TARGET", "OUTCOME"
    );
    for e in &entries {
        let by = e.key_id.clone().unwrap_or_else(|| e.actor.clone());
        let detail = if e.detail.as_object().is_some_and(|o| o.is_empty()) {
            String::new()
        } else {
            e.detail.to_string()
        };
        println!(
            "{:<24} {:<18} {:<18} {:<16} {:<18} {:<26} {:<7} {}",
            e.at,
            e.team_id.as_deref().unwrap_or("-"),
            by,
            e.source,
            e.action,
            e.target,
            e.outcome,
            detail
        );
    }
    Ok(())
}
