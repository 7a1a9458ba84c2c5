//! Runs workload operations on the file-system core, by path, as root.
//!
//! Both the oracle (a `MemDevice`) and the device under test run exactly
//! this code, so any difference between them comes from the block layer or
//! from what survives a crash, never from the harness.

use std::ffi::OsStr;

use atomfs::{
    Ctx, Errno, FileKind, Fs, SetAttr, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, ROOT_INO,
};
use atomic_api::AtomicDevice;

use crate::workload::{parent, Falloc, Op, Persist, WriteKind};

fn name_of(path: &str) -> &OsStr {
    OsStr::new(path.rsplit_once('/').map_or(path, |(_, n)| n))
}

/// The inode of `path` (no symlinks are followed; "" is the root).
pub fn resolve<D: AtomicDevice>(fs: &Fs<D>, path: &str) -> Result<u64, Errno> {
    let ctx = Ctx::root();
    let mut ino = ROOT_INO;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        ino = fs.lookup(&ctx, ino, OsStr::new(part))?.ino;
    }
    Ok(ino)
}

fn at<'a, D: AtomicDevice>(fs: &Fs<D>, path: &'a str) -> Result<(u64, &'a OsStr), Errno> {
    Ok((resolve(fs, parent(path))?, name_of(path)))
}

/// The bytes a write puts at file offset `off + i`: depends on the tag and
/// the offset, so overlapping writes and torn results are distinguishable.
pub fn data(tag: u8, off: u64, len: u64) -> Vec<u8> {
    (off..off + len)
        .map(|p| tag.wrapping_add((p.wrapping_mul(0x9E37) >> 5) as u8) | 1)
        .collect()
}

/// Applies `op`; the result is part of what the oracle compares.
pub fn apply<D: AtomicDevice>(fs: &Fs<D>, op: &Op) -> Result<(), Errno> {
    let ctx = Ctx::root();
    match op {
        Op::Creat(p) => {
            let (dir, name) = at(fs, p)?;
            fs.mknod(&ctx, dir, name, libc::S_IFREG | 0o644, 0)
                .map(drop)
        }
        Op::Mkdir(p) => {
            let (dir, name) = at(fs, p)?;
            fs.mkdir(&ctx, dir, name, 0o755).map(drop)
        }
        Op::Write {
            path,
            kind,
            off,
            len,
            tag,
        } => {
            let ino = resolve(fs, path)?;
            let (off, len) = match kind {
                WriteKind::Append => (fs.getattr(ino)?.size, *len),
                WriteKind::Plain | WriteKind::Direct => (*off, *len),
                WriteKind::Mmap => {
                    // A mapping covers only the current size.
                    let size = fs.getattr(ino)?.size;
                    if *off >= size {
                        return Err(Errno::ENXIO);
                    }
                    (*off, (*len).min(size - off))
                }
            };
            let buf = data(*tag, off, len);
            let mut done = 0usize;
            // Short writes (a request is bounded) continue like write(2)
            // callers do; each piece is its own atomic operation.
            while done < buf.len() {
                let n = fs.write(
                    &ctx,
                    ino,
                    off + done as u64,
                    &buf[done..],
                    matches!(kind, WriteKind::Append),
                )?;
                if n == 0 {
                    return Err(Errno::EIO);
                }
                done += n;
            }
            Ok(())
        }
        Op::Link { src, dst } => {
            let ino = resolve(fs, src)?;
            let (dir, name) = at(fs, dst)?;
            fs.link(&ctx, ino, dir, name).map(drop)
        }
        Op::Unlink(p) => {
            let (dir, name) = at(fs, p)?;
            fs.unlink(&ctx, dir, name)
        }
        Op::Rmdir(p) => {
            let (dir, name) = at(fs, p)?;
            fs.rmdir(&ctx, dir, name)
        }
        Op::Rename { src, dst, .. } => {
            let (d1, n1) = at(fs, src)?;
            let (d2, n2) = at(fs, dst)?;
            fs.rename(&ctx, d1, n1, d2, n2, 0)
        }
        Op::Symlink { target, path } => {
            let (dir, name) = at(fs, path)?;
            fs.symlink(&ctx, dir, name, OsStr::new(target)).map(drop)
        }
        Op::SetXattr { path, name, len } => {
            let ino = resolve(fs, path)?;
            let value = data(*name as u8, 0, u64::from(*len));
            fs.setxattr(&ctx, ino, OsStr::new(&format!("user.{name}")), &value, 0)
        }
        Op::RemoveXattr { path, name } => {
            let ino = resolve(fs, path)?;
            fs.removexattr(&ctx, ino, OsStr::new(&format!("user.{name}")))
        }
        Op::Truncate { path, size } => {
            let ino = resolve(fs, path)?;
            fs.setattr(
                &ctx,
                ino,
                &SetAttr {
                    size: Some(*size),
                    ..Default::default()
                },
            )
            .map(drop)
        }
        Op::Fallocate {
            path,
            mode,
            off,
            len,
        } => {
            let ino = resolve(fs, path)?;
            let mode = match mode {
                Falloc::Alloc => 0,
                Falloc::KeepSize => FALLOC_FL_KEEP_SIZE,
                Falloc::Punch => FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
            };
            fs.fallocate(&ctx, ino, *off, *len, mode)
        }
    }
}

/// Runs the persistence point after `op`; Ok(true) when it flushed.
pub fn persist<D: AtomicDevice>(fs: &Fs<D>, op: &Op, p: Persist) -> Result<bool, Errno> {
    match p {
        Persist::None => Ok(false),
        Persist::Sync => fs.sync().map(|_| true),
        Persist::FsyncFile | Persist::Fdatasync => {
            let ino = resolve(fs, op.subject())?;
            let datasync = p == Persist::Fdatasync;
            if fs.getattr(ino)?.kind == FileKind::Directory {
                fs.fsyncdir(ino, datasync)?;
            } else {
                fs.fsync(ino, datasync)?;
            }
            Ok(true)
        }
        Persist::FsyncParent => {
            let ino = resolve(fs, parent(op.subject()))?;
            fs.fsyncdir(ino, false).map(|_| true)
        }
    }
}
