//! The `soulbox` CLI's client commands against a real `soulbox serve`: sandboxes, exec, files
//! (200 MiB and a directory tree, byte for byte), errors, config — and `soulbox connect` in a
//! real terminal (tmux: keys in, screen out, window resized, terminal restored).

mod common;

use common::{ok, run, soulbox};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn create(home: &Path) -> String {
    ok(soulbox(home).args(["sandbox", "create", "tiny", "--timeout", "300"]))
        .trim()
        .to_string()
}

#[test]
fn sandbox_commands_and_json() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let created: serde_json::Value = serde_json::from_str(&ok(soulbox(h).args([
        "sandbox",
        "create",
        "tiny",
        "-m",
        "suite=cli",
        "-e",
        "A=1",
        "--json",
    ])))
    .unwrap();
    let id = created["sandboxID"].as_str().unwrap().to_string();
    let listed: serde_json::Value = serde_json::from_str(&ok(soulbox(h).args([
        "sandbox",
        "list",
        "-m",
        "suite=cli",
        "--json",
    ])))
    .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["sandboxID"], id.as_str());
    assert!(
        listed[0].get("envdAccessToken").is_none(),
        "no tokens in output"
    );
    let table = ok(soulbox(h).args(["sandbox", "list", "-m", "suite=cli"]));
    assert!(
        table.starts_with("ID ") && table.contains(&id) && table.contains("suite=cli"),
        "{table}"
    );
    ok(soulbox(h).args(["sandbox", "pause", &id]));
    let info: serde_json::Value =
        serde_json::from_str(&ok(soulbox(h).args(["sandbox", "info", &id, "--json"]))).unwrap();
    assert_eq!(info["state"], "paused");
    let verified = ok(soulbox(h).args(["sandbox", "verify", &id]));
    assert!(verified.contains("are as they were paused"), "{verified}");
    ok(soulbox(h).args(["sandbox", "resume", &id]));
    let out = run(soulbox(h).args(["sandbox", "verify", &id]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("is running"), "{err}");
    ok(soulbox(h).args(["sandbox", "timeout", &id, "30"]));
    assert_eq!(ok(soulbox(h).args(["exec", &id, "--", "echo $A"])), "1\n");
    ok(soulbox(h).args(["sandbox", "kill", &id]));
    let out = run(soulbox(h).args(["sandbox", "info", &id]));
    assert!(!out.status.success());
}

#[test]
fn exec_streams_and_exits_with_the_code() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let id = create(h);
    let out = run(soulbox(h).args(["exec", &id, "--", "echo out; echo err >&2; exit 3"]));
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    // Several arguments are a program and its arguments, not a shell line.
    assert_eq!(
        ok(soulbox(h).args(["exec", &id, "--", "printf", "%s|", "a b", "$HOME"])),
        "a b|$HOME|"
    );
    let out = run(soulbox(h).args(["exec", &id, "--", "kill -9 $$"]));
    assert_eq!(out.status.code(), Some(137));
    let mut child = soulbox(h)
        .args(["exec", "-i", &id, "--", "wc -c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&[b'x'; 100_000]).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "100000");
    let out = run(soulbox(h).args([
        "exec",
        "--user",
        "root",
        "--cwd",
        "/tmp",
        &id,
        "--",
        "id -u; pwd",
    ]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "0\n/tmp\n");
    ok(soulbox(h).args(["sandbox", "kill", &id]));
}

#[test]
fn errors_say_what_to_do() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let stderr = |o: Output| {
        assert!(!o.status.success());
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let e = stderr(run(soulbox(h).args([
        "exec",
        "nosuchsandbox",
        "--",
        "true",
    ])));
    assert!(
        e.contains("no sandbox 'nosuchsandbox'") && e.contains("soulbox sandbox list"),
        "{e}"
    );
    let e = stderr(run(soulbox(h)
        .args(["sandbox", "list"])
        .env("SOULBOX_API_KEY", "e2b_wrong")));
    assert!(
        e.contains("not authorized") && e.contains("SOULBOX_API_KEY"),
        "{e}"
    );
    let e = stderr(run(soulbox(h)
        .args(["sandbox", "list"])
        .env("SOULBOX_URL", "http://127.0.0.1:9")));
    assert!(
        e.contains("cannot reach SoulBox at http://127.0.0.1:9") && e.contains("soulbox serve"),
        "{e}"
    );
    let e = stderr(run(soulbox(h)
        .args(["sandbox", "list"])
        .env_remove("SOULBOX_API_KEY")));
    assert!(
        e.contains("no API key") && e.contains("soulbox keys create"),
        "{e}"
    );
    let e = stderr(run(soulbox(h).args(["files", "cp", "a", "b"])));
    assert!(e.contains("ID:/path"), "{e}");
    let e = stderr(run(soulbox(h)
        .args(["connect", "x"])
        .stdin(std::process::Stdio::null())));
    assert!(e.contains("no sandbox 'x'"), "{e}");
    let id = create(h);
    let e = stderr(run(soulbox(h)
        .args(["connect", &id])
        .stdin(std::process::Stdio::null())));
    assert!(
        e.contains("needs a terminal") && e.contains("soulbox exec"),
        "{e}"
    );
    ok(soulbox(h).args(["sandbox", "kill", &id]));
}

#[test]
fn a_config_file_and_completions() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    std::fs::create_dir_all(h.join(".config/soulbox")).unwrap();
    std::fs::write(
        h.join(".config/soulbox/config.toml"),
        format!(
            "url = \"http://{}\"\napi_key = \"{}\"\n",
            common::serve(),
            common::KEY
        ),
    )
    .unwrap();
    let mut c = soulbox(h);
    c.env_remove("SOULBOX_URL").env_remove("SOULBOX_API_KEY");
    ok(c.args(["sandbox", "list", "--json"]));
    // Flags win over the file.
    let out = run(soulbox(h).env_remove("SOULBOX_URL").args([
        "sandbox",
        "list",
        "--url",
        "http://127.0.0.1:9",
    ]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("127.0.0.1:9"));
    let bad = h.join("bad.toml");
    std::fs::write(&bad, "url = [").unwrap();
    let out = run(soulbox(h).args(["sandbox", "list", "--config"]).arg(&bad));
    assert!(String::from_utf8_lossy(&out.stderr).contains("parsing the config file"));
    let bash = ok(soulbox(h).args(["completions", "bash"]));
    assert!(bash.contains("_soulbox") && bash.contains("connect"));
}

/// A deterministic pseudo-random file of `len` bytes.
fn write_random(path: &Path, len: usize, seed: u64) {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x = seed | 1;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for b in buf.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let n = left.min(buf.len());
        f.write_all(&buf[..n]).unwrap();
        left -= n;
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    use std::io::Read;
    let (mut fa, mut fb) = (
        std::fs::File::open(a).unwrap(),
        std::fs::File::open(b).unwrap(),
    );
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let na = fa.read(&mut ba).unwrap();
        let mut nb = 0;
        while nb < na {
            let n = fb.read(&mut bb[nb..na]).unwrap();
            if n == 0 {
                return false;
            }
            nb += n;
        }
        if ba[..na] != bb[..na] {
            return false;
        }
        if na == 0 {
            return fb.read(&mut bb).unwrap() == 0;
        }
    }
}

/// Largest resident set of any child waited for so far, in KiB.
fn children_max_rss_kib() -> i64 {
    // SAFETY: getrusage fills the struct we pass and nothing else.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru);
        ru.ru_maxrss
    }
}

#[test]
fn files_cp_200_mib_and_a_tree_byte_for_byte() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let id = create(h);
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.bin");
    write_random(&big, 200 << 20, 42);
    ok(soulbox(h)
        .args(["files", "cp"])
        .arg(&big)
        .arg(format!("{id}:/home/user/")));
    let ls = ok(soulbox(h).args(["files", "ls", &id, "/home/user"]));
    assert!(
        ls.contains("209715200") && ls.contains("/home/user/big.bin"),
        "{ls}"
    );
    let back = dir.path().join("back.bin");
    ok(soulbox(h)
        .args(["files", "cp", &format!("{id}:/home/user/big.bin")])
        .arg(&back));
    assert!(
        same_file(&big, &back),
        "200 MiB differ after the round trip"
    );
    // Streamed: no CLI process came near holding the file in memory.
    let rss = children_max_rss_kib();
    assert!(rss < 100 * 1024, "a CLI process reached {rss} KiB resident");

    // A tree: nested and empty directories, empty and binary files, odd names.
    let tree = dir.path().join("tree");
    for d in ["a/b/c", "empty", "with space/ünïcode"] {
        std::fs::create_dir_all(tree.join(d)).unwrap();
    }
    std::fs::write(tree.join("zero"), b"").unwrap();
    std::fs::write(tree.join("a/one.txt"), b"one\n").unwrap();
    write_random(&tree.join("a/b/c/r.bin"), 3 << 20, 7);
    std::fs::write(tree.join("with space/ünïcode/f i l e"), b"odd").unwrap();
    let out = run(soulbox(h)
        .args(["files", "cp"])
        .arg(&tree)
        .arg(format!("{id}:/home/user/t")));
    assert!(String::from_utf8_lossy(&out.stderr).contains("use -r"));
    ok(soulbox(h)
        .args(["files", "cp", "-r"])
        .arg(&tree)
        .arg(format!("{id}:/home/user/")));
    let down = dir.path().join("down");
    std::fs::create_dir(&down).unwrap();
    ok(soulbox(h)
        .args(["files", "cp", "-r", &format!("{id}:/home/user/tree")])
        .arg(&down));
    let listing = |root: &Path| -> Vec<(PathBuf, bool)> {
        let mut v: Vec<_> = walkdir_list(root);
        v.sort();
        v
    };
    assert_eq!(listing(&tree), listing(&down.join("tree")));
    for (rel, is_dir) in listing(&tree) {
        if !is_dir {
            assert!(
                same_file(&tree.join(&rel), &down.join("tree").join(&rel)),
                "{rel:?}"
            );
        }
    }
    assert_eq!(
        ok(soulbox(h).args(["files", "cat", &id, "/home/user/tree/a/one.txt"])),
        "one\n"
    );
    ok(soulbox(h).args(["files", "mkdir", &id, "/home/user/made/deep"]));
    ok(soulbox(h).args(["files", "rm", &id, "/home/user/tree"]));
    let ls = ok(soulbox(h).args(["files", "ls", &id, "/home/user", "--json"]));
    let names: Vec<String> = serde_json::from_str::<serde_json::Value>(&ls)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect();
    assert!(
        names.contains(&"made".to_string()) && !names.contains(&"tree".to_string()),
        "{names:?}"
    );
    ok(soulbox(h).args(["sandbox", "kill", &id]));
}

/// Every path under `root` (relative) and whether it is a directory.
fn walkdir_list(root: &Path) -> Vec<(PathBuf, bool)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let is_dir = e.file_type().unwrap().is_dir();
            out.push((e.path().strip_prefix(root).unwrap().to_path_buf(), is_dir));
            if is_dir {
                stack.push(e.path());
            }
        }
    }
    out
}

/// A tmux server of the test's own (its own socket), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new() -> Tmux {
        Tmux {
            socket: format!("soulbox-test-{}", std::process::id()),
        }
    }
    fn cmd(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux runs (apt-get install tmux)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
    fn screen(&self, session: &str) -> String {
        self.cmd(&["capture-pane", "-p", "-t", session])
    }
    fn wait_for(&self, session: &str, needle: &str) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen(session);
            if s.contains(needle) {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "waiting for {needle:?} on {session}:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    fn keys(&self, session: &str, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", session];
        args.extend_from_slice(keys);
        self.cmd(&args);
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.cmd(&["kill-server"]);
    }
}

#[test]
fn connect_is_an_interactive_terminal() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let id = create(h);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let tmux = Tmux::new();
    let bin = env!("CARGO_BIN_EXE_soulbox");
    let url = format!("http://{}", common::serve());
    for s in ["one", "two"] {
        // The session records the terminal's settings before and after, and the exit code.
        let script = format!(
            "export SOULBOX_URL={url} SOULBOX_API_KEY={key}; stty -g > {d}/{s}.before; \
             {bin} connect {id}; echo $? > {d}/{s}.rc; stty -g > {d}/{s}.tmp && mv {d}/{s}.tmp {d}/{s}.after; sleep 60",
            key = common::KEY
        );
        tmux.cmd(&[
            "new-session",
            "-d",
            "-s",
            s,
            "-x",
            "100",
            "-y",
            "30",
            &script,
        ]);
    }
    for s in ["one", "two"] {
        tmux.wait_for(s, ":~$");
        tmux.keys(s, &["echo hello-$((6*7)) $TERM; stty size", "Enter"]);
        tmux.wait_for(s, "hello-42");
        tmux.wait_for(s, "30 100");
    }
    // Two terminals on one sandbox at once, each its own PTY.
    tmux.keys("one", &["echo from-one > /tmp/shared; tty", "Enter"]);
    tmux.wait_for("one", "/dev/pts/");
    tmux.keys("two", &["cat /tmp/shared; tty", "Enter"]);
    let two = tmux.wait_for("two", "from-one");
    let tty = |screen: &str| {
        screen
            .lines()
            .rfind(|l| l.starts_with("/dev/pts/"))
            .map(str::to_string)
    };
    let one = tmux.screen("one");
    tmux.wait_for("two", "/dev/pts/");
    assert_ne!(tty(&one), tty(&tmux.screen("two")), "{one}\n{two}");

    // Window resizes follow.
    tmux.cmd(&["resize-window", "-t", "one", "-x", "120", "-y", "40"]);
    std::thread::sleep(Duration::from_millis(300));
    tmux.keys("one", &["stty size", "Enter"]);
    tmux.wait_for("one", "40 120");

    // Ctrl-C reaches the sandbox's foreground job, not the CLI.
    tmux.keys("one", &["sleep 100", "Enter"]);
    std::thread::sleep(Duration::from_millis(300));
    tmux.keys("one", &["C-c"]);
    tmux.keys("one", &["echo still-$((1+1))", "Enter"]);
    tmux.wait_for("one", "still-2");

    // `exit 5` ends one, Ctrl-D the other; the terminal is as it was.
    tmux.keys("one", &["exit 5", "Enter"]);
    tmux.keys("two", &["C-d"]);
    for (s, code) in [("one", "5"), ("two", "0")] {
        let rc = dir.path().join(format!("{s}.rc"));
        let start = Instant::now();
        while !dir.path().join(format!("{s}.after")).exists() {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "{s} did not end:\n{}",
                tmux.screen(s)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(std::fs::read_to_string(rc).unwrap().trim(), code);
        let before = std::fs::read_to_string(dir.path().join(format!("{s}.before"))).unwrap();
        let after = std::fs::read_to_string(dir.path().join(format!("{s}.after"))).unwrap();
        assert_eq!(before, after, "the terminal settings of {s} were restored");
    }
    ok(soulbox(h).args(["sandbox", "kill", &id]));
}

#[test]
fn sandbox_network_sets_and_clears_the_policy_and_names_what_is_wrong() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let id = create(h);
    let info = || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (status, body) = rt.block_on(common::http(
            common::serve(),
            "GET",
            &format!("/sandboxes/{id}"),
            &[("X-API-KEY", common::KEY)],
            b"",
        ));
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    ok(soulbox(h).args([
        "sandbox",
        "network",
        &id,
        "--allow-out",
        "pypi.org",
        "--allow-out",
        "198.51.100.0/24",
        "--deny-all",
        "--dns",
        "198.51.100.53",
    ]));
    let n = &info()["network"];
    assert_eq!(
        n["allowOut"],
        serde_json::json!(["pypi.org", "198.51.100.0/24"])
    );
    assert_eq!(n["denyOut"], serde_json::json!(["0.0.0.0/0", "::/0"]));
    assert_eq!(n["dnsServers"], serde_json::json!(["198.51.100.53"]));
    let out = run(soulbox(h).args(["sandbox", "network", &id, "--allow-out", "10.0.0.0/33"]));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("10.0.0.0/33"),
        "{out:?}"
    );
    // The failed update changed nothing; an empty one clears the policy.
    assert_eq!(info()["network"]["allowOut"][0], "pypi.org");
    ok(soulbox(h).args(["sandbox", "network", &id]));
    assert_eq!(info()["network"], serde_json::json!({}));
    ok(soulbox(h).args(["sandbox", "kill", &id]));
}
