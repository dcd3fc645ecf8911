//! The shape of `soulbox.toml`. Every key is optional: a layer (the file, the flags and
//! environment, the built-in defaults) sets some, and [`Overlay`] stacks the layers.

use super::units::{Dur, Size};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

/// A layer over a lower one: what this one sets wins, key by key.
pub trait Overlay {
    fn over(self, lower: Self) -> Self;
}

/// Implements [`Overlay`] for a section: `leaf` keys are taken whole, `nested` sections are
/// stacked key by key in turn.
macro_rules! overlay {
    ($t:ty { $($leaf:ident),* $(,)? } $(nested { $($nested:ident),* })?) => {
        impl Overlay for $t {
            fn over(self, lower: Self) -> Self {
                Self {
                    $($leaf: self.$leaf.or(lower.$leaf),)*
                    $($($nested: self.$nested.over(lower.$nested),)*)?
                }
            }
        }
    };
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    #[serde(default)]
    pub server: Server,
    #[serde(default)]
    pub runtime: Runtime,
    #[serde(default)]
    pub storage: Storage,
    #[serde(default)]
    pub networking: Networking,
    #[serde(default)]
    pub security: Security,
    #[serde(default)]
    pub monitoring: Monitoring,
}
overlay!(File {} nested { server, runtime, storage, networking, security, monitoring });

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub listen: Option<SocketAddr>,
    pub domain: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub max_body: Option<Size>,
    pub header_read_timeout: Option<Dur>,
    pub first_request_timeout: Option<Dur>,
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
    pub max_timeout: Option<Dur>,
    pub shutdown_grace: Option<Dur>,
    pub on_stop: Option<OnStop>,
    pub templates: Option<Vec<String>>,
}
overlay!(Server {
    listen,
    domain,
    tls_cert,
    tls_key,
    max_body,
    header_read_timeout,
    first_request_timeout,
    max_connections,
    max_connections_per_ip,
    max_timeout,
    shutdown_grace,
    on_stop,
    templates
});

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Runtime {
    pub writable_layer: Option<Layer>,
    pub id_base: Option<u32>,
    pub id_ranges: Option<u32>,
    pub max_sandboxes: Option<usize>,
    pub warm_pool: Option<BTreeMap<String, usize>>,
    #[serde(default)]
    pub default_limits: Limits,
    #[serde(default)]
    pub max_limits: Limits,
    #[serde(default)]
    pub build: Build,
}
overlay!(Runtime { writable_layer, id_base, id_ranges, max_sandboxes, warm_pool }
    nested { default_limits, max_limits, build });

/// A sandbox's resources, in E2B's units (CPUs, MiB).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub cpu_count: Option<u64>,
    pub memory_mb: Option<u64>,
    pub disk_mb: Option<u64>,
    pub pids: Option<u64>,
}
overlay!(Limits {
    cpu_count,
    memory_mb,
    disk_mb,
    pids
});

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Build {
    pub concurrency: Option<usize>,
    pub timeout: Option<Dur>,
    pub disk_mb: Option<u64>,
    pub registry_mirrors: Option<BTreeMap<String, String>>,
    pub insecure_registries: Option<Vec<String>>,
}
overlay!(Build {
    concurrency,
    timeout,
    disk_mb,
    registry_mirrors,
    insecure_registries
});

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
}
overlay!(Storage {
    data_dir,
    database_url
});

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Networking {
    pub egress_rate_mbit: Option<u32>,
    pub egress_max_connections: Option<u32>,
    pub egress_trust: Option<Vec<PathBuf>>,
}
overlay!(Networking {
    egress_rate_mbit,
    egress_max_connections,
    egress_trust
});

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Security {
    pub admin_api_key: Option<String>,
    pub admin_api_key_file: Option<PathBuf>,
    pub secret_key_file: Option<PathBuf>,
    /// `SOULBOX_SECRET_KEY` (hex): never read from the file, only shown (redacted).
    #[serde(skip_deserializing)]
    pub secret_key: Option<String>,
    pub rate_limit_per_second: Option<f64>,
    pub rate_limit_burst: Option<u32>,
}
overlay!(Security {
    admin_api_key,
    admin_api_key_file,
    secret_key_file,
    secret_key,
    rate_limit_per_second,
    rate_limit_burst
});

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Monitoring {
    pub metrics: Option<bool>,
    pub metrics_token: Option<String>,
    pub sample_interval: Option<Dur>,
    pub sample_retention: Option<Dur>,
    pub log_format: Option<LogFormat>,
    pub log_level: Option<String>,
}
overlay!(Monitoring {
    metrics,
    metrics_token,
    sample_interval,
    sample_retention,
    log_format,
    log_level
});

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OnStop {
    /// Sandboxes run on; the next `serve` takes them over.
    Keep,
    /// Sandboxes are all removed.
    Kill,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Layer {
    /// Sparse ext4 image per sandbox (real disk).
    Ext4,
    /// Size-limited tmpfs (memory-backed).
    Tmpfs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The built-in defaults: every key `serve` needs, set.
pub fn defaults() -> File {
    use soulbox_runtime::network::{DEFAULT_FLOWS_PER_SANDBOX, DEFAULT_RATE_MBIT};
    use std::time::Duration;
    let s = |n| Some(Dur(Duration::from_secs(n)));
    let l = soulbox_runtime::Limits::default();
    File {
        server: Server {
            listen: Some(([127, 0, 0, 1], 3000).into()),
            max_body: Some(Size(1 << 20)),
            header_read_timeout: s(30),
            first_request_timeout: s(10),
            max_connections: Some(16384),
            max_connections_per_ip: Some(2048),
            shutdown_grace: s(30),
            on_stop: Some(OnStop::Keep),
            templates: Some(vec!["base".into(), "code-interpreter".into()]),
            ..Default::default()
        },
        runtime: Runtime {
            writable_layer: Some(Layer::Ext4),
            id_base: Some(soulbox_runtime::ns::DEFAULT_ID_BASE),
            id_ranges: Some(soulbox_runtime::ns::DEFAULT_ID_RANGES),
            max_sandboxes: None,
            warm_pool: Some([("code-interpreter".to_string(), 1)].into()),
            default_limits: Limits {
                cpu_count: Some(l.cpu_millis / 1000),
                memory_mb: Some(l.memory_bytes >> 20),
                disk_mb: Some(l.disk_bytes >> 20),
                pids: Some(l.pids),
            },
            // What the API has always allowed: an operator lowers these to fit the host.
            max_limits: Limits {
                cpu_count: Some(64),
                memory_mb: Some(256 << 10),
                disk_mb: Some(1 << 20),
                pids: Some(32768),
            },
            build: Build {
                concurrency: Some(2),
                timeout: s(3600),
                disk_mb: Some(10 << 10),
                registry_mirrors: Some(BTreeMap::new()),
                insecure_registries: Some(vec![]),
            },
        },
        storage: Storage {
            data_dir: Some("/var/lib/soulbox".into()),
            database_url: None,
        },
        networking: Networking {
            egress_rate_mbit: Some(DEFAULT_RATE_MBIT),
            egress_max_connections: Some(DEFAULT_FLOWS_PER_SANDBOX),
            egress_trust: Some(vec![]),
        },
        security: Security::default(),
        monitoring: Monitoring {
            metrics: Some(true),
            sample_interval: s(5),
            sample_retention: s(3600),
            log_format: Some(LogFormat::Text),
            log_level: Some("warn".into()),
            metrics_token: None,
        },
    }
}
