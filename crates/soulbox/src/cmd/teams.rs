//! `soulbox teams`: teams, their quotas and what they use, on the local store.

use super::Context;
use clap::{Args, Subcommand};
use soulbox_server::access::audit::{self, Entry};
use soulbox_server::access::quota::Quota;
use soulbox_server::store::Store;

#[derive(Subcommand, Debug)]
pub enum TeamsCmd {
    /// List teams with their quotas and running sandboxes.
    List,
    /// Create a team (its keys: `soulbox keys create --team NAME`).
    Create { name: String },
    /// Show or change a team's quota.
    Quota(QuotaArgs),
}

#[derive(Args, Debug)]
pub struct QuotaArgs {
    /// The team (id or name).
    team: String,
    /// Running sandboxes at once (`none`: no limit).
    #[arg(long, value_parser = limit)]
    sandboxes: Option<Setting<i64>>,
    /// vCPUs of the running sandboxes, in all.
    #[arg(long, value_parser = limit)]
    vcpus: Option<Setting<i64>>,
    /// Memory of the running sandboxes, in all, in MiB.
    #[arg(long, value_parser = limit)]
    memory_mb: Option<Setting<i64>>,
    /// Storage of the team's templates and snapshots, in MiB.
    #[arg(long, value_parser = limit)]
    storage_mb: Option<Setting<i64>>,
    /// Requests per second each of the team's keys may make (`none`: the server's limit).
    #[arg(long, value_parser = rate)]
    rate: Option<Setting<f64>>,
    /// Requests a key may make at once above the rate (the bucket's depth).
    #[arg(long, value_parser = limit)]
    burst: Option<Setting<i64>>,
}

/// A limit given on the command line: a value, or `none` to lift it.
#[derive(Debug, Clone, Copy)]
pub struct Setting<T>(Option<T>);

fn limit(s: &str) -> Result<Setting<i64>, String> {
    if s == "none" {
        return Ok(Setting(None));
    }
    match s.parse::<i64>() {
        Ok(n) if n >= 0 => Ok(Setting(Some(n))),
        _ => Err(format!("'{s}': a whole number ≥ 0, or none")),
    }
}

fn rate(s: &str) -> Result<Setting<f64>, String> {
    if s == "none" {
        return Ok(Setting(None));
    }
    match s.parse::<f64>() {
        Ok(n) if n > 0.0 && n.is_finite() => Ok(Setting(Some(n))),
        _ => Err(format!(
            "'{s}': a number of requests per second > 0, or none"
        )),
    }
}

/// The id of a team given by id or name.
pub async fn team_id(store: &Store, t: &str) -> anyhow::Result<String> {
    store
        .find_team(t)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no team '{t}' (see `soulbox teams list`)"))
}

fn shown(v: Option<i64>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

fn print_quota(q: &Quota) {
    println!("  sandboxes    {}", shown(q.max_sandboxes));
    println!("  vcpus        {}", shown(q.max_vcpus));
    println!("  memory_mb    {}", shown(q.max_memory_mb));
    println!("  storage_mb   {}", shown(q.max_storage_mb));
    match q.rate_per_second {
        Some(r) => println!(
            "  rate         {r}/s, burst {}",
            shown(q.rate_burst.or(Some(r.ceil() as i64)))
        ),
        None => println!("  rate         the server's"),
    }
}

pub async fn teams(ctx: &Context, cmd: TeamsCmd) -> anyhow::Result<()> {
    let store = super::serve::open_store(ctx).await?;
    store.default_team().await?;
    match cmd {
        TeamsCmd::List => {
            println!(
                "{:<18} {:<20} {:>9} {:>11} {:>7} {:>10} {:>11}",
                "ID", "NAME", "RUNNING", "MAX", "VCPUS", "MEMORY_MB", "STORAGE_MB"
            );
            for (id, name, _) in store.teams().await? {
                let q = store.quota(&id).await?;
                let u = store.running_use(&id).await?;
                println!(
                    "{:<18} {:<20} {:>9} {:>11} {:>7} {:>10} {:>11}",
                    id,
                    name,
                    u.sandboxes,
                    shown(q.max_sandboxes),
                    format!("{}/{}", (u.cpu_millis + 999) / 1000, shown(q.max_vcpus)),
                    format!("{}/{}", u.memory_mb, shown(q.max_memory_mb)),
                    shown(q.max_storage_mb),
                );
            }
        }
        TeamsCmd::Create { name } => {
            if store.find_team(&name).await?.is_some() {
                anyhow::bail!("a team '{name}' exists already");
            }
            let id = store.create_team(&name).await?;
            audit::record(
                &store,
                Entry::by("cli", Some(&id), "team.create", &id, true)
                    .with_detail(serde_json::json!({"name": name})),
            )
            .await;
            println!("{id}");
        }
        TeamsCmd::Quota(a) => {
            let id = team_id(&store, &a.team).await?;
            let mut q = store.quota(&id).await?;
            let before = q.clone();
            let mut changed = false;
            for (field, new) in [
                (&mut q.max_sandboxes, a.sandboxes),
                (&mut q.max_vcpus, a.vcpus),
                (&mut q.max_memory_mb, a.memory_mb),
                (&mut q.max_storage_mb, a.storage_mb),
                (&mut q.rate_burst, a.burst),
            ] {
                if let Some(Setting(v)) = new {
                    *field = v;
                    changed = true;
                }
            }
            if let Some(Setting(r)) = a.rate {
                q.rate_per_second = r;
                changed = true;
            }
            if changed {
                store.set_quota(&id, &q).await?;
                audit::record(
                    &store,
                    Entry::by("cli", Some(&id), "team.quota", &id, true)
                        .with_detail(serde_json::json!({"before": before, "after": q})),
                )
                .await;
                println!("quota of {id} set (running servers apply it at once):");
            } else {
                println!("quota of {id}:");
            }
            print_quota(&q);
        }
    }
    Ok(())
}
