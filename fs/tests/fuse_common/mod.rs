//! Shared helpers of the FUSE tests: format an image through the library,
//! run the real `atomfs` binary on it, and always clean up the mount.
//!
//! The tests need root and /dev/fuse. Without them they print
//! `SKIPPED <test>: <reason>` and pass, unless `CI=true` or
//! `ATOMFS_REQUIRE_FUSE=1`, where a skip is a failure.
#![allow(dead_code)]

use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use atomfs::{Fs, MkfsOptions};
use blockdev::{FileMedia, FormatOptions, LogDevice};

/// The `atomfs` binary under test.
pub const ATOMFS: &str = env!("CARGO_BIN_EXE_atomfs");

/// FUSE_SUPER_MAGIC, the `f_type` of every FUSE mount.
pub const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

/// True when FUSE tests can run here; otherwise prints the skip line (or
/// panics when a skip is not allowed).
pub fn fuse_available(test: &str) -> bool {
    let reason = if unsafe { libc::geteuid() } != 0 {
        Some("not root")
    } else if !Path::new("/dev/fuse").exists() {
        Some("no /dev/fuse")
    } else {
        None
    };
    let Some(reason) = reason else { return true };
    let required = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
        || std::env::var("ATOMFS_REQUIRE_FUSE").is_ok_and(|v| v == "1");
    if required {
        panic!("FUSE test {test} cannot run ({reason}) but CI/ATOMFS_REQUIRE_FUSE requires it");
    }
    eprintln!("SKIPPED {test}: {reason}");
    false
}

/// A scratch directory with an image path and a mount point.
pub struct Scratch {
    pub dir: tempfile::TempDir,
    pub image: PathBuf,
    pub mnt: PathBuf,
}

impl Scratch {
    pub fn new() -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix("atomfs-fuse-")
            .tempdir()
            .unwrap();
        let image = dir.path().join("image");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        Scratch { dir, image, mnt }
    }

    /// Another mount point in the same scratch directory.
    pub fn extra_mnt(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }
}

/// Creates `path` as a `size`-byte image holding a fresh atomfs, through
/// the library (block layer format + `Fs::mkfs`), with a world-writable
/// root so unprivileged callers can create files.
pub fn make_image(path: &Path, size: u64) {
    blockdev::create_image(path, size, true).unwrap();
    let media = FileMedia::open(path).unwrap();
    let dev = LogDevice::format(
        media,
        &FormatOptions {
            segment_size_bytes: 1 << 20,
            ..FormatOptions::default()
        },
    )
    .unwrap();
    Fs::mkfs(
        &dev,
        &MkfsOptions {
            label: "fuse-test".into(),
            root_mode: Some(0o777),
            ..MkfsOptions::default()
        },
    )
    .unwrap();
    dev.close().unwrap();
}

/// The fstype of the mount at `mnt` (from /proc/self/mountinfo), if any.
pub fn mount_type(mnt: &Path) -> Option<(String, String)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let want = mnt.to_str().unwrap();
    info.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let sep = f.iter().position(|&x| x == "-")?;
        (f[4] == want).then(|| (f[sep + 1].to_string(), f[sep + 2].to_string()))
    })
}

pub fn is_mounted(mnt: &Path) -> bool {
    mount_type(mnt).is_some()
}

/// `statfs(2)` of `path`.
pub fn statfs(path: &Path) -> libc::statfs {
    let c = CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    assert_eq!(
        unsafe { libc::statfs(c.as_ptr(), &mut st) },
        0,
        "statfs {path:?}"
    );
    st
}

/// Waits until nothing holds the image (the daemon closed it): takes and
/// drops the same exclusive `flock` FileMedia takes.
pub fn wait_released(image: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let f = File::open(image).unwrap();
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{image:?} still held after 20 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Unmounts `mnt` (plain umount, retried while busy).
pub fn umount(mnt: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = Command::new("umount").arg(mnt).output().unwrap();
        if out.status.success() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "umount {mnt:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A mount made by a test. Dropping it (also during a panic) detaches the
/// mount lazily and kills a foreground daemon still running, so a failed
/// test never leaves a mount behind.
pub struct Mounted {
    pub mnt: PathBuf,
    pub image: PathBuf,
    /// The foreground daemon (None for a daemonized mount).
    pub child: Option<Child>,
}

impl Mounted {
    /// Unmounts and waits for the daemon to exit and release the image.
    /// Returns the foreground daemon's exit status and stderr.
    pub fn unmount(mut self) -> Option<(ExitStatus, String)> {
        umount(&self.mnt);
        let res = self.child.take().map(wait_child);
        wait_released(&self.image);
        res
    }

    /// The foreground daemon's pid.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("foreground mount").id() as i32
    }

    /// Waits for the foreground daemon to exit on its own (after a signal).
    pub fn wait(mut self) -> (ExitStatus, String) {
        let res = wait_child(self.child.take().expect("foreground mount"));
        wait_released(&self.image);
        res
    }
}

/// Waits (at most 30 s) for a daemon child; its status and stderr.
pub fn wait_child(mut child: Child) -> (ExitStatus, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("atomfs daemon did not exit within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    (status, err)
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if is_mounted(&self.mnt) {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.wait();
        }
    }
}

/// Mounts in the foreground (`-f`) and waits until the mount appears.
pub fn mount_fg(image: &Path, mnt: &Path, opts: &str) -> Mounted {
    let mut cmd = Command::new(ATOMFS);
    cmd.arg(image).arg(mnt).arg("-f");
    if !opts.is_empty() {
        cmd.arg("-o").arg(opts);
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut m = Mounted {
        mnt: mnt.to_path_buf(),
        image: image.to_path_buf(),
        child: Some(child),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !is_mounted(mnt) {
        if let Some(status) = m.child.as_mut().unwrap().try_wait().unwrap() {
            let (_, err) = wait_child(m.child.take().unwrap());
            panic!("atomfs -f exited with {status} before mounting: {err}");
        }
        assert!(Instant::now() < deadline, "no mount at {mnt:?} after 20 s");
        std::thread::sleep(Duration::from_millis(10));
    }
    m
}

/// Runs the daemonizing `atomfs IMAGE MNT -o opts` and returns its output
/// (the parent's exit is the mount's readiness).
pub fn run_atomfs(image: &Path, mnt: &Path, opts: &str) -> Output {
    let mut cmd = Command::new(ATOMFS);
    cmd.arg(image).arg(mnt);
    if !opts.is_empty() {
        cmd.arg("-o").arg(opts);
    }
    cmd.stdin(Stdio::null()).output().unwrap()
}

/// A daemonized mount; panics with the error line if it fails.
pub fn mount_bg(image: &Path, mnt: &Path, opts: &str) -> Mounted {
    let out = run_atomfs(image, mnt, opts);
    let m = Mounted {
        mnt: mnt.to_path_buf(),
        image: image.to_path_buf(),
        child: None,
    };
    assert!(
        out.status.success(),
        "atomfs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    m
}

/// The errno of the last failed libc call.
pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap()
}

pub fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}
