//! Monitoring: the Prometheus families of `GET /metrics`, the per-sandbox samples behind
//! `get_metrics()` and the live stream, and `GET /ready`.
//!
//! Counters and histograms live as long as the server; what describes the present (sandboxes
//! by state, the warm pool, each sandbox's use) is built afresh at each scrape from the store
//! and the latest samples, so a sandbox's series go with it. One sampler task reads every
//! running sandbox each `sample_interval` ([`sampler`]); nothing runs per sandbox.

mod families;
pub mod http;
pub mod proxy;
pub mod ring;
pub mod sampler;
pub mod samples;

use crate::error::ApiResult;
use crate::AppState;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use families::Families;
pub use samples::Samples;

/// Everything monitoring keeps for the server's life.
#[derive(Debug)]
pub struct Metrics {
    pub families: Families,
    pub samples: Samples,
}

impl Metrics {
    pub fn new(m: &crate::Monitoring) -> Arc<Metrics> {
        Arc::new(Metrics {
            families: Families::new(),
            samples: Samples::new(m.sample_interval, m.sample_retention),
        })
    }

    /// A kill ended (the sandbox's samples go with it when it succeeded).
    pub fn killed(&self, id: &str, r: &ApiResult<()>) {
        self.families.kills.get_or_create(&outcome(r)).inc();
        if r.is_ok() {
            self.samples.forget(id);
        }
    }

    pub fn paused<T>(&self, r: &ApiResult<T>) {
        self.families.pauses.get_or_create(&outcome(r)).inc();
        // A paused sandbox keeps its history; its next percent needs a new baseline.
        if r.is_ok() {
            self.samples.notify();
        }
    }

    pub fn resumed<T>(&self, r: &ApiResult<T>) {
        self.families.resumes.get_or_create(&outcome(r)).inc();
    }

    /// A sandbox reached its end time; `action` is `kill` or `pause`.
    pub fn timed_out(&self, action: &'static str) {
        self.families
            .timeouts
            .get_or_create(&[("action", action)])
            .inc();
    }

    /// A create that asked the warm pool; counted for templates that have a pool.
    pub fn pool_claim(&self, pool: &crate::pool::WarmPool, template: &str, hit: bool) {
        if pool.wanted(template) == 0 {
            return;
        }
        let result = if hit { "hit" } else { "miss" };
        self.families
            .pool_claims
            .get_or_create(&[
                ("template", template.to_string()),
                ("result", result.into()),
            ])
            .inc();
    }

    /// A template build ended: `ready`, `failed` or `timeout`.
    pub fn build_done(&self, outcome: &'static str, took: Duration) {
        let l = [("outcome", outcome)];
        self.families.builds.get_or_create(&l).inc();
        self.families
            .build_seconds
            .get_or_create(&l)
            .observe(took.as_secs_f64());
    }
}

/// Times a create from its request to the sandbox answering (`soulbox_sandbox_create_seconds`).
pub struct CreateTimer {
    metrics: Arc<Metrics>,
    started: Instant,
}

impl CreateTimer {
    pub fn start(st: &AppState) -> CreateTimer {
        CreateTimer {
            metrics: st.metrics.clone(),
            started: Instant::now(),
        }
    }

    pub fn done<T>(self, r: ApiResult<T>) -> ApiResult<T> {
        let f = &self.metrics.families;
        f.creates.get_or_create(&outcome(&r)).inc();
        if r.is_ok() {
            f.create_seconds
                .observe(self.started.elapsed().as_secs_f64());
        }
        r
    }
}

/// `ok`, `client_error` (the request was refused: 4xx) or `server_error` (5xx: the server
/// or the host failed, capacity included).
fn outcome<T>(r: &ApiResult<T>) -> [(&'static str, &'static str); 1] {
    let o = match r {
        Ok(_) => "ok",
        Err(e) if e.status().is_client_error() => "client_error",
        Err(_) => "server_error",
    };
    [("outcome", o)]
}
