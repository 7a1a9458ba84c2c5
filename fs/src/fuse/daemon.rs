//! The mount daemon behind the `atomfs` binary: open and check the device,
//! mount it through FUSE, serve until unmount or SIGTERM/SIGINT/SIGHUP,
//! then flush, close the device and write the stats file.
//!
//! Split in two so the binary can daemonize in between: [`mount`] returns
//! once the kernel has finished the FUSE INIT handshake (the mount is
//! usable), and [`Daemon::serve`] runs the session. Every error is one line
//! naming the path it concerns (`PATH: cause`); the binary prefixes
//! `atomfs: `.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use atomic_api::{AtomicDevice, Stats};
use blockdev::{FileMedia, FileMediaOptions, LogDevice, Media, OpenOptions};
use fuser::{Config, MountOption, Session, SessionACL};

use super::options::MountConfig;
use super::{AtomFuse, FuseConfig};
use crate::{Fs, MountOptions};

/// A [`Media`] that counts what is written to it and how often it is
/// flushed. The device's own [`Stats`] end when `LogDevice::close` hands
/// the media back, so the checkpoint written by the close is counted here
/// and added to the stats file (the bench compares with loop-device
/// counters, which see that checkpoint).
pub struct CountingMedia<M: Media> {
    inner: M,
    written: AtomicU64,
    flushes: AtomicU64,
}

impl<M: Media> CountingMedia<M> {
    pub fn new(inner: M) -> Self {
        CountingMedia {
            inner,
            written: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
        }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Media flushes so far.
    pub fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }
}

impl<M: Media> Media for CountingMedia<M> {
    fn sector_size(&self) -> u32 {
        self.inner.sector_size()
    }
    fn len_bytes(&self) -> u64 {
        self.inner.len_bytes()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.inner.write_at(offset, data)?;
        self.written.fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        self.inner.flush()?;
        self.flushes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.inner.discard(offset, len)
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn write_behind(&self) -> bool {
        self.inner.write_behind()
    }
}

/// The block device under a daemon's file system.
pub type Device = LogDevice<CountingMedia<FileMedia>>;
/// The file system a daemon serves.
pub type DaemonFs = Fs<Arc<Device>>;

/// A mounted, not yet serving, atomfs.
pub struct Daemon {
    fs: Arc<DaemonFs>,
    session: Session<AtomFuse<Arc<Device>>>,
    cfg: MountConfig,
    device: PathBuf,
    mountpoint: PathBuf,
    /// `mountpoint` made absolute and resolved before the mount.
    mount_dir: PathBuf,
    at_mount: Stats,
}

/// Opens the block layer on `media` and checks that it holds an atomfs
/// without writing anything: read-only block layer, read-only mount.
/// Only then may a read-write open write its recovery checkpoint, so a
/// device holding something else (or a damaged atomfs) is never written.
fn open_checked(
    media: CountingMedia<FileMedia>,
    path: &Path,
    read_only: bool,
) -> Result<Arc<Device>, String> {
    let ro = OpenOptions {
        read_only: true,
        ..OpenOptions::default()
    };
    let dev = Arc::new(LogDevice::open(media, &ro).map_err(|e| e.to_string())?);
    let probe = MountOptions {
        read_only: true,
        ..MountOptions::default()
    };
    let fs = Fs::mount(dev.clone(), &probe).map_err(|e| format!("{}: {e}", path.display()))?;
    drop(fs);
    if read_only {
        return Ok(dev);
    }
    let dev = Arc::try_unwrap(dev)
        .map_err(|_| format!("{}: internal error: device still shared", path.display()))?;
    let media = dev
        .close()
        .map_err(|e| format!("{}: closing after the check: {e}", path.display()))?;
    let rw = OpenOptions::default();
    Ok(Arc::new(
        LogDevice::open(media, &rw).map_err(|e| e.to_string())?,
    ))
}

/// Number of FUSE worker threads: enough that a slow fsync does not stall
/// reads, bounded because writes serialise in the core anyway.
pub fn worker_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 8)
        * 2
}

/// The core's mount options for `cfg`.
pub fn core_options(cfg: &MountConfig) -> MountOptions {
    MountOptions {
        read_only: cfg.read_only,
        sync: cfg.sync,
        // The kernel names inodes by number: a number is reused only after
        // its FORGET.
        hold_lookups: true,
        ..MountOptions::default()
    }
}

/// Mounts `fs` on `mountpoint` through FUSE as `cfg` asks of the adapter
/// and the kernel (kernel mount options, who may enter, caching, worker
/// threads, one `/dev/fuse` clone per worker) and returns once the kernel
/// has finished INIT. `source` is what /proc/mounts shows unless `fsname=`
/// says otherwise. [`mount`] uses it, and so does any other daemon (the
/// crash tests' recording one) that must behave exactly as `atomfs`.
pub fn fuse_session<D: AtomicDevice + 'static>(
    fs: Arc<Fs<D>>,
    source: &Path,
    mountpoint: &Path,
    cfg: &MountConfig,
) -> Result<Session<AtomFuse<D>>, String> {
    let fuse_cfg = FuseConfig {
        writeback_cache: cfg.writeback_cache,
        direct_io: cfg.direct_io,
        ..FuseConfig::default()
    };
    let mut options = vec![
        MountOption::FSName(
            cfg.fsname
                .clone()
                .unwrap_or_else(|| source.display().to_string()),
        ),
        // The kernel takes `subtype` itself, so /proc/mounts says
        // `fuse.atomfs` and `umount`/`mount -t fuse.atomfs` match it.
        MountOption::CUSTOM("subtype=atomfs".into()),
    ];
    if cfg.read_only {
        options.push(MountOption::RO);
    }
    if cfg.default_permissions {
        options.push(MountOption::DefaultPermissions);
    }
    options.extend(cfg.vfs_flags.iter().map(|f| f.to_mount_option()));
    let mut config = Config::default();
    config.mount_options = options;
    config.acl = if cfg.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(worker_threads());
    config.clone_fd = true;
    Session::new(AtomFuse::new(fs, fuse_cfg), mountpoint, &config)
        .map_err(|e| format!("{}: cannot mount: {}", mountpoint.display(), io_cause(&e)))
}

/// Serves `session` until the kernel ends the connection (unmount).
///
/// fuser takes only ENODEV from `/dev/fuse` as the end; but a worker that
/// is copying a request out when the unmount aborts the connection gets
/// ECONNABORTED instead (`fuse_dev_do_read`: the processing queue is
/// already disconnected), which fuser returns as the session's error. It
/// is the same end of the connection, seen a moment earlier, so it is not
/// reported as a failure (what was flushed and closed after it is
/// unaffected: that is the caller's business).
pub fn run_session<FS: fuser::Filesystem>(session: Session<FS>) -> io::Result<()> {
    match session.run() {
        Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {
            log::debug!("atomfs: the connection ended while a request was being read");
            Ok(())
        }
        res => res,
    }
}

/// Opens `device`, checks it, and mounts it on `mountpoint`. Returns when
/// the mount is usable. Errors are one line, `PATH: cause`.
pub fn mount(device: &Path, mountpoint: &Path, cfg: &MountConfig) -> Result<Daemon, String> {
    match std::fs::metadata(mountpoint) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(format!("{}: not a directory", mountpoint.display())),
        Err(e) => return Err(format!("{}: {}", mountpoint.display(), io_cause(&e))),
    }
    let media = FileMedia::open_with(
        device,
        &FileMediaOptions {
            read_only: cfg.read_only,
            ..FileMediaOptions::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let dev = open_checked(CountingMedia::new(media), device, cfg.read_only)?;
    let fs = Arc::new(
        Fs::mount(dev, &core_options(cfg)).map_err(|e| format!("{}: {e}", device.display()))?,
    );
    // Resolved before the mount: afterwards resolving it would be a
    // request to our own mount (see readahead.rs).
    let mount_dir = std::fs::canonicalize(mountpoint).unwrap_or_else(|_| mountpoint.into());
    let session = fuse_session(fs.clone(), device, mountpoint, cfg)?;
    let at_mount = fs.device().stats();
    Ok(Daemon {
        fs,
        session,
        cfg: cfg.clone(),
        device: device.to_path_buf(),
        mountpoint: mountpoint.to_path_buf(),
        mount_dir,
        at_mount,
    })
}

/// An `io::Error` as a short cause, without Rust's "(os error N)" suffix.
fn io_cause(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => nix::errno::Errno::from_raw(code).desc().to_lowercase(),
        None => e.to_string().trim().replace('\n', " "),
    }
}

/// The signals that end the session (as libfuse: SIGHUP, SIGINT, SIGTERM).
pub fn stop_signals() -> nix::sys::signal::SigSet {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.add(Signal::SIGHUP);
    set
}

/// Blocks the stop signals in the calling thread and every thread it
/// starts afterwards, so they stay pending until the signal thread of
/// [`Daemon::serve`] takes them. Call first thing in `main` (before any
/// thread exists), so a SIGTERM during mount unmounts cleanly instead of
/// killing the process with the mount half set up.
pub fn block_stop_signals() {
    let _ = stop_signals().thread_block();
    // A reader of our stderr that went away must not kill the daemon.
    // SAFETY: setting a signal disposition to SIG_IGN.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// Detaches the mount (MNT_DETACH): the mount point is free at once and
/// the session ends when the last open file on it is closed.
fn lazy_unmount(mountpoint: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(mountpoint.as_os_str().as_bytes())?;
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl Daemon {
    /// Serves until the file system is unmounted (umount, fusermount -u)
    /// or a stop signal arrives (which unmounts it), then flushes, closes
    /// the device and writes the stats file. Errors are one line.
    pub fn serve(self) -> Result<(), String> {
        let Daemon {
            fs,
            mut session,
            cfg,
            device,
            mountpoint,
            mount_dir,
            at_mount,
        } = self;
        block_stop_signals();
        let mut unmounter = session.unmount_callable();
        let shared = Arc::new(Shared::new(&fs));
        let helper = shared.clone();
        let mnt = mountpoint.clone();
        std::thread::Builder::new()
            .name("atomfs-signals".into())
            .spawn(move || {
                let Ok(sig) = stop_signals().wait() else {
                    return;
                };
                log::info!("atomfs: {sig:?}: unmounting {}", mnt.display());
                if let Err(e) = unmounter.unmount() {
                    // Busy: detach now; the session ends when the last
                    // user lets go. Flush meanwhile so what was done
                    // before the signal is durable whatever happens next.
                    log::warn!("atomfs: {}: unmount: {e}; detaching", mnt.display());
                    if let Err(e) = lazy_unmount(&mnt) {
                        log::error!("atomfs: {}: detach failed: {e}", mnt.display());
                    }
                    helper.with(|fs| {
                        if let Err(e) = fs.sync() {
                            log::error!("atomfs: flush after the signal failed: {e}");
                        }
                    });
                }
            })
            .map_err(|e| format!("{}: cannot start a thread: {e}", device.display()))?;

        let committer = match cfg.commit {
            Some(every) if !cfg.read_only && !cfg.sync => Some(Committer::start(&shared, every)),
            _ => None,
        };
        super::readahead::raise_after_init(mount_dir, super::readahead::READAHEAD_KIB);
        let served = run_session(session);
        if let Some(c) = committer {
            c.stop();
        }
        // From here no helper thread can hold the file system.
        shared.close();
        let closed = finish(fs, &device, &cfg, at_mount);
        served.map_err(|e| format!("{}: FUSE session failed: {e}", mountpoint.display()))?;
        closed
    }
}

/// The file system as the helper threads (signals, `commit=`) reach it: a
/// weak reference upgraded only under the lock, for the length of one call.
/// [`Shared::close`] takes the lock, so it waits for a flush in progress,
/// and clears the reference: after it, the session's end leaves `serve` the
/// only owner, and [`finish`] can always unmount and close (the close
/// writes the checkpoint that makes the next mount need no recovery). A
/// plain `Weak::upgrade` in a helper raced with `finish` (SIGTERM on a busy
/// mount: the signal thread's flush still held a reference when the last
/// file was closed, and the close checkpoint was lost).
struct Shared {
    fs: Mutex<Weak<DaemonFs>>,
}

impl Shared {
    fn new(fs: &Arc<DaemonFs>) -> Shared {
        Shared {
            fs: Mutex::new(Arc::downgrade(fs)),
        }
    }

    /// Runs `f` on the file system unless it is closed.
    fn with<R>(&self, f: impl FnOnce(&DaemonFs) -> R) -> Option<R> {
        let weak = self.fs.lock().unwrap_or_else(|e| e.into_inner());
        let fs = weak.upgrade()?;
        Some(f(&fs))
    }

    /// Waits for a call in progress, then refuses every later one.
    fn close(&self) {
        *self.fs.lock().unwrap_or_else(|e| e.into_inner()) = Weak::new();
    }
}

/// The background flush thread (`commit=`): flushes every interval, stops
/// when told.
struct Committer {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl Committer {
    fn start(shared: &Arc<Shared>, every: Duration) -> Committer {
        let (stop, rx) = mpsc::channel::<()>();
        let shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("atomfs-commit".into())
            .spawn(move || loop {
                match rx.recv_timeout(every) {
                    Err(RecvTimeoutError::Timeout) => {
                        let flushed = shared.with(|fs| {
                            if let Err(e) = fs.sync() {
                                log::error!("atomfs: periodic flush failed: {e}");
                            }
                        });
                        if flushed.is_none() {
                            return;
                        }
                    }
                    _ => return,
                }
            })
            .expect("spawning the commit thread");
        Committer { stop, thread }
    }

    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// After the session: final flush, close, stats file.
fn finish(
    fs: Arc<DaemonFs>,
    device: &Path,
    cfg: &MountConfig,
    at_mount: Stats,
) -> Result<(), String> {
    let name = device.display();
    let fs = Arc::try_unwrap(fs).map_err(|fs| {
        // Only if the session ended early with a worker thread still
        // running (fuser returns when one of them panics). Make the image
        // as clean as a close would, through the shared handle: flush, and
        // a checkpoint, so the next mount has nothing to recover.
        if let Err(e) = fs.sync().map_err(|e| e.to_string()).and_then(|()| {
            fs.device()
                .checkpoint()
                .map_err(|e| e.to_string())
        }) {
            log::error!("atomfs: {name}: final flush failed: {e}");
        }
        format!("{name}: internal error: file system still in use at exit (flushed and checkpointed, not closed)")
    })?;
    let dev = fs
        .unmount()
        .map_err(|e| format!("{name}: final flush failed: {e}"))?;
    let dev = Arc::try_unwrap(dev)
        .map_err(|_| format!("{name}: internal error: device still in use at exit"))?;
    let mut stats = dev.stats();
    let (written, flushes) = (dev.media().written(), dev.media().flushes());
    let media = dev
        .close()
        .map_err(|e| format!("{name}: closing the device failed: {e}"))?;
    // What the close wrote is its checkpoint (the batch was flushed above).
    stats.media_checkpoint_bytes += media.written() - written;
    stats.media_flushes += media.flushes() - flushes;
    if let Some(path) = &cfg.stats_file {
        write_stats(path, &stats, &at_mount)
            .map_err(|e| format!("{}: cannot write stats: {}", path.display(), io_cause(&e)))?;
    }
    // Released last: whoever waits for the device to be free (a remount,
    // a test) then also finds the stats file complete.
    drop(media);
    Ok(())
}

fn stats_json(s: &Stats) -> serde_json::Value {
    serde_json::json!({
        "requests": s.requests,
        "flushes": s.flushes,
        "media_flushes": s.media_flushes,
        "submitted_bytes": s.submitted_bytes,
        "trimmed_sectors": s.trimmed_sectors,
        "media_payload_bytes": s.media_payload_bytes,
        "media_header_bytes": s.media_header_bytes,
        "media_checkpoint_bytes": s.media_checkpoint_bytes,
        "media_gc_bytes": s.media_gc_bytes,
        "media_padding_bytes": s.media_padding_bytes,
        "media_read_bytes": s.media_read_bytes,
    })
}

/// Writes the stats file the bench reads (bench/README.md, "atomfs
/// breakdown"): `PATH.tmp`, then renamed to `PATH`, so a reader never sees
/// half a file.
pub fn write_stats(path: &Path, at_exit: &Stats, at_mount: &Stats) -> io::Result<()> {
    let doc = serde_json::json!({
        "version": 1,
        "device": stats_json(at_exit),
        "device_at_mount": stats_json(at_mount),
    });
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(serde_json::to_string_pretty(&doc)?.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}
