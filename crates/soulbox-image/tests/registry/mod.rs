//! A real registry on loopback (Debian's `docker-registry`, the CNCF distribution server) and
//! images built without Docker (`umoci` writes OCI layouts, `skopeo` pushes them). The
//! tools are installed by `scripts/test.sh`; a missing one fails the test with that advice.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOOLS: &str = "apt-get install -y docker-registry skopeo umoci apache2-utils busybox-static \
                     (scripts/test.sh does)";

pub fn run(cmd: &str, args: &[&str]) -> String {
    String::from_utf8_lossy(&run_bytes(cmd, args)).into_owned()
}

pub fn run_bytes(cmd: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e}; {TOOLS}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

pub struct Registry {
    /// `127.0.0.1:PORT`
    pub host: String,
    pub dir: tempfile::TempDir,
    child: Child,
}

pub const USER: &str = "puller";
pub const PASSWORD: &str = "s3cret-pass";

impl Registry {
    /// A registry on a free loopback port; with `auth`, it wants [`USER`] / [`PASSWORD`].
    pub fn start(auth: bool) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: {host}\n",
            dir.path().join("data").display()
        );
        if auth {
            let line = run("htpasswd", &["-Bbn", USER, PASSWORD]);
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, line.trim()).unwrap();
            config += &format!(
                "auth:\n  htpasswd:\n    realm: soulbox-test\n    path: {}\n",
                htpasswd.display()
            );
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("access.log")).unwrap();
        let errors = std::fs::File::create(dir.path().join("error.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(errors)
            .spawn()
            .unwrap_or_else(|e| panic!("starting docker-registry: {e}; {TOOLS}"));
        let reg = Registry { host, dir, child };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&reg.host).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on {}: {}",
                reg.host,
                std::fs::read_to_string(reg.dir.path().join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        reg
    }

    /// Pushes `src` (a skopeo source such as `oci:/layout:tag`) as `name:tag` here.
    pub fn push(&self, src: &str, name_tag: &str, extra: &[&str]) {
        let dest = format!("docker://{}/{name_tag}", self.host);
        let mut args = vec!["copy", "--quiet", "--dest-tls-verify=false"];
        let creds = format!("{USER}:{PASSWORD}");
        if self.wants_auth() {
            args.extend(["--dest-creds", &creds]);
        }
        args.extend(extra);
        args.extend([src, &dest]);
        run("skopeo", &args);
    }

    fn wants_auth(&self) -> bool {
        self.dir.path().join("htpasswd").exists()
    }

    /// The manifest of `name_tag` as the registry holds it (an index stays an index).
    pub fn manifest(&self, name_tag: &str) -> serde_json::Value {
        let creds = format!("{USER}:{PASSWORD}");
        let mut args = vec!["inspect", "--raw", "--tls-verify=false"];
        if self.wants_auth() {
            args.extend(["--creds", &creds]);
        }
        let r = format!("docker://{}/{name_tag}", self.host);
        args.push(&r);
        serde_json::from_str(&run("skopeo", &args)).unwrap()
    }

    /// The manifest digest of `name_tag`, as skopeo computes it.
    pub fn digest(&self, name_tag: &str) -> String {
        let creds = format!("{USER}:{PASSWORD}");
        let mut args = vec!["inspect", "--format", "{{.Digest}}", "--tls-verify=false"];
        if self.wants_auth() {
            args.extend(["--creds", &creds]);
        }
        let r = format!("docker://{}/{name_tag}", self.host);
        args.push(&r);
        run("skopeo", &args).trim().to_string()
    }

    /// How many times a blob was fetched (GET, any repository), from the access log.
    pub fn blob_gets(&self, digest: &str) -> usize {
        let log = std::fs::read_to_string(self.dir.path().join("access.log")).unwrap();
        let needle = format!("/blobs/{digest} ");
        log.lines()
            .filter(|l| l.contains("\"GET ") && l.contains(&needle))
            .count()
    }

    /// Where the registry keeps a blob's bytes.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An OCI image layout built with umoci.
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    pub fn new(parent: &Path) -> Layout {
        let dir = parent.join("layout");
        run("umoci", &["init", "--layout", dir.to_str().unwrap()]);
        Layout { dir }
    }

    pub fn image(&self, tag: &str) -> String {
        format!("{}:{tag}", self.dir.display())
    }

    /// A skopeo source for a tag.
    pub fn src(&self, tag: &str) -> String {
        format!("oci:{}", self.image(tag))
    }

    pub fn new_image(&self, tag: &str) {
        run("umoci", &["new", "--image", &self.image(tag)]);
    }

    /// A layer on `tag` (written to `to`, or `tag` itself) with `source`'s contents at `target`.
    pub fn insert(&self, tag: &str, to: &str, source: &Path, target: &str, opaque: bool) {
        let image = self.image(tag);
        let mut args = vec!["insert", "--image", &image, "--tag", to];
        if opaque {
            args.push("--opaque");
        }
        args.extend([source.to_str().unwrap(), target]);
        run("umoci", &args);
    }

    pub fn whiteout(&self, tag: &str, to: &str, target: &str) {
        let image = self.image(tag);
        run(
            "umoci",
            &[
                "insert",
                "--image",
                &image,
                "--tag",
                to,
                "--whiteout",
                target,
            ],
        );
    }

    pub fn config(&self, tag: &str, args: &[&str]) {
        let image = self.image(tag);
        let mut all = vec!["config", "--image", &image];
        all.extend(args);
        run("umoci", &all);
    }

    /// The layout's entry for a tag: (digest, size).
    pub fn manifest_of(&self, tag: &str) -> (String, u64) {
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.dir.join("index.json")).unwrap()).unwrap();
        let m = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .unwrap_or_else(|| panic!("no tag {tag} in the layout"));
        (
            m["digest"].as_str().unwrap().to_string(),
            m["size"].as_u64().unwrap(),
        )
    }

    fn blob(&self, digest: &str) -> PathBuf {
        self.dir
            .join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").unwrap())
    }

    fn add_blob(&self, bytes: &[u8]) -> String {
        let digest = sha256(bytes);
        std::fs::write(self.blob(&digest), bytes).unwrap();
        digest
    }

    fn tag_manifest(&self, tag: &str, media_type: &str, digest: &str, size: usize) {
        let path = self.dir.join("index.json");
        let mut index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        index["manifests"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "mediaType": media_type, "digest": digest, "size": size,
                "annotations": {"org.opencontainers.image.ref.name": tag}
            }));
        std::fs::write(&path, serde_json::to_vec(&index).unwrap()).unwrap();
    }

    /// Tags as `to` a copy of `tag` whose gzip layers are stored uncompressed (umoci 0.4 and
    /// skopeo 1.9 only write compressed ones).
    pub fn uncompressed(&self, tag: &str, to: &str) {
        let (digest, _) = self.manifest_of(tag);
        let mut m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.blob(&digest)).unwrap()).unwrap();
        for l in m["layers"].as_array_mut().unwrap() {
            let gz = self.blob(l["digest"].as_str().unwrap());
            let tar = run_bytes("gzip", &["-dc", gz.to_str().unwrap()]);
            l["digest"] = self.add_blob(&tar).into();
            l["size"] = tar.len().into();
            l["mediaType"] = "application/vnd.oci.image.layer.v1.tar".into();
        }
        let raw = serde_json::to_vec(&m).unwrap();
        let digest = self.add_blob(&raw);
        self.tag_manifest(
            to,
            "application/vnd.oci.image.manifest.v1+json",
            &digest,
            raw.len(),
        );
    }

    /// Writes an image index over `tags` (each `(tag, architecture)`) and tags it `tag`.
    pub fn index(&self, tag: &str, entries: &[(&str, &str)]) {
        let manifests: Vec<serde_json::Value> = entries
            .iter()
            .map(|(t, arch)| {
                let (digest, size) = self.manifest_of(t);
                serde_json::json!({
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": digest, "size": size,
                    "platform": {"architecture": arch, "os": "linux"}
                })
            })
            .collect();
        let blob = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        }))
        .unwrap();
        let digest = self.add_blob(&blob);
        self.tag_manifest(
            tag,
            "application/vnd.oci.image.index.v1+json",
            &digest,
            blob.len(),
        );
    }
}

pub fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(bytes);
    format!(
        "sha256:{}",
        h.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// A directory tree from `(path, contents)`; a path ending in `/` is a directory.
pub fn tree(dir: &Path, files: &[(&str, &str)]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for (p, body) in files {
        let at = dir.join(p);
        if p.ends_with('/') {
            std::fs::create_dir_all(&at).unwrap();
        } else {
            std::fs::create_dir_all(at.parent().unwrap()).unwrap();
            std::fs::write(&at, body).unwrap();
        }
    }
    dir.to_path_buf()
}

/// A loopback HTTP server that is not a registry: it answers every request with `status`
/// (`"404 Not Found"`) and a plain-text body. Runs until the test process ends.
pub fn canned(status: &'static str) -> String {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match c.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let body = "not a registry";
            let _ = write!(
                c,
                "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    host
}
