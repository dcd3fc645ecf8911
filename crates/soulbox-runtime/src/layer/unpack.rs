//! Unpacking a tar archive (plain, gzip or zstd, told apart by their magic bytes) into a
//! layer: an uploaded COPY context or an image's layer. Hostile archives are refused, not
//! trimmed: an entry that names a path outside the layer (`..`, absolute after
//! normalisation unless `rooted_names` reads `/x` as the layer's `x`, or through a
//! symlink), more bytes or entries than allowed (a tar bomb), or
//! a device node fails the whole unpack with a message that says which entry.

use std::io::{self, BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

#[derive(Debug, Clone)]
pub struct UnpackOptions {
    /// Most bytes of file content, after decompression.
    pub max_bytes: u64,
    pub max_entries: u64,
    /// OCI whiteouts (`.wh.NAME`, `.wh..wh..opq`) become overlayfs's (0/0 devices, opaque
    /// directories); off, such names are ordinary files.
    pub whiteouts: bool,
    /// Owner of every entry instead of the archive's (a COPY's `user`); `None` keeps the
    /// archive's ids (an image layer's).
    pub owner: Option<(u32, u32)>,
    /// Mode of every file instead of the archive's (a COPY's `mode`).
    pub mode: Option<u32>,
    /// A leading `/` names the destination's root instead of being refused: image layers
    /// written by some tools (umoci, for one) name their entries `/etc/…`, and Docker and
    /// containerd read them so.
    pub rooted_names: bool,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        UnpackOptions {
            max_bytes: 16 << 30,
            max_entries: 2_000_000,
            whiteouts: false,
            owner: None,
            mode: None,
            rooted_names: false,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unpacked {
    pub entries: u64,
    pub bytes: u64,
}

/// Reads a compressed or plain tar stream, whichever it is.
pub fn decompressed<'a>(r: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
    let mut r = BufReader::new(r);
    let head = r.fill_buf()?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(r))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(r)?)
    } else {
        Box::new(r)
    })
}

/// A relative path with no `..`, `.` or root: what an entry may name inside a layer.
pub fn clean_relative(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::RootDir | Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// An entry's name (or hard link target) as a clean relative path, if it is one.
fn clean_entry_path(p: &Path, opts: &UnpackOptions) -> Option<PathBuf> {
    match p.strip_prefix("/") {
        Ok(rest) if opts.rooted_names => clean_relative(rest),
        _ => clean_relative(p),
    }
}

/// Checks an archive as [`unpack`] would (names, sizes, entry count, devices) without
/// writing anything.
pub fn check(archive: impl Read, opts: &UnpackOptions) -> Result<Unpacked, String> {
    unpack(archive, Path::new("/nonexistent"), opts, &|_, _| None)
}

/// Unpacks `archive` into `dest`. `place` maps an entry's (clean, relative) path and whether
/// it is a directory to where it goes under `dest` (relative), or `None` to skip it.
pub fn unpack(
    archive: impl Read,
    dest: &Path,
    opts: &UnpackOptions,
    place: &dyn Fn(&Path, bool) -> Option<PathBuf>,
) -> Result<Unpacked, String> {
    let reader = decompressed(archive).map_err(|e| format!("reading the archive: {e}"))?;
    let consumed = std::rc::Rc::new(std::cell::Cell::new(0u64));
    let mut ar = tar::Archive::new(Counted {
        inner: reader,
        n: consumed.clone(),
    });
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(opts.owner.is_none());
    ar.set_preserve_mtime(true);
    ar.set_unpack_xattrs(true);
    ar.set_overwrite(true);
    let mut done = Unpacked::default();
    let entries = ar
        .entries()
        .map_err(|e| format!("reading the archive: {e}"))?;
    // Where the last entry's data ended: an archive that stops right there, without the
    // padding of that last block or the end-of-archive blocks, is complete all the same (Go's
    // archive/tar, and so Docker and containerd, read it so; umoci 0.4 writes such layers).
    let mut data_end = 0u64;
    for entry in entries {
        let mut entry = match entry {
            Ok(e) => e,
            Err(_) if done.entries > 0 && consumed.get() == data_end => break,
            Err(e) => return Err(format!("reading the archive: {e}")),
        };
        data_end = entry.raw_file_position() + entry.header().entry_size().unwrap_or(0);
        done.entries += 1;
        if done.entries > opts.max_entries {
            return Err(format!(
                "the archive has more than {} entries",
                opts.max_entries
            ));
        }
        let raw = entry
            .path()
            .map_err(|e| format!("an entry's name is unreadable: {e}"))?
            .into_owned();
        let Some(rel) = clean_entry_path(&raw, opts) else {
            return Err(format!(
                "entry '{}' points outside the destination",
                raw.display()
            ));
        };
        let kind = entry.header().entry_type();
        if kind.is_block_special() || kind.is_character_special() {
            return Err(format!(
                "entry '{}' is a device node; archives may not carry devices",
                raw.display()
            ));
        }
        if kind.is_hard_link() {
            let target = entry
                .link_name()
                .ok()
                .flatten()
                .and_then(|t| clean_entry_path(&t, opts));
            if target.is_none() {
                return Err(format!(
                    "hard link '{}' points outside the destination",
                    raw.display()
                ));
            }
        }
        done.bytes += entry.size();
        if done.bytes > opts.max_bytes {
            return Err(format!(
                "the archive unpacks to more than {} bytes",
                opts.max_bytes
            ));
        }
        let Some(to) = place(&rel, kind.is_dir()) else {
            continue;
        };
        let Some(to) = clean_relative(&to) else {
            return Err(format!(
                "entry '{}' is placed outside the destination",
                raw.display()
            ));
        };
        if opts.whiteouts {
            if let Some(name) = to.file_name().and_then(|n| n.to_str()) {
                let parent = dest.join(to.parent().unwrap_or(Path::new("")));
                if name == ".wh..wh..opq" {
                    std::fs::create_dir_all(&parent).map_err(|e| e.to_string())?;
                    xattr::set(&parent, "trusted.overlay.opaque", b"y")
                        .map_err(|e| format!("marking {} opaque: {e}", parent.display()))?;
                    continue;
                }
                if let Some(hidden) = name.strip_prefix(".wh.") {
                    std::fs::create_dir_all(&parent).map_err(|e| e.to_string())?;
                    let at = parent.join(hidden);
                    crate::layer::remove_tree(&at);
                    nix::sys::stat::mknod(
                        &at,
                        nix::sys::stat::SFlag::S_IFCHR,
                        nix::sys::stat::Mode::empty(),
                        0,
                    )
                    .map_err(|e| format!("whiteout {}: {e}", at.display()))?;
                    continue;
                }
            }
        }
        if let Some(parent) = to.parent() {
            ensure_dirs_within(dest, parent)?;
        }
        let full = dest.join(&to);
        // An existing symlink where a directory entry goes would be followed: replace it.
        if kind.is_dir() {
            if let Ok(m) = std::fs::symlink_metadata(&full) {
                if !m.is_dir() {
                    let _ = std::fs::remove_file(&full);
                }
            }
        }
        entry
            .unpack(&full)
            .map_err(|e| format!("unpacking '{}': {e}", raw.display()))?;
        finish_entry(&full, kind.is_symlink(), opts)
            .map_err(|e| format!("unpacking '{}': {e}", raw.display()))?;
    }
    let mut rest = ar.into_inner();
    // Trailing bytes after the end-of-archive marker are ignored, but a stream cut short is
    // not a valid archive.
    let _ = io::copy(&mut (&mut rest).take(1 << 20), &mut io::sink());
    Ok(done)
}

/// A reader that counts what it has given.
struct Counted<R> {
    inner: R,
    n: std::rc::Rc<std::cell::Cell<u64>>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let got = self.inner.read(buf)?;
        self.n.set(self.n.get() + got as u64);
        Ok(got)
    }
}

/// Makes the directories of `rel` under `dest`, refusing to go through a symlink (which could
/// lead out of the layer).
fn ensure_dirs_within(dest: &Path, rel: &Path) -> Result<(), String> {
    let mut at = dest.to_path_buf();
    for c in rel.components() {
        at.push(c);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(format!(
                    "'{}' is not a directory (a symlink or file where a directory is needed)",
                    at.strip_prefix(dest).unwrap_or(&at).display()
                ))
            }
            Err(_) => std::fs::create_dir(&at).map_err(|e| format!("{}: {e}", at.display()))?,
        }
    }
    Ok(())
}

fn finish_entry(full: &Path, symlink: bool, opts: &UnpackOptions) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some((uid, gid)) = opts.owner {
        std::os::unix::fs::lchown(full, Some(uid), Some(gid))?;
    }
    if let (Some(mode), false) = (opts.mode, symlink) {
        std::fs::set_permissions(full, std::fs::Permissions::from_mode(mode & 0o7777))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            // set_path refuses `..`; write the raw name as a hostile archive would.
            let n = name.as_bytes();
            h.as_old_mut().name[..n.len()].copy_from_slice(n);
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn traversal_bombs_and_whiteouts() {
        let d = tempfile::tempdir().unwrap();
        let id = |p: &Path, _dir: bool| Some(p.to_path_buf());
        let err = unpack(
            &tar_of(&[("../evil", b"x")])[..],
            d.path(),
            &Default::default(),
            &id,
        );
        assert!(err.unwrap_err().contains("outside"));
        let opts = UnpackOptions {
            max_bytes: 4,
            ..Default::default()
        };
        let err = unpack(&tar_of(&[("big", b"12345")])[..], d.path(), &opts, &id);
        assert!(err.unwrap_err().contains("more than 4 bytes"));

        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &tar_of(&[("a/f", b"hi"), ("a/.wh.gone", b"")])).unwrap();
        let opts = UnpackOptions {
            whiteouts: true,
            ..Default::default()
        };
        let got = unpack(&gz.finish().unwrap()[..], d.path(), &opts, &id).unwrap();
        assert_eq!(got.entries, 2);
        assert_eq!(std::fs::read(d.path().join("a/f")).unwrap(), b"hi");
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let w = std::fs::symlink_metadata(d.path().join("a/gone")).unwrap();
        assert!(w.file_type().is_char_device() && w.rdev() == 0);

        // Cut right after the last entry's data (no padding, no end blocks): complete.
        let whole = tar_of(&[("c/1", b"one"), ("c/2", b"two")]);
        let cut = &whole[..512 * 3 + 3];
        let got = unpack(cut, d.path(), &Default::default(), &id).unwrap();
        assert_eq!(got.entries, 2);
        assert_eq!(std::fs::read(d.path().join("c/2")).unwrap(), b"two");
        // Cut inside the data, or inside the padding: truncated.
        for at in [512 * 3 + 2, 512 * 3 + 4] {
            let err = unpack(&whole[..at], d.path(), &Default::default(), &id);
            assert!(err.is_err(), "cut at {at} accepted");
        }

        let rooted = tar_of(&[("/b/f", b"rooted"), ("/../x", b"")]);
        let err = unpack(&rooted[..], d.path(), &Default::default(), &id);
        assert!(err.unwrap_err().contains("'/b/f' points outside"));
        let opts = UnpackOptions {
            rooted_names: true,
            ..Default::default()
        };
        let err = unpack(&rooted[..], d.path(), &opts, &id);
        assert!(err.unwrap_err().contains("'/../x' points outside"));
        assert_eq!(std::fs::read(d.path().join("b/f")).unwrap(), b"rooted");
    }
}
