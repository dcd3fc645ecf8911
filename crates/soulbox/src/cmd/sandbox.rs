//! `soulbox sandbox create|list|info|kill|pause|verify|resume|timeout|top`: sandboxes on a
//! server.

use super::remote::{about_sandbox, parse_pair, print_json, table, RemoteArgs};
use clap::{Args, Subcommand};
use soulbox_client::{CreateOptions, ListOptions, SandboxInfo};

#[derive(Args, Debug)]
pub struct SandboxArgs {
    #[command(flatten)]
    remote: RemoteArgs,
    #[command(subcommand)]
    cmd: SandboxCmd,
}

#[derive(Subcommand, Debug)]
enum SandboxCmd {
    /// Create a sandbox and print its id.
    Create {
        /// Template (`soulbox template list` on the server).
        #[arg(default_value = "base")]
        template: String,
        /// Seconds until it is killed (or paused with --auto-pause).
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// Env var for every process in it (repeatable).
        #[arg(long = "env", short = 'e', value_name = "KEY=VALUE", value_parser = parse_pair)]
        envs: Vec<(String, String)>,
        /// Metadata to find it by (repeatable).
        #[arg(long, short = 'm', value_name = "KEY=VALUE", value_parser = parse_pair)]
        metadata: Vec<(String, String)>,
        /// No network at all (loopback only).
        #[arg(long)]
        no_internet: bool,
        /// Pause instead of kill at the timeout.
        #[arg(long)]
        auto_pause: bool,
    },
    /// List your sandboxes.
    #[command(alias = "ls")]
    List {
        /// Only `running` or `paused` ones.
        #[arg(long)]
        state: Option<String>,
        /// Only those with this metadata (repeatable).
        #[arg(long, short = 'm', value_name = "KEY=VALUE", value_parser = parse_pair)]
        metadata: Vec<(String, String)>,
    },
    /// Show one sandbox.
    Info { id: String },
    /// Kill sandboxes (their files are gone).
    #[command(alias = "rm")]
    Kill {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Pause a sandbox to disk: its processes end, its files are kept (see docs/persistence.md).
    Pause { id: String },
    /// Check a paused sandbox's files against the manifest taken when it paused.
    Verify { id: String },
    /// Resume a paused sandbox.
    Resume {
        id: String,
        /// New timeout in seconds.
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Set a sandbox to end SECONDS from now.
    Timeout { id: String, seconds: u64 },
    /// Live resource use: with no ID, a table of your sandboxes (CPU, memory, disk,
    /// network); with an ID, that sandbox's samples as they are taken. Ctrl-C ends it.
    Top {
        id: Option<String>,
        /// Seconds between refreshes of the table.
        #[arg(long, default_value_t = 2.0)]
        interval: f64,
    },
    /// Replace a sandbox's egress policy at once (see docs/network.md); connections the new
    /// policy refuses are cut. With no option, the policy is cleared (the baseline).
    Network {
        id: String,
        /// Allow a CIDR, an IP, a domain or `*.domain` (repeatable; allow beats deny).
        #[arg(long = "allow-out", value_name = "ADDR|DOMAIN")]
        allow_out: Vec<String>,
        /// Deny a CIDR or an IP (repeatable); `0.0.0.0/0` denies all but what is allowed.
        #[arg(long = "deny-out", value_name = "CIDR")]
        deny_out: Vec<String>,
        /// Deny everything not allowed (as --deny-out 0.0.0.0/0 --deny-out ::/0).
        #[arg(long)]
        deny_all: bool,
        /// The only resolvers the sandbox may query (repeatable).
        #[arg(long = "dns", value_name = "IP")]
        dns: Vec<String>,
        /// Set a header on requests to a host: HOST:NAME=VALUE, VALUE may hold
        /// ${e2b.secrets.NAME} (repeatable).
        #[arg(long = "header", value_name = "HOST:NAME=VALUE")]
        headers: Vec<String>,
    },
}

/// The body of `PUT /sandboxes/{id}/network` from the CLI's options.
fn network_body(
    allow_out: Vec<String>,
    mut deny_out: Vec<String>,
    deny_all: bool,
    dns: Vec<String>,
    headers: Vec<String>,
) -> anyhow::Result<serde_json::Value> {
    if deny_all {
        deny_out.extend(["0.0.0.0/0".to_string(), "::/0".to_string()]);
    }
    let mut body = serde_json::Map::new();
    if !allow_out.is_empty() {
        body.insert("allowOut".into(), allow_out.into());
    }
    if !deny_out.is_empty() {
        body.insert("denyOut".into(), deny_out.into());
    }
    if !dns.is_empty() {
        body.insert("dnsServers".into(), dns.into());
    }
    let mut rules = serde_json::Map::new();
    for h in headers {
        let (host, pair) = h
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("--header {h:?}: expected HOST:NAME=VALUE"))?;
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--header {h:?}: expected HOST:NAME=VALUE"))?;
        let list = rules
            .entry(host.to_string())
            .or_insert_with(|| serde_json::json!([{"transform": {"headers": {}}}]));
        list[0]["transform"]["headers"][name] = value.into();
    }
    if !rules.is_empty() {
        body.insert("rules".into(), rules.into());
    }
    Ok(body.into())
}

pub async fn run(a: SandboxArgs) -> anyhow::Result<()> {
    let client = a.remote.client()?;
    let json = a.remote.json;
    match a.cmd {
        SandboxCmd::Top { id, interval } => {
            let every = std::time::Duration::from_secs_f64(interval.clamp(0.2, 3600.0));
            super::top::run(&client, id, every, json).await?;
        }
        SandboxCmd::Network {
            id,
            allow_out,
            deny_out,
            deny_all,
            dns,
            headers,
        } => {
            let body = network_body(allow_out, deny_out, deny_all, dns, headers)?;
            client
                .update_network(&id, &body)
                .await
                .map_err(|e| about_sandbox(&id, e))?;
            if !json {
                println!("network of {id} set: {body}");
            }
        }
        SandboxCmd::Create {
            template,
            timeout,
            envs,
            metadata,
            no_internet,
            auto_pause,
        } => {
            let mut opts = CreateOptions::new(&template).timeout(timeout);
            opts.env_vars = envs.into_iter().collect();
            opts.metadata = metadata.into_iter().collect();
            if no_internet {
                opts = opts.internet(false);
            }
            if auto_pause {
                opts = opts.auto_pause(true);
            }
            let sbx = client.create(&opts).await?;
            if json {
                print_json(
                    &serde_json::json!({"sandboxID": sbx.id(), "templateID": sbx.template()}),
                )?;
            } else {
                println!("{}", sbx.id());
            }
        }
        SandboxCmd::List { state, metadata } => {
            let opts = ListOptions {
                states: state.into_iter().collect(),
                metadata: metadata.into_iter().collect(),
            };
            let all = client.list(&opts).await?;
            if json {
                print_json(&all)?;
            } else if all.is_empty() {
                eprintln!("no sandboxes (create one with `soulbox sandbox create`)");
            } else {
                let rows: Vec<Vec<String>> = all.iter().map(row).collect();
                table(
                    &[
                        "ID", "TEMPLATE", "STATE", "STARTED", "ENDS", "CPU", "MEMORY", "METADATA",
                    ],
                    &rows,
                );
            }
        }
        SandboxCmd::Info { id } => {
            let info = client.info(&id).await.map_err(|e| about_sandbox(&id, e))?;
            if json {
                print_json(&info)?;
            } else {
                table(
                    &[
                        "ID", "TEMPLATE", "STATE", "STARTED", "ENDS", "CPU", "MEMORY", "METADATA",
                    ],
                    &[row(&info)],
                );
            }
        }
        SandboxCmd::Kill { ids } => {
            for id in ids {
                client.kill(&id).await.map_err(|e| about_sandbox(&id, e))?;
                if !json {
                    println!("killed {id}");
                }
            }
        }
        SandboxCmd::Verify { id } => {
            let n = client
                .verify(&id)
                .await
                .map_err(|e| about_sandbox(&id, e))?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"sandboxID": id, "ok": true, "entries": n})
                );
            } else {
                println!("{id}: all {n} paths of its writable layer are as they were paused");
            }
        }
        SandboxCmd::Pause { id } => {
            client.pause(&id).await.map_err(|e| about_sandbox(&id, e))?;
            if !json {
                println!("paused {id}");
            }
        }
        SandboxCmd::Resume { id, timeout } => {
            client
                .resume(&id, timeout)
                .await
                .map_err(|e| about_sandbox(&id, e))?;
            if !json {
                println!("resumed {id}");
            }
        }
        SandboxCmd::Timeout { id, seconds } => {
            client
                .set_timeout(&id, seconds)
                .await
                .map_err(|e| about_sandbox(&id, e))?;
            if !json {
                println!("{id} ends in {seconds} s");
            }
        }
    }
    Ok(())
}

fn row(s: &SandboxInfo) -> Vec<String> {
    let meta: Vec<String> = s.metadata.iter().map(|(k, v)| format!("{k}={v}")).collect();
    vec![
        s.sandbox_id.clone(),
        s.alias.clone().unwrap_or_else(|| s.template_id.clone()),
        s.state.clone(),
        s.started_at.clone(),
        s.end_at.clone(),
        s.cpu_count.to_string(),
        format!("{} MiB", s.memory_mb),
        meta.join(","),
    ]
}
