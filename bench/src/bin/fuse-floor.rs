//! `fuse-floor`: the FUSE floor of atomfs-bench. An in-memory file system
//! that does no storage work, mounted with atomfs's FUSE settings (fuser
//! 0.18, worker threads, one `/dev/fuse` clone per worker, INIT flags,
//! `max_write`, `max_background`, TTLs, negative entries, FLUSH answered
//! with ENOSYS, 4 MiB readahead), so that its speed is what the kernel's
//! FUSE round trips alone cost on this machine.
//!
//! ```text
//! fuse-floor --mkfs DEVICE        write an empty state
//! fuse-floor DEVICE MOUNTPOINT    serve in the foreground until unmounted
//!                                 (or SIGTERM, SIGINT, SIGHUP)
//! ```
//!
//! The tree (inodes, directories, symlink targets) lives in memory. File
//! data is not kept: a write only extends the size, a read returns zeros up
//! to it (still copied to the kernel, as atomfs copies what it read).
//! Nothing is stored before unmount, so fsync does nothing. At unmount the
//! tree, if it changed, is written to the start of DEVICE as an 8-byte
//! little-endian length and JSON, and read back at the next start: the
//! bench remounts between a workload's setup and its measured phase, as
//! for any file system.
//!
//! Permissions are checked here, as atomfs does without
//! `default_permissions`: Unix mode bits against the caller's uid and
//! primary gid (root passes all but execute without an x bit). No sticky
//! bit or supplementary groups: only the mounting user can reach the mount
//! (no `allow_other`, as atomfs by default).

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use atomfs::fuse::daemon::{stop_signals, worker_threads};
use atomfs::fuse::readahead;
use fuser::{
    AccessFlags, Config, Errno, FileHandle, FileType, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, Request, Session, SessionACL, TimeOrNow, WriteFlags,
};
use serde::{Deserialize, Serialize};

/// atomfs's `FuseConfig` defaults (fs/src/fuse/mod.rs).
const ATTR_TTL: Duration = Duration::from_secs(1);
const ENTRY_TTL: Duration = Duration::from_secs(1);

/// What atomfs asks for on a device formatted with mkfs.atomfs's defaults
/// (`AtomFuse::max_write`: a 4 MiB request less two sectors, rounded down
/// to pages). The kernel caps every WRITE and READ at
/// `fs.fuse.max_pages_limit` pages (256 = 1 MiB by default) for both.
const MAX_WRITE: u32 = (4 << 20) - 4096;

/// Linux's NAME_MAX, which atomfs enforces too.
const NAME_MAX: usize = 255;

/// Bytes before the JSON state on the device: its length, little-endian.
const HEADER: u64 = 8;

fn main() -> ExitCode {
    // Before any thread exists, so every thread inherits the mask and the
    // signal thread alone takes them (see `stop_on_signal`).
    if let Err(e) = stop_signals().thread_block() {
        eprintln!("fuse-floor: cannot block signals: {e}");
        return ExitCode::FAILURE;
    }
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let res = match args.as_slice() {
        [flag, dev] if flag.as_os_str() == "--mkfs" => mkfs(dev),
        [dev, mnt] if !dev.as_os_str().as_bytes().starts_with(b"-") => serve(dev, mnt),
        _ => {
            eprintln!("usage: fuse-floor DEVICE MOUNTPOINT | fuse-floor --mkfs DEVICE");
            return ExitCode::from(2);
        }
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fuse-floor: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Writes an empty state: a zero length (the next mount starts with an
/// empty root directory).
fn mkfs(dev: &Path) -> Result<(), String> {
    let f = open_device(dev)?;
    f.write_all_at(&0u64.to_le_bytes(), 0)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("{}: {e}", dev.display()))
}

/// The device, read-write. `O_EXCL` on a block device is an exclusive open
/// (as atomfs's), so a second mount of the same device is refused; Linux
/// ignores it for regular files.
fn open_device(dev: &Path) -> Result<File, String> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_EXCL)
        .open(dev)
        .map_err(|e| format!("{}: {e}", dev.display()))
}

fn serve(dev: &Path, mnt: &Path) -> Result<(), String> {
    if !mnt.is_dir() {
        return Err(format!("{}: not a directory", mnt.display()));
    }
    let mut device = open_device(dev)?;
    let device_bytes = device
        .seek(SeekFrom::End(0))
        .map_err(|e| format!("{}: {e}", dev.display()))?;
    let tree = load(&device, device_bytes).map_err(|e| format!("{}: {e}", dev.display()))?;
    // Resolved before the mount: afterwards it would be a request to our
    // own mount (see atomfs's `fuse::readahead`).
    let mount_dir = std::fs::canonicalize(mnt).map_err(|e| format!("{}: {e}", mnt.display()))?;
    let save_result = Arc::new(Mutex::new(Ok(())));
    let floor = Floor {
        tree: Mutex::new(tree),
        device,
        device_bytes,
        zeros: zeros(),
        save_result: save_result.clone(),
    };

    // As atomfs's `fuse_session` with its default options.
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(dev.display().to_string()),
        MountOption::CUSTOM("subtype=fusefloor".into()),
    ];
    config.acl = SessionACL::Owner;
    config.n_threads = Some(worker_threads());
    config.clone_fd = true;
    let mut session = Session::new(floor, mnt, &config)
        .map_err(|e| format!("{}: cannot mount: {e}", mnt.display()))?;
    stop_on_signal(session.unmount_callable(), mnt.to_path_buf())?;
    readahead::raise_after_init(mount_dir, readahead::READAHEAD_KIB);

    match session.run() {
        // The unmount aborted the connection while a worker was reading a
        // request: the same end, seen a moment earlier (as atomfs's
        // `run_session`).
        Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {}
        Err(e) => return Err(format!("{}: FUSE session failed: {e}", mnt.display())),
        Ok(()) => {}
    }
    let saved = save_result
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    saved.map_err(|e| format!("{}: {e}", dev.display()))
}

/// A buffer of zeros for READ replies, as large as the largest READ. Its
/// pages are touched, so the copy to the kernel reads real memory as
/// atomfs's read buffer does, not the shared zero page.
fn zeros() -> Vec<u8> {
    let mut z = vec![0u8; MAX_WRITE as usize + 4096];
    std::hint::black_box(&mut z[..]).fill(0);
    z
}

/// Unmounts on SIGTERM, SIGINT or SIGHUP, so the session ends normally and
/// the state is saved (a default signal death would leave a dead mount).
fn stop_on_signal(mut unmounter: fuser::SessionUnmounter, mnt: PathBuf) -> Result<(), String> {
    std::thread::Builder::new()
        .name("fuse-floor-signals".into())
        .spawn(move || {
            if stop_signals().wait().is_ok() {
                if let Err(e) = unmounter.unmount() {
                    eprintln!("fuse-floor: {}: unmount: {e}", mnt.display());
                }
            }
        })
        .map(|_| ())
        .map_err(|e| format!("cannot start a thread: {e}"))
}

// ---------------------------------------------------------------------------
// The tree

type Time = (i64, u32);

fn now() -> Time {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs() as i64, d.subsec_nanos())
}

fn to_system_time((sec, nsec): Time) -> SystemTime {
    let at = if sec >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(sec as u64))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(sec.unsigned_abs()))
    };
    let at = at.unwrap_or(UNIX_EPOCH);
    at.checked_add(Duration::from_nanos(u64::from(nsec)))
        .unwrap_or(at)
}

/// A time from SETATTR. fuser 0.18 decodes the kernel's `(sec < 0, nsec)`
/// as `UNIX_EPOCH - (-sec, nsec)`; this is its exact inverse (as atomfs's
/// `to_timespec`).
fn from_system_time(t: SystemTime) -> Time {
    let (d, sign) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d, 1),
        Err(e) => (e.duration(), -1),
    };
    let sec = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    (sign * sec, d.subsec_nanos())
}

fn time_or_now(t: TimeOrNow) -> Time {
    match t {
        TimeOrNow::Now => now(),
        TimeOrNow::SpecificTime(t) => from_system_time(t),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Kind {
    #[serde(rename = "f")]
    File,
    #[serde(rename = "d")]
    Dir,
    #[serde(rename = "l")]
    Symlink,
    #[serde(rename = "p")]
    Fifo,
    #[serde(rename = "c")]
    CharDevice,
    #[serde(rename = "b")]
    BlockDevice,
    #[serde(rename = "s")]
    Socket,
}

impl Kind {
    fn from_mode(mode: u32) -> Option<Kind> {
        Some(match mode & libc::S_IFMT {
            libc::S_IFREG => Kind::File,
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFCHR => Kind::CharDevice,
            libc::S_IFBLK => Kind::BlockDevice,
            libc::S_IFSOCK => Kind::Socket,
            _ => return None,
        })
    }

    fn fuser(self) -> FileType {
        match self {
            Kind::File => FileType::RegularFile,
            Kind::Dir => FileType::Directory,
            Kind::Symlink => FileType::Symlink,
            Kind::Fifo => FileType::NamedPipe,
            Kind::CharDevice => FileType::CharDevice,
            Kind::BlockDevice => FileType::BlockDevice,
            Kind::Socket => FileType::Socket,
        }
    }
}

/// A file name or symlink target: any bytes. Saved as a JSON string when it
/// is UTF-8 (compact), else as an array of bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(from = "SavedName")]
struct Name(Vec<u8>);

#[derive(Deserialize)]
#[serde(untagged)]
enum SavedName {
    Text(String),
    Bytes(Vec<u8>),
}

impl From<SavedName> for Name {
    fn from(s: SavedName) -> Name {
        match s {
            SavedName::Text(t) => Name(t.into_bytes()),
            SavedName::Bytes(b) => Name(b),
        }
    }
}

impl Serialize for Name {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(text) => s.serialize_str(text),
            Err(_) => self.0.serialize(s),
        }
    }
}

impl Borrow<[u8]> for Name {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl Name {
    fn os(&self) -> &OsStr {
        OsStr::from_bytes(&self.0)
    }
}

/// readdir cookies of `.` and `..`; entries get cookies from `FIRST_COOKIE`.
const DOT: u64 = 1;
const DOTDOT: u64 = 2;
const FIRST_COOKIE: u64 = 3;

/// A directory's entries. Saved as a list of `[name, ino]`.
#[derive(Debug, Default, Deserialize)]
#[serde(from = "Vec<(Name, u64)>")]
struct Dir {
    /// The directory's parent (its own number for the root). Not saved:
    /// `load` sets it from the entries.
    parent: u64,
    /// Entries by readdir cookie. A cookie never changes while its entry
    /// exists, so a listing resumed after entries were removed goes on
    /// where it was (an index would shift, and `rm -r` would skip names).
    by_cookie: BTreeMap<u64, (Name, u64)>,
    /// Cookie and inode by name.
    by_name: HashMap<Name, (u64, u64)>,
    next_cookie: u64,
}

impl From<Vec<(Name, u64)>> for Dir {
    fn from(entries: Vec<(Name, u64)>) -> Dir {
        let mut d = Dir::default();
        for (name, ino) in entries {
            d.insert(name, ino);
        }
        d
    }
}

impl Serialize for Dir {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.by_cookie.values())
    }
}

impl Dir {
    fn get(&self, name: &[u8]) -> Option<u64> {
        self.by_name.get(name).map(|&(_, ino)| ino)
    }

    fn insert(&mut self, name: Name, ino: u64) {
        let cookie = self.next_cookie.max(FIRST_COOKIE);
        self.next_cookie = cookie + 1;
        self.by_cookie.insert(cookie, (name.clone(), ino));
        self.by_name.insert(name, (cookie, ino));
    }

    /// Points an existing entry at another inode, keeping its cookie.
    fn replace(&mut self, name: &[u8], ino: u64) {
        if let Some((cookie, old)) = self.by_name.get_mut(name) {
            *old = ino;
            if let Some(e) = self.by_cookie.get_mut(cookie) {
                e.1 = ino;
            }
        }
    }

    fn remove(&mut self, name: &[u8]) -> Option<u64> {
        let (cookie, ino) = self.by_name.remove(name)?;
        self.by_cookie.remove(&cookie);
        Some(ino)
    }

    fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Inode {
    #[serde(rename = "k")]
    kind: Kind,
    /// Permission bits, set-id and sticky bits included (`0o7777`).
    #[serde(rename = "p")]
    perm: u32,
    // Zeros are left out: the bench's files are root's, mostly empty, and
    // the whole tree is written at an unmount the bench times.
    #[serde(rename = "u", default, skip_serializing_if = "is_zero")]
    uid: u32,
    #[serde(rename = "g", default, skip_serializing_if = "is_zero")]
    gid: u32,
    #[serde(rename = "s", default, skip_serializing_if = "is_zero")]
    size: u64,
    #[serde(rename = "n")]
    nlink: u32,
    #[serde(rename = "r", default, skip_serializing_if = "is_zero")]
    rdev: u32,
    #[serde(rename = "a")]
    atime: Time,
    #[serde(rename = "m")]
    mtime: Time,
    #[serde(rename = "c")]
    ctime: Time,
    /// A symlink's target.
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    target: Option<Name>,
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    dir: Option<Dir>,
    /// Open handles; an unlinked inode lives until the last is released.
    #[serde(skip)]
    open: u32,
}

fn is_zero<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

impl Inode {
    fn attr(&self, ino: u64) -> fuser::FileAttr {
        fuser::FileAttr {
            ino: INodeNo(ino),
            size: self.size,
            blocks: self.size.div_ceil(4096) * 8,
            atime: to_system_time(self.atime),
            mtime: to_system_time(self.mtime),
            ctime: to_system_time(self.ctime),
            crtime: to_system_time(self.ctime),
            kind: self.kind.fuser(),
            perm: self.perm as u16,
            nlink: self.nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: self.rdev,
            blksize: 4096,
            flags: 0,
        }
    }

    /// True if `who` may access it for `mask` (`R_OK | W_OK | X_OK`).
    fn allows(&self, who: &Who, mask: u32) -> bool {
        if who.uid == 0 {
            // As CAP_DAC_OVERRIDE: everything but executing a file without
            // any execute bit.
            return mask & 1 == 0 || self.kind == Kind::Dir || self.perm & 0o111 != 0;
        }
        let shift = if who.uid == self.uid {
            6
        } else if who.gid == self.gid {
            3
        } else {
            0
        };
        (self.perm >> shift) & mask & 7 == mask & 7
    }

    /// Clears set-user-id, and set-group-id with group-execute, as Linux
    /// does when a file is written, truncated or chowned (we ask the kernel
    /// for FUSE_HANDLE_KILLPRIV(_V2), as atomfs does, so it is ours to do).
    fn kill_suid(&mut self) {
        if self.kind != Kind::Dir {
            self.perm &= !libc::S_ISUID;
            if self.perm & libc::S_IXGRP != 0 {
                self.perm &= !libc::S_ISGID;
            }
        }
    }
}

/// The caller of a request.
struct Who {
    uid: u32,
    gid: u32,
}

impl Who {
    fn of(req: &Request) -> Who {
        Who {
            uid: req.uid(),
            gid: req.gid(),
        }
    }
}

const ROOT: u64 = 1;
const R: u32 = 4;
const W: u32 = 2;
const X: u32 = 1;

type Res<T> = Result<T, Errno>;

#[derive(Debug, Serialize, Deserialize)]
struct Tree {
    next_ino: u64,
    inodes: HashMap<u64, Inode>,
    /// Changed since loaded: only then is it written at unmount, so a
    /// measured phase that only reads (stat_files, the seq read-back) does
    /// not end with writing the whole tree.
    #[serde(skip)]
    dirty: bool,
}

impl Tree {
    /// An empty file system: the root directory, owned by the mounter.
    fn empty() -> Tree {
        let mut t = Tree {
            next_ino: ROOT,
            inodes: HashMap::new(),
            dirty: true,
        };
        // SAFETY: geteuid and getegid have no preconditions.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let root = t.new_inode(Kind::Dir, 0o755, uid, gid);
        t.inodes.get_mut(&root).expect("just made").dir = Some(Dir {
            parent: root,
            ..Dir::default()
        });
        t
    }

    fn get(&self, ino: u64) -> Res<&Inode> {
        self.inodes.get(&ino).ok_or(Errno::ENOENT)
    }

    fn get_mut(&mut self, ino: u64) -> Res<&mut Inode> {
        self.inodes.get_mut(&ino).ok_or(Errno::ENOENT)
    }

    fn dir(&self, ino: u64) -> Res<&Dir> {
        self.get(ino)?.dir.as_ref().ok_or(Errno::ENOTDIR)
    }

    fn dir_mut(&mut self, ino: u64) -> Res<&mut Dir> {
        self.get_mut(ino)?.dir.as_mut().ok_or(Errno::ENOTDIR)
    }

    fn attr(&self, ino: u64) -> Res<fuser::FileAttr> {
        Ok(self.get(ino)?.attr(ino))
    }

    /// Parent directory `parent` checked for `mask`, for an operation on
    /// its entries.
    fn check_dir(&self, parent: u64, who: &Who, mask: u32) -> Res<&Dir> {
        let p = self.get(parent)?;
        let d = p.dir.as_ref().ok_or(Errno::ENOTDIR)?;
        if !p.allows(who, mask) {
            return Err(Errno::EACCES);
        }
        Ok(d)
    }

    fn lookup(&self, who: &Who, parent: u64, name: &OsStr) -> Res<u64> {
        self.check_dir(parent, who, X)?
            .get(name.as_bytes())
            .ok_or(Errno::ENOENT)
    }

    fn new_inode(&mut self, kind: Kind, perm: u32, uid: u32, gid: u32) -> u64 {
        // Never reused: no stale LOOKUP reply can reach a new inode.
        let ino = self.next_ino;
        self.next_ino += 1;
        let t = now();
        self.inodes.insert(
            ino,
            Inode {
                kind,
                perm: perm & 0o7777,
                uid,
                gid,
                size: 0,
                nlink: if kind == Kind::Dir { 2 } else { 1 },
                rdev: 0,
                atime: t,
                mtime: t,
                ctime: t,
                target: None,
                dir: None,
                open: 0,
            },
        );
        ino
    }

    /// The parent's mtime and ctime after its entries changed.
    fn touch(&mut self, dir: u64) {
        if let Ok(d) = self.get_mut(dir) {
            let t = now();
            d.mtime = t;
            d.ctime = t;
        }
    }

    /// Makes a new inode of `kind` as `name` in `parent`.
    fn make(&mut self, who: &Who, parent: u64, name: &OsStr, kind: Kind, perm: u32) -> Res<u64> {
        if name.len() > NAME_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        if self
            .check_dir(parent, who, W | X)?
            .get(name.as_bytes())
            .is_some()
        {
            return Err(Errno::EEXIST);
        }
        // A set-group-id directory passes its group on, and to new
        // directories its set-group-id bit (as Linux's inode_init_owner).
        let p = self.get(parent)?;
        let (gid, perm) = if p.perm & libc::S_ISGID != 0 {
            let sgid = if kind == Kind::Dir { libc::S_ISGID } else { 0 };
            (p.gid, perm | sgid)
        } else {
            (who.gid, perm)
        };
        let ino = self.new_inode(kind, perm, who.uid, gid);
        if kind == Kind::Dir {
            self.get_mut(ino)?.dir = Some(Dir {
                parent,
                ..Dir::default()
            });
            self.get_mut(parent)?.nlink += 1;
        }
        self.dir_mut(parent)?
            .insert(Name(name.as_bytes().to_vec()), ino);
        self.touch(parent);
        Ok(ino)
    }

    /// One link of `ino` gone: its ctime changes, and it is freed when no
    /// link and no open handle is left.
    fn unlinked(&mut self, ino: u64) {
        let Ok(i) = self.get_mut(ino) else { return };
        i.nlink = if i.kind == Kind::Dir {
            0
        } else {
            i.nlink.saturating_sub(1)
        };
        i.ctime = now();
        self.free_if_unused(ino);
    }

    fn free_if_unused(&mut self, ino: u64) {
        if self
            .inodes
            .get(&ino)
            .is_some_and(|i| i.nlink == 0 && i.open == 0)
        {
            self.inodes.remove(&ino);
        }
    }

    fn unlink(&mut self, who: &Who, parent: u64, name: &OsStr) -> Res<()> {
        let ino = self.lookup_for_change(who, parent, name)?;
        if self.get(ino)?.kind == Kind::Dir {
            return Err(Errno::EISDIR);
        }
        self.dir_mut(parent)?.remove(name.as_bytes());
        self.touch(parent);
        self.unlinked(ino);
        Ok(())
    }

    fn rmdir(&mut self, who: &Who, parent: u64, name: &OsStr) -> Res<()> {
        let ino = self.lookup_for_change(who, parent, name)?;
        if !self.dir(ino)?.is_empty() {
            return Err(Errno::ENOTEMPTY);
        }
        self.dir_mut(parent)?.remove(name.as_bytes());
        self.get_mut(parent)?.nlink -= 1;
        self.touch(parent);
        self.unlinked(ino);
        Ok(())
    }

    /// The inode `name` in `parent`, which the caller may remove or replace.
    fn lookup_for_change(&self, who: &Who, parent: u64, name: &OsStr) -> Res<u64> {
        self.check_dir(parent, who, W | X)?
            .get(name.as_bytes())
            .ok_or(Errno::ENOENT)
    }

    /// True if directory `dir` is `ancestor` or below it.
    fn is_within(&self, mut dir: u64, ancestor: u64) -> bool {
        loop {
            if dir == ancestor {
                return true;
            }
            match self.dir(dir) {
                Ok(d) if d.parent != dir => dir = d.parent,
                _ => return false,
            }
        }
    }

    /// Moves directory `ino` from `from` to `to` (link counts, `..`).
    fn reparent(&mut self, ino: u64, from: u64, to: u64) -> Res<()> {
        if from == to || self.get(ino)?.kind != Kind::Dir {
            return Ok(());
        }
        self.dir_mut(ino)?.parent = to;
        self.get_mut(from)?.nlink -= 1;
        self.get_mut(to)?.nlink += 1;
        Ok(())
    }

    fn rename(
        &mut self,
        who: &Who,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> Res<()> {
        let exchange = flags.contains(RenameFlags::RENAME_EXCHANGE);
        let noreplace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        if flags.difference(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_NOREPLACE)
            != RenameFlags::empty()
            || (exchange && noreplace)
        {
            return Err(Errno::EINVAL);
        }
        if newname.len() > NAME_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        let src = self.lookup_for_change(who, parent, name)?;
        let dst = self
            .check_dir(newparent, who, W | X)?
            .get(newname.as_bytes());
        let src_dir = self.get(src)?.kind == Kind::Dir;
        // A directory cannot move below itself.
        if src_dir && self.is_within(newparent, src) {
            return Err(Errno::EINVAL);
        }
        let t = now();
        if exchange {
            let dst = dst.ok_or(Errno::ENOENT)?;
            if dst == src {
                return Ok(());
            }
            if self.get(dst)?.kind == Kind::Dir && self.is_within(parent, dst) {
                return Err(Errno::EINVAL);
            }
            self.dir_mut(parent)?.replace(name.as_bytes(), dst);
            self.dir_mut(newparent)?.replace(newname.as_bytes(), src);
            self.reparent(src, parent, newparent)?;
            self.reparent(dst, newparent, parent)?;
            self.get_mut(dst)?.ctime = t;
        } else {
            if let Some(dst) = dst {
                if noreplace {
                    return Err(Errno::EEXIST);
                }
                if dst == src {
                    // Two links of one inode: POSIX says do nothing.
                    return Ok(());
                }
                match (src_dir, self.dir(dst)) {
                    (true, Ok(d)) if !d.is_empty() => return Err(Errno::ENOTEMPTY),
                    (true, Ok(_)) => {}
                    (true, Err(_)) => return Err(Errno::ENOTDIR),
                    (false, Ok(_)) => return Err(Errno::EISDIR),
                    (false, Err(_)) => {}
                }
                self.dir_mut(newparent)?.remove(newname.as_bytes());
                if src_dir {
                    self.get_mut(newparent)?.nlink -= 1;
                }
                self.unlinked(dst);
            }
            self.dir_mut(parent)?.remove(name.as_bytes());
            self.dir_mut(newparent)?
                .insert(Name(newname.as_bytes().to_vec()), src);
            self.reparent(src, parent, newparent)?;
        }
        self.get_mut(src)?.ctime = t;
        self.touch(parent);
        self.touch(newparent);
        Ok(())
    }

    fn link(&mut self, who: &Who, ino: u64, newparent: u64, newname: &OsStr) -> Res<()> {
        if self.get(ino)?.kind == Kind::Dir {
            return Err(Errno::EPERM);
        }
        if newname.len() > NAME_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        if self
            .check_dir(newparent, who, W | X)?
            .get(newname.as_bytes())
            .is_some()
        {
            return Err(Errno::EEXIST);
        }
        self.dir_mut(newparent)?
            .insert(Name(newname.as_bytes().to_vec()), ino);
        let i = self.get_mut(ino)?;
        i.nlink += 1;
        i.ctime = now();
        self.touch(newparent);
        Ok(())
    }

    /// SETATTR: every check first, then every change, so a refused
    /// request changes nothing.
    #[allow(clippy::too_many_arguments)]
    fn setattr(
        &mut self,
        req: &Request,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        via_handle: bool,
    ) -> Res<()> {
        let who = Who::of(req);
        let i = self.get_mut(ino)?;
        let owner = who.uid == 0 || who.uid == i.uid;
        if mode.is_some() && !owner {
            return Err(Errno::EPERM);
        }
        // Only root gives a file away; an owner may change its group to
        // their own.
        let gives_away = uid.is_some_and(|u| u != i.uid);
        let regroups = gid.is_some_and(|g| g != i.gid);
        if who.uid != 0 && (gives_away || (regroups && (!owner || gid != Some(who.gid)))) {
            return Err(Errno::EPERM);
        }
        if size.is_some() {
            if i.kind == Kind::Dir {
                return Err(Errno::EISDIR);
            }
            // ftruncate was checked when the handle was opened.
            if !via_handle && !i.allows(&who, W) {
                return Err(Errno::EACCES);
            }
        }
        // Setting a time to now needs write access, to a given time
        // ownership (utimensat(2)).
        for set in [atime, mtime] {
            match set {
                Some(TimeOrNow::Now) if !owner && !i.allows(&who, W) => return Err(Errno::EACCES),
                Some(TimeOrNow::SpecificTime(_)) if !owner => return Err(Errno::EPERM),
                _ => {}
            }
        }

        let t = now();
        if let Some(mode) = mode {
            i.perm = mode & 0o7777;
        }
        if uid.is_some() || gid.is_some() {
            i.uid = uid.unwrap_or(i.uid);
            i.gid = gid.unwrap_or(i.gid);
            if mode.is_none() {
                i.kill_suid();
            }
        }
        if let Some(size) = size {
            i.size = size;
            i.mtime = t;
            if who.uid != 0 {
                i.kill_suid();
            }
        }
        if let Some(a) = atime {
            i.atime = time_or_now(a);
        }
        if let Some(m) = mtime {
            i.mtime = time_or_now(m);
        }
        i.ctime = ctime.map_or(t, from_system_time);
        Ok(())
    }

    fn open(&mut self, who: &Who, ino: u64, flags: i32, dir: bool) -> Res<()> {
        let i = self.get_mut(ino)?;
        if dir && i.kind != Kind::Dir {
            return Err(Errno::ENOTDIR);
        }
        let mask = match flags & libc::O_ACCMODE {
            libc::O_RDONLY => R,
            libc::O_WRONLY => W,
            _ => R | W,
        };
        if !dir && i.kind == Kind::Dir && mask & W != 0 {
            return Err(Errno::EISDIR);
        }
        if !i.allows(who, mask) {
            return Err(Errno::EACCES);
        }
        i.open += 1;
        Ok(())
    }

    fn release(&mut self, ino: u64) {
        if let Ok(i) = self.get_mut(ino) {
            i.open = i.open.saturating_sub(1);
        }
        self.free_if_unused(ino);
    }

    /// The entries of `ino` after readdir cookie `offset`, each with the
    /// cookie to resume after it, until `add` says the reply is full.
    fn list(&self, ino: u64, offset: u64, mut add: impl FnMut(u64, &Name, u64) -> bool) -> Res<()> {
        let d = self.dir(ino)?;
        let dots = [(DOT, b".".as_slice(), ino), (DOTDOT, b"..", d.parent)];
        for (cookie, name, target) in dots {
            if offset < cookie && add(target, &Name(name.to_vec()), cookie) {
                return Ok(());
            }
        }
        for (&cookie, (name, target)) in d.by_cookie.range(offset.max(DOTDOT) + 1..) {
            if add(*target, name, cookie) {
                break;
            }
        }
        Ok(())
    }
}

/// Reads the state at the start of the device (see the module docs).
fn load(device: &File, device_bytes: u64) -> Result<Tree, String> {
    let read = |buf: &mut [u8], at: u64| {
        device
            .read_exact_at(buf, at)
            .map_err(|e| format!("reading the state: {e}"))
    };
    let mut head = [0u8; HEADER as usize + 1];
    read(&mut head, 0)?;
    let len = u64::from_le_bytes(head[..HEADER as usize].try_into().expect("8 bytes"));
    if len == 0 {
        return Ok(Tree::empty());
    }
    // Checked before allocating `len` bytes for whatever else is there.
    if len > device_bytes.saturating_sub(HEADER) || head[HEADER as usize] != b'{' {
        return Err("no fuse-floor state here (run fuse-floor --mkfs)".into());
    }
    let mut json = vec![0u8; len as usize];
    read(&mut json, HEADER)?;
    let mut tree: Tree = serde_json::from_slice(&json)
        .map_err(|e| format!("no valid fuse-floor state here ({e}; run fuse-floor --mkfs)"))?;
    // Unlinked files still open at the unmount (a lazy one) end here.
    tree.inodes.retain(|_, i| i.nlink > 0);
    // `..` of every directory, from the entries that name it.
    let mut parents = vec![(ROOT, ROOT)];
    for (&ino, i) in &tree.inodes {
        if let Some(d) = &i.dir {
            for &(_, child) in d.by_name.values() {
                if tree.inodes.get(&child).is_some_and(|c| c.kind == Kind::Dir) {
                    parents.push((child, ino));
                }
            }
        }
    }
    for (child, parent) in parents {
        if let Ok(d) = tree.dir_mut(child) {
            d.parent = parent;
        }
    }
    tree.dir(ROOT)
        .map_err(|_| "the saved state has no root directory".to_string())?;
    Ok(tree)
}

/// Writes the state at the start of the device and flushes it.
fn save(device: &File, device_bytes: u64, tree: &Tree) -> Result<(), String> {
    // Sized for the usual ~130 bytes per inode, so it seldom grows (each
    // growth copies what is there).
    let mut buf = Vec::with_capacity(160 * tree.inodes.len() + 4096);
    buf.extend_from_slice(&[0; HEADER as usize]);
    serde_json::to_writer(&mut buf, tree).map_err(|e| format!("saving the state: {e}"))?;
    let len = buf.len() as u64 - HEADER;
    if buf.len() as u64 > device_bytes {
        return Err(format!(
            "saving the state: {len} bytes of JSON do not fit on the device ({device_bytes} bytes)"
        ));
    }
    buf[..HEADER as usize].copy_from_slice(&len.to_le_bytes());
    device
        .write_all_at(&buf, 0)
        .and_then(|()| device.sync_all())
        .map_err(|e| format!("saving the state: {e}"))
}

// ---------------------------------------------------------------------------
// The FUSE adapter

struct Floor {
    tree: Mutex<Tree>,
    device: File,
    device_bytes: u64,
    zeros: Vec<u8>,
    /// How `destroy` went, for `serve` to report after the session.
    save_result: Arc<Mutex<Result<(), String>>>,
}

impl Floor {
    /// The tree, for a request that changes nothing that is saved.
    fn tree(&self) -> MutexGuard<'_, Tree> {
        self.tree.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The tree, for a request that may change it.
    fn change(&self) -> MutexGuard<'_, Tree> {
        let mut t = self.tree();
        t.dirty = true;
        t
    }

    fn entry(&self, reply: ReplyEntry, attr: Res<fuser::FileAttr>) {
        match attr {
            Ok(a) => reply.entry_with_ttls(&ATTR_TTL, &ENTRY_TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }
}

fn reply_empty(reply: ReplyEmpty, res: Res<()>) {
    match res {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

fn reply_attr(reply: ReplyAttr, res: Res<fuser::FileAttr>) {
    match res {
        Ok(a) => reply.attr(&ATTR_TTL, &a),
        Err(e) => reply.error(e),
    }
}

/// The attributes of a negative entry: only `ino` 0 matters.
fn negative_attr() -> fuser::FileAttr {
    Inode {
        kind: Kind::File,
        perm: 0,
        uid: 0,
        gid: 0,
        size: 0,
        nlink: 0,
        rdev: 0,
        atime: (0, 0),
        mtime: (0, 0),
        ctime: (0, 0),
        target: None,
        dir: None,
        open: 0,
    }
    .attr(0)
}

impl fuser::Filesystem for Floor {
    /// atomfs's `init` with its default configuration (no writeback cache).
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let caps = config.capabilities();
        let mut want = InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_MAX_PAGES
            | InitFlags::FUSE_BIG_WRITES
            | InitFlags::FUSE_ASYNC_READ;
        want |= if caps.contains(InitFlags::FUSE_HANDLE_KILLPRIV_V2) {
            InitFlags::FUSE_HANDLE_KILLPRIV_V2
        } else {
            InitFlags::FUSE_HANDLE_KILLPRIV
        };
        let _ = config.add_capabilities(want & caps);
        if let Err(nearest) = config.set_max_write(MAX_WRITE) {
            let _ = config.set_max_write(nearest);
        }
        let _ = config.set_max_background(64);
        Ok(())
    }

    /// The session has ended (unmount): save the tree if it changed.
    fn destroy(&mut self) {
        let tree = self.tree.get_mut().unwrap_or_else(|e| e.into_inner());
        if tree.dirty {
            let res = save(&self.device, self.device_bytes, tree);
            *self.save_result.lock().unwrap_or_else(|e| e.into_inner()) = res;
        }
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let res = {
            let t = self.tree();
            t.lookup(&Who::of(req), parent.0, name)
                .and_then(|ino| t.attr(ino))
        };
        match res {
            // A negative entry (node id 0), as atomfs: the kernel caches
            // the miss for the entry TTL.
            Err(Errno::ENOENT) => {
                let a = negative_attr();
                reply.entry_with_ttls(&Duration::ZERO, &ENTRY_TTL, &a, Generation(0));
            }
            res => self.entry(reply, res),
        }
    }

    /// Inodes live by link and open counts; numbers are never reused, so
    /// lookup counts need not be kept (as atomfs).
    fn forget(&self, _req: &Request, _ino: INodeNo, _nlookup: u64) {}

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let res = self.tree().attr(ino.0);
        reply_attr(reply, res);
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
        let res = {
            let mut t = self.change();
            t.setattr(
                req,
                ino.0,
                mode,
                uid,
                gid,
                size,
                atime,
                mtime,
                ctime,
                fh.is_some(),
            )
            .and_then(|()| t.attr(ino.0))
        };
        reply_attr(reply, res);
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let res = self
            .tree()
            .get(ino.0)
            .and_then(|i| i.target.clone().ok_or(Errno::EINVAL));
        match res {
            Ok(target) => reply.data(&target.0),
            Err(e) => reply.error(e),
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
        let res = match Kind::from_mode(mode) {
            Some(Kind::Dir | Kind::Symlink) | None => Err(Errno::EINVAL),
            Some(kind) => {
                let mut t = self.change();
                t.make(&Who::of(req), parent.0, name, kind, mode)
                    .and_then(|ino| {
                        t.get_mut(ino)?.rdev = rdev;
                        t.attr(ino)
                    })
            }
        };
        self.entry(reply, res);
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
        let res = {
            let mut t = self.change();
            t.make(&Who::of(req), parent.0, name, Kind::Dir, mode)
                .and_then(|ino| t.attr(ino))
        };
        self.entry(reply, res);
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let res = self.change().unlink(&Who::of(req), parent.0, name);
        reply_empty(reply, res);
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let res = self.change().rmdir(&Who::of(req), parent.0, name);
        reply_empty(reply, res);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let target = target.as_os_str().as_bytes();
        let res = {
            let mut t = self.change();
            t.make(&Who::of(req), parent.0, link_name, Kind::Symlink, 0o777)
                .and_then(|ino| {
                    let i = t.get_mut(ino)?;
                    i.size = target.len() as u64;
                    i.target = Some(Name(target.to_vec()));
                    t.attr(ino)
                })
        };
        self.entry(reply, res);
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
        let res = self
            .change()
            .rename(&Who::of(req), parent.0, name, newparent.0, newname, flags);
        reply_empty(reply, res);
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let res = {
            let mut t = self.change();
            t.link(&Who::of(req), ino.0, newparent.0, newname)
                .and_then(|()| t.attr(ino.0))
        };
        self.entry(reply, res);
    }

    /// Keeps the page cache, as atomfs (`FOPEN_KEEP_CACHE`).
    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.tree().open(&Who::of(req), ino.0, flags.0, false) {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(e),
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
        let res = self.tree().get(ino.0).map(|i| i.size);
        match res {
            Ok(file_size) => {
                let n = (size as u64).min(file_size.saturating_sub(offset)) as usize;
                match self.zeros.get(..n) {
                    Some(z) => reply.data(z),
                    None => reply.data(&vec![0; n]),
                }
            }
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let res = {
            let mut t = self.change();
            t.get_mut(ino.0).map(|i| {
                i.size = i.size.max(offset + data.len() as u64);
                let now = now();
                i.mtime = now;
                i.ctime = now;
                if req.uid() != 0 || write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID) {
                    i.kill_suid();
                }
            })
        };
        match res {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    /// As atomfs: ENOSYS, so the kernel stops sending FLUSH on close.
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.tree().release(ino.0);
        reply.ok();
    }

    /// Nothing is stored before unmount: nothing to flush.
    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let res = self.tree().get(ino.0).map(|_| ());
        reply_empty(reply, res);
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.tree().open(&Who::of(req), ino.0, libc::O_RDONLY, true) {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let res = {
            let t = self.tree();
            t.list(ino.0, offset, |target, name, cookie| {
                let kind = t
                    .get(target)
                    .map_or(FileType::RegularFile, |i| i.kind.fuser());
                reply.add(INodeNo(target), cookie, kind, name.os())
            })
        };
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    /// Entries with their attributes, as atomfs offers (`ls -l` needs no
    /// LOOKUP per name).
    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let res = {
            let t = self.tree();
            t.list(ino.0, offset, |target, name, cookie| match t.get(target) {
                Ok(i) => reply.add(
                    INodeNo(target),
                    cookie,
                    name.os(),
                    &ATTR_TTL,
                    &i.attr(target),
                    Generation(0),
                ),
                Err(_) => false,
            })
        };
        match res {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.tree().release(ino.0);
        reply.ok();
    }

    /// Nothing is stored before unmount: nothing to flush.
    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let res = self.tree().dir(ino.0).map(|_| ());
        reply_empty(reply, res);
    }

    /// The device's size as capacity, less the sizes of the files (which
    /// would be stored if this were a real file system).
    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        const FILES: u64 = 1 << 32;
        let (used, inodes) = {
            let t = self.tree();
            let used: u64 = t.inodes.values().map(|i| i.size.div_ceil(4096)).sum();
            (used, t.inodes.len() as u64)
        };
        let blocks = self.device_bytes / 4096;
        let free = blocks.saturating_sub(used);
        reply.statfs(
            blocks,
            free,
            free,
            FILES,
            FILES.saturating_sub(inodes),
            4096,
            NAME_MAX as u32,
            4096,
        );
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let res = self.tree().get(ino.0).and_then(|i| {
            if i.allows(&Who::of(req), mask.bits() as u32 & 7) {
                Ok(())
            } else {
                Err(Errno::EACCES)
            }
        });
        reply_empty(reply, res);
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let res = {
            let mut t = self.change();
            t.make(&Who::of(req), parent.0, name, Kind::File, mode)
                .and_then(|ino| {
                    t.get_mut(ino)?.open += 1;
                    t.attr(ino)
                })
        };
        match res {
            Ok(a) => reply.created(
                &ENTRY_TTL,
                &a,
                Generation(0),
                FileHandle(0),
                FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Err(e) => reply.error(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> Who {
        Who { uid: 0, gid: 0 }
    }

    fn names(t: &Tree, dir: u64, offset: u64) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        t.list(dir, offset, |_, n, c| {
            out.push((String::from_utf8_lossy(&n.0).into_owned(), c));
            false
        })
        .unwrap();
        out
    }

    fn mkfile(t: &mut Tree, dir: u64, name: &str) -> u64 {
        t.make(&root(), dir, OsStr::new(name), Kind::File, 0o644)
            .unwrap()
    }

    #[test]
    fn readdir_resumes_after_removals() {
        let mut t = Tree::empty();
        for i in 0..10 {
            mkfile(&mut t, ROOT, &format!("f{i}"));
        }
        let first = names(&t, ROOT, 0);
        assert_eq!(first.len(), 12);
        // Remove what a first reply of 5 listed, then resume after it.
        for (n, _) in &first[2..5] {
            t.unlink(&root(), ROOT, OsStr::new(n)).unwrap();
        }
        let rest = names(&t, ROOT, first[4].1);
        let want: Vec<_> = first[5..].to_vec();
        assert_eq!(rest, want);
    }

    #[test]
    fn rename_rules() {
        let mut t = Tree::empty();
        let w = root();
        let a = t.make(&w, ROOT, OsStr::new("a"), Kind::Dir, 0o755).unwrap();
        let b = t.make(&w, a, OsStr::new("b"), Kind::Dir, 0o755).unwrap();
        let f = mkfile(&mut t, ROOT, "f");
        let none = RenameFlags::empty();
        let os = OsStr::new;
        assert_eq!(
            t.rename(&w, ROOT, os("a"), b, os("x"), none),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            t.rename(&w, ROOT, os("f"), ROOT, os("a"), none),
            Err(Errno::EISDIR)
        );
        assert_eq!(
            t.rename(&w, ROOT, os("a"), ROOT, os("f"), none),
            Err(Errno::ENOTDIR)
        );
        let c = t.make(&w, ROOT, OsStr::new("c"), Kind::Dir, 0o755).unwrap();
        assert_eq!(t.get(ROOT).unwrap().nlink, 4);
        // Move b up over the empty c: c is gone, link counts follow.
        t.rename(&w, a, os("b"), ROOT, os("c"), none).unwrap();
        assert!(t.get(c).is_err());
        assert_eq!(t.dir(ROOT).unwrap().get(b"c"), Some(b));
        assert_eq!(t.dir(b).unwrap().parent, ROOT);
        assert_eq!(t.get(a).unwrap().nlink, 2);
        assert_eq!(t.get(ROOT).unwrap().nlink, 4);
        // Exchange a file and a directory.
        let x = RenameFlags::RENAME_EXCHANGE;
        t.rename(&w, ROOT, os("f"), ROOT, os("c"), x).unwrap();
        assert_eq!(t.dir(ROOT).unwrap().get(b"c"), Some(f));
        assert_eq!(t.dir(ROOT).unwrap().get(b"f"), Some(b));
        let nr = RenameFlags::RENAME_NOREPLACE;
        assert_eq!(
            t.rename(&w, ROOT, os("f"), ROOT, os("c"), nr),
            Err(Errno::EEXIST)
        );
    }

    #[test]
    fn unlinked_open_file_lives_until_release() {
        let mut t = Tree::empty();
        let f = mkfile(&mut t, ROOT, "f");
        t.open(&root(), f, libc::O_RDWR, false).unwrap();
        t.unlink(&root(), ROOT, OsStr::new("f")).unwrap();
        assert_eq!(t.get(f).unwrap().nlink, 0);
        t.release(f);
        assert!(t.get(f).is_err());
    }

    #[test]
    fn state_survives_a_round_trip() {
        let mut t = Tree::empty();
        let w = root();
        let d = t.make(&w, ROOT, OsStr::new("d"), Kind::Dir, 0o755).unwrap();
        let f = mkfile(&mut t, d, "caf\u{e9}");
        t.get_mut(f).unwrap().size = 12345;
        let odd = OsStr::from_bytes(b"\xff\xfe");
        let l = t.make(&w, d, odd, Kind::Symlink, 0o777).unwrap();
        t.get_mut(l).unwrap().target = Some(Name(b"\x80t".to_vec()));
        let dev = tempfile_path();
        std::fs::write(&dev, vec![0u8; 1 << 20]).unwrap();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&dev)
            .unwrap();
        save(&file, 1 << 20, &t).unwrap();
        let back = load(&File::open(&dev).unwrap(), 1 << 20).unwrap();
        let _ = std::fs::remove_file(&dev);
        assert_eq!(back.dir(d).unwrap().parent, ROOT);
        assert_eq!(back.get(f).unwrap().size, 12345);
        let l = back.dir(d).unwrap().get(b"\xff\xfe").unwrap();
        assert_eq!(back.get(l).unwrap().target, Some(Name(b"\x80t".to_vec())));
        assert_eq!(back.next_ino, t.next_ino);
        assert!(!back.dirty);
    }

    #[test]
    fn empty_and_foreign_devices() {
        let dev = tempfile_path().with_extension("junk");
        std::fs::write(&dev, [0u8; 4096]).unwrap();
        let t = load(&File::open(&dev).unwrap(), 4096).unwrap();
        assert!(t.dir(ROOT).unwrap().is_empty() && t.dirty);
        std::fs::write(&dev, [0xabu8; 4096]).unwrap();
        let err = load(&File::open(&dev).unwrap(), 4096).unwrap_err();
        let _ = std::fs::remove_file(&dev);
        assert!(err.contains("no fuse-floor state"), "{err}");
    }

    fn tempfile_path() -> PathBuf {
        std::env::temp_dir().join(format!("fuse-floor-test-{}", std::process::id()))
    }

    #[test]
    fn permissions() {
        let mut t = Tree::empty();
        let f = mkfile(&mut t, ROOT, "f");
        let i = t.get_mut(f).unwrap();
        i.perm = 0o640;
        i.uid = 10;
        i.gid = 20;
        let i = t.get(f).unwrap();
        assert!(i.allows(&Who { uid: 10, gid: 0 }, R | W));
        assert!(i.allows(&Who { uid: 11, gid: 20 }, R));
        assert!(!i.allows(&Who { uid: 11, gid: 20 }, W));
        assert!(!i.allows(&Who { uid: 11, gid: 21 }, R));
        assert!(i.allows(&root(), R | W));
        assert!(!i.allows(&root(), X));
    }
}
