//! Raises the kernel's readahead for this mount above FUSE's 128 KiB.
//!
//! Why: a cold sequential read through FUSE arrives as one READ per
//! readahead window. With the kernel's default of 128 KiB that is a FUSE
//! round trip and a device read per 128 KiB, and the daemon sits idle
//! between them (measured: 4,101 READs and 4,112 `pread`s for 512 MiB).
//! A larger window lets the kernel send 1 MiB READs (`max_pages` follows
//! `max_write`) and keep more of them in flight.
//!
//! The kernel caps the window at what INIT negotiated (at most its own
//! 128 KiB default), so the only way up is the mount's backing-device
//! setting, `/sys/class/bdi/MAJOR:MINOR/read_ahead_kb`, written after INIT
//! has been answered. A thread waits for that by `stat`ing the mount point
//! (the kernel holds every request until INIT is done), then writes it.
//! Only root may write it; otherwise, or if anything fails, the kernel's
//! default stays and the mount works as before (logged at debug level).

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// Readahead window for atomfs mounts, KiB.
pub const READAHEAD_KIB: u32 = 4096;

/// Sets the mount's readahead to `kib` once the session has answered INIT;
/// returns at once (the work happens in a short-lived thread).
pub fn raise_after_init(mountpoint: PathBuf, kib: u32) {
    let spawned = std::thread::Builder::new()
        .name("atomfs-readahead".into())
        .spawn(move || match set(&mountpoint, kib) {
            Ok(path) => log::debug!("atomfs: {path}: readahead {kib} KiB"),
            Err(e) => log::debug!(
                "atomfs: {}: readahead left at the kernel's default: {e}",
                mountpoint.display()
            ),
        });
    if let Err(e) = spawned {
        log::debug!("atomfs: readahead thread not started: {e}");
    }
}

fn set(mountpoint: &std::path::Path, kib: u32) -> std::io::Result<String> {
    use nix::sys::statfs::{statfs, FUSE_SUPER_MAGIC};
    // Answered only after INIT. If the session already ended, the path is
    // the directory underneath, whose device (a real disk) must not be
    // touched: go on only for a FUSE mount, whose st_dev is an anonymous
    // device (major 0) naming the connection's backing device.
    if statfs(mountpoint)?.filesystem_type() != FUSE_SUPER_MAGIC {
        return Err(std::io::Error::other("not a FUSE mount (any more)"));
    }
    let dev = std::fs::metadata(mountpoint)?.dev();
    if libc::major(dev) != 0 {
        return Err(std::io::Error::other("not an anonymous (FUSE) device"));
    }
    let path = format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        libc::major(dev),
        libc::minor(dev)
    );
    std::fs::write(&path, format!("{kib}\n"))?;
    Ok(path)
}
