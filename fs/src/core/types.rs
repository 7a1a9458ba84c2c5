//! The public value types of the core API: caller context, attributes,
//! directory entries, options and errors. No FUSE types: the adapter maps
//! these one to one.

use std::ffi::OsString;
use std::sync::{Arc, OnceLock};

/// Who is calling: the credentials the permission checks use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ctx {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the primary `gid` need not be repeated).
    pub groups: Groups,
    pub pid: u32,
    /// Applied to the mode of mknod/mkdir/create/symlink-less creations
    /// (`mode & !umask`). The FUSE adapter passes 0 when the kernel already
    /// applied it.
    pub umask: u32,
}

impl Ctx {
    /// The superuser with umask 0.
    pub fn root() -> Ctx {
        Ctx::default()
    }

    /// An unprivileged user whose only group is `gid`, umask 0.
    pub fn user(uid: u32, gid: u32) -> Ctx {
        Ctx {
            uid,
            gid,
            ..Ctx::default()
        }
    }

    /// True when `gid` is the caller's primary or a supplementary group.
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.get().contains(&gid)
    }

    pub fn is_root(&self) -> bool {
        self.uid == 0
    }
}

/// The caller's supplementary groups: given, or read on first use.
///
/// The FUSE adapter learns them only by reading `/proc/PID/status`, a
/// syscall-heavy read per request, while most permission checks never
/// reach the group class (the caller owns the file, is root, or has the
/// file's gid as primary group). So it passes a loader, and the core reads
/// the groups only when a check asks for them, at most once per request.
#[derive(Clone, Debug, Default)]
pub struct Groups {
    known: OnceLock<Vec<u32>>,
    /// The loader and its argument (the caller's pid).
    load: Option<(GroupLoader, u32)>,
}

/// Reads the supplementary groups of a pid.
pub type GroupLoader = fn(u32) -> Vec<u32>;

impl Groups {
    /// Groups read by `load(pid)` when first needed.
    pub fn lazy(load: GroupLoader, pid: u32) -> Groups {
        Groups {
            known: OnceLock::new(),
            load: Some((load, pid)),
        }
    }

    /// The groups, reading them now if they were not read yet.
    pub fn get(&self) -> &[u32] {
        self.known
            .get_or_init(|| self.load.map_or_else(Vec::new, |(load, pid)| load(pid)))
    }

    /// Whether the groups have been read (tests of the laziness).
    pub fn is_loaded(&self) -> bool {
        self.known.get().is_some()
    }
}

impl From<Vec<u32>> for Groups {
    fn from(groups: Vec<u32>) -> Groups {
        Groups {
            known: OnceLock::from(groups),
            load: None,
        }
    }
}

/// Equal when they hold the same groups (reading lazy ones).
impl PartialEq for Groups {
    fn eq(&self, other: &Groups) -> bool {
        self.get() == other.get()
    }
}

impl Eq for Groups {}

/// A point in time: seconds since the epoch and nanoseconds (< 10^9).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timespec {
    pub sec: i64,
    pub nsec: u32,
}

impl Timespec {
    pub const fn new(sec: i64, nsec: u32) -> Timespec {
        Timespec { sec, nsec }
    }
}

/// The source of timestamps; tests inject a fixed or stepping clock.
pub trait Clock: Send + Sync {
    fn now(&self) -> Timespec;
}

/// The real clock (see the `Clock` impl for its granularity).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

/// The wall clock at the granularity the kernel's own file systems stamp
/// files with (`CLOCK_REALTIME_COARSE`: one scheduler tick, 1–10 ms).
/// Nanosecond stamps changed an inode on every write, so a rewrite of a
/// file block plus fsync wrote the inode sector each time; within one
/// tick the inode is unchanged and is not written (`Fs::commit` skips
/// inodes equal to their cached version), as ext4 and xfs skip logging it.
/// Times set explicitly (utimensat) keep their nanoseconds.
impl Clock for SystemClock {
    fn now(&self) -> Timespec {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid out pointer; CLOCK_REALTIME_COARSE exists
        // on every Linux since 2.6.32.
        let r = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
        if r != 0 {
            let d = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            return Timespec::new(d.as_secs() as i64, d.subsec_nanos());
        }
        Timespec::new(ts.tv_sec, ts.tv_nsec as u32)
    }
}

/// File types, as stored in the mode's `S_IFMT` bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FileKind {
    RegularFile,
    Directory,
    Symlink,
    CharDevice,
    BlockDevice,
    NamedPipe,
    Socket,
}

impl FileKind {
    /// The kind of a full `st_mode`; `None` for an unknown `S_IFMT`.
    pub fn from_mode(mode: u32) -> Option<FileKind> {
        Some(match mode & libc::S_IFMT {
            libc::S_IFREG => FileKind::RegularFile,
            libc::S_IFDIR => FileKind::Directory,
            libc::S_IFLNK => FileKind::Symlink,
            libc::S_IFCHR => FileKind::CharDevice,
            libc::S_IFBLK => FileKind::BlockDevice,
            libc::S_IFIFO => FileKind::NamedPipe,
            libc::S_IFSOCK => FileKind::Socket,
            _ => return None,
        })
    }

    /// The `S_IFMT` bits of this kind.
    pub fn mode_bits(self) -> u32 {
        match self {
            FileKind::RegularFile => libc::S_IFREG,
            FileKind::Directory => libc::S_IFDIR,
            FileKind::Symlink => libc::S_IFLNK,
            FileKind::CharDevice => libc::S_IFCHR,
            FileKind::BlockDevice => libc::S_IFBLK,
            FileKind::NamedPipe => libc::S_IFIFO,
            FileKind::Socket => libc::S_IFSOCK,
        }
    }

    /// The `DT_*` code stored in directory entries.
    pub fn dtype(self) -> u8 {
        match self {
            FileKind::RegularFile => libc::DT_REG,
            FileKind::Directory => libc::DT_DIR,
            FileKind::Symlink => libc::DT_LNK,
            FileKind::CharDevice => libc::DT_CHR,
            FileKind::BlockDevice => libc::DT_BLK,
            FileKind::NamedPipe => libc::DT_FIFO,
            FileKind::Socket => libc::DT_SOCK,
        }
    }

    /// Inverse of [`FileKind::dtype`].
    pub fn from_dtype(dtype: u8) -> Option<FileKind> {
        Some(match dtype {
            libc::DT_REG => FileKind::RegularFile,
            libc::DT_DIR => FileKind::Directory,
            libc::DT_LNK => FileKind::Symlink,
            libc::DT_CHR => FileKind::CharDevice,
            libc::DT_BLK => FileKind::BlockDevice,
            libc::DT_FIFO => FileKind::NamedPipe,
            libc::DT_SOCK => FileKind::Socket,
            _ => return None,
        })
    }
}

/// Attributes of an inode (what `stat` shows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileAttr {
    pub ino: u64,
    /// Bumped every time an inode number is reused.
    pub generation: u64,
    /// Bytes for files and symlinks; the number of entries for directories.
    pub size: u64,
    /// 512-byte blocks of mapped data (sparse files show only what is written).
    pub blocks: u64,
    pub atime: Timespec,
    pub mtime: Timespec,
    pub ctime: Timespec,
    /// Creation (birth) time.
    pub crtime: Timespec,
    pub kind: FileKind,
    /// Permission bits including setuid, setgid and sticky (`mode & 0o7777`).
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    /// Preferred I/O size: the device's sector size.
    pub blksize: u32,
    pub flags: u32,
}

impl FileAttr {
    /// The full `st_mode` (type and permission bits).
    pub fn mode(&self) -> u32 {
        self.kind.mode_bits() | u32::from(self.perm)
    }
}

/// How a timestamp is set by [`SetAttr`] (absent = `UTIME_OMIT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeSet {
    /// `UTIME_NOW`: needs ownership or write permission.
    Now,
    /// An explicit time: needs ownership.
    At(Timespec),
}

/// The changes of one `setattr`; `None` fields are left alone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetAttr {
    /// New permission bits (the `S_IFMT` bits are ignored).
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Truncate or extend (regular files only).
    pub size: Option<u64>,
    pub atime: Option<TimeSet>,
    pub mtime: Option<TimeSet>,
    /// Explicit ctime (FUSE may send it); otherwise ctime becomes "now"
    /// whenever anything changes.
    pub ctime: Option<Timespec>,
    /// The handle the change comes through (ftruncate): a handle opened for
    /// writing makes the size change skip the write-permission check.
    pub fh: Option<u64>,
}

/// One directory entry returned by `readdir`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u64,
    /// The cookie to pass to `readdir` to continue *after* this entry.
    pub offset: u64,
    pub kind: FileKind,
    pub name: OsString,
}

/// File-system statistics (`statfs`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatFs {
    /// Total blocks of `frsize` bytes.
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub frsize: u32,
    pub namelen: u32,
}

/// `lseek` whence values the core implements itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Whence {
    /// `SEEK_DATA`: the next offset at or after `offset` that holds data.
    Data,
    /// `SEEK_HOLE`: the next hole at or after `offset` (EOF counts as a hole).
    Hole,
}

/// `rename` flag: fail with EEXIST if the target exists.
pub const RENAME_NOREPLACE: u32 = 1;
/// `rename` flag: atomically swap source and target (both must exist).
pub const RENAME_EXCHANGE: u32 = 2;
/// `setxattr` flag: fail with EEXIST if the attribute exists.
pub const XATTR_CREATE: u32 = 1;
/// `setxattr` flag: fail with ENODATA if the attribute does not exist.
pub const XATTR_REPLACE: u32 = 2;
/// `fallocate` mode: do not change the file size.
pub const FALLOC_FL_KEEP_SIZE: u32 = 1;
/// `fallocate` mode: deallocate the range (needs `KEEP_SIZE`).
pub const FALLOC_FL_PUNCH_HOLE: u32 = 2;

/// Options of [`Fs::mkfs`](crate::Fs::mkfs).
#[derive(Clone, Debug, Default)]
pub struct MkfsOptions {
    /// Volume label, at most 64 bytes.
    pub label: String,
    /// Volume UUID; `None` derives one from the time and process id.
    pub uuid: Option<[u8; 16]>,
    /// Owner of the root directory.
    pub root_uid: u32,
    pub root_gid: u32,
    /// Permission bits of the root directory; `None` = 0o755.
    pub root_mode: Option<u32>,
    /// Creation time; `None` = the system clock.
    pub time: Option<Timespec>,
}

/// Options of [`Fs::mount`](crate::Fs::mount).
#[derive(Clone, Default)]
pub struct MountOptions {
    /// Refuse every change with EROFS (orphans are then left for later).
    pub read_only: bool,
    /// Flush the device after every state-changing operation (`-o sync`).
    pub sync: bool,
    /// Timestamp source; `None` = [`SystemClock`].
    pub clock: Option<Arc<dyn Clock>>,
    /// Memory for decoded directory buckets (about 120 bytes for a bucket
    /// of one short name); `None` = 32 MiB.
    pub dir_cache_bytes: Option<usize>,
    /// Count every entry handed out (lookup, create, mknod, mkdir,
    /// symlink, link, [`Fs::getattr_entry`](crate::Fs::getattr_entry)) and
    /// keep a freed inode's number from reuse until [`Fs::forget`](
    /// crate::Fs::forget) has dropped them all. For a caller that names
    /// inodes by number and may still act on an old entry, as the FUSE
    /// kernel does: an entry for an old inode processed after its number
    /// went to a new one makes the kernel mark the new inode bad (EIO).
    pub hold_lookups: bool,
}

impl std::fmt::Debug for MountOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountOptions")
            .field("read_only", &self.read_only)
            .field("sync", &self.sync)
            .field("clock", &self.clock.as_ref().map(|_| "custom"))
            .field("dir_cache_bytes", &self.dir_cache_bytes)
            .field("hold_lookups", &self.hold_lookups)
            .finish()
    }
}

/// Why `mkfs` or `mount` failed; the message names the cause in one line.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("device error: {0}")]
    Device(#[from] atomic_api::Error),
    #[error("no atomfs superblock (bad magic)")]
    NotAtomfs,
    #[error("superblock checksum mismatch (primary and backup)")]
    BadChecksum,
    #[error("unsupported format version {found} (this build supports {supported})")]
    Version { found: u32, supported: u32 },
    #[error("unsupported incompatible features {0:#x}")]
    IncompatFeatures(u64),
    #[error("unsupported read-only-compatible features {0:#x}: mount read-only")]
    RoCompatFeatures(u64),
    #[error("sector size mismatch: file system has {fs}, device has {device}")]
    SectorSize { fs: u32, device: u32 },
    #[error("device geometry too small: {0}")]
    Geometry(String),
    #[error("corrupt file system: {0}")]
    Corrupt(String),
    #[error("invalid option: {0}")]
    Invalid(String),
}
