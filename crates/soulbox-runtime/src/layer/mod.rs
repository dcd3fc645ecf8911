//! The layer store: every root filesystem a sandbox starts from — built-in templates, custom
//! templates' build steps, pulled image layers, and (later) snapshots and pauses — is a stack
//! of read-only layers kept here once, in `<data>/layers/<id>/`:
//!
//! - `root/`: the files, in overlayfs's own format (a whiteout is a 0/0 character device, an
//!   opaque directory carries `trusted.overlay.opaque=y`), owned by their natural ids (0 =
//!   root); sandboxes mount them id-mapped into their own id range;
//! - `meta.json`: what made it, its parent, its size;
//! - `complete`: written last. A directory without it is an interrupted write, removed.
//!
//! A layer's id is a content address of *how it was made*: the hash of its parent's id and
//! its step (a COPY by the hash of its files, an image layer by its digest), so the same step
//! on the same parent is found again instead of being made twice, by any template.

pub mod export;
pub mod unpack;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

pub use crate::fs_util::remove_tree;

/// A layer's id: 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LayerId(String);

impl LayerId {
    /// The id of the layer `step` makes on top of `parent`.
    pub fn derive(parent: Option<&LayerId>, step: &str) -> LayerId {
        let mut h = Sha256::new();
        h.update(parent.map(|p| p.0.as_str()).unwrap_or("").as_bytes());
        h.update([0]);
        h.update(step.as_bytes());
        LayerId(hex(&h.finalize()))
    }

    /// Parses an id read from the store or a database; anything but 64 hex digits is refused,
    /// so an id can never name a path outside the store.
    pub fn parse(s: &str) -> Option<LayerId> {
        (s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| LayerId(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 digits, for logs.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }
}

impl std::fmt::Display for LayerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the store records of a layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerMeta {
    pub parent: Option<LayerId>,
    /// The step that made it, as a person reads it (`RUN pip install x`, `FROM debian`).
    pub made_by: String,
    /// Bytes of its files (apparent sizes).
    pub size_bytes: u64,
    pub created_unix_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("layer {0} is not in the store")]
    Missing(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Fill(String),
}

pub type Result<T> = std::result::Result<T, LayerError>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LayerError + '_ {
    move |source| LayerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone)]
pub struct LayerStore {
    dir: PathBuf,
}

impl LayerStore {
    pub fn new(data_dir: &Path) -> Self {
        LayerStore {
            dir: data_dir.join("layers"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The files of a layer (whether or not it is complete).
    pub fn root(&self, id: &LayerId) -> PathBuf {
        self.dir.join(id.as_str()).join("root")
    }

    pub fn exists(&self, id: &LayerId) -> bool {
        self.dir.join(id.as_str()).join("complete").exists()
    }

    pub fn meta(&self, id: &LayerId) -> Result<LayerMeta> {
        let p = self.dir.join(id.as_str()).join("meta.json");
        let raw = std::fs::read(&p).map_err(|_| LayerError::Missing(id.to_string()))?;
        serde_json::from_slice(&raw).map_err(|e| LayerError::Fill(format!("{}: {e}", p.display())))
    }

    /// The roots of a stack given bottom first, topmost first (overlayfs's `lowerdir` order);
    /// fails if any layer is missing.
    pub fn stack(&self, bottom_first: &[LayerId]) -> Result<Vec<PathBuf>> {
        bottom_first
            .iter()
            .rev()
            .map(|id| {
                if self.exists(id) {
                    Ok(self.root(id))
                } else {
                    Err(LayerError::Missing(id.to_string()))
                }
            })
            .collect()
    }

    /// Makes layer `id` unless it exists: `fill` writes its files into the directory it is
    /// given. Writers of the same id take turns (the second finds it made); a failed or
    /// interrupted fill leaves nothing behind. `force` replaces an existing layer.
    pub fn create(
        &self,
        id: &LayerId,
        parent: Option<&LayerId>,
        made_by: &str,
        force: bool,
        fill: impl FnOnce(&Path) -> std::result::Result<(), String>,
    ) -> Result<LayerMeta> {
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let _lock = self.lock(id)?;
        let final_dir = self.dir.join(id.as_str());
        if self.exists(id) && !force {
            return self.meta(id);
        }
        let work = self
            .dir
            .join(format!(".new-{}-{}", id.short(), std::process::id()));
        remove_tree(&work);
        std::fs::create_dir_all(work.join("root")).map_err(io(&work))?;
        // Layer roots are what the sandbox's users see as `/`.
        set_mode(&work.join("root"), 0o755).map_err(io(&work))?;
        if let Err(e) = fill(&work.join("root")) {
            remove_tree(&work);
            return Err(LayerError::Fill(e));
        }
        let meta = LayerMeta {
            parent: parent.cloned(),
            made_by: made_by.to_string(),
            size_bytes: tree_size(&work.join("root")),
            created_unix_ms: now_ms(),
        };
        let write = || -> std::io::Result<()> {
            std::fs::write(work.join("meta.json"), serde_json::to_vec_pretty(&meta)?)?;
            std::fs::write(work.join("complete"), id.as_str())?;
            if final_dir.exists() {
                let old = self
                    .dir
                    .join(format!(".old-{}-{}", id.short(), std::process::id()));
                std::fs::rename(&final_dir, &old)?;
                remove_tree(&old);
            }
            std::fs::rename(&work, &final_dir)
        };
        if let Err(e) = write() {
            remove_tree(&work);
            return Err(io(&final_dir)(e));
        }
        Ok(meta)
    }

    /// Every complete layer.
    pub fn list(&self) -> Vec<(LayerId, LayerMeta)> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return vec![];
        };
        let mut v: Vec<_> = rd
            .flatten()
            .filter_map(|e| LayerId::parse(&e.file_name().to_string_lossy()))
            .filter(|id| self.exists(id))
            .filter_map(|id| self.meta(&id).ok().map(|m| (id, m)))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Removes every layer not in `keep` (and interrupted writes); returns the bytes freed.
    /// The caller holds whatever keeps new references from appearing meanwhile.
    pub fn collect_garbage(&self, keep: &HashSet<LayerId>) -> u64 {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        self.remove_interrupted();
        let mut freed = 0;
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(id) = LayerId::parse(&name) else {
                continue;
            };
            if keep.contains(&id) {
                continue;
            }
            let Ok(_lock) = self.lock(&id) else { continue };
            freed += self.meta(&id).map(|m| m.size_bytes).unwrap_or(0);
            tracing::info!(layer = id.short(), "removing an unused layer");
            remove_tree(&e.path());
        }
        freed
    }

    /// Removes what writers that died (a crash, a kill mid-build) left half-made.
    pub fn remove_interrupted(&self) {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if (name.starts_with(".new-") || name.starts_with(".old-")) && !self.writer_alive(&name)
            {
                tracing::info!(entry = %name, "removing a half-made layer");
                remove_tree(&e.path());
            }
        }
    }

    /// An interrupted write's directory names its writer's pid.
    fn writer_alive(&self, name: &str) -> bool {
        name.rsplit('-')
            .next()
            .and_then(|p| p.parse::<i32>().ok())
            .is_some_and(|pid| {
                pid != std::process::id() as i32
                    && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
            })
    }

    fn lock(&self, id: &LayerId) -> Result<nix::fcntl::Flock<std::fs::File>> {
        let p = self.dir.join(format!(".{}.lock", id.short()));
        let f = std::fs::File::create(&p).map_err(io(&p))?;
        nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| io(&p)(std::io::Error::from(e)))
    }
}

fn set_mode(p: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Apparent size of the regular files under `root`, not following links or leaving its
/// file system.
pub fn tree_size(root: &Path) -> u64 {
    walkdir::WalkDir::new(root)
        .follow_links(false)
        .same_file_system(true)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_chain_and_parse() {
        let a = LayerId::derive(None, "FROM x");
        let b = LayerId::derive(Some(&a), "RUN y");
        assert_ne!(a, b);
        assert_eq!(b, LayerId::derive(Some(&a), "RUN y"));
        assert_ne!(b, LayerId::derive(None, "RUN y"));
        assert_eq!(LayerId::parse(a.as_str()), Some(a));
        assert_eq!(LayerId::parse("../../etc"), None);
        assert_eq!(LayerId::parse(&"A".repeat(64)), None);
    }

    #[test]
    fn create_is_atomic_cached_and_collected() {
        let d = tempfile::tempdir().unwrap();
        let s = LayerStore::new(d.path());
        let id = LayerId::derive(None, "one");
        let err = s.create(&id, None, "one", false, |root| {
            std::fs::write(root.join("half"), "x").unwrap();
            Err("step failed".into())
        });
        assert!(matches!(err, Err(LayerError::Fill(m)) if m == "step failed"));
        assert!(!s.exists(&id));
        assert_eq!(
            std::fs::read_dir(s.dir())
                .unwrap()
                .flatten()
                .filter(|e| !e.file_name().to_string_lossy().ends_with(".lock"))
                .count(),
            0
        );

        let m = s
            .create(&id, None, "one", false, |root| {
                std::fs::write(root.join("f"), "12345").map_err(|e| e.to_string())
            })
            .unwrap();
        assert_eq!(m.size_bytes, 5);
        let mut called = false;
        s.create(&id, None, "one", false, |_| {
            called = true;
            Ok(())
        })
        .unwrap();
        assert!(!called, "an existing layer is not made again");
        let other = LayerId::derive(Some(&id), "two");
        s.create(&other, Some(&id), "two", false, |_| Ok(()))
            .unwrap();
        assert_eq!(
            s.stack(&[id.clone(), other.clone()]).unwrap()[0],
            s.root(&other)
        );
        assert_eq!(s.list().len(), 2);
        let freed = s.collect_garbage(&HashSet::from([other.clone()]));
        assert_eq!(freed, 5);
        assert!(!s.exists(&id) && s.exists(&other));
        assert!(matches!(s.stack(&[id]), Err(LayerError::Missing(_))));
    }
}
