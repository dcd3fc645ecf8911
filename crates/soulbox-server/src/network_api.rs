//! A sandbox's network on the API: `network` and `allow_internet_access` on create, `PUT
//! /sandboxes/{id}/network` while it lives (spec §2.3, §2.8). Both check the configuration
//! whole (a bad CIDR or domain, a secret the team does not have → 400), then apply it to the
//! firewall (through the runtime: its slot's chains, one transaction) and to the egress
//! proxy (which cuts the connections the new policy refuses), and record it.

use crate::api::{find, parse, Team};
use crate::egress::policy::{NetworkConfig, Policy};
use crate::egress::tls::{self, SandboxCa, StoredCa};
use crate::error::{ApiError, ApiResult, Body};
use crate::store::SandboxRecord;
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::put;
use axum::Router;
use serde::Deserialize;
use soulbox_runtime::network::SlotPolicy;
use std::net::IpAddr;
use std::sync::Arc;

pub fn router() -> Router<AppState> {
    Router::new().route("/sandboxes/{id}/network", put(update))
}

/// What a create asks of the network, checked.
#[derive(Default)]
pub struct Plan {
    /// Whether the sandbox gets a network slot at all (else: loopback only).
    pub internet: bool,
    pub config: Option<NetworkConfig>,
    pub policy: Option<Policy>,
    pub public_traffic: bool,
}

impl Plan {
    pub fn slot_policy(&self) -> Option<SlotPolicy> {
        self.policy.as_ref().map(Policy::slot_policy)
    }

    /// Whether it has header rules (the sandbox then needs its CA).
    pub fn has_rules(&self) -> bool {
        self.policy.as_ref().is_some_and(|p| !p.rules.is_empty())
    }
}

/// The resolvers a policy falls back to: the host's own.
fn default_dns() -> Vec<IpAddr> {
    soulbox_runtime::network::host_nameservers()
        .into_iter()
        .map(IpAddr::V4)
        .collect()
}

/// Checks that the team has every secret the policy's rules name.
async fn check_secrets(st: &AppState, team: &str, p: &Policy) -> ApiResult<()> {
    for name in p.secret_names() {
        if !crate::team_secrets::exists(&st.store, team, name).await? {
            return Err(ApiError::BadRequest(format!(
                "invalid network: rules name the secret {name:?}, which your team does not have (create it with POST /secrets)"
            )));
        }
    }
    Ok(())
}

/// Plans a create's network: `internet` is `allow_internet_access` (default true).
pub async fn plan(
    st: &AppState,
    team: &str,
    config: Option<NetworkConfig>,
    internet: Option<bool>,
) -> ApiResult<Plan> {
    let internet = internet.unwrap_or(true);
    let config = match config {
        Some(mut c) => {
            c.allow_internet_access = (!internet).then_some(false);
            Some(c)
        }
        None if !internet => Some(NetworkConfig {
            allow_internet_access: Some(false),
            ..Default::default()
        }),
        None => None,
    }
    .filter(|c| *c != NetworkConfig::default());
    let public_traffic = config
        .as_ref()
        .and_then(|c| c.allow_public_traffic)
        .unwrap_or(true);
    let egress = config.as_ref().filter(|c| !c.is_empty());
    let allows_some = egress.is_some_and(|c| c.allow_out.as_ref().is_some_and(|a| !a.is_empty()));
    // No internet and nothing allowed: no network at all (the strongest isolation).
    if !internet && !allows_some {
        if let Some(c) = egress {
            c.policy(false, &default_dns())?;
        }
        return Ok(Plan {
            internet: false,
            config,
            policy: None,
            public_traffic,
        });
    }
    let policy = match egress {
        Some(c) => {
            let p = c.policy(internet, &default_dns())?;
            check_secrets(st, team, &p).await?;
            Some(p)
        }
        None => None,
    };
    Ok(Plan {
        internet: true,
        config,
        policy,
        public_traffic,
    })
}

/// The sandbox's CA, made (and put into its trust stores) on first need.
async fn ensure_ca(
    rec: &SandboxRecord,
    info: &soulbox_runtime::SandboxInfo,
) -> ApiResult<(Arc<SandboxCa>, Option<String>)> {
    let (ca, new) = match &rec.egress_ca {
        Some(json) => {
            let stored: StoredCa = serde_json::from_str(json)
                .map_err(|e| ApiError::Internal(format!("the sandbox's egress CA: {e}")))?;
            (SandboxCa::from_stored(&rec.id, &stored), None)
        }
        None => {
            let ca = SandboxCa::generate(&rec.id);
            let json = ca
                .as_ref()
                .ok()
                .and_then(|c| serde_json::to_string(&c.stored()).ok());
            (ca, json)
        }
    };
    let ca = Arc::new(ca.map_err(|e| ApiError::Internal(format!("making the egress CA: {e}")))?);
    install_ca(info, ca.cert_pem()).await?;
    Ok((ca, new))
}

/// Puts the CA certificate into the sandbox's trust stores (as root, idempotent).
pub async fn install_ca(info: &soulbox_runtime::SandboxInfo, pem: &str) -> ApiResult<()> {
    run_as_root(info, &tls::install_script(pem), "installing the egress CA").await
}

/// Points the sandbox's resolver configuration at the resolvers its policy lists (the
/// only ones it can reach). The firewall enforces them either way; this is for its tools.
async fn set_resolvers(
    info: &soulbox_runtime::SandboxInfo,
    config: &NetworkConfig,
) -> ApiResult<()> {
    let Some(dns) = config.dns_servers.as_ref().filter(|d| !d.is_empty()) else {
        return Ok(());
    };
    // Checked addresses only (the policy parsed them), so nothing here is shell syntax.
    let lines: String = dns
        .iter()
        .filter_map(|d| d.trim().parse::<IpAddr>().ok())
        .map(|a| format!("nameserver {a}\n"))
        .collect();
    let script = format!(
        "f=/etc/resolv.conf; [ -L $f ] && rm -f $f; printf '# set by SoulBox from the sandbox network dnsServers\n{lines}' > $f"
    );
    run_as_root(info, &script, "writing /etc/resolv.conf").await
}

async fn run_as_root(
    info: &soulbox_runtime::SandboxInfo,
    script: &str,
    what: &str,
) -> ApiResult<()> {
    let mut c = soulbox_runtime::agent_client::AgentClient::connect(
        &info.socket,
        info.access_token.clone(),
    )
    .await
    .map_err(|e| ApiError::Internal(format!("{what}: {e}")))?;
    let out = c
        .sh(script, Some("root"))
        .await
        .map_err(|e| ApiError::Internal(format!("{what}: {e}")))?;
    if out.exit_code != 0 {
        return Err(ApiError::Internal(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// After a create: the CA if the rules need one, the proxy told. Returns the CA to record.
pub async fn started(
    st: &AppState,
    rec: &SandboxRecord,
    info: &soulbox_runtime::SandboxInfo,
    plan: &Plan,
) -> ApiResult<Option<String>> {
    let Some(policy) = plan.policy.clone() else {
        return Ok(None);
    };
    if let Some(c) = &plan.config {
        set_resolvers(info, c).await?;
    }
    let (ca, stored) = if plan.has_rules() {
        let (ca, stored) = ensure_ca(rec, info).await?;
        (Some(ca), stored)
    } else {
        (None, None)
    };
    st.egress.register(&rec.id, &rec.team_id, policy, ca);
    Ok(stored)
}

/// The policy a recorded sandbox runs under (`None`: the baseline).
pub fn policy_of(rec: &SandboxRecord) -> Option<Policy> {
    let config = rec
        .network
        .as_ref()
        .filter(|c| !c.is_empty() || c.allow_internet_access == Some(false))?;
    if !rec.internet {
        return None;
    }
    match config.policy(config.allow_internet_access.unwrap_or(true), &default_dns()) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!(sandbox_id = %rec.id, "its recorded network no longer checks: {e}");
            None
        }
    }
}

/// Tells the proxy about a recorded sandbox: one of an earlier run (at start), a fork's
/// child (which inherits its parent's network).
pub fn readopt(st: &AppState, rec: &SandboxRecord) {
    let Some(policy) = policy_of(rec) else {
        return;
    };
    let ca = rec
        .egress_ca
        .as_ref()
        .and_then(|j| serde_json::from_str::<StoredCa>(j).ok())
        .and_then(|s| SandboxCa::from_stored(&rec.id, &s).ok())
        .map(Arc::new);
    st.egress.register(&rec.id, &rec.team_id, policy, ca);
}

#[derive(Debug, Default, Deserialize)]
struct UpdateBody {
    #[serde(flatten)]
    config: NetworkConfig,
    #[serde(rename = "allow_internet_access")]
    allow_internet_access: Option<bool>,
}

/// `PUT /sandboxes/{id}/network`: the whole egress configuration, replaced at once.
async fn update(
    State(st): State<AppState>,
    Team(team): Team,
    Path(id): Path<String>,
    Body(body): Body,
) -> ApiResult<StatusCode> {
    let req: UpdateBody = parse(&body)?;
    let _one = st.pausing.lock(&id).await;
    let rec = find(&st, &team, &id).await?;
    if !rec.internet {
        return Err(ApiError::Conflict(
            "the sandbox was created without internet access (allow_internet_access=false and no allowOut): it has no network to change; create it with a policy instead".into(),
        ));
    }
    let mut config = req.config;
    // The update is of the egress configuration: the public-traffic setting stays.
    config.allow_public_traffic = rec.network.as_ref().and_then(|n| n.allow_public_traffic);
    let internet = req.allow_internet_access.unwrap_or(true);
    config.allow_internet_access = (!internet).then_some(false);
    let policy = if config.is_empty() && internet {
        None
    } else {
        let p = config.policy(internet, &default_dns())?;
        check_secrets(&st, &team, &p).await?;
        Some(p)
    };
    let mut new_ca = None;
    let mut ca = None;
    if policy.as_ref().is_some_and(|p| !p.rules.is_empty()) {
        if let Some(info) = soulbox_runtime::Backend::get(&st.backend, &id) {
            let (c, stored) = ensure_ca(&rec, &info).await?;
            ca = Some(c);
            new_ca = stored;
        } else if rec.egress_ca.is_none() {
            // Paused: made now, put into its trust store when it resumes.
            let c = SandboxCa::generate(&id)
                .map_err(|e| ApiError::Internal(format!("making the egress CA: {e}")))?;
            new_ca = serde_json::to_string(&c.stored()).ok();
            ca = Some(Arc::new(c));
        }
    }
    if let Some(info) = soulbox_runtime::Backend::get(&st.backend, &id) {
        set_resolvers(&info, &config).await?;
    }
    let slot = policy.as_ref().map(Policy::slot_policy);
    let backend = st.backend.clone();
    let id2 = id.clone();
    tokio::task::spawn_blocking(move || backend.set_egress(&id2, slot))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    match policy {
        Some(p) => st.egress.update(&id, &team, p, ca),
        // The baseline alone: nothing is cut.
        None => st.egress.update(&id, &team, Policy::default(), None),
    }
    st.store
        .set_network(&id, &config, new_ca.as_deref())
        .await?;
    tracing::info!(sandbox_id = %id, "sandbox network updated");
    Ok(StatusCode::NO_CONTENT)
}
