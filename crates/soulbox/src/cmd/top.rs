//! `soulbox sandbox top [ID]`: live resource use. With no ID, a table of the team's sandboxes
//! refreshed every `--interval`; with one, that sandbox's samples as the server takes them.
//! Ends on Ctrl-C, and (with an ID) when the sandbox is gone.

use super::remote::{about_sandbox, table};
use soulbox_client::{Client, ListOptions, SandboxMetric};
use std::io::IsTerminal;
use std::time::Duration;

pub async fn run(
    client: &Client,
    id: Option<String>,
    every: Duration,
    json: bool,
) -> anyhow::Result<()> {
    let work = async {
        match id {
            Some(id) => follow(client, &id, json).await,
            None => overview(client, every, json).await,
        }
    };
    tokio::select! {
        r = work => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

async fn follow(client: &Client, id: &str, json: bool) -> anyhow::Result<()> {
    let mut s = client
        .metrics_stream(id)
        .await
        .map_err(|e| about_sandbox(id, e))?;
    if !json {
        println!(
            "{:<24}  {:>6}  {:>21}  {:>21}  {:>10}  {:>10}",
            "TIME", "CPU %", "MEMORY", "DISK", "NET RX", "NET TX"
        );
    }
    while let Some(m) = s.next().await {
        let m = m?;
        if json {
            println!("{}", serde_json::to_string(&m)?);
        } else {
            println!(
                "{:<24}  {:>6.1}  {:>21}  {:>21}  {:>10}  {:>10}",
                m.timestamp,
                m.cpu_used_pct,
                of(m.mem_used, m.mem_total),
                of(m.disk_used, m.disk_total),
                bytes(m.net_rx_bytes),
                bytes(m.net_tx_bytes)
            );
        }
    }
    if !json {
        eprintln!("sandbox {id} is gone");
    }
    Ok(())
}

async fn overview(client: &Client, every: Duration, json: bool) -> anyhow::Result<()> {
    let redraw = !json && std::io::stdout().is_terminal();
    loop {
        let all = client.list(&ListOptions::default()).await?;
        let ids: Vec<String> = all.iter().map(|s| s.sandbox_id.clone()).collect();
        let m = client.metrics_of(&ids).await?;
        if json {
            let rows: Vec<_> = all
                .iter()
                .map(|s| serde_json::json!({"sandboxID": s.sandbox_id, "templateID": s.template_id, "state": s.state, "metrics": m.get(&s.sandbox_id)}))
                .collect();
            println!("{}", serde_json::to_string(&rows)?);
        } else {
            if redraw {
                // Home and clear: the table is drawn in place.
                print!("\x1b[H\x1b[2J");
            }
            let rows: Vec<Vec<String>> = all
                .iter()
                .map(|s| {
                    let name = s.alias.clone().unwrap_or_else(|| s.template_id.clone());
                    row(&s.sandbox_id, &name, &s.state, m.get(&s.sandbox_id))
                })
                .collect();
            if rows.is_empty() {
                println!("no sandboxes");
            } else {
                table(
                    &[
                        "ID", "TEMPLATE", "STATE", "CPU %", "MEMORY", "DISK", "NET RX", "NET TX",
                    ],
                    &rows,
                );
            }
        }
        tokio::time::sleep(every).await;
    }
}

fn row(id: &str, template: &str, state: &str, m: Option<&SandboxMetric>) -> Vec<String> {
    let dash = || "-".to_string();
    let mut r = vec![id.to_string(), template.to_string(), state.to_string()];
    match m.filter(|_| state == "running") {
        Some(m) => r.extend([
            format!("{:.1}", m.cpu_used_pct),
            of(m.mem_used, m.mem_total),
            of(m.disk_used, m.disk_total),
            bytes(m.net_rx_bytes),
            bytes(m.net_tx_bytes),
        ]),
        None => r.extend([dash(), dash(), dash(), dash(), dash()]),
    }
    r
}

fn of(used: u64, total: u64) -> String {
    format!("{} / {}", bytes(used), bytes(total))
}

/// Bytes in binary units, one decimal.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
        let r = row("a", "base", "paused", Some(&SandboxMetric::default()));
        assert_eq!(r[3..], ["-", "-", "-", "-", "-"]);
    }
}
