//! File helpers the create path needs.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;

/// Copies only the data extents of a sparse file, keeping its holes (a blank ext4 image is
/// a few MiB of data in gigabytes of holes).
pub fn sparse_copy(src: &Path, dst: &Path) -> io::Result<()> {
    use nix::unistd::{lseek, Whence};
    let from = File::open(src)?;
    let len = from.metadata()?.len();
    let to = File::create(dst)?;
    to.set_len(len)?;
    let mut pos = 0i64;
    while (pos as u64) < len {
        let data = match lseek(from.as_fd(), pos, Whence::SeekData) {
            Ok(d) => d,
            Err(nix::errno::Errno::ENXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let hole = lseek(from.as_fd(), data, Whence::SeekHole)?;
        let mut off_in = data;
        let mut off_out = data;
        let mut left = (hole - data) as usize;
        while left > 0 {
            let n = nix::fcntl::copy_file_range(
                from.as_fd(),
                Some(&mut off_in),
                to.as_fd(),
                Some(&mut off_out),
                left,
            )?;
            if n == 0 {
                break;
            }
            left -= n;
        }
        pos = hole;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn keeps_data_and_holes() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        let mut f = File::create(&a).unwrap();
        f.write_all(b"start").unwrap();
        f.seek(SeekFrom::Start(64 << 20)).unwrap();
        f.write_all(b"end").unwrap();
        drop(f);
        sparse_copy(&a, &b).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        assert!(
            std::fs::metadata(&b).unwrap().blocks() < 1024,
            "the copy is not sparse"
        );
    }
}
