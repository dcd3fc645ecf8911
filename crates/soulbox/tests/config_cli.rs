//! `soulbox config check|show` as an operator runs them (issue 14): flag > environment >
//! file > default, errors naming key and line, secrets redacted. Starts no sandbox.

use std::path::Path;
use std::process::{Command, Output};

fn soulbox(config: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_soulbox"));
    c.arg("--config").arg(config);
    // Nothing of the caller's environment decides what these tests see.
    for (k, _) in std::env::vars() {
        if k.starts_with("SOULBOX_") {
            c.env_remove(k);
        }
    }
    c
}

fn out(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn show(c: &mut Command, flags: &[&str]) -> toml::Table {
    let o = c.args(["config", "show"]).args(flags).output().unwrap();
    let (stdout, stderr) = out(&o);
    assert!(o.status.success(), "{stderr}");
    toml::from_str(&stdout).unwrap_or_else(|e| panic!("{e}\n{stdout}"))
}

fn listen(t: &toml::Table) -> &str {
    t["server"]["listen"].as_str().unwrap()
}

#[test]
fn flag_beats_env_beats_file_beats_default() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("soulbox.toml");
    std::fs::write(
        &file,
        "[server]\nlisten = \"127.0.0.1:4001\"\nmax_connections = 77\n",
    )
    .unwrap();
    let t = show(&mut soulbox(&file), &[]);
    assert_eq!(listen(&t), "127.0.0.1:4001");
    assert_eq!(t["server"]["max_connections"].as_integer(), Some(77));
    assert_eq!(
        t["server"]["max_connections_per_ip"].as_integer(),
        Some(2048),
        "default"
    );
    let t = show(soulbox(&file).env("SOULBOX_LISTEN", "127.0.0.1:4002"), &[]);
    assert_eq!(listen(&t), "127.0.0.1:4002");
    let t = show(
        soulbox(&file).env("SOULBOX_LISTEN", "127.0.0.1:4002"),
        &["--listen", "127.0.0.1:4003"],
    );
    assert_eq!(listen(&t), "127.0.0.1:4003");
    // The global flags too: --data-dir over SOULBOX_DATA_DIR over [storage].
    std::fs::write(&file, "[storage]\ndata_dir = \"/srv/from-file\"\n").unwrap();
    let t = show(soulbox(&file).env("SOULBOX_DATA_DIR", "/srv/from-env"), &[]);
    assert_eq!(t["storage"]["data_dir"].as_str(), Some("/srv/from-env"));
    assert_eq!(
        t["storage"]["database_url"].as_str(),
        Some("sqlite:///srv/from-env/soulbox.db")
    );
    let t = show(
        soulbox(&file).env("SOULBOX_DATA_DIR", "/srv/from-env"),
        &["--data-dir", "/srv/from-flag"],
    );
    assert_eq!(t["storage"]["data_dir"].as_str(), Some("/srv/from-flag"));
}

#[test]
fn unknown_keys_and_bad_values_fail_check_naming_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("soulbox.toml");
    for (text, want) in [
        (
            "[server]\nlisten = \"127.0.0.1:1\"\nlisen = \"x\"\n",
            "soulbox.toml:3: unknown key 'lisen' in [server]",
        ),
        (
            "[monitoring]\nsample_interval = \"often\"\n",
            "soulbox.toml:2: [monitoring] sample_interval: 'often' is not a duration",
        ),
        (
            "[server]\ntls_cert = \"/nonexistent/cert.pem\"\ntls_key = \"/nonexistent/key.pem\"\n",
            "soulbox.toml:2: [server] tls_cert: /nonexistent/cert.pem",
        ),
    ] {
        std::fs::write(&file, text).unwrap();
        let o = soulbox(&file).args(["config", "check"]).output().unwrap();
        let (_, stderr) = out(&o);
        assert!(!o.status.success(), "{text} passed");
        assert!(stderr.contains(want), "{text}: {stderr}");
    }
    // A file named with --config must exist.
    let o = soulbox(&dir.path().join("missing.toml"))
        .args(["config", "check"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(out(&o).1.contains("missing.toml"), "{}", out(&o).1);
}

#[test]
fn show_redacts_the_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("soulbox.toml");
    std::fs::write(&file, "[monitoring]\nmetrics_token = \"t0ken-in-file\"\n").unwrap();
    let o = soulbox(&file)
        .env("SOULBOX_ADMIN_API_KEY", "e2b_admin-in-env")
        .env("SOULBOX_SECRET_KEY", "ab".repeat(32))
        .args(["config", "show"])
        .output()
        .unwrap();
    let (stdout, stderr) = out(&o);
    assert!(o.status.success(), "{stderr}");
    for secret in ["t0ken-in-file", "e2b_admin-in-env", &"ab".repeat(32)] {
        assert!(!stdout.contains(secret), "{secret} shown:\n{stdout}");
    }
    assert_eq!(stdout.matches("\"<redacted>\"").count(), 3, "{stdout}");
}

#[test]
fn the_documented_example_passes_check() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/soulbox.example.toml");
    let o = soulbox(&example)
        .args(["config", "check"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out(&o).1);
    // `config default` prints that same file.
    let o = soulbox(&example)
        .args(["config", "default"])
        .output()
        .unwrap();
    assert_eq!(out(&o).0, std::fs::read_to_string(&example).unwrap());
}
