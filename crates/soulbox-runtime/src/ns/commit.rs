//! Committing a sandbox: its processes are stopped and its writable layer is copied out as a
//! store layer (a template build step, later a snapshot). The ext4 image is mounted again,
//! read-only, in a mount namespace of a thread of its own, so no host mount is ever left
//! behind, even by a crash.

use super::{io_err, NsBackend};
use crate::jail::loopdev;
use crate::{Result, RuntimeError};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long the kernel may take to release the sandbox's mounts after its last process.
const DETACH_TIMEOUT: Duration = Duration::from_secs(20);

impl NsBackend {
    /// Stops sandbox `id`, writes its writable layer's files into `dest` (an empty directory)
    /// owned by natural ids, and removes the sandbox. Blocking. Needs an ext4 writable layer.
    pub fn commit_blocking(&self, id: &str, dest: &Path) -> Result<()> {
        let entry = self
            .sandboxes
            .lock()
            .ok()
            .and_then(|mut s| s.remove(id))
            .ok_or_else(|| RuntimeError::NotFound(id.to_string()))?;
        self.stop_processes(id, Some(entry.info.pid));
        let image = self.sandbox_dir(id).join(super::UPPER_IMAGE);
        let result = match entry.ids {
            _ if !image.exists() => Err(RuntimeError::InvalidSpec(
                "only a sandbox with an ext4 writable layer can be committed".into(),
            )),
            None => Err(RuntimeError::InvalidSpec(
                "the sandbox has no id range".into(),
            )),
            Some(base) => wait_detached(&image)
                .and_then(|()| export(&image, &self.sandbox_dir(id).join("export"), dest, base)),
        };
        self.release(id, entry.slot, entry.ids);
        result
    }
}

impl NsBackend {
    /// Copies sandbox `id`'s writable layer into `dest` (an empty directory, natural ids)
    /// while it goes on: a running sandbox is frozen for as long as it takes to sync its
    /// writes and copy its image (sparsely), then thawed; a paused one is read as it lies.
    /// With `memory` (and CRIU), its processes are checkpointed there too, in the same
    /// freeze: files and memory of one instant. Returns whether they were; a checkpoint that
    /// fails leaves a snapshot of the files. Blocking. Needs an ext4 writable layer.
    pub fn snapshot_blocking(&self, id: &str, dest: &Path, memory: Option<&Path>) -> Result<bool> {
        let running = self.get_info(id).is_some();
        let base = match self.state_of(id) {
            Some(s) if running || self.is_paused_on_disk(id) => s.id_base,
            _ => return Err(RuntimeError::NotFound(id.to_string())),
        };
        let dir = self.sandbox_dir(id);
        let image = dir.join(super::UPPER_IMAGE);
        if !image.exists() {
            return Err(RuntimeError::InvalidSpec(
                "only a sandbox with an ext4 writable layer can be snapshotted".into(),
            ));
        }
        let copy = dir.join("snapshot.img");
        let criu = self.cfg.criu.as_ref().filter(|_| running);
        let (pid, state) = (self.get_info(id).map(|i| i.pid), self.state_of(id));
        let mut saved = false;
        let copied = if running {
            // The agent drops the host's connections while it still runs; then nothing of the
            // sandbox runs until the copy (and the checkpoint) are made.
            let memory = match (memory, criu, pid) {
                (Some(m), Some(c), Some(p)) => match super::checkpoint::drop_host_connections(p) {
                    Ok(()) => Some((m, c, p)),
                    Err(e) => {
                        tracing::warn!(sandbox_id = id, "snapshot of the files only: {e}");
                        None
                    }
                },
                _ => None,
            };
            self.cgroups.set_frozen(id, true)?;
            // Every write of the frozen processes, through the loop device, into the image.
            nix::unistd::sync();
            let r = crate::fs_util::sparse_copy(&image, &copy).map_err(io_err(&copy));
            if let (Ok(()), Some((images, criu, pid)), Some(state)) = (&r, memory, &state) {
                let frozen_cgroup = self.cgroups.freezer_dir(id);
                let after = super::checkpoint::After::RunOn {
                    frozen_cgroup: &frozen_cgroup,
                };
                match super::checkpoint::dump(criu, pid, state, images, after) {
                    Ok(_) => saved = true,
                    Err(e) => tracing::warn!(sandbox_id = id, "snapshot of the files only: {e}"),
                }
            }
            if let Err(e) = self.cgroups.set_frozen(id, false) {
                tracing::error!(sandbox_id = id, "thawing after a snapshot: {e}");
            }
            r
        } else {
            crate::fs_util::sparse_copy(&image, &copy).map_err(io_err(&copy))
        };
        let out = copied.and_then(|()| export(&copy, &dir.join("export"), dest, base));
        let _ = std::fs::remove_file(&copy);
        out.map(|()| saved)
    }
}

/// Waits until no loop device is backed by `image` any more: the sandbox's ext4 mount is then
/// gone and every write it had cached is on the image.
pub(super) fn wait_detached(image: &Path) -> Result<()> {
    let image = std::fs::canonicalize(image).map_err(io_err(image))?;
    let start = Instant::now();
    while attached(&image) {
        if start.elapsed() > DETACH_TIMEOUT {
            return Err(RuntimeError::Launch(format!(
                "{} is still mounted {DETACH_TIMEOUT:?} after its sandbox stopped",
                image.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

fn attached(image: &Path) -> bool {
    let Ok(rd) = std::fs::read_dir("/sys/block") else {
        return false;
    };
    rd.flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("loop"))
        .filter_map(|e| std::fs::read_to_string(e.path().join("loop/backing_file")).ok())
        .any(|b| Path::new(b.trim_end()) == image)
}

/// Mounts `image` read-only at `mnt` in a private mount namespace (a thread's own) and copies
/// its `upper/` into `dest`.
fn export(image: &Path, mnt: &Path, dest: &Path, base: u32) -> Result<()> {
    let dest = dest.to_path_buf();
    with_image_mounted(image, mnt, move |m| {
        crate::layer::export::copy_shifted(&m.join("upper"), &dest, base).map_err(io_err(&dest))
    })
}

/// Runs `f` on the ext4 image `image` mounted read-only at `mnt`, in a private mount namespace
/// of a thread of its own: the mount is never seen by the host and goes with the thread.
pub(super) fn with_image_mounted<T: Send + 'static>(
    image: &Path,
    mnt: &Path,
    f: impl FnOnce(&Path) -> Result<T> + Send + 'static,
) -> Result<T> {
    std::fs::create_dir_all(mnt).map_err(io_err(mnt))?;
    let (image, mnt): (PathBuf, PathBuf) = (image.into(), mnt.into());
    std::thread::spawn(move || -> Result<T> {
        let fail = |what: &str, e: nix::Error| RuntimeError::Launch(format!("{what}: {e}"));
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_FS | nix::sched::CloneFlags::CLONE_NEWNS)
            .map_err(|e| fail("unshare", e))?;
        // Nothing mounted here may propagate back to the host.
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(|e| fail("making the mounts private", e))?;
        let (dev, _hold) = loopdev::attach(&image).map_err(io_err(&image))?;
        mount(
            Some(&dev),
            &mnt,
            Some("ext4"),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        )
        .map_err(|e| fail("mounting the writable layer", e))?;
        let out = f(&mnt);
        let _ = umount2(&mnt, MntFlags::MNT_DETACH);
        out
    })
    .join()
    .map_err(|_| RuntimeError::Launch("the thread reading the writable layer panicked".into()))?
}
