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
mod readahead;

use std::ffi::OsStr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use atomic_api::AtomicDevice;
use fuser::{
    AccessFlags, CopyFileRangeFlags, FileHandle, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::core::types::{Ctx, FileAttr, FileKind, SetAttr, TimeSet, Timespec, Whence};
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
    /// request can hold (capped at 4 MiB; the kernel caps it further at
    /// `fs.fuse.max_pages_limit`, 1 MiB by default).
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
    /// Whether the kernel granted the writeback cache at INIT.
    writeback: AtomicBool,
}

impl<D: AtomicDevice> AtomFuse<D> {
    pub fn new(fs: Arc<Fs<D>>, cfg: FuseConfig) -> Self {
        AtomFuse {
            fs,
            cfg,
            writeback: AtomicBool::new(false),
        }
    }

    /// The core underneath.
    pub fn fs(&self) -> &Arc<Fs<D>> {
        &self.fs
    }

    /// The largest write that still fits in one device request (with the
    /// inode sector), so the kernel never sends a WRITE the core would
    /// have to cut short: a short WRITE from page-cache writeback (mmap) is
    /// treated as an error by the kernel.
    fn max_write(&self) -> u32 {
        let geo = self.fs.device().geometry();
        let ss = u64::from(geo.sector_size);
        let fits = geo.max_request_bytes.saturating_sub(ss) / 4096 * 4096;
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

fn to_system_time(t: Timespec) -> SystemTime {
    if t.sec >= 0 {
        UNIX_EPOCH + Duration::new(t.sec as u64, t.nsec)
    } else {
        // sec is negative, nsec counts forward from it.
        UNIX_EPOCH - Duration::from_secs(t.sec.unsigned_abs()) + Duration::from_nanos(t.nsec.into())
    }
}

/// A time the kernel sent (SETATTR) back to the kernel's `(sec, nsec)`.
///
/// fuser 0.18 decodes a time before 1970 as `UNIX_EPOCH - (-sec, nsec)`
/// (`fuser::time::system_time_from_time`, marked TODO there) rather than
/// `sec` plus `nsec` forward, so the exact inverse of that encoding is
/// taken here: the kernel's (-1 s, 500 ns) must be stored as (-1, 500).
fn to_timespec(t: SystemTime) -> Timespec {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Timespec::new(d.as_secs() as i64, d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            Timespec::new(-(d.as_secs() as i64), d.subsec_nanos())
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
/// needed for permission checks on group-owned files. A task that has
/// already exited yields no groups (the check then uses the primary gid
/// alone, which can only deny, never wrongly allow).
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

/// The caller's credentials. The kernel has already applied the umask to
/// the modes it sends (fuser does not ask for `FUSE_DONT_MASK`), so the
/// core gets umask 0.
fn ctx(req: &Request) -> Ctx {
    let (uid, gid, pid) = (req.uid(), req.gid(), req.pid());
    // Root passes every check without groups; pid 0 is the kernel itself
    // (writeback), which has no /proc entry.
    let groups = if uid == 0 || pid == 0 {
        Vec::new()
    } else {
        proc_groups(pid)
    };
    Ctx {
        uid,
        gid,
        groups,
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
        let mut want = InitFlags::FUSE_PARALLEL_DIROPS
            // O_TRUNC arrives with OPEN, so open+truncate is one request.
            | InitFlags::FUSE_ATOMIC_O_TRUNC
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_MAX_PAGES
            | InitFlags::FUSE_BIG_WRITES
            | InitFlags::FUSE_ASYNC_READ;
        if self.cfg.writeback_cache {
            want |= InitFlags::FUSE_WRITEBACK_CACHE;
        }
        let granted = want & caps;
        if let Err(missing) = config.add_capabilities(granted) {
            log::warn!("atomfs: kernel refused FUSE capabilities {missing:?}");
        }
        if self.cfg.writeback_cache && !granted.contains(InitFlags::FUSE_WRITEBACK_CACHE) {
            log::warn!("atomfs: the kernel does not offer writeback_cache; staying write-through");
        }
        self.writeback.store(
            granted.contains(InitFlags::FUSE_WRITEBACK_CACHE),
            Ordering::Relaxed,
        );
        let max_write = self.max_write();
        if let Err(nearest) = config.set_max_write(max_write) {
            let _ = config.set_max_write(nearest);
        }
        let _ = config.set_max_background(64);
        log::debug!(
            "atomfs: FUSE init: capabilities {granted:?}, max_write {max_write}, writeback {}",
            self.writeback.load(Ordering::Relaxed)
        );
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

    /// Inode lifetimes are the core's business (open counts and link
    /// counts); kernel lookup counts need no bookkeeping because a reused
    /// inode number always comes with a new generation.
    fn forget(&self, _req: &Request, _ino: INodeNo, _nlookup: u64) {}

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

    /// close(2): nothing to write (every write is already a request) and,
    /// by design, no device flush; durability comes from fsync or the
    /// commit interval.
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
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

    /// Entries with their attributes, so `ls -l` needs no LOOKUP per name.
    /// The core's readdir holds its lock while it calls back, so the names
    /// are collected first (a buffer's worth) and their attributes read
    /// after; an entry whose inode vanished in between is skipped, and the
    /// next call resumes after the last entry added.
    fn readdirplus(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        // A direntplus record is at least 152 bytes; the kernel asks for a
        // page or more. Collecting a few too many is harmless.
        const MAX_BATCH: usize = 64;
        let mut batch = Vec::new();
        let res = self.fs.readdir(&ctx(req), ino.0, offset, |e| {
            batch.push(e.clone());
            batch.len() >= MAX_BATCH
        });
        if let Err(e) = res {
            reply.error(errno(e));
            return;
        }
        for e in batch {
            let Ok(attr) = self.fs.getattr(e.ino) else {
                continue;
            };
            let full = reply.add(
                INodeNo(e.ino),
                e.offset,
                &e.name,
                &self.cfg.attr_ttl,
                &to_fuser_attr(&attr),
                Generation(attr.generation),
            );
            if full {
                break;
            }
        }
        reply.ok();
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
