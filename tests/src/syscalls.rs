//! Runs workload operations as real system calls on a mounted atomfs, and
//! reads a mounted tree back into the shape of `atomfs::inspect::dump_tree`.
//!
//! Paths never follow symlinks, like [`crate::exec`] (which looks names up
//! without following them): every parent directory is opened with
//! `openat2(RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH)` and the last component
//! is used through the `*at` calls, `O_NOFOLLOW` opens, or not followed by
//! the call itself (`renameat`, `linkat` without `AT_SYMLINK_FOLLOW`,
//! `unlinkat`, `symlinkat`). A symlink in the way makes the call fail
//! (ELOOP) where the core fails with ENOTDIR; both change nothing.
//!
//! The data written is [`exec::data`], so a tree read here digests exactly
//! as the oracle's.

use std::collections::BTreeMap;
use std::ffi::{CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use atomfs::inspect::{digest_bytes, Node, Tree};
use atomfs::FileKind;

use crate::exec;
use crate::workload::{parent, Falloc, Op, Persist, WriteKind};

/// An errno from a failed call.
pub type Errno = i32;

fn last() -> Errno {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL in workload paths")
}

fn check(r: libc::c_int) -> Result<libc::c_int, Errno> {
    if r < 0 {
        Err(last())
    } else {
        Ok(r)
    }
}

fn name_of(path: &str) -> &str {
    path.rsplit_once('/').map_or(path, |(_, n)| n)
}

/// A mounted tree: the root directory, open.
pub struct Root {
    fd: OwnedFd,
    pub path: PathBuf,
}

impl Root {
    pub fn open(path: &Path) -> io::Result<Root> {
        let c = CString::new(path.as_os_str().as_bytes())?;
        // SAFETY: valid C string; the descriptor is owned below.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Root {
            // SAFETY: a fresh descriptor we own.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            path: path.to_path_buf(),
        })
    }

    /// `openat2(root, path, flags, RESOLVE_NO_SYMLINKS | RESOLVE_BENEATH)`.
    fn openat2(&self, path: &str, flags: i32, mode: u32) -> Result<OwnedFd, Errno> {
        let p = cstr(if path.is_empty() { "." } else { path });
        // SAFETY: open_how is plain integers; zero is a valid value.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = (flags | libc::O_CLOEXEC) as u64;
        how.mode = u64::from(mode);
        how.resolve = libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_BENEATH;
        // SAFETY: valid pointers for the duration of the call.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.fd.as_raw_fd(),
                p.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd < 0 {
            return Err(last());
        }
        // SAFETY: a fresh descriptor we own.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    /// The parent directory of `path` (O_PATH) and the last component.
    fn at(&self, path: &str) -> Result<(OwnedFd, CString), Errno> {
        let dir = self.openat2(parent(path), libc::O_PATH | libc::O_DIRECTORY, 0)?;
        Ok((dir, cstr(name_of(path))))
    }

    /// Opens `path` itself (its last component not followed either).
    fn open_path(&self, path: &str, flags: i32) -> Result<OwnedFd, Errno> {
        self.openat2(path, flags, 0)
    }

    /// Applies `op` as system calls; Err is the errno of the call that
    /// failed. Each operation is the syscall sequence a program would
    /// issue: open, one state-changing call, close.
    pub fn apply(&self, op: &Op) -> Result<(), Errno> {
        match op {
            Op::Creat(p) => {
                let (dir, name) = self.at(p)?;
                // O_EXCL: the core's mknod fails with EEXIST too (creat(2)
                // would truncate an existing file instead).
                // SAFETY: valid descriptor and C string.
                let fd = check(unsafe {
                    libc::openat(
                        dir.as_raw_fd(),
                        name.as_ptr(),
                        libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC,
                        0o644 as libc::c_uint,
                    )
                })?;
                // SAFETY: a fresh descriptor we own.
                drop(unsafe { OwnedFd::from_raw_fd(fd) });
                Ok(())
            }
            Op::Mkdir(p) => {
                let (dir, name) = self.at(p)?;
                // SAFETY: valid descriptor and C string.
                check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o755) }).map(drop)
            }
            Op::Write {
                path,
                kind,
                off,
                len,
                tag,
            } => self.write(path, *kind, *off, *len, *tag),
            Op::Link { src, dst } => {
                let (d1, n1) = self.at(src)?;
                let (d2, n2) = self.at(dst)?;
                // SAFETY: valid descriptors and C strings.
                check(unsafe {
                    libc::linkat(d1.as_raw_fd(), n1.as_ptr(), d2.as_raw_fd(), n2.as_ptr(), 0)
                })
                .map(drop)
            }
            Op::Unlink(p) | Op::Rmdir(p) => {
                let (dir, name) = self.at(p)?;
                let flags = if matches!(op, Op::Rmdir(_)) {
                    libc::AT_REMOVEDIR
                } else {
                    0
                };
                // SAFETY: valid descriptor and C string.
                check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
            }
            Op::Rename { src, dst, .. } => {
                let (d1, n1) = self.at(src)?;
                let (d2, n2) = self.at(dst)?;
                // SAFETY: valid descriptors and C strings.
                check(unsafe {
                    libc::renameat(d1.as_raw_fd(), n1.as_ptr(), d2.as_raw_fd(), n2.as_ptr())
                })
                .map(drop)
            }
            Op::Symlink { target, path } => {
                let (dir, name) = self.at(path)?;
                let t = cstr(target);
                // SAFETY: valid descriptor and C strings.
                check(unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), name.as_ptr()) })
                    .map(drop)
            }
            Op::SetXattr { path, name, len } => {
                let fd =
                    self.open_path(path, libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK)?;
                let value = exec::data(*name as u8, 0, u64::from(*len));
                let key = cstr(&format!("user.{name}"));
                // SAFETY: valid descriptor, C string and buffer.
                check(unsafe {
                    libc::fsetxattr(
                        fd.as_raw_fd(),
                        key.as_ptr(),
                        value.as_ptr().cast(),
                        value.len(),
                        0,
                    )
                })
                .map(drop)
            }
            Op::RemoveXattr { path, name } => {
                let fd =
                    self.open_path(path, libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK)?;
                let key = cstr(&format!("user.{name}"));
                // SAFETY: valid descriptor and C string.
                check(unsafe { libc::fremovexattr(fd.as_raw_fd(), key.as_ptr()) }).map(drop)
            }
            Op::Truncate { path, size } => {
                let fd = self.open_path(path, libc::O_WRONLY | libc::O_NOFOLLOW)?;
                // SAFETY: valid descriptor.
                check(unsafe { libc::ftruncate(fd.as_raw_fd(), *size as i64) }).map(drop)
            }
            Op::Fallocate {
                path,
                mode,
                off,
                len,
            } => {
                let fd = self.open_path(path, libc::O_WRONLY | libc::O_NOFOLLOW)?;
                let mode = match mode {
                    Falloc::Alloc => 0,
                    Falloc::KeepSize => libc::FALLOC_FL_KEEP_SIZE,
                    Falloc::Punch => libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                };
                // SAFETY: valid descriptor.
                check(unsafe { libc::fallocate(fd.as_raw_fd(), mode, *off as i64, *len as i64) })
                    .map(drop)
            }
        }
    }

    fn write(&self, path: &str, kind: WriteKind, off: u64, len: u64, tag: u8) -> Result<(), Errno> {
        let flags = match kind {
            WriteKind::Append => libc::O_WRONLY | libc::O_APPEND,
            WriteKind::Plain => libc::O_WRONLY,
            WriteKind::Direct => libc::O_WRONLY | libc::O_DIRECT,
            // A shared writable mapping needs a descriptor open for reading.
            WriteKind::Mmap => libc::O_RDWR,
        };
        let fd = self.open_path(path, flags | libc::O_NOFOLLOW)?;
        let size = fstat(&fd)?.st_size as u64;
        match kind {
            WriteKind::Append => {
                // The kernel writes at its i_size, which is the daemon's
                // (every change goes through this mount).
                write_all(&fd, &exec::data(tag, size, len), None)
            }
            WriteKind::Plain => write_all(&fd, &exec::data(tag, off, len), Some(off)),
            WriteKind::Direct => {
                let data = exec::data(tag, off, len);
                // O_DIRECT wants a 4096-aligned buffer address.
                let mut raw = vec![0u8; data.len() + 4096];
                let skew = raw.as_ptr().align_offset(4096);
                let buf = &mut raw[skew..skew + data.len()];
                buf.copy_from_slice(&data);
                write_all(&fd, buf, Some(off))
            }
            WriteKind::Mmap => {
                // As the core stand-in: whole pages inside the size (a
                // store past EOF would be SIGBUS).
                if off >= size {
                    return Err(libc::ENXIO);
                }
                let len = len.min(size - off);
                let data = exec::data(tag, off, len);
                // SAFETY: a fresh shared mapping of `len` bytes at a page
                // offset inside the file; written, synced and unmapped here.
                unsafe {
                    let p = libc::mmap(
                        std::ptr::null_mut(),
                        len as usize,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_SHARED,
                        fd.as_raw_fd(),
                        off as i64,
                    );
                    if p == libc::MAP_FAILED {
                        return Err(last());
                    }
                    // Fault the pages in first: a fault the daemon cannot
                    // serve (it was killed) is SIGBUS on a plain store,
                    // but an error return here.
                    if libc::madvise(p, len as usize, libc::MADV_POPULATE_WRITE) != 0 {
                        let e = last();
                        libc::munmap(p, len as usize);
                        return Err(e);
                    }
                    std::ptr::copy_nonoverlapping(data.as_ptr(), p.cast::<u8>(), data.len());
                    let r = libc::msync(p, len as usize, libc::MS_SYNC);
                    let e = last();
                    libc::munmap(p, len as usize);
                    if r != 0 {
                        return Err(e);
                    }
                }
                Ok(())
            }
        }
    }

    /// Runs the persistence point after `op`: Ok(true) when an
    /// fsync/fdatasync returned success (the lower bound of the crash
    /// contract moves), Ok(false) for none. `Persist::Sync` is refused:
    /// Linux does not forward sync(2) to FUSE servers.
    pub fn persist(&self, op: &Op, p: Persist) -> Result<bool, Errno> {
        let (path, datasync) = match p {
            Persist::None => return Ok(false),
            Persist::Sync => panic!("sync(2) is not a persistence point through FUSE"),
            Persist::FsyncFile => (op.subject(), false),
            Persist::Fdatasync => (op.subject(), true),
            Persist::FsyncParent => (parent(op.subject()), false),
        };
        let fd = self.open_path(path, libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK)?;
        // SAFETY: valid descriptor.
        let r = unsafe {
            if datasync {
                libc::fdatasync(fd.as_raw_fd())
            } else {
                libc::fsync(fd.as_raw_fd())
            }
        };
        check(r).map(|_| true)
    }
}

fn fstat(fd: &OwnedFd) -> Result<libc::stat, Errno> {
    // SAFETY: zeroed stat is a valid out-parameter.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid descriptor and out-pointer.
    check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

/// Writes all of `buf` (at `off`, or at the file position), continuing
/// after short writes as write(2) callers do.
fn write_all(fd: &OwnedFd, buf: &[u8], off: Option<u64>) -> Result<(), Errno> {
    let mut done = 0usize;
    while done < buf.len() {
        let rest = &buf[done..];
        // SAFETY: valid descriptor and buffer.
        let n = unsafe {
            match off {
                Some(o) => libc::pwrite(
                    fd.as_raw_fd(),
                    rest.as_ptr().cast(),
                    rest.len(),
                    (o + done as u64) as i64,
                ),
                None => libc::write(fd.as_raw_fd(), rest.as_ptr().cast(), rest.len()),
            }
        };
        if n < 0 {
            return Err(last());
        }
        if n == 0 {
            return Err(libc::EIO);
        }
        done += n as usize;
    }
    Ok(())
}

fn xattrs(path: &Path) -> io::Result<BTreeMap<OsString, Vec<u8>>> {
    let c = CString::new(path.as_os_str().as_bytes())?;
    let mut out = BTreeMap::new();
    let mut list = vec![0u8; 64 << 10];
    // SAFETY: valid C string and buffer.
    let n = unsafe { libc::llistxattr(c.as_ptr(), list.as_mut_ptr().cast(), list.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    list.truncate(n as usize);
    for name in list.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name)?;
        let mut value = vec![0u8; 64 << 10];
        // SAFETY: valid C strings and buffer.
        let n = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                cname.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        value.truncate(n as usize);
        out.insert(OsString::from_vec(name.to_vec()), value);
    }
    Ok(out)
}

/// Reads the tree mounted at `root` through the kernel (lstat, readdir,
/// read, readlink, listxattr/getxattr) as `dump_tree` records it: the same
/// fields, a directory's size as the kernel reports it (atomfs: its entry
/// count), and a file's contents digested by [`digest_bytes`], which is
/// `dump_tree`'s digest of the same bytes.
pub fn walk(root: &Path) -> io::Result<Tree> {
    let mut tree = Tree::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let full = root.join(&rel);
        let md = std::fs::symlink_metadata(&full)?;
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            FileKind::Directory
        } else if ft.is_file() {
            FileKind::RegularFile
        } else if ft.is_symlink() {
            FileKind::Symlink
        } else if ft.is_fifo() {
            FileKind::NamedPipe
        } else if ft.is_socket() {
            FileKind::Socket
        } else if ft.is_char_device() {
            FileKind::CharDevice
        } else {
            FileKind::BlockDevice
        };
        let mut node = Node {
            kind,
            perm: (md.mode() & 0o7777) as u16,
            uid: md.uid(),
            gid: md.gid(),
            nlink: md.nlink() as u32,
            size: md.size(),
            digest: 0,
            target: Vec::new(),
            rdev: md.rdev() as u32,
            xattrs: xattrs(&full)?,
        };
        match kind {
            FileKind::RegularFile => node.digest = digest_bytes(&std::fs::read(&full)?),
            FileKind::Symlink => {
                node.target = std::fs::read_link(&full)?.into_os_string().into_vec()
            }
            FileKind::Directory => {
                for e in std::fs::read_dir(&full)? {
                    stack.push(rel.join(e?.file_name()));
                }
            }
            _ => {}
        }
        tree.insert(rel, node);
    }
    Ok(tree)
}
