//! Warm pool: sandboxes started before anyone asks for them, so a create that matches is
//! answered at once with a sandbox whose code-interpreter kernel is already running (a Jupyter
//! kernel takes about half a second to start; a claim takes none of it).
//!
//! A pooled sandbox has the defaults (the operator's default limits, internet access on, no
//! env vars) and its own envd token. It is invisible to every team (it has no record in the store,
//! so neither the API nor the proxy reach it) until a create claims it; the create then gives it
//! its env vars through the agent's `/init`, and the filler starts a replacement.

use soulbox_runtime::agent_client::AgentClient;
use soulbox_runtime::ns::NsBackend;
use soulbox_runtime::{Backend, Limits, SandboxInfo, SandboxSpec};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// The runtime label of a pooled sandbox (no store record until claimed).
pub const LABEL_POOL: &str = "pool";

/// How long a pooled sandbox may take to get its kernel ready.
const WARM_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause after a failed start before the filler tries again.
const RETRY_AFTER: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
pub struct WarmPool {
    /// Wanted size per template (canonical names).
    sizes: BTreeMap<String, usize>,
    /// The limits of every pooled sandbox (the operator's defaults).
    limits: Limits,
    ready: Mutex<HashMap<String, VecDeque<SandboxInfo>>>,
    wake: Notify,
}

impl WarmPool {
    pub fn new(sizes: BTreeMap<String, usize>, limits: Limits) -> Arc<Self> {
        let sizes = sizes
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(t, n)| {
                (
                    soulbox_runtime::template::recipe::resolve_alias(&t).to_string(),
                    n,
                )
            })
            .collect();
        Arc::new(WarmPool {
            sizes,
            limits,
            ..Default::default()
        })
    }

    /// Takes a warm sandbox matching a create request, if there is one.
    pub fn claim(&self, backend: &Arc<NsBackend>, spec: &SandboxSpec) -> Option<SandboxInfo> {
        if !spec.internet || spec.limits != self.limits {
            return None;
        }
        let mut ready = self.ready.lock().ok()?;
        let queue = ready.get_mut(&spec.template)?;
        while let Some(info) = queue.pop_front() {
            self.wake.notify_one();
            // A pooled sandbox that died while waiting (killed by hand, OOM) is skipped.
            if backend.get(&info.id).is_some() {
                return Some(info);
            }
        }
        None
    }

    /// Gives a claimed sandbox the create request's env vars.
    pub async fn hand_over(info: &SandboxInfo, env_vars: &BTreeMap<String, String>) -> bool {
        if env_vars.is_empty() {
            return true;
        }
        let Ok(mut c) = AgentClient::connect(&info.socket, info.access_token.clone()).await else {
            return false;
        };
        c.post_json("/init", &serde_json::json!({ "envVars": env_vars }))
            .await
            .map(|r| r.status().is_success())
            .unwrap_or(false)
    }

    /// Takes back a pooled sandbox of the server's earlier run; false if the pool has no
    /// room for it (then it is the caller's to remove).
    pub fn adopt(&self, info: SandboxInfo) -> bool {
        // One started under other default limits (the settings changed) is not handed out.
        if info.limits != self.limits {
            return false;
        }
        let want = self.sizes.get(&info.template).copied().unwrap_or(0);
        let Ok(mut ready) = self.ready.lock() else {
            return false;
        };
        let queue = ready.entry(info.template.clone()).or_default();
        if queue.len() >= want {
            return false;
        }
        queue.push_back(info);
        true
    }

    /// Warm sandboxes wanted of a template (0: it has no pool).
    pub fn wanted(&self, template: &str) -> usize {
        self.sizes.get(template).copied().unwrap_or(0)
    }

    /// Template → (wanted, ready), for `GET /metrics`.
    pub fn levels(&self) -> std::collections::BTreeMap<String, (usize, usize)> {
        self.sizes
            .iter()
            .map(|(t, &n)| (t.clone(), (n, self.count(t))))
            .collect()
    }

    fn count(&self, template: &str) -> usize {
        self.ready
            .lock()
            .map(|r| r.get(template).map_or(0, VecDeque::len))
            .unwrap_or(0)
    }

    /// Keeps the pool full until the process ends.
    pub fn spawn_filler(self: &Arc<Self>, backend: Arc<NsBackend>) {
        if self.sizes.is_empty() {
            return;
        }
        let pool = Arc::clone(self);
        tokio::spawn(async move {
            let mut failed: HashMap<String, tokio::time::Instant> = HashMap::new();
            loop {
                let mut idle = true;
                for (template, &size) in &pool.sizes {
                    if pool.count(template) >= size
                        || failed
                            .get(template)
                            .is_some_and(|t| t.elapsed() < RETRY_AFTER)
                    {
                        continue;
                    }
                    if backend.templates().get(template).is_err() {
                        if failed
                            .insert(template.clone(), tokio::time::Instant::now())
                            .is_none()
                        {
                            tracing::warn!(%template, "warm pool: template not built; run `soulbox template build {template}`");
                        }
                        continue;
                    }
                    match pool.start_one(&backend, template).await {
                        Ok(info) => {
                            failed.remove(template);
                            tracing::debug!(sandbox_id = %info.id, %template, "warm sandbox ready");
                            if let Ok(mut r) = pool.ready.lock() {
                                r.entry(template.clone()).or_default().push_back(info);
                            }
                            idle = false;
                        }
                        Err(e) => {
                            tracing::warn!(%template, "warm pool: {e}");
                            failed.insert(template.clone(), tokio::time::Instant::now());
                        }
                    }
                }
                if idle {
                    let _ = tokio::time::timeout(RETRY_AFTER, pool.wake.notified()).await;
                }
            }
        });
    }

    async fn start_one(
        &self,
        backend: &Arc<NsBackend>,
        template: &str,
    ) -> Result<SandboxInfo, String> {
        let spec = SandboxSpec {
            template: template.to_string(),
            limits: self.limits,
            internet: true,
            env_vars: BTreeMap::new(),
            access_token: Some(soulbox_runtime::ns::new_token()),
            label: LABEL_POOL.into(),
            ..Default::default()
        };
        let info = backend.create(spec).await.map_err(|e| e.to_string())?;
        let has_kernel = soulbox_runtime::template::recipe::find(template)
            .is_some_and(|r| r.pip.contains(&"ipykernel"));
        // With a Jupyter stack, ready once the agent lists its prewarmed default context.
        let start = tokio::time::Instant::now();
        while has_kernel && start.elapsed() < WARM_TIMEOUT {
            if let Ok(mut c) = AgentClient::connect(&info.socket, info.access_token.clone()).await {
                if let Ok(r) = c.get("/contexts").await {
                    if r.body().len() > 2 {
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Ok(info)
    }
}
