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
//! 128 KiB default) when it processes the INIT reply, so the only way up is
//! the mount's backing-device setting,
//! `/sys/class/bdi/MAJOR:MINOR/read_ahead_kb`, written after that. Only
//! root may write it; otherwise, or if anything fails, the kernel's default
//! stays and the mount works as before (logged at debug level).
//!
//! The daemon must never make a request to its own mount (no `stat`,
//! `statfs`, `canonicalize` of the mount point): if it is killed while one
//! of its session threads holds such a request, the requesting thread waits
//! uninterruptibly for an answer nobody will send, the process never
//! finishes exiting, and the mount hangs (seen: `kill -9` right after the
//! mount left an unkillable zombie). So the device number comes from
//! `/proc/self/mountinfo`, and instead of waiting for INIT the thread
//! keeps the setting at `kib` for a few seconds, rewriting it whenever the
//! INIT reply has capped it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Readahead window for atomfs mounts, KiB.
pub const READAHEAD_KIB: u32 = 4096;

/// How long the setting is watched for INIT's cap after the mount.
const WATCH: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(10);

/// Sets the readahead of the FUSE mount at `mountpoint` (canonical,
/// resolved before the mount) to `kib`; returns at once (the work happens
/// in a short-lived thread).
pub fn raise_after_init(mountpoint: PathBuf, kib: u32) {
    let spawned = std::thread::Builder::new()
        .name("atomfs-readahead".into())
        .spawn(move || match keep(&mountpoint, kib) {
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

fn keep(mountpoint: &Path, kib: u32) -> std::io::Result<String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let (major, minor) = fuse_mount_dev(&mountinfo, mountpoint)
        .ok_or_else(|| std::io::Error::other("no FUSE mount there in /proc/self/mountinfo"))?;
    let path = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
    let want = kib.to_string();
    let deadline = Instant::now() + WATCH;
    while Instant::now() < deadline {
        if std::fs::read_to_string(&path)?.trim() != want {
            std::fs::write(&path, format!("{want}\n"))?;
        }
        std::thread::sleep(POLL);
    }
    Ok(path)
}

/// The device number of the newest FUSE mount on `mountpoint` in
/// `mountinfo` (fields: id, parent, major:minor, root, mount point, ...,
/// "-", fstype, ...; the mount point with octal escapes).
fn fuse_mount_dev(mountinfo: &str, mountpoint: &Path) -> Option<(u32, u32)> {
    let want = mountpoint.as_os_str().as_encoded_bytes();
    mountinfo.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let dash = fields.iter().position(|f| *f == "-")?;
        let fstype = fields.get(dash + 1)?;
        if *fstype != "fuse" && !fstype.starts_with("fuse.") {
            return None;
        }
        if unescape(fields.get(4)?) != want {
            return None;
        }
        let (major, minor) = fields.get(2)?.split_once(':')?;
        Some((major.parse().ok()?, minor.parse().ok()?))
    })
}

/// Undoes mountinfo's `\ooo` escapes (space, tab, newline, backslash).
fn unescape(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) if b[i] == b'\\' => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:51 / /mnt/a\\040b rw,nosuid,nodev,relatime shared:20 - fuse.atomfs atomfs rw,user_id=0
41 22 0:52 / /mnt/plain rw,relatime shared:21 - tmpfs tmpfs rw
42 40 0:53 / /mnt/a\\040b rw,relatime shared:22 - fuse atomfs rw,user_id=0
";

    #[test]
    fn finds_the_newest_fuse_mount_on_an_escaped_path() {
        assert_eq!(
            fuse_mount_dev(MOUNTINFO, Path::new("/mnt/a b")),
            Some((0, 53))
        );
    }

    #[test]
    fn ignores_other_file_systems_and_paths() {
        assert_eq!(fuse_mount_dev(MOUNTINFO, Path::new("/mnt/plain")), None);
        assert_eq!(fuse_mount_dev(MOUNTINFO, Path::new("/")), None);
        assert_eq!(fuse_mount_dev(MOUNTINFO, Path::new("/mnt/a")), None);
    }

    #[test]
    fn unescapes_octal_only() {
        assert_eq!(unescape(r"a\040b\134c\12"), b"a b\\c\\12");
    }
}
