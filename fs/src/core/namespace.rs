//! Operations on names: lookup, create (mknod, mkdir, symlink, create),
//! link, unlink, rmdir, rename. Each builds one [`Txn`].

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use atomic_api::AtomicDevice;

use super::perm::{self, MAY_EXEC, MAY_WRITE};
use super::state::{Handle, State};
use super::txn::Txn;
use super::types::{Ctx, FileAttr, FileKind, RENAME_EXCHANGE, RENAME_NOREPLACE};
use super::Fs;
use crate::errno::{Errno, Result};
use crate::format::{inline_capacity, Inode, NAME_MAX};

/// Longest symlink target (PATH_MAX - 1).
pub const SYMLINK_MAX: usize = 4095;
/// Most links to one inode.
pub const LINK_MAX: u32 = 65000;

/// Rejects names the kernel never sends and names that are too long.
pub(crate) fn check_name(name: &[u8]) -> Result<()> {
    if name.len() > NAME_MAX {
        Err(Errno::ENAMETOOLONG)
    } else if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
        Err(Errno::EINVAL)
    } else {
        Ok(())
    }
}

fn is_dot(name: &[u8]) -> bool {
    name == b"." || name == b".."
}

fn kind_of(inode: &Inode) -> FileKind {
    FileKind::from_mode(inode.mode).unwrap_or(FileKind::RegularFile)
}

impl<D: AtomicDevice> Fs<D> {
    /// Loads directory `parent` for a change of its entries: must be a live
    /// directory the caller may write and search.
    fn parent_for_change(
        &self,
        st: &mut State,
        txn: &Txn,
        ctx: &Ctx,
        parent: u64,
    ) -> Result<Inode> {
        let dir = self.tinode(st, txn, parent)?;
        if !perm::is_dir(&dir) {
            return Err(Errno::ENOTDIR);
        }
        perm::check(&dir, ctx, MAY_WRITE | MAY_EXEC)?;
        if dir.nlink == 0 {
            return Err(Errno::ENOENT);
        }
        Ok(dir)
    }

    /// Looks `name` up in directory `parent` (needs search permission).
    pub fn lookup(&self, ctx: &Ctx, parent: u64, name: &OsStr) -> Result<FileAttr> {
        let name = name.as_bytes();
        if name.len() > NAME_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        let mut st = self.lock();
        let dir = self.inode(&mut st, parent)?;
        if !perm::is_dir(dir) {
            return Err(Errno::ENOTDIR);
        }
        perm::check(dir, ctx, MAY_EXEC)?;
        let dotdot = dir.parent;
        let ino = match name {
            b"." => parent,
            b".." => dotdot,
            _ => {
                let found = self.dir_find(&mut st, &Txn::default(), parent, name)?;
                found.ok_or(Errno::ENOENT)?.entry.ino
            }
        };
        let attr = self.attr_of(self.inode(&mut st, ino)?);
        self.hold(&mut st, ino);
        Ok(attr)
    }

    /// Creates a new inode of `mode` named `name` in `parent`, plus (for
    /// symlinks) its target: one request writing the new inode, the bucket,
    /// the parent inode and any long target sectors.
    #[allow(clippy::too_many_arguments)]
    fn create_node(
        &self,
        st: &mut State,
        ctx: &Ctx,
        parent: u64,
        name: &[u8],
        mode: u32,
        rdev: u64,
        target: Option<&[u8]>,
    ) -> Result<Inode> {
        self.writable(st)?;
        check_name(name)?;
        let kind = FileKind::from_mode(mode).ok_or(Errno::EINVAL)?;
        let mut txn = Txn::default();
        let mut dir = self.parent_for_change(st, &txn, ctx, parent)?;
        if is_dot(name) || self.dir_find(st, &txn, parent, name)?.is_some() {
            return Err(Errno::EEXIST);
        }
        if kind == FileKind::Directory && dir.nlink >= LINK_MAX {
            return Err(Errno::EMLINK);
        }
        let now = self.now();
        let mut perm_bits = mode & 0o7777;
        if kind != FileKind::Symlink {
            perm_bits &= !ctx.umask;
        }
        let gid = if dir.mode & libc::S_ISGID != 0 {
            if kind == FileKind::Directory {
                perm_bits |= libc::S_ISGID;
            }
            dir.gid
        } else {
            ctx.gid
        };
        // Linux strips setgid from a new group-executable non-directory whose
        // group the creator is not in.
        if kind != FileKind::Directory
            && perm_bits & (libc::S_ISGID | libc::S_IXGRP) == (libc::S_ISGID | libc::S_IXGRP)
            && !ctx.is_root()
            && !ctx.in_group(gid)
        {
            perm_bits &= !libc::S_ISGID;
        }
        let ino = st.alloc.allocate().ok_or(Errno::ENOSPC)?;
        txn.allocated.push(ino);
        let mut inode = Inode {
            ino,
            generation: self.next_generation(st),
            mode: kind.mode_bits() | perm_bits,
            uid: ctx.uid,
            gid,
            nlink: if kind == FileKind::Directory { 2 } else { 1 },
            atime: now,
            mtime: now,
            ctime: now,
            btime: now,
            rdev: if matches!(kind, FileKind::CharDevice | FileKind::BlockDevice) {
                rdev
            } else {
                0
            },
            parent: if kind == FileKind::Directory {
                parent
            } else {
                0
            },
            ..Inode::default()
        };
        if let Some(target) = target {
            inode.size = target.len() as u64;
            if target.len() <= inline_capacity(self.sector_size()) {
                inode.inline_target = Some(target.to_vec());
            } else {
                let ss = self.sector_size() as usize;
                let mut data = target.to_vec();
                data.resize(target.len().div_ceil(ss) * ss, 0);
                inode.data_sectors = (data.len() / ss) as u64;
                txn.writes.push((self.layout.region(ino), data));
            }
        }
        let result = (|| {
            self.dir_insert(st, &mut txn, &mut dir, name, ino, kind)?;
            dir.size += 1;
            if kind == FileKind::Directory {
                dir.nlink += 1;
            }
            dir.mtime = now;
            dir.ctime = now;
            Ok(())
        })();
        if let Err(e) = result {
            st.alloc.release(ino);
            return Err(e);
        }
        txn.put(dir);
        txn.put(inode.clone());
        self.commit(st, txn)?;
        Ok(inode)
    }

    /// Creates a regular file, fifo, socket or device node (`mode` carries
    /// the type bits; `rdev` the device number). One request: new inode,
    /// directory bucket, parent inode.
    pub fn mknod(
        &self,
        ctx: &Ctx,
        parent: u64,
        name: &OsStr,
        mode: u32,
        rdev: u32,
    ) -> Result<FileAttr> {
        let mode = if mode & libc::S_IFMT == 0 {
            mode | libc::S_IFREG
        } else {
            mode
        };
        match FileKind::from_mode(mode) {
            Some(FileKind::Directory) | Some(FileKind::Symlink) | None => {
                return Err(Errno::EINVAL)
            }
            _ => {}
        }
        let mut st = self.lock();
        let inode = self.create_node(
            &mut st,
            ctx,
            parent,
            name.as_bytes(),
            mode,
            u64::from(rdev),
            None,
        )?;
        self.hold(&mut st, inode.ino);
        Ok(self.attr_of(&inode))
    }

    /// Creates and opens a regular file (FUSE `create`); returns its
    /// attributes and an open handle (see [`Fs::open`]). An existing name
    /// fails with EEXIST under `O_EXCL`, otherwise it is opened.
    pub fn create(
        &self,
        ctx: &Ctx,
        parent: u64,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> Result<(FileAttr, u64)> {
        let existing = {
            let mut st = self.lock();
            let txn = Txn::default();
            check_name(name.as_bytes())?;
            let dir = self.tinode(&mut st, &txn, parent)?;
            if !perm::is_dir(&dir) {
                return Err(Errno::ENOTDIR);
            }
            perm::check(&dir, ctx, MAY_EXEC)?;
            match self.dir_find(&mut st, &txn, parent, name.as_bytes())? {
                Some(found) if flags & libc::O_EXCL != 0 => {
                    let _ = found;
                    return Err(Errno::EEXIST);
                }
                Some(found) => {
                    // Held from here, so the number stays this inode's
                    // while it is opened (and is given up if that fails).
                    self.hold(&mut st, found.entry.ino);
                    Some(found.entry.ino)
                }
                None => {
                    let mode = libc::S_IFREG | (mode & 0o7777);
                    let inode =
                        self.create_node(&mut st, ctx, parent, name.as_bytes(), mode, 0, None)?;
                    self.hold(&mut st, inode.ino);
                    let fh = open_handle(&mut st, inode.ino, flags);
                    return Ok((self.attr_of(&inode), fh));
                }
            }
        };
        let ino = existing.expect("handled above");
        let opened = self
            .open(ctx, ino, flags)
            .and_then(|fh| Ok((self.getattr(ino)?, fh)));
        if opened.is_err() && self.hold_lookups {
            self.forget(ino, 1);
        }
        opened
    }

    /// Creates a directory.
    pub fn mkdir(&self, ctx: &Ctx, parent: u64, name: &OsStr, mode: u32) -> Result<FileAttr> {
        let mut st = self.lock();
        let mode = libc::S_IFDIR | (mode & 0o7777);
        let inode = self.create_node(&mut st, ctx, parent, name.as_bytes(), mode, 0, None)?;
        self.hold(&mut st, inode.ino);
        Ok(self.attr_of(&inode))
    }

    /// Creates a symbolic link to `target` (1 to 4095 bytes). Short targets
    /// live in the inode sector, long ones in the inode's region.
    pub fn symlink(
        &self,
        ctx: &Ctx,
        parent: u64,
        name: &OsStr,
        target: &OsStr,
    ) -> Result<FileAttr> {
        let target = target.as_bytes();
        if target.len() > SYMLINK_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        if target.is_empty() {
            return Err(Errno::ENOENT);
        }
        let mut st = self.lock();
        let mode = libc::S_IFLNK | 0o777;
        let inode =
            self.create_node(&mut st, ctx, parent, name.as_bytes(), mode, 0, Some(target))?;
        self.hold(&mut st, inode.ino);
        Ok(self.attr_of(&inode))
    }

    /// Adds the name `newname` in `newparent` for inode `ino` (not a directory).
    pub fn link(&self, ctx: &Ctx, ino: u64, newparent: u64, newname: &OsStr) -> Result<FileAttr> {
        let name = newname.as_bytes();
        let mut st = self.lock();
        let st = &mut *st;
        self.writable(st)?;
        check_name(name)?;
        let mut txn = Txn::default();
        let mut inode = self.tinode(st, &txn, ino)?;
        if perm::is_dir(&inode) {
            return Err(Errno::EPERM);
        }
        let mut dir = self.parent_for_change(st, &txn, ctx, newparent)?;
        if is_dot(name) || self.dir_find(st, &txn, newparent, name)?.is_some() {
            return Err(Errno::EEXIST);
        }
        if inode.nlink == 0 {
            return Err(Errno::ENOENT);
        }
        if inode.nlink >= LINK_MAX {
            return Err(Errno::EMLINK);
        }
        let now = self.now();
        self.dir_insert(st, &mut txn, &mut dir, name, ino, kind_of(&inode))?;
        dir.size += 1;
        dir.mtime = now;
        dir.ctime = now;
        inode.nlink += 1;
        inode.ctime = now;
        txn.put(dir);
        txn.put(inode.clone());
        self.commit(st, txn)?;
        self.hold(st, ino);
        Ok(self.attr_of(&inode))
    }

    /// Stages dropping one link of `victim`: when the last link goes it is
    /// freed (inode and region trimmed) or, if open, kept as an orphan.
    fn drop_link(&self, st: &State, txn: &mut Txn, mut victim: Inode, now: super::types::Timespec) {
        let is_dir = perm::is_dir(&victim);
        victim.nlink = if is_dir {
            0
        } else {
            victim.nlink.saturating_sub(1)
        };
        victim.ctime = now;
        if victim.nlink == 0 {
            if st.open_count(victim.ino) > 0 {
                txn.orphan_add.insert(victim.ino);
                txn.put(victim);
            } else {
                txn.inodes.remove(&victim.ino);
                txn.freed.insert(victim.ino);
            }
        } else {
            txn.put(victim);
        }
    }

    /// Removes a non-directory name. When the last link goes and the inode
    /// is open, an orphan record is written in the same request; otherwise
    /// the inode and its whole region are trimmed in that request.
    pub fn unlink(&self, ctx: &Ctx, parent: u64, name: &OsStr) -> Result<()> {
        self.remove(ctx, parent, name.as_bytes(), false)
    }

    /// Removes an empty directory.
    pub fn rmdir(&self, ctx: &Ctx, parent: u64, name: &OsStr) -> Result<()> {
        self.remove(ctx, parent, name.as_bytes(), true)
    }

    fn remove(&self, ctx: &Ctx, parent: u64, name: &[u8], want_dir: bool) -> Result<()> {
        let mut st = self.lock();
        let st = &mut *st;
        self.writable(st)?;
        if name.len() > NAME_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        let mut txn = Txn::default();
        let mut dir = self.parent_for_change(st, &txn, ctx, parent)?;
        if want_dir && name == b"." {
            return Err(Errno::EINVAL);
        }
        if want_dir && name == b".." {
            return Err(Errno::ENOTEMPTY);
        }
        let found = self
            .dir_find(st, &txn, parent, name)?
            .ok_or(Errno::ENOENT)?;
        let victim = self.tinode(st, &txn, found.entry.ino)?;
        match (want_dir, perm::is_dir(&victim)) {
            (true, false) => return Err(Errno::ENOTDIR),
            (false, true) => return Err(Errno::EISDIR),
            (true, true) if victim.size != 0 => return Err(Errno::ENOTEMPTY),
            _ => {}
        }
        if !perm::sticky_ok(&dir, &victim, ctx) {
            return Err(Errno::EPERM);
        }
        let now = self.now();
        self.dir_remove(st, &mut txn, &mut dir, &found)?;
        dir.size -= 1;
        if want_dir {
            dir.nlink -= 1;
        }
        dir.mtime = now;
        dir.ctime = now;
        txn.put(dir);
        self.drop_link(st, &mut txn, victim, now);
        self.commit(st, txn)
    }

    /// True if `ino` is `ancestor` or lies below it (walks `..` links).
    fn is_under(&self, st: &mut State, txn: &Txn, mut ino: u64, ancestor: u64) -> Result<bool> {
        for _ in 0..=self.layout.max_ino.min(1 << 20) {
            if ino == ancestor {
                return Ok(true);
            }
            let inode = self.tinode(st, txn, ino)?;
            if inode.parent == ino || inode.parent == 0 {
                return Ok(false);
            }
            ino = inode.parent;
        }
        Err(Errno::ELOOP)
    }

    /// Renames `parent/name` to `newparent/newname`; `flags` may hold
    /// [`RENAME_NOREPLACE`] or [`RENAME_EXCHANGE`]. One request: the two
    /// bucket sectors, the parent inode(s), the moved inode(s) and, for an
    /// overwrite, the replaced inode (or its trims).
    pub fn rename(
        &self,
        ctx: &Ctx,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
    ) -> Result<()> {
        let (name, newname) = (name.as_bytes(), newname.as_bytes());
        if flags & !(RENAME_NOREPLACE | RENAME_EXCHANGE) != 0
            || flags == RENAME_NOREPLACE | RENAME_EXCHANGE
        {
            return Err(Errno::EINVAL);
        }
        let exchange = flags & RENAME_EXCHANGE != 0;
        let mut st = self.lock();
        let st = &mut *st;
        self.writable(st)?;
        check_name(name)?;
        check_name(newname)?;
        if is_dot(name) || is_dot(newname) {
            return Err(Errno::EINVAL);
        }
        let mut txn = Txn::default();
        let pdir = self.parent_for_change(st, &txn, ctx, parent)?;
        let ndir = self.parent_for_change(st, &txn, ctx, newparent)?;
        let src_found = self
            .dir_find(st, &txn, parent, name)?
            .ok_or(Errno::ENOENT)?;
        let src = self.tinode(st, &txn, src_found.entry.ino)?;
        let dst_found = self.dir_find(st, &txn, newparent, newname)?;
        let dst = match &dst_found {
            Some(f) => Some(self.tinode(st, &txn, f.entry.ino)?),
            None => None,
        };
        if exchange && dst.is_none() {
            return Err(Errno::ENOENT);
        }
        if flags & RENAME_NOREPLACE != 0 && dst.is_some() {
            return Err(Errno::EEXIST);
        }
        if !perm::sticky_ok(&pdir, &src, ctx) {
            return Err(Errno::EPERM);
        }
        if let Some(dst) = &dst {
            if !perm::sticky_ok(&ndir, dst, ctx) {
                return Err(Errno::EPERM);
            }
        }
        let src_dir = perm::is_dir(&src);
        let dst_dir = dst.as_ref().is_some_and(perm::is_dir);
        // Moving a directory to a new parent rewrites its `..`: needs write
        // permission on the directory itself, and no cycles.
        if parent != newparent {
            if src_dir {
                perm::check(&src, ctx, MAY_WRITE)?;
                if self.is_under(st, &txn, newparent, src.ino)? {
                    return Err(Errno::EINVAL);
                }
            }
            if exchange && dst_dir {
                let dst = dst.as_ref().expect("exchange has a target");
                perm::check(dst, ctx, MAY_WRITE)?;
                if self.is_under(st, &txn, parent, dst.ino)? {
                    return Err(Errno::EINVAL);
                }
            }
        }
        if let Some(dst) = &dst {
            if dst.ino == src.ino {
                return Ok(()); // two links to one inode: POSIX says do nothing
            }
            if !exchange {
                if src_dir && !dst_dir {
                    return Err(Errno::ENOTDIR);
                }
                if !src_dir && dst_dir {
                    return Err(Errno::EISDIR);
                }
                if dst_dir && dst.size != 0 {
                    return Err(Errno::ENOTEMPTY);
                }
            }
        }
        // A directory that moves to another parent adds a link (its `..`)
        // there, unless it takes the place of a directory.
        if parent != newparent {
            let newparent_gains = src_dir && !dst_dir;
            let parent_gains = exchange && dst_dir && !src_dir;
            if newparent_gains && ndir.nlink >= LINK_MAX || parent_gains && pdir.nlink >= LINK_MAX {
                return Err(Errno::EMLINK);
            }
        }
        let now = self.now();
        let (src_kind, src_ino) = (kind_of(&src), src.ino);
        let mut src = src;
        src.ctime = now;
        if src_dir {
            src.parent = newparent;
        }
        txn.put(pdir);
        txn.put(ndir);
        if exchange {
            let mut dst = dst.expect("exchange has a target");
            dst.ctime = now;
            if dst_dir {
                dst.parent = parent;
            }
            let dst_found = dst_found.expect("exchange has a target");
            self.dir_replace(st, &mut txn, parent, &src_found, dst.ino, kind_of(&dst))?;
            self.dir_replace(st, &mut txn, newparent, &dst_found, src_ino, src_kind)?;
            if parent != newparent {
                let delta = i64::from(src_dir) - i64::from(dst_dir);
                let mut p = self.tinode(st, &txn, parent)?;
                p.nlink = (i64::from(p.nlink) - delta) as u32;
                txn.put(p);
                let mut np = self.tinode(st, &txn, newparent)?;
                np.nlink = (i64::from(np.nlink) + delta) as u32;
                txn.put(np);
            }
            txn.put(dst);
        } else {
            let mut p = self.tinode(st, &txn, parent)?;
            self.dir_remove(st, &mut txn, &mut p, &src_found)?;
            p.size -= 1;
            if src_dir {
                p.nlink -= 1;
            }
            txn.put(p);
            let mut np = self.tinode(st, &txn, newparent)?;
            match (&dst_found, dst) {
                (Some(found), Some(dst)) => {
                    // Overwrite in place: the target's slot now names `src`.
                    self.dir_replace(st, &mut txn, newparent, found, src_ino, src_kind)?;
                    if dst_dir {
                        np.nlink -= 1;
                    }
                    txn.put(np.clone());
                    self.drop_link(st, &mut txn, dst, now);
                    np = self.tinode(st, &txn, newparent)?;
                }
                _ => {
                    // Re-find after the removal: a same-bucket rename must
                    // see the staged bucket.
                    self.dir_insert(st, &mut txn, &mut np, newname, src_ino, src_kind)?;
                    np.size += 1;
                }
            }
            if src_dir {
                np.nlink += 1;
            }
            txn.put(np);
        }
        for dir in [parent, newparent] {
            let mut d = self.tinode(st, &txn, dir)?;
            d.mtime = now;
            d.ctime = now;
            txn.put(d);
        }
        txn.put(src);
        self.commit(st, txn)
    }
}

/// Registers an open handle on `ino`.
pub(crate) fn open_handle(st: &mut State, ino: u64, flags: i32) -> u64 {
    let fh = st.next_fh;
    st.next_fh += 1;
    st.handles.insert(fh, Handle { ino, flags });
    *st.open.entry(ino).or_insert(0) += 1;
    fh
}
