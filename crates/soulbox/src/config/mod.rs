//! `soulbox.toml`: the operator's settings, stacked flag > environment > file > default.
//!
//! [`Config::load`] reads the file (a missing default file is an empty one), stacks it under
//! the flags and environment and over the defaults, and checks the result. Errors name the
//! key and, when the file set it, the line.

pub mod file;
pub mod units;

use anyhow::Context as _;
pub use file::File;
use file::Overlay;
use std::path::{Path, PathBuf};

/// Where the file is looked for when neither `--config` nor `SOULBOX_CONFIG` names one.
pub const DEFAULT_PATH: &str = "/etc/soulbox/soulbox.toml";

pub const REDACTED: &str = "<redacted>";

/// The effective settings and where they came from.
#[derive(Debug, Clone)]
pub struct Config {
    /// Every layer stacked: what `serve` runs with.
    pub eff: File,
    /// The file that was read (`None`: no file).
    pub path: Option<PathBuf>,
    text: String,
    /// What the flags and environment set (to tell a file's line from a flag's value).
    cli: toml::Value,
}

impl Config {
    /// Reads `path` (or the default file, if it exists) and stacks `cli` over it.
    pub fn load(path: Option<&Path>, cli: File) -> anyhow::Result<Config> {
        let (path, text) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).with_context(|| {
                    format!(
                        "reading the configuration file {} (given by --config or SOULBOX_CONFIG)",
                        p.display()
                    )
                })?;
                (Some(p.to_path_buf()), text)
            }
            None => match std::fs::read_to_string(DEFAULT_PATH) {
                Ok(text) => (Some(PathBuf::from(DEFAULT_PATH)), text),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, String::new()),
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("reading the configuration file {DEFAULT_PATH}"))
                }
            },
        };
        let name = path.as_deref().map(display_name).unwrap_or_default();
        let from_file: File = toml::from_str(&text).map_err(|e| parse_error(&name, &text, &e))?;
        let cli_value = toml::Value::try_from(&cli).context("the flags")?;
        let eff = cli.over(from_file).over(file::defaults());
        let cfg = Config {
            eff,
            path,
            text,
            cli: cli_value,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// An error about `key` (`section.key`), placed at the file's line when the file set it.
    pub fn error(&self, key: &str, msg: impl std::fmt::Display) -> anyhow::Error {
        let (section, name) = key.rsplit_once('.').unwrap_or(("", key));
        let by_cli = key
            .split('.')
            .try_fold(&self.cli, |v, k| v.get(k))
            .is_some();
        let place = match (&self.path, by_cli) {
            (_, true) => "set by flag or environment: ".to_string(),
            (Some(p), false) => match find_key(&self.text, section, name) {
                Some(line) => format!("{}:{line}: ", display_name(p)),
                None => String::new(),
            },
            (None, false) => String::new(),
        };
        anyhow::anyhow!("{place}[{section}] {name}: {msg}")
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        self.eff.storage.data_dir.as_deref().expect("defaulted")
    }

    /// The SQLite database file `storage.database_url` names (default: in the data directory).
    pub fn database_path(&self) -> anyhow::Result<PathBuf> {
        match &self.eff.storage.database_url {
            None => Ok(self.data_dir().join("soulbox.db")),
            Some(url) => sqlite_path(url).map_err(|m| self.error("storage.database_url", m)),
        }
    }

    /// The store's secret key file (default: `secret.key` in the data directory).
    pub fn secret_key_file(&self) -> PathBuf {
        self.eff
            .security
            .secret_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir().join("secret.key"))
    }

    /// The admin API key, from `admin_api_key` or the file `admin_api_key_file` names.
    pub fn admin_api_key(&self) -> anyhow::Result<Option<String>> {
        let s = &self.eff.security;
        if let Some(k) = s.admin_api_key.as_ref().filter(|k| !k.is_empty()) {
            return Ok(Some(k.clone()));
        }
        match &s.admin_api_key_file {
            None => Ok(None),
            Some(p) => {
                let k = std::fs::read_to_string(p).map_err(|e| {
                    self.error(
                        "security.admin_api_key_file",
                        format!("{}: {e}", p.display()),
                    )
                })?;
                let k = k.trim();
                if k.is_empty() {
                    return Err(self.error(
                        "security.admin_api_key_file",
                        format!("{} is empty", p.display()),
                    ));
                }
                Ok(Some(k.to_string()))
            }
        }
    }

    /// A limits table in the runtime's units.
    pub fn limits(&self, which: &str) -> soulbox_runtime::Limits {
        let t = match which {
            "max_limits" => &self.eff.runtime.max_limits,
            _ => &self.eff.runtime.default_limits,
        };
        let d = soulbox_runtime::Limits::default();
        soulbox_runtime::Limits {
            cpu_millis: t.cpu_count.map_or(d.cpu_millis, |c| c.saturating_mul(1000)),
            memory_bytes: t
                .memory_mb
                .map_or(d.memory_bytes, |m| m.saturating_mul(1 << 20)),
            disk_bytes: t
                .disk_mb
                .map_or(d.disk_bytes, |m| m.saturating_mul(1 << 20)),
            pids: t.pids.unwrap_or(d.pids),
            nofile: d.nofile,
        }
    }

    /// The effective settings as TOML, secrets replaced by [`REDACTED`].
    pub fn show(&self) -> String {
        let mut f = self.eff.clone();
        f.storage.database_url = Some(
            self.database_path()
                .map(|p| format!("sqlite://{}", p.display()))
                .unwrap_or_else(|_| f.storage.database_url.clone().unwrap_or_default()),
        );
        f.security.secret_key_file = Some(self.secret_key_file());
        for secret in [
            &mut f.security.admin_api_key,
            &mut f.security.secret_key,
            &mut f.monitoring.metrics_token,
        ] {
            if secret.is_some() {
                *secret = Some(REDACTED.into());
            }
        }
        toml::to_string(&f).expect("settings serialize")
    }
}

fn display_name(p: &Path) -> String {
    p.display().to_string()
}

/// `name:line: [section] key: message` from a parse error of the file (an unknown key:
/// `name:line: unknown key 'k' in [section]; expected one of ...`).
fn parse_error(name: &str, text: &str, e: &toml::de::Error) -> anyhow::Error {
    let msg = e.message().trim().to_string();
    let Some(span) = e.span() else {
        return anyhow::anyhow!("{name}: {msg}");
    };
    let start = span.start.min(text.len());
    let line = text[..start].matches('\n').count() + 1;
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let section = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find_map(|l| l.strip_prefix('['))
        .map(|h| {
            h.trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default();
    let section = if section.is_empty() {
        "the top level".to_string()
    } else {
        format!("[{section}]")
    };
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let (key, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let expected = expected.trim_start_matches(',').trim();
        return anyhow::anyhow!("{name}:{line}: unknown key '{key}' in {section}; {expected}");
    }
    // A bad value: the span is the value's; its key begins the line.
    let line_text = &text[line_start..start];
    match line_text.split_once('=') {
        Some((key, _)) if !key.trim().is_empty() => {
            let key = key.trim().trim_matches('"');
            anyhow::anyhow!("{name}:{line}: {section} {key}: {msg}")
        }
        _ => anyhow::anyhow!("{name}:{line}: {msg} (in {section})"),
    }
}

/// The line (from 1) where `section`'s `key` is set, for files written as tables of
/// `key = value` lines (the usual way; other forms get no line).
fn find_key(text: &str, section: &str, key: &str) -> Option<usize> {
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if let Some(h) = l.strip_prefix('[') {
            current = h
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            continue;
        }
        let Some((k, _)) = l.split_once('=') else {
            continue;
        };
        let k = k.trim().trim_matches('"');
        let full = if current.is_empty() {
            k.to_string()
        } else {
            format!("{current}.{k}")
        };
        if full == format!("{section}.{key}") || (current == section && k == key) {
            return Some(i + 1);
        }
    }
    None
}

/// The database file of a `sqlite://PATH` (or `sqlite:PATH`, or a bare path) URL.
pub fn sqlite_path(url: &str) -> Result<PathBuf, String> {
    let path = match url.split_once(':') {
        Some(("sqlite", rest)) => rest.strip_prefix("//").unwrap_or(rest),
        Some((scheme, _)) if url.contains("://") => {
            return Err(format!(
                "'{scheme}' databases are not supported: only SQLite is, for now (write sqlite:///var/lib/soulbox/soulbox.db or a path)"
            ))
        }
        _ => url,
    };
    let path = path.split('?').next().unwrap_or(path);
    if path.is_empty() || path == ":memory:" {
        return Err("expected a database file, e.g. sqlite:///var/lib/soulbox/soulbox.db".into());
    }
    Ok(PathBuf::from(path))
}

impl Config {
    /// The checks the types cannot make.
    fn validate(&self) -> anyhow::Result<()> {
        let e = &self.eff;
        let srv = &e.server;
        match (&srv.tls_cert, &srv.tls_key) {
            (Some(_), None) => {
                return Err(self.error("server.tls_key", "missing: tls_cert is set, and HTTPS needs both (the key as a PEM file)"))
            }
            (None, Some(_)) => {
                return Err(self.error("server.tls_cert", "missing: tls_key is set, and HTTPS needs both (the certificate chain as a PEM file)"))
            }
            (Some(cert), Some(key)) => {
                soulbox_server::https::load(cert, key).map_err(|err| {
                    let which = if err.is_key { "server.tls_key" } else { "server.tls_cert" };
                    self.error(which, err.message)
                })?;
            }
            (None, None) => {}
        }
        if srv.max_body.is_some_and(|b| b.0 == 0) {
            return Err(self.error("server.max_body", "must be above 0"));
        }
        for (key, v) in [
            ("server.header_read_timeout", srv.header_read_timeout),
            ("server.first_request_timeout", srv.first_request_timeout),
            ("server.max_timeout", srv.max_timeout),
            ("runtime.build.timeout", e.runtime.build.timeout),
            ("monitoring.sample_interval", e.monitoring.sample_interval),
            ("monitoring.sample_retention", e.monitoring.sample_retention),
        ] {
            if v.is_some_and(|d| d.0.is_zero()) {
                return Err(self.error(key, "must be above 0s"));
            }
        }
        for (key, v) in [
            ("server.max_connections", srv.max_connections),
            ("server.max_connections_per_ip", srv.max_connections_per_ip),
            ("runtime.build.concurrency", e.runtime.build.concurrency),
        ] {
            if v == Some(0) {
                return Err(self.error(key, "must be at least 1"));
            }
        }
        for t in srv.templates.iter().flatten().filter(|t| !t.is_empty()) {
            if soulbox_runtime::template::recipe::find(t).is_none() {
                return Err(self.error(
                    "server.templates",
                    format!("'{t}' is not a built-in template (see `soulbox template list`)"),
                ));
            }
        }
        for t in e.runtime.warm_pool.iter().flat_map(|p| p.keys()) {
            if soulbox_runtime::template::recipe::find(t).is_none() {
                return Err(self.error(
                    &format!("runtime.warm_pool.{t}"),
                    "not a built-in template (see `soulbox template list`)",
                ));
            }
        }
        if e.runtime.id_ranges == Some(0) {
            return Err(self.error("runtime.id_ranges", "must be at least 1"));
        }
        if let (Some(base), Some(n)) = (e.runtime.id_base, e.runtime.id_ranges) {
            if u64::from(base) + u64::from(n) * 65536 > u64::from(u32::MAX) {
                return Err(self.error(
                    "runtime.id_ranges",
                    format!(
                        "{n} ranges of 65536 ids from id_base {base} pass the last id (4294967295)"
                    ),
                ));
            }
        }
        self.validate_limits()?;
        self.database_path()?;
        let s = &e.security;
        if s.admin_api_key.is_some() && s.admin_api_key_file.is_some() {
            return Err(self.error(
                "security.admin_api_key_file",
                "set either admin_api_key or admin_api_key_file, not both",
            ));
        }
        self.admin_api_key()?;
        if let Some(r) = s.rate_limit_per_second {
            if !(r.is_finite() && r > 0.0) {
                return Err(self.error("security.rate_limit_per_second", "must be above 0"));
            }
        } else if s.rate_limit_burst.is_some() {
            return Err(self.error(
                "security.rate_limit_burst",
                "set rate_limit_per_second too (a burst alone limits nothing)",
            ));
        }
        if s.rate_limit_burst == Some(0) {
            return Err(self.error("security.rate_limit_burst", "must be at least 1"));
        }
        let m = &e.monitoring;
        if let (Some(i), Some(r)) = (m.sample_interval, m.sample_retention) {
            if r < i {
                return Err(self.error(
                    "monitoring.sample_retention",
                    format!(
                        "must be at least sample_interval ({})",
                        units::format_duration(i.0)
                    ),
                ));
            }
        }
        if let Some(l) = &m.log_level {
            tracing_subscriber::EnvFilter::try_new(l).map_err(|err| {
                self.error(
                    "monitoring.log_level",
                    format!(
                        "'{l}': {err} (e.g. \"warn\", \"info\", \"soulbox_server=debug,warn\")"
                    ),
                )
            })?;
        }
        for p in e.networking.egress_trust.iter().flatten() {
            if let Err(err) = std::fs::metadata(p) {
                return Err(
                    self.error("networking.egress_trust", format!("{}: {err}", p.display()))
                );
            }
        }
        Ok(())
    }

    fn validate_limits(&self) -> anyhow::Result<()> {
        let r = &self.eff.runtime;
        let floor = [
            ("cpu_count", 1),
            ("memory_mb", 128),
            ("disk_mb", 64),
            ("pids", 64),
        ];
        for (table, t) in [
            ("default_limits", &r.default_limits),
            ("max_limits", &r.max_limits),
        ] {
            for ((name, v), (_, min)) in values(t).into_iter().zip(floor) {
                if v < min {
                    return Err(self.error(
                        &format!("runtime.{table}.{name}"),
                        format!("{v} is below the least a sandbox can run with ({min})"),
                    ));
                }
            }
        }
        for ((name, d), (_, m)) in values(&r.default_limits)
            .into_iter()
            .zip(values(&r.max_limits))
        {
            if d > m {
                return Err(self.error(
                    &format!("runtime.default_limits.{name}"),
                    format!("{d} is above runtime.max_limits.{name} ({m})"),
                ));
            }
        }
        Ok(())
    }
}

fn values(t: &file::Limits) -> [(&'static str, u64); 4] {
    [
        ("cpu_count", t.cpu_count.unwrap_or(0)),
        ("memory_mb", t.memory_mb.unwrap_or(0)),
        ("disk_mb", t.disk_mb.unwrap_or(0)),
        ("pids", t.pids.unwrap_or(0)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, cli: File) -> anyhow::Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("soulbox.toml");
        std::fs::write(&p, text).unwrap();
        Config::load(Some(&p), cli)
    }

    fn err(text: &str) -> String {
        format!("{:#}", load(text, File::default()).unwrap_err())
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key_and_line() {
        let e = err("[server]\nlisten = \"127.0.0.1:1\"\nlisen = \"x\"\n");
        assert!(
            e.contains("soulbox.toml:3: unknown key 'lisen' in [server]"),
            "{e}"
        );
        let e = err("# top\n\n[monitoring]\nmetrics = true\n\n[runtime.build]\ntimeout = \"30\"\n");
        assert!(
            e.contains("soulbox.toml:7: [runtime.build] timeout: '30' is not a duration"),
            "{e}"
        );
        let e = err("[server]\nmax_connections = \"many\"\n");
        assert!(
            e.contains("soulbox.toml:2: [server] max_connections: invalid type"),
            "{e}"
        );
        let e = err("nonsense = 1\n");
        assert!(
            e.contains("soulbox.toml:1: unknown key 'nonsense' in the top level"),
            "{e}"
        );
        let e = err("[security]\nsecret_key = \"00\"\n");
        assert!(e.contains("unknown key 'secret_key' in [security]"), "{e}");
    }

    #[test]
    fn semantic_errors_name_the_key_and_where_it_was_set() {
        let text = "[runtime.max_limits]\nmemory_mb = 4096\n\n[runtime.default_limits]\ncpu_count = 1\nmemory_mb = 8192\n";
        let e = err(text);
        assert!(e.contains("soulbox.toml:6: [runtime.default_limits] memory_mb: 8192 is above runtime.max_limits.memory_mb (4096)"), "{e}");
        let e = err("[server]\ntls_cert = \"/etc/hostname\"\n");
        assert!(e.contains("[server] tls_key: missing"), "{e}");
        let e = err("[storage]\ndatabase_url = \"postgres://db/soulbox\"\n");
        assert!(e.contains("soulbox.toml:2: [storage] database_url: 'postgres' databases are not supported: only SQLite"), "{e}");
        let e = err("[security]\nrate_limit_burst = 5\n");
        assert!(
            e.contains(
                "soulbox.toml:2: [security] rate_limit_burst: set rate_limit_per_second too"
            ),
            "{e}"
        );
        let e = err("[runtime.warm_pool]\nnot-a-template = 1\n");
        assert!(
            e.contains("[runtime.warm_pool] not-a-template: not a built-in template"),
            "{e}"
        );
        // Set by a flag, the same mistake is not put on a line of the file.
        let mut cli = File::default();
        cli.runtime.default_limits.memory_mb = Some(8192);
        let e = format!(
            "{:#}",
            load(text.replace("memory_mb = 8192", "").as_str(), cli).unwrap_err()
        );
        assert!(
            e.contains("set by flag or environment: [runtime.default_limits] memory_mb"),
            "{e}"
        );
    }

    #[test]
    fn flags_beat_the_file_which_beats_the_defaults() {
        let text = "[server]\nlisten = \"127.0.0.1:4000\"\nmax_connections = 10\n[runtime.default_limits]\nmemory_mb = 1024\n";
        let mut cli = File::default();
        cli.server.listen = Some(([127, 0, 0, 1], 5000).into());
        let c = load(text, cli).unwrap();
        assert_eq!(c.eff.server.listen, Some(([127, 0, 0, 1], 5000).into()));
        assert_eq!(c.eff.server.max_connections, Some(10));
        assert_eq!(c.eff.server.max_connections_per_ip, Some(2048));
        // A table set in part keeps the defaults of the keys it leaves out.
        let l = c.limits("default_limits");
        assert_eq!((l.memory_bytes, l.cpu_millis), (1024 << 20, 2000));
    }

    #[test]
    fn show_redacts_secrets_and_reads_back() {
        let mut cli = File::default();
        cli.security.secret_key = Some("ab".repeat(32));
        let c = load("[security]\nadmin_api_key = \"e2b_topsecret\"\n[monitoring]\nmetrics_token = \"tok3n\"\n", cli).unwrap();
        let shown = c.show();
        for secret in ["e2b_topsecret", "tok3n", &"ab".repeat(32)] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert_eq!(shown.matches(REDACTED).count(), 3, "{shown}");
        // What show prints is itself a valid file (the show-only secret_key aside).
        let back: String = shown
            .lines()
            .filter(|l| !l.starts_with("secret_key ="))
            .collect::<Vec<_>>()
            .join("\n");
        toml::from_str::<File>(&back).unwrap();
    }

    #[test]
    fn database_urls() {
        assert_eq!(
            sqlite_path("sqlite:///var/x.db").unwrap(),
            PathBuf::from("/var/x.db")
        );
        assert_eq!(
            sqlite_path("sqlite:/var/x.db").unwrap(),
            PathBuf::from("/var/x.db")
        );
        assert_eq!(
            sqlite_path("/var/x.db").unwrap(),
            PathBuf::from("/var/x.db")
        );
        assert_eq!(
            sqlite_path("sqlite:///var/x.db?mode=rwc").unwrap(),
            PathBuf::from("/var/x.db")
        );
        assert!(sqlite_path("mysql://h/db")
            .unwrap_err()
            .contains("only SQLite"));
        assert!(sqlite_path("sqlite::memory:").is_err());
    }

    #[test]
    fn the_example_file_is_valid() {
        let c = load(crate::cmd::config::EXAMPLE, File::default()).unwrap();
        // It spells out the defaults.
        let d = Config::load(None, File::default());
        if std::path::Path::new(DEFAULT_PATH).exists() {
            return;
        }
        assert_eq!(c.eff, d.unwrap().eff);
    }
}
