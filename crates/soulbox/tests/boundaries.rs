//! Every isolation boundary of a sandbox, each with a test that tries to cross it.
//! Run as root on a host where `soulbox doctor` passes.

mod common;

use common::{text, Sandbox};
use soulbox_runtime::{Backend, Limits};
use std::os::unix::fs::MetadataExt;

fn small() -> Limits {
    Limits {
        memory_bytes: 256 << 20,
        disk_bytes: 256 << 20,
        ..Limits::default()
    }
}

#[tokio::test]
async fn host_processes_are_invisible() {
    let sb = Sandbox::new(small(), false).await;
    let me = std::process::id();
    let out = sb.root(&format!("ls /proc | grep -E '^[0-9]+$' | wc -l; kill -0 {me} 2>&1; echo rc=$?; ps -e -o pid= | wc -l")).await;
    let s = text(&out.stdout);
    let lines: Vec<_> = s.lines().collect();
    let visible: usize = lines[0].trim().parse().unwrap();
    assert!(visible <= 6, "sandbox sees {visible} pids: {s}");
    assert!(s.contains("rc=1"), "host pid {me} is reachable: {s}");
    // Positive control: the sandbox's own init is pid 1 and visible.
    let out = sb.root("cat /proc/1/comm").await;
    assert_eq!(text(&out.stdout).trim(), "agent");
}

#[tokio::test]
async fn host_files_are_unreachable() {
    let secret = format!("/tmp/soulbox-secret-{}", std::process::id());
    std::fs::write(&secret, "host secret").unwrap();
    let sb = Sandbox::new(small(), false).await;
    let out = sb.root(&format!("cat {secret}; cat /proc/1/root{secret}; ls /var/lib/soulbox-test /work 2>&1; cat /proc/1/root/../../..{secret}")).await;
    let all = text(&out.stdout) + &text(&out.stderr);
    assert!(!all.contains("host secret"), "host file readable: {all}");
    // Path traversal through the agent's file API stays inside the root.
    let mut c = sb.client().await;
    let r = c
        .unary(
            "/filesystem.Filesystem/Stat",
            &serde_json::json!({"path": format!("../../../..{secret}")}),
            Some("root"),
        )
        .await;
    assert!(r.is_err(), "traversal reached the host file: {r:?}");
    std::fs::remove_file(&secret).unwrap();
}

#[tokio::test]
async fn template_layer_is_read_only_and_private() {
    let a = Sandbox::new(small(), false).await;
    let b = Sandbox::new(small(), false).await;
    let out = a.root("echo changed > /etc/os-release && echo new > /etc/soulbox-marker && cat /etc/os-release").await;
    assert_eq!(text(&out.stdout).trim(), "changed", "{out:?}");
    let template = a.backend.templates().get("tiny").unwrap();
    let layer = &template.layers[0];
    assert!(
        !layer.join("etc/soulbox-marker").exists(),
        "write reached the template layer"
    );
    assert_ne!(
        std::fs::read_to_string(layer.join("etc/os-release"))
            .unwrap()
            .trim(),
        "changed"
    );
    let out = b
        .root("cat /etc/soulbox-marker 2>&1; head -1 /etc/os-release")
        .await;
    assert!(
        text(&out.stdout).contains("No such file"),
        "another sandbox sees the write: {out:?}"
    );
    // No other path leads to the layer, and `user` cannot change root's files.
    let out = a
        .sh_as(
            Some("user"),
            "ls -d /proc/1/root/../l1 2>&1; touch /.soulbox/agent /etc/passwd 2>&1; echo rc=$?",
        )
        .await;
    assert!(text(&out.stdout).contains("rc=1"), "{out:?}");
}

#[tokio::test]
async fn sandbox_root_is_not_host_root() {
    let sb = Sandbox::new(small(), false).await;
    let out = sb
        .root("id -u; cat /proc/self/uid_map; touch /tmp/owned-by-root")
        .await;
    let s = text(&out.stdout);
    assert!(s.starts_with("0\n"), "{s}");
    // Sandbox root is an unprivileged host uid of the sandbox's own range.
    let host_uid = std::fs::metadata(format!("/proc/{}", sb.info.pid))
        .unwrap()
        .uid();
    assert!(
        host_uid >= soulbox_runtime::ns::DEFAULT_ID_BASE,
        "{host_uid}"
    );
    assert!(
        s.contains(&format!("0 {host_uid}      65536")),
        "uid map: {s}"
    );
    let md = std::fs::metadata(format!("/proc/{}/root/tmp/owned-by-root", sb.info.pid)).unwrap();
    assert_eq!(
        md.uid(),
        host_uid,
        "sandbox root's file belongs to host uid {}",
        md.uid()
    );
    // Root in the sandbox holds no capability over the host: it cannot load modules,
    // change the host's clock or mount.
    let out = sb.root("grep CapEff /proc/self/status; mount -t tmpfs x /mnt 2>&1; echo rc=$?; date -s 2000-01-01 2>&1; echo rc=$?").await;
    let s = text(&out.stdout);
    assert!(!s.contains("rc=0"), "{s}");
    assert!(!s.contains("CapEff:\t000001ff"), "full capabilities: {s}");
}

#[tokio::test]
async fn memory_limit_kills_only_inside() {
    let sb = Sandbox::new(
        Limits {
            memory_bytes: 64 << 20,
            ..small()
        },
        false,
    )
    .await;
    let out = sb
        .sh_as(None, "python3 -c 'x = bytearray(256 << 20); print(len(x))'")
        .await;
    assert_ne!(out.exit_code, 0, "256 MiB fit in a 64 MiB sandbox: {out:?}");
    assert!(out.status.contains("killed"), "not OOM-killed: {out:?}");
    let stats = sb.backend.stats(&sb.info.id).unwrap();
    assert!(stats.cgroup.oom_kills >= 1, "{stats:?}");
    assert!(stats.cgroup.memory_limit <= 64 << 20);
    // The agent survived and serves on.
    let out = sb.sh_as(None, "echo alive").await;
    assert_eq!(text(&out.stdout).trim(), "alive");
}

#[tokio::test]
async fn fork_bomb_is_held_by_the_pids_limit() {
    let sb = Sandbox::new(
        Limits {
            pids: 48,
            ..small()
        },
        false,
    )
    .await;
    let bomb = r#"python3 -c '
import os, time
ok = 0
for i in range(300):
    try:
        if os.fork() == 0:
            time.sleep(60); os._exit(0)
        ok += 1
    except OSError:
        pass
print(ok)'"#;
    let out = sb.sh_as(None, bomb).await;
    let forked: u64 = text(&out.stdout).trim().parse().unwrap_or(999);
    assert!(forked < 48, "{forked} forks succeeded under a limit of 48");
    let stats = sb.backend.stats(&sb.info.id).unwrap();
    assert!(stats.cgroup.pids <= 48, "{stats:?}");
    // The agent still answers (it holds its pids already).
    sb.root("pkill -f 'time.sleep' ; true").await;
    let out = sb.root("echo alive").await;
    assert_eq!(text(&out.stdout).trim(), "alive");
}

#[tokio::test]
async fn cpu_quota_is_enforced() {
    let sb = Sandbox::new(
        Limits {
            cpu_millis: 200,
            ..small()
        },
        false,
    )
    .await;
    let before = sb.backend.stats(&sb.info.id).unwrap().cgroup;
    // Two busy processes for one second of wall time each.
    sb.sh_as(None, "python3 -c 'import time\nt=time.time()\nwhile time.time()<t+1: pass' & python3 -c 'import time\nt=time.time()\nwhile time.time()<t+1: pass'; wait").await;
    let after = sb.backend.stats(&sb.info.id).unwrap().cgroup;
    let throttled = after.cpu_throttled_periods - before.cpu_throttled_periods;
    let used_ms = (after.cpu_usage_ns - before.cpu_usage_ns) / 1_000_000;
    assert!(throttled > 0, "never throttled: {after:?}");
    // Unthrottled, two busy loops would use ~2000 ms of CPU; 0.2 CPU allows ~200 ms a second.
    assert!(
        used_ms < 800,
        "used {used_ms} ms of CPU under a 0.2 CPU quota"
    );
}

#[tokio::test]
async fn disk_fills_up_at_the_limit() {
    let sb = Sandbox::new(
        Limits {
            disk_bytes: 128 << 20,
            ..small()
        },
        false,
    )
    .await;
    let out = sb
        .sh_as(
            None,
            "dd if=/dev/zero of=$HOME/big bs=1M count=400 2>&1; echo rc=$?; stat -c %s $HOME/big",
        )
        .await;
    let s = text(&out.stdout);
    assert!(s.contains("No space left"), "{s}");
    let size: u64 = s.lines().last().unwrap().trim().parse().unwrap();
    assert!(size <= 128 << 20, "wrote {size} bytes into a 128 MiB disk");
    let img = sb.backend.sandbox_dir(&sb.info.id).join("upper.img");
    if let Ok(md) = std::fs::metadata(&img) {
        assert!(
            md.blocks() * 512 <= 130 << 20,
            "image uses {} bytes on the host",
            md.blocks() * 512
        );
    }
    let st = sb.backend.stats(&sb.info.id).unwrap();
    assert!(
        st.disk_total <= 128 << 20 && st.disk_used > 100 << 20,
        "{st:?}"
    );
}

#[tokio::test]
async fn open_files_are_limited() {
    let sb = Sandbox::new(
        Limits {
            nofile: 256,
            ..small()
        },
        false,
    )
    .await;
    let out = sb
        .sh_as(
            None,
            "ulimit -n; python3 -c '
fs = []
try:
    for i in range(400): fs.append(open(\"/dev/null\"))
except OSError as e:
    print(\"stopped at\", len(fs), e.errno)'",
        )
        .await;
    let s = text(&out.stdout);
    assert!(s.starts_with("256\n"), "{s}");
    assert!(s.contains("stopped at") && s.contains(" 24"), "{s}");
}

#[tokio::test]
async fn proc_and_sys_are_masked_and_read_only() {
    let sb = Sandbox::new(small(), false).await;
    let out = sb.root("cat /proc/kcore 2>/dev/null | wc -c; cat /proc/keys | wc -c; echo x > /proc/sys/kernel/hostname 2>&1; echo rc=$?; echo 1 > /proc/sysrq-trigger 2>&1; echo rc=$?; touch /sys/x 2>&1; echo rc=$?; ls /sys/firmware | wc -l").await;
    let s = text(&out.stdout);
    let l: Vec<_> = s.lines().collect();
    assert_eq!(l[0].trim(), "0", "/proc/kcore is readable: {s}");
    assert_eq!(l[1].trim(), "0", "/proc/keys is readable: {s}");
    assert_eq!(s.matches("rc=1").count(), 3, "a write went through: {s}");
    assert_eq!(l.last().unwrap().trim(), "0");
}

#[tokio::test]
async fn seccomp_refuses_mount_unshare_and_keyctl() {
    let sb = Sandbox::new(small(), false).await;
    let probe = r#"python3 -c '
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
def t(name, r):
    print(name, r, ctypes.get_errno())
t("unshare_user", libc.unshare(0x10000000))
t("mount", libc.mount(b"none", b"/mnt", b"tmpfs", 0, None))
t("keyctl", libc.syscall(250, 0, 0, 0, 0, 0))
t("getpid", libc.syscall(39) > 0 and 0)
'; grep Seccomp: /proc/self/status"#;
    for user in ["user", "root"] {
        let out = sb.sh_as(Some(user), probe).await;
        let s = text(&out.stdout);
        for call in ["unshare_user", "mount", "keyctl"] {
            assert!(
                s.contains(&format!("{call} -1 1\n")),
                "{call} as {user} was not refused with EPERM: {s}"
            );
        }
        // Positive control: ordinary syscalls work.
        assert!(s.contains("getpid 0"), "{s}");
        assert!(s.contains("Seccomp:\t2"), "{s}");
    }
    let out = sb
        .sh_as(Some("user"), "unshare -U true 2>&1; echo rc=$?")
        .await;
    assert!(text(&out.stdout).contains("rc=1"), "{out:?}");
}

#[tokio::test]
async fn no_network_without_internet() {
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let host_ip = host_address();
    // Positive control: the listener is reachable from the host.
    assert!(std::net::TcpStream::connect((host_ip.as_str(), port)).is_ok());
    let sb = Sandbox::new(small(), false).await;
    let out = sb
        .sh_as(
            None,
            &format!(
                "python3 -c '
import socket
for addr in [(\"{host_ip}\", {port}), (\"10.231.0.1\", {port}), (\"127.0.0.1\", {port})]:
    s = socket.socket(); s.settimeout(1)
    try:
        s.connect(addr); print(\"reached\", addr)
    except OSError as e:
        print(\"blocked\", addr, e)'; cat /proc/net/dev | tail -n +3 | cut -d: -f1"
            ),
        )
        .await;
    let s = text(&out.stdout);
    assert!(!s.contains("reached"), "{s}");
    let ifaces: Vec<_> = s
        .lines()
        .filter(|l| !l.starts_with("blocked"))
        .map(|l| l.trim())
        .collect();
    assert_eq!(ifaces, vec!["lo"], "{s}");
}

/// The host's first non-loopback IPv4 address.
fn host_address() -> String {
    let out = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show", "scope", "global"])
        .output()
        .unwrap();
    let s = text(&out.stdout);
    s.lines()
        .find(|l| !l.contains(" sbx-") && !l.contains("soulbox"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|a| a.split('/').next())
        .unwrap_or("127.0.0.1")
        .to_string()
}

#[tokio::test]
async fn sandboxes_cannot_reach_each_other_or_the_host() {
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let a = Sandbox::new(small(), true).await;
    let b = Sandbox::new(small(), true).await;
    // A serves on 0.0.0.0:8000.
    let mut c = a.client().await;
    let start = serde_json::json!({"process": {"cmd": "/usr/bin/python3", "args": ["-m", "http.server", "8000"]}, "stdin": false});
    let _bg = tokio::spawn(async move {
        c.stream("/process.Process/Start", &start, Some("user"))
            .await
    });
    let a_ip = a.root("python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect((\"198.51.100.1\", 9)); print(s.getsockname()[0])'").await;
    let a_ip = text(&a_ip.stdout).trim().to_string();
    assert!(a_ip.starts_with("10.231."), "{a_ip}");
    let probe = |addr: String, p: u16| {
        format!(
            "python3 -c '
import socket, time
for i in range(50):
    s = socket.socket(); s.settimeout(1)
    try:
        s.connect((\"{addr}\", {p})); print(\"reached\"); break
    except ConnectionRefusedError:
        time.sleep(0.1)
    except OSError as e:
        print(\"blocked\", e); break'"
        )
    };
    let own = a.sh_as(None, &probe("127.0.0.1".into(), 8000)).await;
    assert!(
        text(&own.stdout).contains("reached"),
        "control failed: {own:?}"
    );
    let cross = b.sh_as(None, &probe(a_ip.clone(), 8000)).await;
    assert!(
        text(&cross.stdout).contains("blocked"),
        "sandbox B reached sandbox A: {cross:?}"
    );
    let gw = a_ip
        .rsplit_once('.')
        .map(|(n, h)| format!("{n}.{}", h.parse::<u8>().unwrap() - 1))
        .unwrap();
    for addr in [host_address(), gw] {
        let to_host = b.sh_as(None, &probe(addr.clone(), port)).await;
        assert!(
            text(&to_host.stdout).contains("blocked"),
            "sandbox reached host service at {addr}: {to_host:?}"
        );
    }
}

#[tokio::test]
async fn nat_reaches_a_namespace_playing_the_internet() {
    // A network namespace of our own plays "the internet": 198.51.100.1, behind a gateway
    // (203.0.113.1) on a network the host is connected to — a connected network itself is
    // the host's own and refused.
    let ns = format!("sbxtest-inet-{}", std::process::id() % 10000);
    let run = |args: &str| {
        let st = std::process::Command::new("sh")
            .arg("-c")
            .arg(args)
            .status()
            .unwrap();
        assert!(st.success(), "{args}");
    };
    run(&format!("ip netns add {ns} && ip link add sbxt-h type veth peer name sbxt-i netns {ns} && ip addr add 203.0.113.254/24 dev sbxt-h && ip link set sbxt-h up && ip -n {ns} addr add 203.0.113.1/24 dev sbxt-i && ip -n {ns} addr add 198.51.100.1/32 dev lo && ip -n {ns} link set sbxt-i up && ip -n {ns} link set lo up && ip -n {ns} route add default via 203.0.113.254 && ip route add 198.51.100.0/24 via 203.0.113.1 dev sbxt-h"));
    let mut server = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns,
            "python3",
            "-c",
            "
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('198.51.100.1', 8080)); s.listen(5)
for _ in range(5):
    c, peer = s.accept(); c.sendall(('peer ' + peer[0] + '\\n').encode()); c.close()",
        ])
        .spawn()
        .unwrap();
    let sb = Sandbox::new(small(), true).await;
    let out = sb.sh_as(None, "python3 -c '
import socket, time
for i in range(50):
    try:
        s = socket.create_connection((\"198.51.100.1\", 8080), timeout=2); print(s.recv(100).decode().strip()); break
    except ConnectionRefusedError:
        time.sleep(0.1)'").await;
    let _ = server.kill();
    let _ = server.wait();
    run(&format!("ip link delete sbxt-h; ip netns delete {ns}"));
    // The "internet" saw the host's address, not the sandbox's: NAT.
    assert_eq!(text(&out.stdout).trim(), "peer 203.0.113.254", "{out:?}");
}
