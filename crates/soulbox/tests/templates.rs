//! The default templates hold E2B's conventions. Builds them first if needed (minutes).

mod common;

use common::{backend, text};
use soulbox_runtime::agent_client::AgentClient;
use soulbox_runtime::{Backend, Limits, SandboxSpec};

async fn check(template: &str, script: &str) -> String {
    let b = backend();
    b.templates()
        .ensure(template, &mut |line| {
            if line.starts_with("I: ") {
                eprintln!("[{template}] {line}");
            }
        })
        .expect("template builds");
    let sb = b
        .create(SandboxSpec {
            template: template.into(),
            limits: Limits::default(),
            ..Default::default()
        })
        .await
        .unwrap();
    let out = AgentClient::connect(&sb.socket, None)
        .await
        .unwrap()
        .sh(script, None)
        .await;
    b.kill(&sb.id).await.unwrap();
    let out = out.unwrap();
    assert_eq!(
        out.exit_code,
        0,
        "{template}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

#[tokio::test]
async fn base_and_code_interpreter_follow_e2b_conventions() {
    let conventions = "id -un; id -u; echo $HOME; pwd; bash --version | head -1; python3 --version; pip --version >/dev/null; node --version; npm --version >/dev/null; git --version; curl --version | head -1; id root >/dev/null && echo root-ok";
    for t in ["base", "code-interpreter"] {
        let out = check(t, conventions).await;
        let l: Vec<_> = out.lines().collect();
        assert_eq!(
            &l[..4],
            &["user", "1000", "/home/user", "/home/user"],
            "{t}: {out}"
        );
        assert!(
            out.contains("GNU bash")
                && out.contains("Python 3")
                && out.contains("git version")
                && out.contains("curl "),
            "{t}: {out}"
        );
        assert!(out.trim_end().ends_with("root-ok"), "{t}: {out}");
    }
    let out = check(
        "code-interpreter",
        "python3 -c 'import ipykernel, numpy, pandas, matplotlib; print(\"imports-ok\")'; \
         jupyter kernelspec list | awk 'NR > 1 {print $1}' | sort | tr '\\n' ' '; echo; \
         cd /tmp && deno eval 'console.log(Deno.env.get(\"HOME\"))' && ls -d ~/.cache/deno",
    )
    .await;
    let l: Vec<_> = out.lines().collect();
    assert_eq!(l[0], "imports-ok", "{out}");
    // Python, bash and Deno (JavaScript, TypeScript) kernels, for every user.
    assert_eq!(l[1].trim(), "bash deno python3", "{out}");
    // Deno runs as `user`, its module cache in the user's own home.
    assert_eq!(&l[2..], &["/home/user", "/home/user/.cache/deno"], "{out}");
}

/// Issue 10 item 6: `sudo` works for `user` in `base`, as in E2B's templates, and the root it
/// reaches is the sandbox's, not the host's.
#[tokio::test]
async fn sudo_reaches_sandbox_root_only() {
    let out = check(
        "base",
        "sudo id -u; sudo echo hi; sudo -n true && echo nopasswd; \
         sudo cat /proc/self/uid_map; sudo mount -t tmpfs x /mnt 2>/dev/null || echo no-mount; \
         sudo sh -c 'echo 1 > /proc/sys/kernel/sysrq' 2>/dev/null || echo no-sysctl",
    )
    .await;
    let l: Vec<_> = out.lines().collect();
    assert_eq!(&l[..3], &["0", "hi", "nopasswd"], "{out}");
    let map: Vec<u64> = l[3]
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    assert_eq!(map.len(), 3, "{out}");
    assert!(
        map[1] >= u64::from(soulbox_runtime::ns::DEFAULT_ID_BASE),
        "sudo's root is host uid {}",
        map[1]
    );
    assert!(
        out.contains("no-mount") && out.contains("no-sysctl"),
        "{out}"
    );
}
