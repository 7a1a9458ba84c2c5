//! Attributes: getattr, setattr (chmod, chown, truncate, utimens), access,
//! statfs.

use atomic_api::AtomicDevice;

use super::perm::{self, MAY_WRITE};
use super::txn::Txn;
use super::types::{Ctx, FileAttr, SetAttr, StatFs, TimeSet};
use super::Fs;
use crate::errno::{Errno, Result};
use crate::format::NAME_MAX;

impl<D: AtomicDevice> Fs<D> {
    /// Attributes of `ino`.
    pub fn getattr(&self, ino: u64) -> Result<FileAttr> {
        let mut st = self.lock();
        let inode = self.inode(&mut st, ino)?;
        Ok(self.attr_of(inode))
    }

    /// [`Fs::getattr`] for an entry handed out (READDIRPLUS): held as a
    /// lookup is (see `MountOptions::hold_lookups`).
    pub fn getattr_entry(&self, ino: u64) -> Result<FileAttr> {
        let mut st = self.lock();
        let attr = self.attr_of(self.inode(&mut st, ino)?);
        self.hold(&mut st, ino);
        Ok(attr)
    }

    /// Changes attributes as one request (including any truncation), with
    /// Linux's rules: chmod by owner or root (setgid dropped for a group the
    /// caller is not in); chown by root, or by the owner to a group it is
    /// in; chown and size changes by non-root clear setuid/setgid; explicit
    /// times need ownership (except the ones a truncate carries),
    /// `UTIME_NOW` needs ownership or write access; ctime becomes now
    /// unless given.
    pub fn setattr(&self, ctx: &Ctx, ino: u64, attr: &SetAttr) -> Result<FileAttr> {
        let mut st = self.lock();
        let st = &mut *st;
        let mut inode = self.inode(st, ino)?.clone();
        self.writable(st)?;
        let now = self.now();
        let mut txn = Txn::default();
        if attr.uid.is_some() || attr.gid.is_some() {
            if !ctx.is_root() {
                let uid_ok = attr.uid.is_none_or(|u| u == inode.uid);
                let gid_ok = attr.gid.is_none_or(|g| g == inode.gid || ctx.in_group(g));
                if ctx.uid != inode.uid || !uid_ok || !gid_ok {
                    return Err(Errno::EPERM);
                }
            }
            if let Some(uid) = attr.uid {
                inode.uid = uid;
            }
            if let Some(gid) = attr.gid {
                inode.gid = gid;
            }
            // Linux's chown clears the set-id bits of a non-directory (for
            // root too), unless a mode is given as well.
            if attr.mode.is_none() {
                perm::kill_suid(&mut inode);
            }
        }
        if let Some(mode) = attr.mode {
            if !perm::is_owner(&inode, ctx) {
                return Err(Errno::EPERM);
            }
            let mut bits = mode & 0o7777;
            if !ctx.is_root() && !ctx.in_group(inode.gid) {
                bits &= !libc::S_ISGID;
            }
            inode.mode = (inode.mode & libc::S_IFMT) | bits;
        }
        if let Some(size) = attr.size {
            if perm::is_dir(&inode) {
                return Err(Errno::EISDIR);
            }
            if !perm::is_reg(&inode) {
                return Err(Errno::EINVAL);
            }
            let via_writable_handle = attr
                .fh
                .and_then(|fh| st.handles.get(&fh))
                .is_some_and(|h| h.ino == ino && h.flags & libc::O_ACCMODE != libc::O_RDONLY);
            if !via_writable_handle {
                perm::check(&inode, ctx, MAY_WRITE)?;
            }
            self.stage_truncate(&mut txn, &mut inode, size)?;
            if !ctx.is_root() && attr.mode.is_none() {
                perm::kill_suid(&mut inode);
            }
            inode.mtime = now;
        }
        for (which, set) in [(0, attr.atime), (1, attr.mtime)] {
            let Some(set) = set else { continue };
            let time = match set {
                TimeSet::Now => {
                    if !perm::is_owner(&inode, ctx) && !perm::allowed(&inode, ctx, MAY_WRITE) {
                        return Err(Errno::EACCES);
                    }
                    now
                }
                // With a size change the times are the truncate's own (no
                // syscall sets a size and explicit times together; FUSE's
                // writeback_cache mode sends the kernel's clock with the
                // truncate of open(O_TRUNC)), so the truncate's write
                // permission, checked above, covers them.
                TimeSet::At(t) if attr.size.is_some() => t,
                TimeSet::At(t) => {
                    if !perm::is_owner(&inode, ctx) {
                        return Err(Errno::EPERM);
                    }
                    t
                }
            };
            if which == 0 {
                inode.atime = time;
            } else {
                inode.mtime = time;
            }
        }
        inode.ctime = attr.ctime.unwrap_or(now);
        txn.put(inode.clone());
        self.commit(st, txn)?;
        Ok(self.attr_of(&inode))
    }

    /// `access(2)`: `mask` is `F_OK` or a combination of `R_OK`, `W_OK`, `X_OK`.
    pub fn access(&self, ctx: &Ctx, ino: u64, mask: i32) -> Result<()> {
        let mut st = self.lock();
        let inode = self.inode(&mut st, ino)?;
        if mask == libc::F_OK {
            return Ok(());
        }
        perm::check(inode, ctx, (mask & 7) as u32)?;
        if mask & libc::W_OK != 0 && self.read_only {
            return Err(Errno::EROFS);
        }
        Ok(())
    }

    /// Space from the device, inode counts from the allocator.
    pub fn statfs(&self) -> Result<StatFs> {
        let space = self.dev.space();
        let ss = u64::from(self.sector_size());
        let st = self.lock();
        let files = st.alloc.max();
        Ok(StatFs {
            blocks: space.capacity_bytes / ss,
            bfree: space.free_bytes / ss,
            bavail: space.free_bytes / ss,
            files,
            ffree: files - st.alloc.used(),
            bsize: self.sector_size().max(4096),
            frsize: self.sector_size(),
            namelen: NAME_MAX as u32,
        })
    }
}
