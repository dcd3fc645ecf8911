//! Attaching an image file to a free loop device with autoclear, so the device goes away by
//! itself when its last mount does.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// `struct loop_info64` (linux/loop.h).
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` (linux/loop.h).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// A newly added loop device's node is made by devtmpfs shortly after GET_FREE returns.
fn open_when_present(path: &Path) -> io::Result<File> {
    for _ in 0..200 {
        match OpenOptions::new().read(true).write(true).open(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                std::thread::sleep(std::time::Duration::from_millis(1))
            }
            other => return other,
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} did not appear", path.display()),
    ))
}

/// Attaches `image` and returns the loop device's path and open handle. The handle must stay
/// open until the device is mounted: autoclear triggers on the last close otherwise.
pub fn attach(image: &Path) -> io::Result<(PathBuf, File)> {
    let backing = OpenOptions::new().read(true).write(true).open(image)?;
    let ctl = File::open("/dev/loop-control")?;
    // Concurrent launchers are all offered the same free device; the losers get EBUSY and
    // ask again, after a short, pid-dependent pause so they do not keep colliding.
    for attempt in 0..1000u64 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
        let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let dev = open_when_present(&path)?;
        // SAFETY: an all-zero loop_config is a valid value; fields are set below.
        let mut cfg: LoopConfig = unsafe { std::mem::zeroed() };
        cfg.fd = backing.as_raw_fd() as u32;
        cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR;
        // SAFETY: LOOP_CONFIGURE reads one loop_config from a live reference.
        let rc = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, &cfg) };
        if rc == 0 {
            return Ok((path, dev));
        }
        let err = io::Error::last_os_error();
        // Another process took this device between GET_FREE and CONFIGURE: try the next.
        if err.raw_os_error() != Some(libc::EBUSY) {
            return Err(err);
        }
        let jitter = (u64::from(std::process::id()) * 7919 + attempt * 104_729) % 400;
        std::thread::sleep(std::time::Duration::from_micros(50 + jitter));
    }
    Err(io::Error::other("no free loop device"))
}
