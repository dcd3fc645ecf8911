//! One module per subcommand.

pub mod audit;
pub mod bench;
pub mod config;
pub mod connect;
mod dockerfile;
pub mod doctor;
pub mod exec;
pub mod files;
pub mod keys;
mod remote;
pub mod run;
pub mod sandbox;
pub mod serve;
pub mod teams;
pub mod template;
mod template_build;
mod top;

use anyhow::Context as _;
use soulbox_runtime::ns::{NsBackend, RuntimeConfig, WritableLayer};
use std::path::PathBuf;
use std::sync::Arc;

pub struct Context {
    pub data_dir: PathBuf,
    pub writable_layer: WritableLayer,
    /// The effective `soulbox.toml` settings (flags and environment over the file).
    pub config: crate::config::Config,
}

impl Context {
    /// The agent binary: `SOULBOX_AGENT`, else `soulbox-agent` next to this executable.
    pub fn agent_path(&self) -> anyhow::Result<PathBuf> {
        if let Some(p) = std::env::var_os("SOULBOX_AGENT") {
            return Ok(PathBuf::from(p));
        }
        let exe = std::env::current_exe().context("locating the soulbox executable")?;
        Ok(exe.with_file_name("soulbox-agent"))
    }

    pub fn runtime_config(&self) -> anyhow::Result<RuntimeConfig> {
        let exe = std::env::current_exe().context("locating the soulbox executable")?;
        let mut cfg = RuntimeConfig::new(self.data_dir.clone(), self.agent_path()?, exe);
        cfg.writable_layer = self.writable_layer;
        // The same runtime settings for every command that starts sandboxes on this host.
        let rt = &self.config.eff.runtime;
        cfg.id_base = rt.id_base.unwrap_or(cfg.id_base);
        cfg.id_ranges = rt.id_ranges.unwrap_or(cfg.id_ranges);
        cfg.host_limits.max_sandboxes = rt.max_sandboxes;
        let net = &self.config.eff.networking;
        cfg.host_limits.rate_mbit = net.egress_rate_mbit;
        cfg.host_limits.flows_per_sandbox = net.egress_max_connections;
        cfg.criu = match soulbox_runtime::ns::checkpoint::Criu::find() {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::debug!("full pauses off: {e}");
                None
            }
        };
        Ok(cfg)
    }

    /// Makes the data directory (and all this process creates from now on) private.
    pub fn private_data_dir(&self) -> anyhow::Result<()> {
        soulbox_runtime::private_data_dir(&self.data_dir).with_context(|| {
            format!(
                "making the data directory {} private",
                self.data_dir.display()
            )
        })
    }

    pub fn backend(&self) -> anyhow::Result<Arc<NsBackend>> {
        self.backend_with(|_| {})
    }

    /// The runtime, its configuration changed by `f` first.
    pub fn backend_with(
        &self,
        f: impl FnOnce(&mut RuntimeConfig),
    ) -> anyhow::Result<Arc<NsBackend>> {
        self.private_data_dir()?;
        let mut cfg = self.runtime_config()?;
        f(&mut cfg);
        Ok(Arc::new(NsBackend::new(cfg).context(
            "starting the sandbox runtime (try `soulbox doctor`)",
        )?))
    }
}
