//! The built-in templates: root filesystems that SoulBox builds itself from Debian packages
//! (mmdebstrap; never a Docker daemon). Each is one layer of the layer store, found by its
//! recipe's hash; custom templates stack more layers on top of them.

pub mod recipe;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub use recipe::{Recipe, RECIPES};

use crate::layer::{LayerId, LayerStore};

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The template name is not one SoulBox knows.
    #[error("unknown template '{0}' (known: tiny, base, code-interpreter)")]
    Unknown(String),
    /// The template exists but has not been built yet.
    #[error("template '{0}' is not built yet: run `soulbox template build {0}`")]
    NotBuilt(String),
    #[error("building template '{name}' failed: {msg}")]
    Build { name: String, msg: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, TemplateError>;

/// A built template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub name: String,
    pub hash: String,
    /// Read-only layers, topmost first.
    pub layers: Vec<PathBuf>,
    /// The same layers' ids, bottom first.
    pub layer_ids: Vec<LayerId>,
}

/// Layers keep the ids their files were made with (0 = root); each sandbox mounts them
/// id-mapped into its own host id range.
#[derive(Debug, Clone)]
pub struct TemplateStore {
    /// Holds the build locks (and, from versions before the layer store, built templates).
    dir: PathBuf,
    layers: LayerStore,
}

impl TemplateStore {
    pub fn new(data_dir: &Path) -> Self {
        TemplateStore {
            dir: data_dir.join("templates"),
            layers: LayerStore::new(data_dir),
        }
    }

    pub fn layers(&self) -> &LayerStore {
        &self.layers
    }

    /// The layer a recipe builds.
    pub fn layer_id(r: &Recipe) -> LayerId {
        LayerId::derive(None, &format!("builtin {} {}", r.name, r.hash()))
    }

    /// The built template for `name` at its current recipe, if any.
    pub fn get(&self, name: &str) -> Result<Template> {
        let r = recipe::find(name).ok_or_else(|| TemplateError::Unknown(name.to_string()))?;
        let id = Self::layer_id(r);
        if !self.layers.exists(&id) {
            self.adopt_legacy(r);
        }
        if !self.layers.exists(&id) {
            return Err(TemplateError::NotBuilt(r.name.to_string()));
        }
        Ok(Template {
            name: r.name.into(),
            hash: r.hash(),
            layers: vec![self.layers.root(&id)],
            layer_ids: vec![id],
        })
    }

    /// A template built before the layer store (`templates/<name>/<hash>/rootfs`) becomes its
    /// layer, moved rather than built again.
    fn adopt_legacy(&self, r: &Recipe) {
        let old = self.dir.join(r.name).join(r.hash());
        if !old.join("complete").exists() {
            return;
        }
        let made_by = format!("mmdebstrap {} ({})", r.name, r.description);
        let moved = self
            .layers
            .create(&Self::layer_id(r), None, &made_by, false, |root| {
                std::fs::remove_dir(root)
                    .and_then(|()| std::fs::rename(old.join("rootfs"), root))
                    .map_err(|e| e.to_string())
            });
        match moved {
            Ok(_) => crate::layer::remove_tree(&old),
            Err(e) => tracing::warn!(template = r.name, "adopting the built template: {e}"),
        }
    }

    /// Every known template and whether its current recipe is built.
    pub fn list(&self) -> Vec<(&'static Recipe, bool)> {
        RECIPES
            .iter()
            .map(|r| (r, self.get(r.name).is_ok()))
            .collect()
    }

    /// Returns the template, building it first if needed. `progress` receives each line of the
    /// build's output.
    pub fn ensure(&self, name: &str, progress: &mut dyn FnMut(&str)) -> Result<Template> {
        match self.get(name) {
            Err(TemplateError::NotBuilt(_)) => {
                let _lock = self.build_lock(name)?;
                // Someone else may have built it while we waited for the lock.
                match self.get(name) {
                    Err(TemplateError::NotBuilt(_)) => self.build_locked(name, progress),
                    other => other,
                }
            }
            other => other,
        }
    }

    /// Builds (or rebuilds) a template.
    pub fn build(&self, name: &str, progress: &mut dyn FnMut(&str)) -> Result<Template> {
        let _lock = self.build_lock(name)?;
        self.build_locked(name, progress)
    }

    /// One build of a template at a time, across threads and processes: builds of the same
    /// template share a work directory.
    fn build_lock(&self, name: &str) -> Result<nix::fcntl::Flock<std::fs::File>> {
        let r = recipe::find(name).ok_or_else(|| TemplateError::Unknown(name.to_string()))?;
        let io = |source| TemplateError::Io {
            path: self.dir.clone(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(io)?;
        let f = std::fs::File::create(self.dir.join(format!(".{}.lock", r.name))).map_err(io)?;
        nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| io(std::io::Error::from(e)))
    }

    fn build_locked(&self, name: &str, progress: &mut dyn FnMut(&str)) -> Result<Template> {
        let r = recipe::find(name).ok_or_else(|| TemplateError::Unknown(name.to_string()))?;
        let made_by = format!("mmdebstrap {} ({})", r.name, r.description);
        self.layers
            .create(&Self::layer_id(r), None, &made_by, true, |rootfs| {
                let mut cmd = Command::new("mmdebstrap");
                cmd.arg("--variant=minbase")
                    .arg("--mode=root")
                    .arg("--format=directory");
                cmd.arg(format!("--include={}", r.packages.join(",")));
                for h in r.hooks() {
                    cmd.arg(format!("--customize-hook={h}"));
                }
                cmd.arg(r.suite).arg(rootfs);
                // The root filesystem's modes are what the sandbox's users see: build it
                // under the usual umask, whatever the private one of the process running it.
                use std::os::unix::process::CommandExt;
                // SAFETY: umask is async-signal-safe and touches only the child's own state.
                unsafe {
                    cmd.pre_exec(|| {
                        libc::umask(0o022);
                        Ok(())
                    });
                }
                run_streaming(cmd, progress)
                    .and_then(|()| finish_rootfs(rootfs).map_err(|e| e.to_string()))
            })
            .map_err(|e| TemplateError::Build {
                name: r.name.into(),
                msg: e.to_string(),
            })?;
        self.get(r.name)
    }
}

/// Runs a command, passing each output line (stdout and stderr) to `progress`.
fn run_streaming(
    mut cmd: Command,
    progress: &mut dyn FnMut(&str),
) -> std::result::Result<(), String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!("cannot run mmdebstrap ({e}); install it with `apt-get install mmdebstrap`")
        })?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let forward = |r: Box<dyn std::io::Read + Send>, tx: std::sync::mpsc::Sender<String>| {
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines().map_while(|l| l.ok()) {
                let _ = tx.send(line);
            }
        })
    };
    let mut readers = vec![];
    if let Some(out) = child.stdout.take() {
        readers.push(forward(Box::new(out), tx.clone()));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(forward(Box::new(err), tx.clone()));
    }
    drop(tx);
    let mut tail = std::collections::VecDeque::new();
    for line in rx {
        progress(&line);
        tail.push_back(line);
        if tail.len() > 20 {
            tail.pop_front();
        }
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!(
            "mmdebstrap exited with {status}; last output:\n{}",
            Vec::from(tail).join("\n")
        ));
    }
    Ok(())
}

/// Host-specific files.
fn finish_rootfs(rootfs: &Path) -> std::io::Result<()> {
    std::fs::write(
        rootfs.join("etc/resolv.conf"),
        std::fs::read("/etc/resolv.conf").unwrap_or_default(),
    )?;
    std::fs::write(rootfs.join("etc/hostname"), "sandbox\n")?;
    for f in ["etc/resolv.conf", "etc/hostname"] {
        std::fs::set_permissions(rootfs.join(f), std::fs::Permissions::from_mode(0o644))?;
    }
    Ok(())
}
