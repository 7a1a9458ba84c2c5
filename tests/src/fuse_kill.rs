//! Crash checks through the real kernel: `kill -9` of the FUSE daemon.
//!
//! A seeded random workload ([`workload`]'s `rand:SEED:LEN`, its setup run
//! as ordinary steps, `sync` persistence points replaced by fsync or
//! fdatasync since Linux does not forward sync(2) to FUSE) runs as real
//! system calls ([`syscalls`]) on a mount served by the daemon binary. A
//! killer thread sends SIGKILL to the daemon once a random number of
//! operations has started, after a random delay of up to 400 µs, so the
//! kill lands between system calls or in the middle of one. Then:
//!
//! 1. the dead mount is detached and the image, as the dead daemon left
//!    it, is checked through the library: `blockdev::check` clean,
//!    `atomfs::fsck::check` without errors (what `fsck.atomfs -n` runs),
//!    and `dump_tree` of a read-only mount equals the oracle after k
//!    operations for some k with *(last fsync/fdatasync that returned
//!    success, or the state the session started from)* ≤ k ≤ *(operations
//!    started)*; with `-o sync` every operation that returned counts as
//!    persisted;
//! 2. a fresh daemon mounts the image and the tree read through the kernel
//!    ([`syscalls::walk`]) must equal the library's;
//! 3. the workload continues on that mount from operation k (the state is
//!    exactly the oracle's after k operations, so the oracle's later
//!    states still apply), to the next kill.
//!
//! After the last kill the rest of the workload runs, the file system is
//! unmounted cleanly, and the image must be fsck-clean and hold the
//! oracle's final state.
//!
//! The oracle is the same operation list run through the core on a
//! `MemDevice` ([`exec`]), its `dump_tree` captured after every operation.
//! Its results must match the system calls' (success or failure) while
//! the daemon is alive. Operations the kernel cannot express as the core
//! does (data or xattr calls on a symlink, which `O_NOFOLLOW` refuses and
//! the core would apply to the link) are left out of the list when the
//! oracle meets them.
//!
//! Both start from the same image: mkfs and a warm-up file `/.warm` written
//! and rewritten past the device's capacity ([`explore::warm_up`]), so the
//! small log (16 MiB, 64 KiB segments, checkpoints every 2 MiB) is in
//! GC's steady state and the workloads make GC and checkpoints run.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use atomfs::fsck::FsckOptions;
use atomfs::inspect::{dump_tree, Tree};
use atomfs::{FileKind, Fs, MountOptions};
use atomic_api::{AtomicDevice, MemDevice};
use blockdev::{FileMedia, FileMediaOptions, FormatOptions, LogDevice, Media, OpenOptions};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::exec;
use crate::explore::{self, tree_diff};
use crate::syscalls::{self, Root};
use crate::workload::{self, Op, Persist, Step, WorkloadId, WriteKind};

/// Geometry of the image every run starts from.
#[derive(Clone, Debug)]
pub struct ImageConfig {
    pub image_bytes: u64,
    pub segment_bytes: u64,
    /// Bytes the warm-up writes (and rewrites) in `/.warm`.
    pub warm_bytes: u64,
}

impl Default for ImageConfig {
    fn default() -> Self {
        ImageConfig {
            image_bytes: 16 << 20,
            segment_bytes: 64 << 10,
            warm_bytes: 24 << 20,
        }
    }
}

/// An in-memory media for building the warmed-up image quickly (no
/// fdatasync per flush); its bytes are then written to the image file.
struct VecMedia {
    ss: u32,
    data: Mutex<Vec<u8>>,
}

impl Media for VecMedia {
    fn sector_size(&self) -> u32 {
        self.ss
    }
    fn len_bytes(&self) -> u64 {
        self.data.lock().unwrap().len() as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let d = self.data.lock().unwrap();
        buf.copy_from_slice(&d[offset as usize..offset as usize + buf.len()]);
        Ok(())
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut d = self.data.lock().unwrap();
        d[offset as usize..offset as usize + data.len()].copy_from_slice(data);
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
    fn discard(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }
    fn describe(&self) -> String {
        "vec".into()
    }
}

/// The warmed-up image (a file) and the oracle's device in the same state.
pub struct BaseImage {
    pub path: PathBuf,
    pub oracle: MemDevice,
    pub cfg: ImageConfig,
}

impl BaseImage {
    /// Formats and warms up an image at `path` (4096-byte sectors, as
    /// mkfs.atomfs formats images) and the oracle.
    pub fn build(path: &Path, cfg: &ImageConfig) -> BaseImage {
        let media = VecMedia {
            ss: 4096,
            data: Mutex::new(vec![0; cfg.image_bytes as usize]),
        };
        let dev = LogDevice::format(
            media,
            &FormatOptions {
                segment_size_bytes: cfg.segment_bytes,
                uuid: Some([0x4b; 16]),
                ..FormatOptions::default()
            },
        )
        .expect("format the base image");
        let capacity = dev.space().capacity_bytes;
        let geometry = dev.geometry();
        Fs::mkfs(&dev, &explore::mkfs_opts()).expect("mkfs");
        let fs = Fs::mount(dev, &explore::mount_opts()).expect("mount");
        explore::warm_up(&fs, cfg.warm_bytes, capacity).expect("warm-up");
        let media = fs.unmount().expect("unmount").close().expect("close");
        std::fs::write(path, media.data.into_inner().unwrap()).expect("write the image");

        let oracle = MemDevice::with_geometry(geometry, 1 << 40);
        Fs::mkfs(&oracle, &explore::mkfs_opts()).expect("oracle mkfs");
        let fs = Fs::mount(oracle, &explore::mount_opts()).expect("oracle mount");
        explore::warm_up(&fs, cfg.warm_bytes, capacity).expect("oracle warm-up");
        let oracle = fs.unmount().expect("oracle unmount");
        BaseImage {
            path: path.to_path_buf(),
            oracle,
            cfg: cfg.clone(),
        }
    }
}

/// A workload as the kernel runs it, with the oracle's states.
pub struct Plan {
    pub seed: u64,
    pub steps: Vec<Step>,
    /// results[i]: the oracle's result of step i.
    pub results: Vec<Result<(), atomfs::Errno>>,
    /// trees[k]: the oracle's tree after k steps.
    pub trees: Vec<Tree>,
    /// Steps of the generated workload left out (see the module docs).
    pub dropped: usize,
    /// split[i]: for a write the kernel may send as two FUSE WRITEs (page
    /// cache mode, see [`kernel_split`]), the oracle's tree after the
    /// first piece and the second piece (as a plain write).
    pub split: Vec<Option<(Tree, Op)>>,
}

/// Where the kernel splits a buffered `write(2)` in FUSE's write-through
/// (page cache, no writeback cache) mode: `fuse_fill_write_pages` stops a
/// WRITE request after a partly written page that is not in the page
/// cache, so a write that starts inside an uncached page and goes past it
/// reaches the daemon as two WRITEs, `off .. next page boundary` and the
/// rest (seen with `atomfs -d`: `pwrite(7210 bytes @ 12275)` arrives as
/// WRITE 13 @ 12275 and WRITE 7197 @ 12288). The daemon serves each
/// atomically, so a crash between them keeps the first piece only. Not
/// with `direct_io` (the write reaches the daemon as issued). Returns the
/// length of the first piece when `off .. off+len` would be split.
pub fn kernel_split(off: u64, len: u64) -> Option<u64> {
    let head = off % 4096;
    (head != 0 && head + len > 4096).then(|| 4096 - head)
}

/// Data and xattr calls on a symlink: the kernel refuses them
/// (`O_NOFOLLOW`), the core would apply them to the link itself.
fn kernel_cannot<D: AtomicDevice>(fs: &Fs<D>, op: &Op) -> bool {
    let path = match op {
        Op::Write { path, .. }
        | Op::Truncate { path, .. }
        | Op::Fallocate { path, .. }
        | Op::SetXattr { path, .. }
        | Op::RemoveXattr { path, .. } => path,
        _ => return false,
    };
    exec::resolve(fs, path)
        .and_then(|ino| fs.getattr(ino))
        .is_ok_and(|a| a.kind == FileKind::Symlink)
}

/// The two writes the kernel turns a buffered write into, if it splits
/// it (a write to a regular file, [`kernel_split`]).
fn split_of<D: AtomicDevice>(fs: &Fs<D>, op: &Op) -> Option<(Op, Op)> {
    let Op::Write {
        path,
        kind,
        off,
        len,
        tag,
    } = op
    else {
        return None;
    };
    let attr = exec::resolve(fs, path)
        .and_then(|ino| fs.getattr(ino))
        .ok()?;
    if attr.kind != FileKind::RegularFile {
        return None;
    }
    let off = match kind {
        WriteKind::Append => attr.size,
        WriteKind::Plain => *off,
        WriteKind::Direct | WriteKind::Mmap => return None,
    };
    let n1 = kernel_split(off, *len)?;
    let piece = |o: u64, l: u64| Op::Write {
        path: path.clone(),
        kind: WriteKind::Plain,
        off: o,
        len: l,
        tag: *tag,
    };
    Some((piece(off, n1), piece(off + n1, len - n1)))
}

impl Plan {
    /// The random workload `seed` of `len` steps (after its setup),
    /// played on a copy of the oracle device.
    ///
    /// `page_cache`: the mount goes through the kernel's page cache (not
    /// `direct_io`), so writes may be split ([`kernel_split`]); with
    /// `direct_io`, mmap writes are left out (the kernel refuses shared
    /// mappings with ENODEV).
    pub fn build(seed: u64, len: usize, oracle: &MemDevice, page_cache: bool) -> Plan {
        let w = workload::build(WorkloadId::Random { seed, len });
        let mut steps: Vec<Step> = w
            .setup
            .into_iter()
            .map(|op| Step {
                op,
                persist: Persist::None,
            })
            .collect();
        let fsyncs = [Persist::FsyncFile, Persist::FsyncParent, Persist::Fdatasync];
        for (i, mut s) in w.steps.into_iter().enumerate() {
            if s.persist == Persist::Sync {
                s.persist = fsyncs[i % 3];
            }
            steps.push(s);
        }
        let fs = Fs::mount(oracle.snapshot(), &explore::mount_opts()).expect("oracle mount");
        let mut plan = Plan {
            seed,
            steps: Vec::with_capacity(steps.len()),
            results: Vec::new(),
            trees: vec![dump_tree(&fs).expect("oracle dump")],
            dropped: 0,
            split: Vec::new(),
        };
        for s in steps {
            let mmap = matches!(
                s.op,
                Op::Write {
                    kind: WriteKind::Mmap,
                    ..
                }
            );
            if kernel_cannot(&fs, &s.op) || (mmap && !page_cache) {
                plan.dropped += 1;
                continue;
            }
            let split = if page_cache {
                split_of(&fs, &s.op)
            } else {
                None
            };
            match split {
                Some((first, second)) => {
                    // Exactly what the kernel sends: two writes (the data
                    // depends on the file offset only, so the pieces add
                    // up to the whole write).
                    let r = exec::apply(&fs, &first);
                    assert_eq!(r, Ok(()), "first piece of {}", s.op);
                    let half = dump_tree(&fs).expect("oracle dump");
                    plan.results.push(exec::apply(&fs, &second));
                    plan.split.push(Some((half, second)));
                }
                None => {
                    plan.results.push(exec::apply(&fs, &s.op));
                    plan.split.push(None);
                }
            }
            plan.trees.push(dump_tree(&fs).expect("oracle dump"));
            plan.steps.push(s);
        }
        plan
    }
}

/// Whether the FUSE tests can run here (root and /dev/fuse). Without them
/// a test prints `SKIPPED` and passes, except under `CI=true` (or
/// `ATOMFS_REQUIRE_FUSE=1`), where it panics.
pub fn fuse_available(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
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

fn is_mounted(mnt: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let want = mnt.to_str().unwrap_or_default();
    info.lines()
        .any(|l| l.split(' ').nth(4).is_some_and(|p| p == want))
}

fn detach(mnt: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(mnt.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid C string.
    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
}

/// A daemon serving the image on a mount point. Dropping it (also in a
/// panic) detaches the mount lazily and kills and reaps the daemon, so a
/// failed run never leaves a mount or a process behind.
pub struct DaemonMount {
    pub mnt: PathBuf,
    child: Option<Child>,
}

impl DaemonMount {
    /// Starts `daemon IMAGE MNT -o opts` and waits for the mount.
    pub fn start(daemon: &Path, image: &Path, mnt: &Path, opts: &str) -> Result<Self, String> {
        Self::start_with(daemon, image, mnt, opts, &[])
    }

    /// [`start`](Self::start) with more daemon arguments (e.g. `--trace
    /// FILE`).
    pub fn start_with(
        daemon: &Path,
        image: &Path,
        mnt: &Path,
        opts: &str,
        extra: &[&std::ffi::OsStr],
    ) -> Result<Self, String> {
        let mut cmd = Command::new(daemon);
        cmd.arg(image).arg(mnt).args(extra);
        if !opts.is_empty() {
            cmd.arg("-o").arg(opts);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", daemon.display()))?;
        let mut m = DaemonMount {
            mnt: mnt.to_path_buf(),
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !is_mounted(mnt) {
            if let Some(status) = m.child.as_mut().unwrap().try_wait().unwrap() {
                let err = m.stderr();
                m.child = None;
                return Err(format!(
                    "the daemon exited with {status} before mounting: {err}"
                ));
            }
            if Instant::now() > deadline {
                return Err(format!("no mount at {} after 20 s", mnt.display()));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(m)
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running daemon").id() as i32
    }

    fn stderr(&mut self) -> String {
        let mut err = String::new();
        if let Some(e) = self.child.as_mut().and_then(|c| c.stderr.as_mut()) {
            let _ = e.read_to_string(&mut err);
        }
        err
    }

    fn wait(&mut self, limit: Duration) -> Result<ExitStatus, String> {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut().expect("running daemon");
        loop {
            if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                return Err(format!("the daemon did not exit within {limit:?}"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// After a SIGKILL: reaps the daemon (it must have died of the
    /// signal) and detaches the dead mount.
    pub fn reap_killed(mut self) -> Result<(), String> {
        use std::os::unix::process::ExitStatusExt;
        let status = self.wait(Duration::from_secs(20))?;
        self.child = None;
        detach(&self.mnt);
        if status.signal() != Some(libc::SIGKILL) {
            return Err(format!("the killed daemon ended with {status}"));
        }
        Ok(())
    }

    /// Clean unmount: umount, then the daemon must flush, close and exit 0.
    pub fn unmount(mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = Command::new("umount")
                .arg(&self.mnt)
                .output()
                .map_err(|e| e.to_string())?;
            if out.status.success() {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "umount: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let status = self.wait(Duration::from_secs(30))?;
        let err = self.stderr();
        self.child = None;
        if !status.success() {
            return Err(format!("the daemon exited with {status} at unmount: {err}"));
        }
        Ok(())
    }
}

impl Drop for DaemonMount {
    fn drop(&mut self) {
        if is_mounted(&self.mnt) {
            detach(&self.mnt);
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits until nothing holds the image (FileMedia takes an exclusive
/// flock; a dead daemon's lock goes with its last descriptor).
fn wait_released(image: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let f = File::open(image).map_err(|e| e.to_string())?;
        // SAFETY: a valid descriptor.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{} still held after 20 s", image.display()));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What the library finds on an image.
pub struct ImageCheck {
    pub tree: Tree,
    pub checkpoint_gen: u64,
    pub gc_records: u64,
}

/// `blockdev::check`, fsck and `dump_tree` of the image, read-only.
pub fn check_image(image: &Path) -> Result<ImageCheck, String> {
    let media = FileMedia::open_with(
        image,
        &FileMediaOptions {
            read_only: true,
            ..FileMediaOptions::default()
        },
    )
    .map_err(|e| format!("open the image: {e}"))?;
    let report = blockdev::check(&media);
    if !report.is_clean() {
        let errs: Vec<&str> = report.errors().map(|f| f.message.as_str()).collect();
        return Err(format!("blockdev::check found errors: {errs:?}"));
    }
    // "checkpoint G loaded; rolled forward U user records (..) and N GC records (..)"
    let (mut checkpoint_gen, mut gc_records) = (0, 0);
    for f in &report.findings {
        let w: Vec<&str> = f.message.split_whitespace().collect();
        if w.len() > 10 && w[0] == "checkpoint" && w[2] == "loaded;" {
            checkpoint_gen = w[1].parse().unwrap_or(0);
            if let Some(i) = w.iter().position(|&x| x == "GC") {
                gc_records = w[i - 1].parse().unwrap_or(0);
            }
        }
    }
    let dev = LogDevice::open(
        media,
        &OpenOptions {
            read_only: true,
            ..OpenOptions::default()
        },
    )
    .map_err(|e| format!("LogDevice::open: {e}"))?;
    let fsck = atomfs::fsck::check(&dev, &FsckOptions::default());
    let errs: Vec<&str> = fsck.errors().map(|f| f.message.as_str()).collect();
    if !errs.is_empty() {
        return Err(format!("fsck found errors: {}", errs.join("; ")));
    }
    let fs = Fs::mount(
        dev,
        &MountOptions {
            read_only: true,
            ..explore::mount_opts()
        },
    )
    .map_err(|e| format!("read-only mount: {e}"))?;
    let tree = dump_tree(&fs).map_err(|e| format!("dump_tree: {e}"))?;
    Ok(ImageCheck {
        tree,
        checkpoint_gen,
        gc_records,
    })
}

/// Counts of one or more runs.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    pub runs: u64,
    pub sessions: u64,
    pub kills: u64,
    /// Kills that landed while a system call was in flight.
    pub kills_mid_call: u64,
    /// Operations issued through the kernel (including re-runs after a
    /// crash rolled some back).
    pub ops: u64,
    /// Prefix checks of crash images (and of the final clean images).
    pub images_checked: u64,
    /// Operations the crash images kept beyond the last persistence point.
    pub unpersisted_kept: u64,
    /// Crash images whose recovery rolled GC records forward.
    pub images_with_gc: u64,
    /// Checkpoint generations the block layer wrote during the runs (its
    /// recovery at each mount, the clean unmounts and the checkpoints
    /// inside sessions).
    pub checkpoint_gens: u64,
    /// GC bytes of the last (cleanly unmounted) session of each run, from
    /// the daemon's stats file (killed sessions write none).
    pub gc_bytes_last_sessions: u64,
    pub dropped_ops: u64,
    /// Crash images that held the first piece of a write the kernel split
    /// in two (page cache mode only).
    pub split_writes_torn: u64,
    /// Both failed, with different errnos (not a state difference).
    pub errno_notes: Vec<String>,
    pub violations: Vec<String>,
}

impl Counts {
    pub fn add(&mut self, o: &Counts) {
        self.runs += o.runs;
        self.sessions += o.sessions;
        self.kills += o.kills;
        self.kills_mid_call += o.kills_mid_call;
        self.ops += o.ops;
        self.images_checked += o.images_checked;
        self.unpersisted_kept += o.unpersisted_kept;
        self.images_with_gc += o.images_with_gc;
        self.checkpoint_gens += o.checkpoint_gens;
        self.gc_bytes_last_sessions += o.gc_bytes_last_sessions;
        self.dropped_ops += o.dropped_ops;
        self.split_writes_torn += o.split_writes_torn;
        self.errno_notes.extend(o.errno_notes.iter().cloned());
        self.violations.extend(o.violations.iter().cloned());
    }
}

/// One run's settings.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub seed: u64,
    /// Steps of the random workload (its setup comes on top).
    pub len: usize,
    pub kills: usize,
    /// Mount options of every session (e.g. "sync").
    pub opts: String,
    pub daemon: PathBuf,
    pub dir: PathBuf,
}

/// How a session ended.
struct SessionEnd {
    /// Operations started (global index of the next one).
    started: usize,
    /// Operations covered by the last persistence point that returned.
    persisted: usize,
    killed: bool,
    mid_call: bool,
}

fn errno_name(e: i32) -> String {
    format!("{} ({e})", io::Error::from_raw_os_error(e))
}

/// Runs steps `start..` on the mount until done or killed.
fn run_session(
    plan: &Plan,
    mnt: &Path,
    pid: i32,
    start: usize,
    kill: Option<(usize, Duration)>,
    sync_mount: bool,
    counts: &mut Counts,
) -> Result<SessionEnd, String> {
    let root = Root::open(mnt).map_err(|e| format!("open the mount: {e}"))?;
    let started = AtomicUsize::new(start);
    let killed = AtomicBool::new(false);
    let done = AtomicBool::new(false);
    let mut end = SessionEnd {
        started: start,
        persisted: start,
        killed: false,
        mid_call: false,
    };
    let mut error = None;
    std::thread::scope(|s| {
        if let Some((target, delay)) = kill {
            let (started, killed, done) = (&started, &killed, &done);
            s.spawn(move || {
                while started.load(Ordering::SeqCst) < target {
                    if done.load(Ordering::SeqCst) {
                        return;
                    }
                    std::thread::yield_now();
                }
                let t = Instant::now();
                while t.elapsed() < delay {
                    std::hint::spin_loop();
                }
                if done.load(Ordering::SeqCst) {
                    return;
                }
                killed.store(true, Ordering::SeqCst);
                // SAFETY: our own child; kill -9.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            });
        }
        for i in start..plan.steps.len() {
            if killed.load(Ordering::SeqCst) {
                break;
            }
            let step = &plan.steps[i];
            started.store(i + 1, Ordering::SeqCst);
            end.started = i + 1;
            counts.ops += 1;
            let r = root.apply(&step.op);
            if killed.load(Ordering::SeqCst) {
                end.mid_call = true;
                break;
            }
            let want = plan.results[i].map_err(|e| e.0);
            match (r, want) {
                (Ok(()), Ok(())) => {}
                (Err(a), Err(b)) if a == b => {}
                (Err(a), Err(b)) => counts.errno_notes.push(format!(
                    "seed {} step {} ({}): kernel {}, core {}",
                    plan.seed,
                    i,
                    step.op,
                    errno_name(a),
                    errno_name(b)
                )),
                (got, want) => {
                    error = Some(format!(
                        "step {i} ({}) returned {:?} through the kernel but {:?} on the oracle",
                        step.op,
                        got.map_err(errno_name),
                        want.map_err(errno_name)
                    ));
                    break;
                }
            }
            if sync_mount {
                // -o sync: every operation is durable before it returns.
                end.persisted = i + 1;
            }
            // A persistence point that returned success was served by the
            // live daemon, whatever happened after.
            if let Ok(true) = root.persist(&step.op, step.persist) {
                end.persisted = i + 1;
            }
        }
        done.store(true, Ordering::SeqCst);
    });
    end.killed = killed.load(Ordering::SeqCst);
    if let Some(e) = error {
        return Err(e);
    }
    Ok(end)
}

/// GC bytes of a cleanly ended session, from its stats file.
fn session_gc_bytes(path: &Path) -> Result<u64, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("stats file: {e}"))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("stats file: {e}"))?;
    let gc = |k: &str| v[k]["media_gc_bytes"].as_u64().unwrap_or(0);
    Ok(gc("device").saturating_sub(gc("device_at_mount")))
}

/// Runs one seed: `kills` daemon kills at random points, each followed by
/// the checks of the module docs; then the rest and a clean unmount.
pub fn run(base: &BaseImage, cfg: &RunConfig) -> Counts {
    run_with(base, cfg, |_| {})
}

/// [`run`] with the oracle's plan altered first (self-tests of the
/// checker: a wrong oracle must be reported).
pub fn run_with(base: &BaseImage, cfg: &RunConfig, tamper: impl FnOnce(&mut Plan)) -> Counts {
    let mut counts = Counts {
        runs: 1,
        ..Counts::default()
    };
    let page_cache = !cfg.opts.split(',').any(|o| o == "direct_io");
    let mut plan = Plan::build(cfg.seed, cfg.len, &base.oracle, page_cache);
    tamper(&mut plan);
    counts.dropped_ops = plan.dropped as u64;
    let image = cfg.dir.join(format!("image-{}", cfg.seed));
    let mnt = cfg.dir.join(format!("mnt-{}", cfg.seed));
    std::fs::copy(&base.path, &image).expect("copy the base image");
    std::fs::create_dir_all(&mnt).expect("mount point");
    if let Err(why) = run_inner(base, cfg, &plan, &image, &mnt, &mut counts) {
        counts.violations.push(format!(
            "FUSE KILL VIOLATION: seed {} (workload rand:{}:{} + setup, {} steps, -o '{}')\n  {}\n  rerun: ATOMFS_FUSE_KILL_SEEDS={} cargo nextest run -p atomfs-tests --test crash_fuse_kill",
            cfg.seed,
            cfg.seed,
            cfg.len,
            plan.steps.len(),
            cfg.opts,
            why.replace('\n', "\n  "),
            cfg.seed
        ));
    }
    let _ = std::fs::remove_file(&image);
    let _ = std::fs::remove_file(cfg.dir.join(format!("stats-{}.json", cfg.seed)));
    let _ = std::fs::remove_dir(&mnt);
    counts
}

fn run_inner(
    base: &BaseImage,
    cfg: &RunConfig,
    plan: &Plan,
    image: &Path,
    mnt: &Path,
    counts: &mut Counts,
) -> Result<(), String> {
    let n = plan.steps.len();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x0F05_E000);
    let sync_mount = cfg.opts.split(',').any(|o| o == "sync");
    let mut k = 0usize;
    let mut expect: Option<Tree> = None;
    let mut completion: Option<Op> = None;
    let mut kills_left = cfg.kills;
    let mut gen_prev = check_image(&base.path)?.checkpoint_gen;
    let stats = cfg.dir.join(format!("stats-{}.json", cfg.seed));
    let opts = match cfg.opts.as_str() {
        "" => format!("stats_file={}", stats.display()),
        o => format!("{o},stats_file={}", stats.display()),
    };
    loop {
        let m = DaemonMount::start(&cfg.daemon, image, mnt, &opts)?;
        counts.sessions += 1;
        if let Some(want) = &expect {
            let got = syscalls::walk(mnt).map_err(|e| format!("walk the remounted tree: {e}"))?;
            if &got != want {
                return Err(format!(
                    "after remount the tree read through the kernel differs from the image's: {}",
                    tree_diff(&got, want).1
                ));
            }
        }
        if let Some(op) = completion.take() {
            let root = Root::open(mnt).map_err(|e| format!("open the mount: {e}"))?;
            counts.ops += 1;
            root.apply(&op)
                .map_err(|e| format!("second piece of a split write, {op}: errno {e}"))?;
        }
        let kill = (kills_left > 0 && k < n).then(|| {
            let span = ((n - k) / kills_left).max(1);
            let target = k + rng.gen_range(1..=span);
            let delay = Duration::from_micros(rng.gen_range(0..400));
            (target, delay)
        });
        let end = run_session(plan, mnt, m.pid(), k, kill, sync_mount, counts)
            .map_err(|e| format!("session from step {k}: {e}"))?;
        if !end.killed {
            m.unmount()?;
            let c = check_image(image).map_err(|e| format!("after the clean unmount: {e}"))?;
            counts.images_checked += 1;
            counts.checkpoint_gens += c.checkpoint_gen.saturating_sub(gen_prev);
            counts.gc_bytes_last_sessions += session_gc_bytes(&stats)?;
            if c.tree != plan.trees[n] {
                return Err(format!(
                    "after the clean unmount the image differs from the oracle's final state: {}",
                    tree_diff(&c.tree, &plan.trees[n]).1
                ));
            }
            return Ok(());
        }
        kills_left -= 1;
        counts.kills += 1;
        counts.kills_mid_call += u64::from(end.mid_call);
        m.reap_killed()?;
        wait_released(image)?;
        let (kmin, kmax) = (end.persisted.max(k), end.started);
        let where_ = format!(
            "kill {} (session from step {k}, target {:?}): allowed oracle states k = {kmin}..={kmax}",
            cfg.kills - kills_left,
            kill
        );
        let c = check_image(image).map_err(|e| format!("{where_}: {e}"))?;
        counts.images_checked += 1;
        counts.images_with_gc += u64::from(c.gc_records > 0);
        counts.checkpoint_gens += c.checkpoint_gen.saturating_sub(gen_prev);
        gen_prev = c.checkpoint_gen;
        let half = (kmin..kmax).rev().find(|&j| {
            plan.split[j]
                .as_ref()
                .is_some_and(|(half, _)| *half == c.tree)
        });
        if let Some(j) = half {
            // The kill fell between the two WRITEs of a split write(2):
            // the image holds the first piece. The next session sends the
            // second piece (as the kernel would have), reaching state j+1.
            counts.split_writes_torn += 1;
            counts.unpersisted_kept += (j - kmin) as u64;
            completion = plan.split[j].as_ref().map(|(_, second)| second.clone());
            k = j + 1;
            expect = Some(c.tree);
            continue;
        }
        let Some(found) = (kmin..=kmax).rev().find(|&j| plan.trees[j] == c.tree) else {
            let (best, (cnt, first)) = (kmin..=kmax)
                .rev()
                .map(|j| (j, tree_diff(&c.tree, &plan.trees[j])))
                .min_by_key(|(_, (cnt, _))| *cnt)
                .expect("non-empty range");
            let elsewhere = plan.trees.iter().position(|t| *t == c.tree);
            return Err(format!(
                "{where_}\n the recovered tree equals no allowed oracle state{}\n nearest allowed state k={best} differs on {cnt} path(s); first: {first}\n steps around: {}",
                match elsewhere {
                    Some(j) => format!(" (it equals state k={j}, outside the allowed range)"),
                    None => " (nor any other state of the workload)".into(),
                },
                (kmin.saturating_sub(2)..(kmax + 1).min(n))
                    .map(|j| format!(
                        "\n   step {j} (state {j} -> {}): {} then {}",
                        j + 1,
                        plan.steps[j].op,
                        plan.steps[j].persist
                    ))
                    .collect::<String>()
            ));
        };
        counts.unpersisted_kept += (found - kmin) as u64;
        k = found;
        expect = Some(c.tree);
    }
}
