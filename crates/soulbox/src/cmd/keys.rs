//! `soulbox keys`: the operator's view of every team's API keys, on the local store.

use super::Context;
use clap::Subcommand;
use soulbox_server::access::audit::{self, Entry};
use soulbox_server::access::Role;
use soulbox_server::store::new_key;

fn role(s: &str) -> Result<Role, String> {
    Role::parse(s)
}

#[derive(Subcommand, Debug)]
pub enum KeysCmd {
    /// Create an API key (printed once).
    Create {
        #[arg(long, default_value = "cli")]
        name: String,
        /// The team the key belongs to (id or name; made if new); the first team by default.
        #[arg(long)]
        team: Option<String>,
        /// admin (also manages the team's keys and reads its audit log), member (sandboxes,
        /// templates, snapshots, secrets) or read-only.
        #[arg(long, default_value = "member", value_parser = role)]
        role: Role,
    },
    /// List keys (never the keys themselves).
    List {
        /// Only this team's (id or name).
        #[arg(long)]
        team: Option<String>,
    },
    /// Change a key's role (by id or prefix).
    Role {
        id: String,
        #[arg(value_parser = role)]
        role: Role,
    },
    /// Revoke a key by id or prefix.
    Revoke { id: String },
}

pub async fn keys(ctx: &Context, cmd: KeysCmd) -> anyhow::Result<()> {
    let store = super::serve::open_store(ctx).await?;
    match cmd {
        KeysCmd::Create { name, team, role } => {
            // The first team is the default one: it must not be a new one by accident.
            let first = store.default_team().await?;
            let team = match team {
                Some(t) => match store.find_team(&t).await? {
                    Some(id) => id,
                    None => store.team_named(&t).await?,
                },
                None => first,
            };
            let k = new_key();
            let id = store.add_key_with_role(&team, &k, &name, role).await?;
            let e = Entry::by("cli", Some(&team), "key.create", &id, true)
                .with_detail(serde_json::json!({"name": name, "role": role}));
            audit::record(&store, e).await;
            println!("{k}");
        }
        KeysCmd::List { team } => {
            let team = match team {
                Some(t) => Some(super::teams::team_id(&store, &t).await?),
                None => None,
            };
            println!(
                "{:<18} {:<18} {:<12} {:<10} {:<26} {:<8} NAME",
                "ID", "TEAM", "PREFIX", "ROLE", "CREATED", "STATE"
            );
            for k in store.key_records(team.as_deref()).await? {
                println!(
                    "{:<18} {:<18} {:<12} {:<10} {:<26} {:<8} {}",
                    k.id,
                    k.team_id,
                    k.prefix,
                    k.role.as_str(),
                    k.created_at,
                    if k.revoked_at.is_some() {
                        "revoked"
                    } else {
                        "active"
                    },
                    k.name
                );
            }
        }
        KeysCmd::Role { id, role } => {
            let Some(k) = store.set_key_role(None, &id, role).await? else {
                anyhow::bail!("no active key with id or prefix '{id}' (see `soulbox keys list`)");
            };
            let e = Entry::by("cli", Some(&k.team_id), "key.update", &k.id, true)
                .with_detail(serde_json::json!({"role": role}));
            audit::record(&store, e).await;
            println!("{} is now {}", k.id, role.as_str());
        }
        KeysCmd::Revoke { id } => {
            let found: Vec<_> = store
                .key_records(None)
                .await?
                .into_iter()
                .filter(|k| k.revoked_at.is_none() && (k.id == id || k.prefix == id))
                .collect();
            if !store.revoke_key(&id).await? {
                anyhow::bail!("no active key with id or prefix '{id}' (see `soulbox keys list`)");
            }
            for k in found {
                audit::record(
                    &store,
                    Entry::by("cli", Some(&k.team_id), "key.revoke", &k.id, true),
                )
                .await;
            }
            println!("revoked {id}");
        }
    }
    Ok(())
}
