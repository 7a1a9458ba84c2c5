//! The machinery under a benchmark run: image files, loop devices, their
//! kernel counters, mounts, external commands. Every resource is held by a
//! guard that releases it on drop, so an error or a panic never leaves a loop
//! device attached, a file system mounted or an image behind.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde::Serialize;

/// A failure with a message that names what was being done.
pub type Result<T> = std::result::Result<T, String>;

/// Adds context to an `io::Error`.
pub fn ctx<T>(r: io::Result<T>, what: impl FnOnce() -> String) -> Result<T> {
    r.map_err(|e| format!("{}: {e}", what()))
}

/// Runs a command to completion; an error carries its stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{shown}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{shown} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Finds an executable in `PATH` or the sbin directories (which a non-login
/// root shell may lack in `PATH`).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = ["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from);
    std::env::split_paths(&path)
        .chain(extra)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

/// True if `p` is a regular file with an execute bit.
pub fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// True if the process runs as root (loop devices and mounts need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Counters of a block device from `/sys/block/NAME/stat`, as bytes.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq, Eq)]
pub struct DiskStat {
    /// Field 3 × 512.
    pub read_bytes: u64,
    /// Field 5.
    pub write_ios: u64,
    /// Field 7 × 512: every byte the device was asked to write.
    pub write_bytes: u64,
    /// Field 14 × 512 (0 on kernels without discard accounting).
    pub discard_bytes: u64,
    /// Field 16 (0 on kernels without flush accounting).
    pub flush_ios: u64,
}

impl DiskStat {
    /// Parses the contents of a `stat` file (see Documentation/block/stat.rst).
    pub fn parse(text: &str) -> Result<DiskStat> {
        let f: Vec<u64> = text
            .split_whitespace()
            .map(|w| {
                w.parse::<u64>()
                    .map_err(|e| format!("bad stat field {w:?}: {e}"))
            })
            .collect::<Result<_>>()?;
        if f.len() < 7 {
            return Err(format!("stat has {} fields, expected at least 7", f.len()));
        }
        let get = |i: usize| f.get(i - 1).copied().unwrap_or(0);
        Ok(DiskStat {
            read_bytes: get(3) * 512,
            write_ios: get(5),
            write_bytes: get(7) * 512,
            discard_bytes: get(14) * 512,
            flush_ios: get(16),
        })
    }

    /// Counters accumulated since `earlier`.
    pub fn since(&self, earlier: &DiskStat) -> DiskStat {
        DiskStat {
            read_bytes: self.read_bytes - earlier.read_bytes,
            write_ios: self.write_ios - earlier.write_ios,
            write_bytes: self.write_bytes - earlier.write_bytes,
            discard_bytes: self.discard_bytes - earlier.discard_bytes,
            flush_ios: self.flush_ios - earlier.flush_ios,
        }
    }
}

/// An image file that is removed on drop.
pub struct ImageFile {
    pub path: PathBuf,
}

impl ImageFile {
    /// Creates a sparse file of `size` bytes (replacing a leftover).
    pub fn create(path: PathBuf, size: u64) -> Result<ImageFile> {
        let _ = fs::remove_file(&path);
        let f = ctx(File::create(&path), || format!("create {}", path.display()))?;
        let img = ImageFile { path };
        ctx(f.set_len(size), || format!("size {}", img.path.display()))?;
        Ok(img)
    }
}

impl Drop for ImageFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// A loop device attached to an image file, detached on drop.
pub struct LoopDev {
    /// `/dev/loopN`.
    pub dev: PathBuf,
    /// `loopN`.
    pub name: String,
    detached: bool,
}

impl LoopDev {
    /// `losetup --find --show [--direct-io=on] IMAGE`.
    pub fn attach(image: &Path, direct_io: bool) -> Result<LoopDev> {
        let mut cmd = Command::new("losetup");
        cmd.arg("--find").arg("--show");
        if direct_io {
            cmd.arg("--direct-io=on");
        }
        cmd.arg(image);
        let out = run(&mut cmd)?;
        let dev = PathBuf::from(out.trim());
        let name = dev
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| n.starts_with("loop"))
            .ok_or_else(|| format!("losetup printed {out:?}, not a loop device"))?
            .to_string();
        Ok(LoopDev {
            dev,
            name,
            detached: false,
        })
    }

    /// The device's kernel counters now.
    pub fn stat(&self) -> Result<DiskStat> {
        let p = format!("/sys/block/{}/stat", self.name);
        DiskStat::parse(&ctx(fs::read_to_string(&p), || p.clone())?)
    }

    /// Logical sector size of the loop device.
    pub fn logical_block_size(&self) -> u64 {
        fs::read_to_string(format!("/sys/block/{}/queue/logical_block_size", self.name))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(512)
    }

    /// Waits until no one holds the device open exclusively (a mounted file
    /// system or the atomfs daemon do), i.e. until everything the last user
    /// wrote has reached it.
    pub fn wait_released(&self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            match OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_EXCL)
                .open(&self.dev)
            {
                Ok(_) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    if start.elapsed() > timeout {
                        return Err(format!(
                            "{} still in use {}s after unmount",
                            self.dev.display(),
                            timeout.as_secs()
                        ));
                    }
                    sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(format!("open {}: {e}", self.dev.display())),
            }
        }
    }

    /// Detaches the device.
    pub fn detach(mut self) -> Result<()> {
        self.detached = true;
        detach_loop(&self.dev)
    }
}

fn detach_loop(dev: &Path) -> Result<()> {
    let mut last = String::new();
    for _ in 0..50 {
        match run(Command::new("losetup").arg("-d").arg(dev)) {
            Ok(_) => return Ok(()),
            Err(e) => last = e,
        }
        sleep(Duration::from_millis(100));
    }
    Err(last)
}

impl Drop for LoopDev {
    fn drop(&mut self) {
        if !self.detached {
            if let Err(e) = detach_loop(&self.dev) {
                eprintln!("warning: {e}");
            }
        }
    }
}

/// True if `mnt` is a mount point (per `/proc/self/mountinfo`).
pub fn is_mounted(mnt: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = mnt.to_string_lossy();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| unescape_mountinfo(m) == want)
}

fn unescape_mountinfo(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// `statfs` of a mounted file system: (total bytes, free bytes for users).
pub fn statfs(path: &Path) -> Result<(u64, u64)> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: statfs writes into a zeroed, properly sized struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(format!(
            "statfs {}: {}",
            path.display(),
            io::Error::last_os_error()
        ));
    }
    Ok(statfs_bytes(
        st.f_blocks as u64,
        st.f_bavail as u64,
        st.f_frsize as u64,
        st.f_bsize as u64,
    ))
}

/// Total and available bytes from statfs fields. Block counts are in
/// units of the *fragment* size `f_frsize` (statvfs(3)); `f_bsize` is only
/// the preferred I/O size. ext4, xfs and btrfs report the two equal, but
/// atomfs counts 512-byte sectors and prefers 4 KiB I/O, so using
/// `f_bsize` would overstate its capacity eightfold.
pub fn statfs_bytes(blocks: u64, bavail: u64, frsize: u64, bsize: u64) -> (u64, u64) {
    let unit = if frsize > 0 { frsize } else { bsize };
    (blocks * unit, bavail * unit)
}

/// `sync(2)`.
pub fn sync_all() {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() }
}

/// Empties the page cache, dentries and inodes (`echo 3 > drop_caches`).
pub fn drop_caches() -> Result<()> {
    sync_all();
    ctx(fs::write("/proc/sys/vm/drop_caches", "3"), || {
        "write /proc/sys/vm/drop_caches".into()
    })
}

/// A mounted file system: a kernel mount, or a FUSE daemon we started in
/// the foreground. Unmounted on drop (lazily, if it must).
pub struct Mount {
    pub mnt: PathBuf,
    daemon: Option<Child>,
    log: Option<PathBuf>,
    mounted: bool,
}

impl Mount {
    /// Wraps a kernel mount that `mount(8)` has made.
    pub fn kernel(mnt: &Path) -> Mount {
        Mount {
            mnt: mnt.to_path_buf(),
            daemon: None,
            log: None,
            mounted: true,
        }
    }

    /// Starts a FUSE daemon in the foreground (`cmd` must include `-f`),
    /// with its output in `log`, and waits until `mnt` is mounted.
    pub fn fuse(mut cmd: Command, mnt: &Path, log: &Path, timeout: Duration) -> Result<Mount> {
        let out = ctx(File::create(log), || format!("create {}", log.display()))?;
        let err = ctx(out.try_clone(), || "dup log".into())?;
        let shown = format!("{cmd:?}");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("{shown}: {e}"))?;
        let mut m = Mount {
            mnt: mnt.to_path_buf(),
            daemon: Some(child),
            log: Some(log.to_path_buf()),
            mounted: false,
        };
        let start = Instant::now();
        loop {
            if is_mounted(mnt) {
                m.mounted = true;
                return Ok(m);
            }
            let child = m.daemon.as_mut().expect("daemon");
            if let Ok(Some(status)) = child.try_wait() {
                m.daemon = None;
                return Err(format!(
                    "{shown} exited with {status} before mounting: {}",
                    tail(log)
                ));
            }
            if start.elapsed() > timeout {
                return Err(format!(
                    "{shown}: not mounted after {}s: {}",
                    timeout.as_secs(),
                    tail(log)
                ));
            }
            sleep(Duration::from_millis(10));
        }
    }

    /// Unmounts and, for a FUSE daemon, waits until it has exited (it
    /// flushes on unmount) and reports a failed exit.
    pub fn unmount(&mut self, timeout: Duration) -> Result<()> {
        if self.mounted {
            run(Command::new("umount").arg(&self.mnt))?;
            self.mounted = false;
        }
        if let Some(mut child) = self.daemon.take() {
            let start = Instant::now();
            loop {
                match child.try_wait() {
                    Ok(Some(status)) if status.success() => break,
                    Ok(Some(status)) => {
                        return Err(format!(
                            "daemon for {} exited with {status}: {}",
                            self.mnt.display(),
                            self.log.as_deref().map(tail).unwrap_or_default()
                        ))
                    }
                    Ok(None) if start.elapsed() > timeout => {
                        let _ = child.kill();
                        let _ = child.wait();
                        return Err(format!(
                            "daemon for {} did not exit within {}s of unmount; killed",
                            self.mnt.display(),
                            timeout.as_secs()
                        ));
                    }
                    Ok(None) => sleep(Duration::from_millis(10)),
                    Err(e) => return Err(format!("wait for daemon: {e}")),
                }
            }
        }
        Ok(())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.mounted {
            if run(Command::new("umount").arg(&self.mnt)).is_err() {
                let _ = run(Command::new("umount").arg("-l").arg(&self.mnt));
            }
            self.mounted = false;
        }
        if let Some(mut child) = self.daemon.take() {
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(30) {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The last lines of a log file, for error messages.
pub fn tail(path: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.read_to_string(&mut s);
    }
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// An exclusive lock on a work directory, so that two runs never share one
/// (the second would take the first's leftovers for stale ones).
pub struct WorkDirLock {
    _file: File,
}

impl WorkDirLock {
    pub fn take(work_dir: &Path) -> Result<WorkDirLock> {
        use std::os::fd::AsRawFd;
        let p = work_dir.join(".lock");
        let f = ctx(File::create(&p), || format!("create {}", p.display()))?;
        // SAFETY: flock on a valid descriptor.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(format!(
                "another atomfs-bench is running in {} (use --work-dir)",
                work_dir.display()
            ));
        }
        Ok(WorkDirLock { _file: f })
    }
}

/// Cleans up after an earlier run that was killed (SIGKILL, power cut):
/// unmounts our mount points and detaches loop devices over our images in
/// `work_dir`. Touches nothing outside `work_dir`.
pub fn cleanup_stale(work_dir: &Path) {
    let Ok(entries) = fs::read_dir(work_dir) else {
        return;
    };
    let mut images = Vec::new();
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("mnt-") && is_mounted(&p) {
            eprintln!("cleanup: unmounting stale {}", p.display());
            if run(Command::new("umount").arg(&p)).is_err() {
                let _ = run(Command::new("umount").arg("-l").arg(&p));
            }
        }
        if name.ends_with(".img") {
            images.push(p);
        }
    }
    for img in images {
        if let Ok(out) = run(Command::new("losetup").arg("-j").arg(&img)) {
            for line in out.lines() {
                if let Some(dev) = line
                    .split(':')
                    .next()
                    .filter(|d| d.starts_with("/dev/loop"))
                {
                    eprintln!("cleanup: detaching stale {dev} ({})", img.display());
                    let _ = detach_loop(Path::new(dev));
                }
            }
        }
        let _ = fs::remove_file(&img);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_disk_stat() {
        let s = "     100        0     2048      10      300       20     8192     500        0      400      510        5        0      64        1       7       2\n";
        let d = DiskStat::parse(s).unwrap();
        assert_eq!(d.read_bytes, 2048 * 512);
        assert_eq!(d.write_ios, 300);
        assert_eq!(d.write_bytes, 8192 * 512);
        assert_eq!(d.discard_bytes, 64 * 512);
        assert_eq!(d.flush_ios, 7);
        let old = "1 0 8 0 2 0 16 0 0 0 0";
        let d = DiskStat::parse(old).unwrap();
        assert_eq!(d.write_bytes, 16 * 512);
        assert_eq!(d.discard_bytes, 0);
        assert!(DiskStat::parse("1 2").is_err());
    }

    #[test]
    fn statfs_counts_in_fragments() {
        // atomfs: 512-byte sectors, 4 KiB preferred I/O.
        assert_eq!(statfs_bytes(1000, 600, 512, 4096), (512_000, 307_200));
        // ext4: both 4 KiB.
        assert_eq!(statfs_bytes(10, 5, 4096, 4096), (40_960, 20_480));
        // No f_frsize (old kernels): f_bsize.
        assert_eq!(statfs_bytes(10, 5, 0, 4096), (40_960, 20_480));
    }

    #[test]
    fn unescapes_mountinfo() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
    }
}
