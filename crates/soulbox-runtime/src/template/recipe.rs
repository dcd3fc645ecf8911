//! The built-in templates, as recipes for mmdebstrap.

use sha2::{Digest, Sha256};

/// Bumped when the build procedure itself changes, so every template is rebuilt.
/// 2: layers keep natural ids (mounted id-mapped), no `/.soulbox` in the template.
const BUILDER_VERSION: u32 = 2;

/// IPython startup file of the code-interpreter template: chart data for matplotlib figures.
const CHART_FORMATTER: &str = include_str!("files/e2b_chart_formatter.py");

/// Jupyter kernelspec for Deno (the `deno` wheel puts the binary in /usr/local/bin), found by
/// every user's kernels. No colours in results, no update checks over the network; the module
/// cache is the kernel user's own (`$HOME/.cache/deno`).
const DENO_KERNELSPEC: &str = r#"{"argv": ["/usr/local/bin/deno", "jupyter", "--kernel", "--conn", "{connection_file}"], "display_name": "Deno", "language": "typescript", "env": {"NO_COLOR": "1", "DENO_NO_UPDATE_CHECK": "1"}}"#;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    pub name: &'static str,
    pub description: &'static str,
    pub suite: &'static str,
    /// Debian packages on top of the `minbase` variant.
    pub packages: &'static [&'static str],
    /// PyPI packages installed with pip.
    pub pip: &'static [&'static str],
}

const COMMON: &[&str] = &[
    "bash",
    "ca-certificates",
    "coreutils",
    "procps",
    "python3",
    "python3-pip",
    "python3-venv",
    "nodejs",
    "npm",
    "git",
    "curl",
    "less",
    "iproute2",
    "locales",
    "sudo",
];

pub const RECIPES: &[Recipe] = &[
    Recipe {
        name: "tiny",
        description: "minimal Debian with bash and python3, for tests",
        suite: "bookworm",
        packages: &["bash", "python3", "procps"],
        pip: &[],
    },
    Recipe {
        name: "base",
        description:
            "Debian with E2B's conventions: user `user`, bash, python3 + pip, node + npm, git, curl",
        suite: "bookworm",
        packages: COMMON,
        pip: &[],
    },
    Recipe {
        name: "code-interpreter",
        description:
            "base plus ipykernel, numpy, pandas, matplotlib, chart extraction, a bash kernel and Deno (JavaScript, TypeScript)",
        suite: "bookworm",
        packages: COMMON,
        pip: &[
            "ipykernel",
            "numpy",
            "pandas",
            "matplotlib",
            "e2b-charts",
            "bash_kernel",
            "deno",
        ],
    },
];

/// Template name aliases the E2B SDKs use by default.
pub fn resolve_alias(name: &str) -> &str {
    match name {
        "code-interpreter-v1" => "code-interpreter",
        other => other,
    }
}

pub fn find(name: &str) -> Option<&'static Recipe> {
    let name = resolve_alias(name);
    RECIPES.iter().find(|r| r.name == name)
}

impl Recipe {
    /// Content hash of everything that shapes the result; a change means a rebuild.
    pub fn hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(format!(
            "{BUILDER_VERSION}|{}|{}|{:?}|{:?}|{:?}",
            self.name,
            self.suite,
            self.packages,
            self.pip,
            self.hooks()
        ));
        h.finalize()
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Shell commands mmdebstrap runs as customize hooks (`$1` is the root directory).
    pub fn hooks(&self) -> Vec<String> {
        let mut v = vec![
            // E2B's conventions: user `user` (uid 1000) with home /home/user.
            r#"chroot "$1" useradd --create-home --uid 1000 --shell /bin/bash user"#.to_string(),
            // Trust the host's local CAs (a TLS-inspecting egress proxy, a private registry).
            r#"if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1 && [ -x "$1/usr/sbin/update-ca-certificates" ]; then cp /usr/local/share/ca-certificates/*.crt "$1/usr/local/share/ca-certificates/" && chroot "$1" update-ca-certificates >/dev/null; fi"#.to_string(),
            r#"rm -rf "$1/var/cache/apt/archives/"*.deb "$1/var/lib/apt/lists/"*"#.to_string(),
        ];
        if self.packages.contains(&"sudo") {
            // E2B's templates: `user` runs anything as root without a password.
            v.push(r#"echo 'user ALL=(ALL:ALL) NOPASSWD: ALL' > "$1/etc/sudoers.d/user" && chmod 0440 "$1/etc/sudoers.d/user""#.into());
        }
        if self.packages.contains(&"python3-pip") {
            // E2B's templates let `pip install` work as is (the SDK's `pip_install` runs it as
            // `user`): Debian's "externally managed" guard is lifted, packages go to ~/.local.
            v.push(
                r#"printf '[global]\nbreak-system-packages = true\n' > "$1/etc/pip.conf""#.into(),
            );
        }
        if self.packages.contains(&"locales") {
            v.push(r#"echo 'en_US.UTF-8 UTF-8' > "$1/etc/locale.gen" && chroot "$1" locale-gen >/dev/null"#.into());
        }
        if !self.pip.is_empty() {
            v.push(format!(
                r#"chroot "$1" env PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_ROOT_USER_ACTION=ignore pip3 install --no-cache-dir --break-system-packages --progress-bar off {}"#,
                self.pip.join(" ")
            ));
        }
        if self.pip.contains(&"bash_kernel") {
            v.push(r#"chroot "$1" python3 -m bash_kernel.install --sys-prefix >/dev/null"#.into());
        }
        if self.pip.contains(&"deno") {
            v.push(format!(
                "mkdir -p \"$1/usr/local/share/jupyter/kernels/deno\" && echo '{DENO_KERNELSPEC}' > \"$1/usr/local/share/jupyter/kernels/deno/kernel.json\""
            ));
        }
        if self.pip.contains(&"e2b-charts") {
            v.push(format!(
                "mkdir -p \"$1/home/user/.ipython/profile_default/startup\" && cat > \"$1/home/user/.ipython/profile_default/startup/00-e2b-charts.py\" <<'SOULBOX_EOF'\n{CHART_FORMATTER}SOULBOX_EOF\nchroot \"$1\" chown -R user:user /home/user/.ipython"
            ));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_stable_and_distinct() {
        let h: Vec<_> = RECIPES.iter().map(|r| r.hash()).collect();
        assert_eq!(h[0], RECIPES[0].hash());
        assert_ne!(h[1], h[2]);
        assert_eq!(
            find("code-interpreter-v1").map(|r| r.name),
            Some("code-interpreter")
        );
        assert!(find("nope").is_none());
    }

    #[test]
    fn the_deno_kernelspec_is_json_the_shell_hook_keeps_intact() {
        let spec: serde_json::Value = serde_json::from_str(DENO_KERNELSPEC).unwrap();
        assert_eq!(spec["argv"][0], "/usr/local/bin/deno");
        assert!(
            !DENO_KERNELSPEC.contains('\''),
            "the hook quotes it with ''"
        );
        let hooks = find("code-interpreter").unwrap().hooks();
        assert!(hooks.iter().any(|h| h.contains(DENO_KERNELSPEC)));
    }
}
