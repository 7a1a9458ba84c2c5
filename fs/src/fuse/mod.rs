//! The FUSE adapter: a [`fuser::Filesystem`] over [`Fs`], and the daemon
//! that mounts it (used by the `atomfs` binary).
//!
//! The adapter is a thin translation layer: every FUSE request becomes one
//! call into the core, whose result (an [`Errno`](crate::Errno) or a value)
//! goes straight back to the kernel. It keeps no state of its own beyond
//! its configuration, so the core stays the single source of truth and
//! `fs/src/core` never sees a fuser type.
//!
//! # Caching and crash semantics
//!
//! By default the mount is *write-through*: the kernel's page cache serves
//! reads, but every `write(2)` reaches the core (as one atomic request)
//! before the syscall returns, in syscall order. That is what makes the
//! crash guarantee of DESIGN.md §3 ("the tree after a crash equals some
//! prefix of the operations") hold through FUSE. The `writeback_cache`
//! option lets the kernel buffer writes and send them later, in an order of
//! its choosing, which breaks that guarantee for data (metadata operations
//! are still atomic); it is opt-in and documented as weaker.
//!
//! Attribute and entry replies carry a TTL: nothing changes the file system
//! behind the kernel's back (the device is opened exclusively), so the
//! kernel's caches stay coherent, and every change made through the mount
//! already invalidates what it touches.

pub mod daemon;
pub mod options;
pub mod readahead;

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use atomic_api::AtomicDevice;
use fuser::{
    AccessFlags, CopyFileRangeFlags, FileHandle, FopenFlags, Generation, INodeNo, InitFlags,
    IoctlFlags, KernelConfig, LockOwner, OpenFlags, PollEvents, PollFlags, PollNotifier,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty,
    ReplyEntry, ReplyIoctl, ReplyLseek, ReplyOpen, ReplyPoll, ReplyStatfs, ReplyWrite, ReplyXattr,
    Request, TimeOrNow, WriteFlags,
};

use crate::core::types::{
    Ctx, DirEntry, FileAttr, FileKind, Groups, SetAttr, TimeSet, Timespec, Whence,
};
use crate::errno::Errno;
use crate::Fs;

/// How the adapter talks to the kernel.
#[derive(Clone, Debug)]
pub struct FuseConfig {
    /// How long the kernel may cache attributes.
    pub attr_ttl: Duration,
    /// How long the kernel may cache names (positive and negative).
    pub entry_ttl: Duration,
    /// Ask for the kernel's writeback cache (weaker crash semantics).
    pub writeback_cache: bool,
    /// Open every file with `FOPEN_DIRECT_IO`: no page cache, every read
    /// and write goes to the daemon with the caller's offset and length.
    pub direct_io: bool,
    /// Largest WRITE the kernel may send; `None` = as large as one device
    /// request can hold, capped at 4 MiB. fuser 0.18 accepts up to 16 MiB
    /// and derives INIT's `max_pages` from it (rounded up to pages); the
    /// kernel clamps `max_pages` to `fs.fuse.max_pages_limit` (256 pages,
    /// 1 MiB, by default), and a WRITE is at most `max_pages` pages, so
    /// that sysctl, not this value, is usually the limit.
    pub max_write: Option<u32>,
}

impl Default for FuseConfig {
    fn default() -> Self {
        FuseConfig {
            attr_ttl: Duration::from_secs(1),
            entry_ttl: Duration::from_secs(1),
            writeback_cache: false,
            direct_io: false,
            max_write: None,
        }
    }
}

/// The [`fuser::Filesystem`] over an atomfs core.
pub struct AtomFuse<D: AtomicDevice> {
    fs: Arc<Fs<D>>,
    cfg: FuseConfig,
}

impl<D: AtomicDevice> AtomFuse<D> {
    pub fn new(fs: Arc<Fs<D>>, cfg: FuseConfig) -> Self {
        AtomFuse { fs, cfg }
    }

    /// The largest WRITE that always fits in one device request, so the
    /// kernel never sends one the core would have to cut short. That
    /// matters for page-cache writeback (mmap, `writeback_cache`): the
    /// kernel does not check the count such a WRITE returns
    /// (`fuse_writepage_end` looks only at the error), so the rest would
    /// be lost silently; a `write(2)` would merely return short. The core
    /// needs one sector for the inode and writes whole sectors, so an
    /// unaligned WRITE covers one sector more than its length: two
    /// sectors are kept free, not one.
    fn max_write(&self) -> u32 {
        let geo = self.fs.device().geometry();
        let ss = u64::from(geo.sector_size);
        let fits = geo.max_request_bytes.saturating_sub(2 * ss) / 4096 * 4096;
        let want = self
            .cfg
            .max_write
            .map_or(4 << 20, u64::from)
            .min(fits)
            .max(4096);
        want as u32
    }

    /// The reply flags of every OPEN and CREATE of a regular file.
    fn fopen_flags(&self) -> FopenFlags {
        if self.cfg.direct_io {
            FopenFlags::FOPEN_DIRECT_IO
        } else {
            FopenFlags::FOPEN_KEEP_CACHE
        }
    }

    fn entry(&self, reply: ReplyEntry, attr: &FileAttr) {
        reply.entry_with_ttls(
            &self.cfg.attr_ttl,
            &self.cfg.entry_ttl,
            &to_fuser_attr(attr),
            Generation(attr.generation),
        );
    }
}

/// The core's errno as fuser's.
fn errno(e: Errno) -> fuser::Errno {
    fuser::Errno::from_i32(e.0)
}

/// The largest nanosecond field of a valid time.
const MAX_NSEC: u32 = 999_999_999;

/// A stored time as a `SystemTime` for fuser, which encodes it back to the
/// kernel's `(sec, nsec)` exactly (and saturates beyond `i64` seconds).
///
/// Never panics: every `i64` second is representable on Linux (`SystemTime`
/// is a `timespec` there), and a nanosecond field out of range (only a
/// damaged inode can hold one) is clamped to 999,999,999 rather than
/// carried into the seconds, which would overflow at `i64::MAX`.
fn to_system_time(t: Timespec) -> SystemTime {
    let nsec = Duration::from_nanos(u64::from(t.nsec.min(MAX_NSEC)));
    let at = if t.sec >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(t.sec as u64))
    } else {
        // sec is negative, nsec counts forward from it.
        UNIX_EPOCH.checked_sub(Duration::from_secs(t.sec.unsigned_abs()))
    };
    // Unreachable on Linux; saturate rather than panic elsewhere.
    let at = at.unwrap_or(if t.sec >= 0 { far_future() } else { far_past() });
    at.checked_add(nsec).unwrap_or(at)
}

/// The latest `SystemTime`: `(i64::MAX, 999_999_999)`.
fn far_future() -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::new(i64::MAX as u64, MAX_NSEC))
        .unwrap_or(UNIX_EPOCH)
}

/// The earliest `SystemTime`: `(i64::MIN, 0)`.
fn far_past() -> SystemTime {
    UNIX_EPOCH
        .checked_sub(Duration::from_secs(i64::MIN.unsigned_abs()))
        .unwrap_or(UNIX_EPOCH)
}

/// A time the kernel sent (SETATTR) back to the kernel's `(sec, nsec)`.
///
/// fuser 0.18 decodes a time before 1970 as `UNIX_EPOCH - (-sec, nsec)`
/// (`fuser::time::system_time_from_time`, marked TODO there) rather than
/// `sec` plus `nsec` forward, so the exact inverse of that encoding is
/// taken here: the kernel's (-1 s, 500 ns) must be stored as (-1, 500).
///
/// Saturates instead of overflowing: a duration of 2^63 s before the
/// epoch (what a release build of fuser makes of the kernel's `i64::MIN`
/// seconds, by wrapping negation) is stored as `i64::MIN`, and anything
/// beyond `i64` seconds either way as the extremes.
fn to_timespec(t: SystemTime) -> Timespec {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => match i64::try_from(d.as_secs()) {
            Ok(sec) => Timespec::new(sec, d.subsec_nanos()),
            Err(_) => Timespec::new(i64::MAX, MAX_NSEC),
        },
        Err(e) => {
            let d = e.duration();
            match i64::try_from(d.as_secs()) {
                Ok(sec) => Timespec::new(-sec, d.subsec_nanos()),
                // 2^63 s before the epoch (i64::MIN) or earlier.
                Err(_) => Timespec::new(i64::MIN, 0),
            }
        }
    }
}

fn to_time_set(t: TimeOrNow) -> TimeSet {
    match t {
        TimeOrNow::Now => TimeSet::Now,
        TimeOrNow::SpecificTime(t) => TimeSet::At(to_timespec(t)),
    }
}

fn to_fuser_kind(kind: FileKind) -> fuser::FileType {
    match kind {
        FileKind::RegularFile => fuser::FileType::RegularFile,
        FileKind::Directory => fuser::FileType::Directory,
        FileKind::Symlink => fuser::FileType::Symlink,
        FileKind::CharDevice => fuser::FileType::CharDevice,
        FileKind::BlockDevice => fuser::FileType::BlockDevice,
        FileKind::NamedPipe => fuser::FileType::NamedPipe,
        FileKind::Socket => fuser::FileType::Socket,
    }
}

/// The core's attributes as fuser's.
pub fn to_fuser_attr(a: &FileAttr) -> fuser::FileAttr {
    fuser::FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: to_system_time(a.atime),
        mtime: to_system_time(a.mtime),
        ctime: to_system_time(a.ctime),
        crtime: to_system_time(a.crtime),
        kind: to_fuser_kind(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: a.blksize,
        flags: a.flags,
    }
}

/// The supplementary groups of task `pid`, from `/proc/PID/status`.
///
/// FUSE requests carry only the caller's uid, gid and pid; the groups are
/// needed for permission checks on group-owned files. The pid is the
/// calling *thread's* id as the daemon's pid namespace sees it (0 when
/// the caller is outside it or the kernel makes the request on its own),
/// and `/proc/TID/status` gives that thread's groups. It cannot name
/// another task: the requests that need groups are synchronous, and once
/// the daemon has read one the kernel waits for the reply uninterruptibly
/// (even on SIGKILL), so the caller cannot exit and its pid cannot be
/// reused before we answer. If the file cannot be read, the result is no
/// groups: the check uses the primary gid alone, which can only deny.
pub fn proc_groups(pid: u32) -> Vec<u32> {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Vec::new();
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| {
            g.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The caller's credentials for the core. The supplementary groups are
/// read from `/proc` only if a permission check asks for them (see
/// [`Groups`]). The kernel has already applied the umask to the modes it
/// sends (fuser does not ask for `FUSE_DONT_MASK`), so the core gets
/// umask 0.
fn ctx(req: &Request) -> Ctx {
    let (uid, pid) = (req.uid(), req.pid());
    Ctx {
        uid,
        gid: req.gid(),
        // Root passes every check without groups; pid 0 is a request the
        // kernel makes on its own (writeback) or a caller outside the
        // daemon's pid namespace: no /proc entry to ask.
        groups: if uid != 0 && pid != 0 {
            Groups::lazy(proc_groups, pid)
        } else {
            Groups::default()
        },
        pid,
        umask: 0,
    }
}

/// The fuser `Filesystem` implementation: one core call per request.
impl<D: AtomicDevice + 'static> fuser::Filesystem for AtomFuse<D> {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let caps = config.capabilities();
        // Concurrent lookups and readdirs in one directory: the core locks
        // its own state.
        // Not FUSE_ATOMIC_O_TRUNC: with it O_TRUNC arrives with OPEN, and
        // the daemon truncates before the VFS's handle_truncate() can
        // refuse the open (ETXTBSY for O_RDONLY|O_TRUNC on a running
        // binary), so a failed open destroyed the file. Without it the
        // kernel sends SETATTR(size 0) only after its own checks.
        let mut want = InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_MAX_PAGES
            | InitFlags::FUSE_BIG_WRITES
            | InitFlags::FUSE_ASYNC_READ;
        if self.cfg.writeback_cache {
            want |= InitFlags::FUSE_WRITEBACK_CACHE;
        }
        // The core clears setuid (and setgid with group-exec) itself on a
        // write, truncate or chown by anyone but root, as Linux does. Said
        // so here, the kernel stops sending its own SETATTR(mode) for that
        // on write, which the core refuses (EPERM) when the writer is not
        // the owner. V2 when offered: with it the kernel also writes
        // through its writeback cache to a set-id file, so the write
        // arrives as the writer, not as the kernel's flusher (uid 0).
        want |= if caps.contains(InitFlags::FUSE_HANDLE_KILLPRIV_V2) {
            InitFlags::FUSE_HANDLE_KILLPRIV_V2
        } else {
            InitFlags::FUSE_HANDLE_KILLPRIV
        };
        let granted = want & caps;
        if let Err(missing) = config.add_capabilities(granted) {
            log::warn!("atomfs: kernel refused FUSE capabilities {missing:?}");
        }
        if self.cfg.writeback_cache && !granted.contains(InitFlags::FUSE_WRITEBACK_CACHE) {
            log::warn!("atomfs: the kernel does not offer writeback_cache; staying write-through");
        }
        let max_write = self.max_write();
        if let Err(nearest) = config.set_max_write(max_write) {
            let _ = config.set_max_write(nearest);
        }
        let _ = config.set_max_background(64);
        log::debug!("atomfs: FUSE init: capabilities {granted:?}, max_write {max_write}");
        Ok(())
    }

    /// The final flush of the unmount (the daemon also flushes and closes
    /// the device after the session ends; flushing here too means the data
    /// is durable as soon as the kernel lets go).
    fn destroy(&mut self) {
        if self.fs.is_read_only() {
            return;
        }
        if let Err(e) = self.fs.sync() {
            log::error!("atomfs: final flush failed: {e}");
        }
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.fs.lookup(&ctx(req), parent.0, name) {
            Ok(attr) => self.entry(reply, &attr),
            Err(Errno::ENOENT) if !self.cfg.entry_ttl.is_zero() => {
                // A negative entry (node id 0) lets the kernel cache the
                // miss; every create goes through the kernel, which drops
                // it.
                let mut attr = to_fuser_attr(&FileAttr {
                    ino: 0,
                    generation: 0,
                    size: 0,
                    blocks: 0,
                    atime: Timespec::default(),
                    mtime: Timespec::default(),
                    ctime: Timespec::default(),
                    crtime: Timespec::default(),
                    kind: FileKind::RegularFile,
                    perm: 0,
                    nlink: 0,
                    uid: 0,
                    gid: 0,
                    rdev: 0,
                    blksize: 4096,
                    flags: 0,
                });
                attr.ino = INodeNo(0);
                reply.entry_with_ttls(&Duration::ZERO, &self.cfg.entry_ttl, &attr, Generation(0));
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    /// The kernel dropped `nlookup` lookups. Inode lifetimes are the
    /// core's business (link and open counts); what the lookup counts
    /// decide is when a freed inode's *number* may be reused: only after
    /// its last FORGET, since an entry for the old inode that the kernel
    /// processes after the number went to a new one marks the new inode
    /// bad (EIO), generation or not (see `MountOptions::hold_lookups`).
    /// BATCH_FORGET comes here too, one inode at a time (fuser's default
    /// `batch_forget`).
    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(ino.0) {
            Ok(attr) => reply.attr(&self.cfg.attr_ttl, &to_fuser_attr(&attr)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let change = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(to_time_set),
            mtime: mtime.map(to_time_set),
            ctime: ctime.map(to_timespec),
            fh: fh.map(|f| f.0),
        };
        match self.fs.setattr(&ctx(req), ino.0, &change) {
            Ok(attr) => reply.attr(&self.cfg.attr_ttl, &to_fuser_attr(&attr)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.fs.readlink(ino.0) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        match self.fs.mknod(&ctx(req), parent.0, name, mode, rdev) {
            Ok(attr) => self.entry(reply, &attr),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        match self.fs.mkdir(&ctx(req), parent.0, name, mode) {
            Ok(attr) => self.entry(reply, &attr),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.fs.unlink(&ctx(req), parent.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.fs.rmdir(&ctx(req), parent.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        match self
            .fs
            .symlink(&ctx(req), parent.0, link_name, target.as_os_str())
        {
            Ok(attr) => self.entry(reply, &attr),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        // The core's flag values are Linux's (RENAME_NOREPLACE = 1,
        // RENAME_EXCHANGE = 2); anything else (RENAME_WHITEOUT) is EINVAL
        // there.
        match self.fs.rename(
            &ctx(req),
            parent.0,
            name,
            newparent.0,
            newname,
            flags.bits(),
        ) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        match self.fs.link(&ctx(req), ino.0, newparent.0, newname) {
            Ok(attr) => self.entry(reply, &attr),
            Err(e) => reply.error(errno(e)),
        }
    }

    /// Opens keep the page cache (`FOPEN_KEEP_CACHE`): only this mount
    /// changes the files, so cached pages are never stale. O_DIRECT opens
    /// need no flag: the kernel sends their I/O uncached through its
    /// `direct_IO` path and keeps the page cache coherent itself; mmap
    /// therefore keeps working on every handle. With the `direct_io` option
    /// every open gets `FOPEN_DIRECT_IO` instead (see [`FuseConfig`]).
    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.open(&ctx(req), ino.0, flags.0) {
            Ok(fh) => reply.opened(FileHandle(fh), self.fopen_flags()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.fs.read_buf(ino.0, offset, size as usize) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(e)),
        }
    }

    /// Writes at the offset the kernel chose, never "at the core's EOF":
    /// for O_APPEND the kernel has already placed the data at its i_size
    /// (serialised by the inode lock) and copied it into its page cache at
    /// that offset, so appending anywhere else would make the cache lie.
    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.fs.write(&ctx(req), ino.0, offset, data, false) {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno(e)),
        }
    }

    /// close(2): nothing to do (every write is already a request; by
    /// design no device flush, durability comes from fsync or the commit
    /// interval; POSIX locks are the kernel's own, as atomfs does not ask
    /// for FUSE_POSIX_LOCKS). ENOSYS makes the kernel stop sending FLUSH
    /// for the rest of the mount (`fc->no_flush`): one round trip less on
    /// every close. The kernel still writes back dirty pages (mmap,
    /// writeback_cache) on close before it would have sent FLUSH.
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.error(fuser::Errno::ENOSYS);
    }

    /// No ioctl is supported: ENOTTY, as ext4 answers an unknown one, and
    /// without the log line fuser's default writes. Programs issue them
    /// unasked (Python's `open` asks TCGETS of every file it opens to see
    /// whether it is a terminal), and each used to put a three-line
    /// warning in syslog.
    #[allow(clippy::too_many_arguments)]
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        reply.error(fuser::Errno::ENOTTY);
    }

    /// Regular files and directories are always ready. ENOSYS makes the
    /// kernel answer every poll of this mount itself with the default
    /// mask (`fc->no_poll`), which says exactly that; fuser's default
    /// answer is the same ENOSYS but with a warning in the log.
    fn poll(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _ph: PollNotifier,
        _events: PollEvents,
        _flags: PollFlags,
        reply: ReplyPoll,
    ) {
        reply.error(fuser::Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        match self.fs.release(ino.0, fh.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.fs.fsync(ino.0, datasync) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn opendir(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.opendir(&ctx(req), ino.0, flags.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let res = self.fs.readdir(&ctx(req), ino.0, offset, |e| {
            reply.add(INodeNo(e.ino), e.offset, to_fuser_kind(e.kind), &e.name)
        });
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    /// Entries with their attributes, so `ls -l` needs no LOOKUP per name
    /// (see [`readdir_plus`]).
    fn readdirplus(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let res = readdir_plus(
            &self.fs,
            &ctx(req),
            ino.0,
            offset,
            |_| {},
            |e, attr| {
                reply.add(
                    INodeNo(e.ino),
                    e.offset,
                    &e.name,
                    &self.cfg.attr_ttl,
                    &to_fuser_attr(attr),
                    Generation(attr.generation),
                )
            },
        );
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.fs.fsyncdir(ino.0, datasync) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match self.fs.statfs() {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        position: u32,
        reply: ReplyEmpty,
    ) {
        if position != 0 {
            reply.error(fuser::Errno::EINVAL);
            return;
        }
        match self
            .fs
            .setxattr(&ctx(req), ino.0, name, value, flags as u32)
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.fs.getxattr(&ctx(req), ino.0, name) {
            Ok(value) => reply_sized(reply, &value, size),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.fs.listxattr(&ctx(req), ino.0) {
            Ok(names) => reply_sized(reply, &names, size),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.fs.removexattr(&ctx(req), ino.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        match self.fs.access(&ctx(req), ino.0, mask.bits()) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.fs.create(&ctx(req), parent.0, name, mode, flags) {
            Ok((attr, fh)) => reply.created(
                &self.cfg.entry_ttl,
                &to_fuser_attr(&attr),
                Generation(attr.generation),
                FileHandle(fh),
                self.fopen_flags(),
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        // FALLOC_FL_KEEP_SIZE and FALLOC_FL_PUNCH_HOLE have Linux's values
        // in the core; other modes are EOPNOTSUPP there.
        match self
            .fs
            .fallocate(&ctx(req), ino.0, offset, length, mode as u32)
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    /// Only SEEK_DATA and SEEK_HOLE reach the file system; the kernel
    /// handles the other whence values itself.
    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let whence = match whence {
            libc::SEEK_DATA => Whence::Data,
            libc::SEEK_HOLE => Whence::Hole,
            _ => {
                reply.error(fuser::Errno::EINVAL);
                return;
            }
        };
        if offset < 0 {
            reply.error(fuser::Errno::ENXIO);
            return;
        }
        match self.fs.lseek(ino.0, offset as u64, whence) {
            Ok(off) => reply.offset(off as i64),
            Err(e) => reply.error(errno(e)),
        }
    }

    /// Server-side copy: one read and one write request of at most
    /// `max_write` bytes (a short count is legal; callers loop). Saves the
    /// round trips through user space.
    fn copy_file_range(
        &self,
        req: &Request,
        ino_in: INodeNo,
        _fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        _fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        if !flags.is_empty() {
            reply.error(fuser::Errno::EINVAL);
            return;
        }
        let len = len.min(u64::from(self.max_write())) as usize;
        let data = match self.fs.read(ino_in.0, offset_in, len) {
            Ok(d) => d,
            Err(e) => {
                reply.error(errno(e));
                return;
            }
        };
        if data.is_empty() {
            reply.written(0);
            return;
        }
        match self
            .fs
            .write(&ctx(req), ino_out.0, offset_out, &data, false)
        {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(errno(e)),
        }
    }
}

/// The listing behind READDIRPLUS: each entry of directory `ino` after
/// cookie `offset`, with its attributes, handed to `add` until it returns
/// true ("reply full", that entry not taken) or the directory ends.
///
/// The core's readdir holds its lock while it calls back, so names are
/// collected a batch at a time and their attributes read after (`batch`
/// sees each batch in between; tests use it to change the directory
/// there). An entry whose inode is gone by then (ENOENT: removed in
/// between) is left out, as if the removal had come first; if a whole
/// batch went that way, the listing goes on from the batch's last cookie
/// rather than ending (an empty reply is the end of the directory to the
/// kernel). Any other error ends the reply: with the entries already
/// added, so the next call starts at the failing entry and reports it, or
/// as the error itself when there are none.
fn readdir_plus<D: AtomicDevice>(
    fs: &Fs<D>,
    ctx: &Ctx,
    ino: u64,
    mut offset: u64,
    mut batch: impl FnMut(&[DirEntry]),
    mut add: impl FnMut(&DirEntry, &FileAttr) -> bool,
) -> crate::Result<()> {
    // A direntplus record is at least 152 bytes; the kernel asks for a
    // page or more. Collecting a few too many is harmless.
    const MAX_BATCH: usize = 64;
    let mut added = false;
    loop {
        let mut names = Vec::new();
        fs.readdir(ctx, ino, offset, |e| {
            names.push(e.clone());
            names.len() >= MAX_BATCH
        })?;
        let Some(last) = names.last() else {
            return Ok(());
        };
        let next = last.offset;
        let more = names.len() >= MAX_BATCH;
        batch(&names);
        for e in &names {
            // The kernel counts a lookup for every entry but `.` and `..`:
            // hold those as a LOOKUP reply does, and give one back if the
            // reply buffer is full and the entry is not sent.
            let dot = e.name == "." || e.name == "..";
            let attr = match if dot {
                fs.getattr(e.ino)
            } else {
                fs.getattr_entry(e.ino)
            } {
                Ok(attr) => attr,
                Err(Errno::ENOENT) => continue,
                Err(_) if added => return Ok(()),
                Err(err) => return Err(err),
            };
            if add(e, &attr) {
                if !dot {
                    fs.forget(e.ino, 1);
                }
                return Ok(());
            }
            added = true;
        }
        if !more {
            return Ok(());
        }
        offset = next;
    }
}

/// The xattr size-probe protocol: `size == 0` asks for the length, a
/// buffer too small is ERANGE.
fn reply_sized(reply: ReplyXattr, data: &[u8], size: u32) {
    if size == 0 {
        reply.size(data.len() as u32);
    } else if data.len() > size as usize {
        reply.error(fuser::Errno::ERANGE);
    } else {
        reply.data(data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What fuser 0.18 hands us for the kernel's `(sec, nsec)` in SETATTR
    /// (a copy of `fuser::time::system_time_from_time`, which is private).
    fn as_fuser_decodes(sec: i64, nsec: u32) -> SystemTime {
        if sec >= 0 {
            UNIX_EPOCH + Duration::new(sec as u64, nsec)
        } else {
            UNIX_EPOCH - Duration::new(sec.unsigned_abs(), nsec)
        }
    }

    #[test]
    fn kernel_times_are_stored_exactly() {
        for (sec, nsec) in [
            (0, 0),
            (1_700_000_000, 123_456_789),
            (-1, 500),
            (-100, 0),
            (-100, 999_999_999),
        ] {
            assert_eq!(
                to_timespec(as_fuser_decodes(sec, nsec)),
                Timespec::new(sec, nsec),
                "({sec}, {nsec})"
            );
        }
    }

    #[test]
    fn stored_times_reach_fuser_exactly() {
        for t in [
            Timespec::new(0, 0),
            Timespec::new(1_700_000_000, 123_456_789),
            Timespec::new(-1, 500),
            Timespec::new(-100, 999_999_999),
        ] {
            // Outgoing, fuser encodes a SystemTime with floor semantics
            // (whole seconds before it, nanoseconds forward).
            let st = to_system_time(t);
            let back = match st.duration_since(UNIX_EPOCH) {
                Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
                Err(e) => {
                    let d = e.duration();
                    if d.subsec_nanos() == 0 {
                        (-(d.as_secs() as i64), 0)
                    } else {
                        (-(d.as_secs() as i64) - 1, 1_000_000_000 - d.subsec_nanos())
                    }
                }
            };
            assert_eq!(back, (t.sec, t.nsec), "{t:?}");
        }
    }

    /// Extreme and invalid times convert both ways without a panic, and
    /// clamp where they must.
    #[test]
    fn extreme_times_never_panic() {
        let enc = |st: SystemTime| match st.duration_since(UNIX_EPOCH) {
            Ok(d) => (i128::from(d.as_secs()), d.subsec_nanos()),
            Err(e) => (
                -i128::from(e.duration().as_secs()),
                e.duration().subsec_nanos(),
            ),
        };
        // Every i64 second is representable: exact, nanoseconds included.
        for t in [
            Timespec::new(i64::MAX, 999_999_999),
            Timespec::new(i64::MAX, 0),
            Timespec::new(i64::MIN, 0),
            Timespec::new(i64::MIN, 999_999_999),
            Timespec::new(i64::MIN + 1, 1),
        ] {
            let st = to_system_time(t);
            let (sec, nsec) = enc(st);
            let want = i128::from(t.sec) * 1_000_000_000 + i128::from(t.nsec);
            let got = sec * 1_000_000_000 + if sec < 0 { -1 } else { 1 } * i128::from(nsec);
            assert_eq!(got, want, "{t:?}");
        }
        // A nanosecond field out of range (a damaged inode) is clamped, never
        // carried into the seconds.
        for (sec, nsec) in [
            (i64::MAX, 1_000_000_000),
            (5, u32::MAX),
            (-5, 2_000_000_000),
        ] {
            let st = to_system_time(Timespec::new(sec, nsec));
            let want = i128::from(sec) * 1_000_000_000 + 999_999_999;
            let (s, n) = enc(st);
            let got = s * 1_000_000_000 + if s < 0 { -1 } else { 1 } * i128::from(n);
            assert_eq!(got, want, "({sec}, {nsec})");
        }
        // Incoming: the extremes fuser can hand over, and beyond.
        assert_eq!(
            to_timespec(as_fuser_decodes(i64::MAX, 999_999_999)),
            Timespec::new(i64::MAX, 999_999_999)
        );
        assert_eq!(
            to_timespec(as_fuser_decodes(i64::MIN + 1, 999_999_999)),
            Timespec::new(i64::MIN + 1, 999_999_999)
        );
        let at_min = UNIX_EPOCH - Duration::from_secs(1 << 63);
        assert_eq!(to_timespec(at_min), Timespec::new(i64::MIN, 0));
        // (Linux's SystemTime ends there: nothing beyond can be built.)
        assert!(at_min.checked_sub(Duration::from_nanos(1)).is_none());
    }

    /// A fresh core on a memory device with directory `d` holding `n` files.
    fn dir_with_files(n: usize) -> (Fs<Arc<atomic_api::MemDevice>>, u64) {
        let dev = Arc::new(atomic_api::MemDevice::new(512, 1 << 30));
        Fs::mkfs(&dev, &crate::MkfsOptions::default()).unwrap();
        let fs = Fs::mount(
            dev,
            &crate::MountOptions {
                hold_lookups: true,
                ..crate::MountOptions::default()
            },
        )
        .unwrap();
        let root = Ctx::root();
        let d = fs
            .mkdir(&root, crate::ROOT_INO, OsStr::new("d"), 0o755)
            .unwrap()
            .ino;
        for i in 0..n {
            fs.mknod(
                &root,
                d,
                OsStr::new(&format!("f{i:04}")),
                libc::S_IFREG | 0o644,
                0,
            )
            .unwrap();
        }
        (fs, d)
    }

    /// Everything `readdir_plus` lists from `offset` until the directory ends,
    /// `per_reply` entries per call (as successive READDIRPLUS requests),
    /// running `between` on each batch of names it collects.
    fn list_plus<D: AtomicDevice>(
        fs: &Fs<D>,
        d: u64,
        per_reply: usize,
        mut between: impl FnMut(&[DirEntry]),
    ) -> Vec<String> {
        let mut out = Vec::new();
        let mut offset = 0;
        loop {
            let mut got = Vec::new();
            readdir_plus(fs, &Ctx::root(), d, offset, &mut between, |e, attr| {
                if got.len() == per_reply {
                    return true;
                }
                assert_eq!(attr.ino, e.ino);
                got.push(e.clone());
                false
            })
            .unwrap();
            let Some(last) = got.last() else {
                return out;
            };
            offset = last.offset;
            out.extend(got.iter().map(|e| e.name.to_string_lossy().into_owned()));
        }
    }

    #[test]
    fn readdirplus_lists_everything() {
        let (fs, d) = dir_with_files(300);
        for i in 0..300 {
            let ino = fs
                .lookup(&Ctx::root(), d, OsStr::new(&format!("f{i:04}")))
                .unwrap()
                .ino;
            // MKNOD and the LOOKUP above.
            fs.forget(ino, 2);
        }
        let names = list_plus(&fs, d, 20, |_| {});
        assert_eq!(names.len(), 302);
        let mut files: Vec<_> = names.into_iter().filter(|n| n.starts_with('f')).collect();
        files.sort();
        let want: Vec<_> = (0..300).map(|i| format!("f{i:04}")).collect();
        assert_eq!(files, want);
        // Each file was sent once (the kernel counts a lookup for it), the
        // entries refused by a full reply were given back, and `.` and
        // `..` are not counted.
        for f in &files {
            let ino = fs.lookup(&Ctx::root(), d, OsStr::new(f)).unwrap().ino;
            assert_eq!(fs.held(ino), 2, "{f}: readdirplus entry and this lookup");
        }
        assert_eq!(fs.held(d), 1, "the directory: its MKDIR only");
    }

    /// Whole batches of names removed between collecting them and reading
    /// their attributes: the listing goes on with the survivors instead of
    /// ending early (an empty READDIRPLUS reply is end-of-directory).
    #[test]
    fn readdirplus_continues_past_a_removed_batch() {
        let (fs, d) = dir_with_files(400);
        let mut calls = 0;
        let mut removed = std::collections::BTreeSet::new();
        let names = list_plus(&fs, d, 20, |batch| {
            calls += 1;
            // From the second reply on, the first batch each time vanishes
            // whole (twice), as if another process deleted it meanwhile.
            if calls == 2 || calls == 4 {
                for e in batch.iter().filter(|e| e.name != "." && e.name != "..") {
                    fs.unlink(&Ctx::root(), d, &e.name).unwrap();
                    removed.insert(e.name.to_string_lossy().into_owned());
                }
            }
        });
        assert!(removed.len() >= 100, "{} removed", removed.len());
        let listed: std::collections::BTreeSet<_> = names
            .iter()
            .filter(|n| n.starts_with('f'))
            .cloned()
            .collect();
        assert_eq!(listed.len(), names.len() - 2, "each name once");
        let survivors: std::collections::BTreeSet<_> = (0..400)
            .map(|i| format!("f{i:04}"))
            .filter(|n| !removed.contains(n))
            .collect();
        assert_eq!(listed, survivors);
    }

    /// An error other than ENOENT (a damaged inode: EIO) is reported, not
    /// skipped: the reply ends before that entry, and the next one fails.
    #[test]
    fn readdirplus_reports_errors() {
        let (fs, d) = dir_with_files(3);
        let bad = fs.lookup(&Ctx::root(), d, OsStr::new("f0001")).unwrap().ino;
        let dev = fs.unmount().unwrap();
        let mut garbage = atomic_api::Request::new();
        garbage.write(
            Fs::mount(dev.clone(), &crate::MountOptions::default())
                .unwrap()
                .layout()
                .inode_lba(bad),
            vec![0xab; 512],
        );
        dev.submit(garbage).unwrap();
        // A new mount: nothing cached, the inode is read (and fails) now.
        let fs = Fs::mount(dev, &crate::MountOptions::default()).unwrap();
        let mut offset = 0;
        let mut listed = Vec::new();
        let err = loop {
            let mut got = Vec::new();
            let res = readdir_plus(
                &fs,
                &Ctx::root(),
                d,
                offset,
                |_| {},
                |e, _| {
                    got.push(e.clone());
                    false
                },
            );
            listed.extend(got.iter().map(|e| e.name.clone()));
            match res {
                Err(e) => break e,
                Ok(()) => match got.last() {
                    Some(last) => offset = last.offset,
                    None => panic!("listing ended without the error: {listed:?}"),
                },
            }
        };
        assert_eq!(err, Errno::EIO);
        assert!(!listed.iter().any(|n| n == "f0001"), "{listed:?}");
    }

    #[test]
    fn proc_groups_of_self_matches_getgroups() {
        let mut want: Vec<u32> = nix::unistd::getgroups()
            .unwrap()
            .into_iter()
            .map(|g| g.as_raw())
            .collect();
        let mut got = proc_groups(std::process::id());
        want.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, want);
        assert!(proc_groups(u32::MAX).is_empty());
    }
}
