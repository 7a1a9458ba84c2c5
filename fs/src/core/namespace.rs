//! Operations on names: lookup, create (mknod, mkdir, symlink, create),
//! link, unlink, rmdir, rename.

use std::ffi::OsStr;

use atomic_api::AtomicDevice;

use super::types::{Ctx, FileAttr};
use super::Fs;
use crate::errno::Result;

impl<D: AtomicDevice> Fs<D> {
    /// Looks `name` up in directory `parent` (needs search permission).
    pub fn lookup(&self, ctx: &Ctx, parent: u64, name: &OsStr) -> Result<FileAttr> {
        let _ = (ctx, parent, name);
        todo!()
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
        let _ = (ctx, parent, name, mode, rdev);
        todo!()
    }

    /// Creates and opens a regular file (FUSE `create`); returns its
    /// attributes and an open handle (see [`Fs::open`]).
    pub fn create(
        &self,
        ctx: &Ctx,
        parent: u64,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> Result<(FileAttr, u64)> {
        let _ = (ctx, parent, name, mode, flags);
        todo!()
    }

    /// Creates a directory.
    pub fn mkdir(&self, ctx: &Ctx, parent: u64, name: &OsStr, mode: u32) -> Result<FileAttr> {
        let _ = (ctx, parent, name, mode);
        todo!()
    }

    /// Creates a symbolic link to `target` (at most 4095 bytes).
    pub fn symlink(
        &self,
        ctx: &Ctx,
        parent: u64,
        name: &OsStr,
        target: &OsStr,
    ) -> Result<FileAttr> {
        let _ = (ctx, parent, name, target);
        todo!()
    }

    /// Adds the name `newname` in `newparent` for inode `ino` (not a directory).
    pub fn link(&self, ctx: &Ctx, ino: u64, newparent: u64, newname: &OsStr) -> Result<FileAttr> {
        let _ = (ctx, ino, newparent, newname);
        todo!()
    }

    /// Removes a non-directory name. When the last link goes and the inode
    /// is open, an orphan record is written in the same request; otherwise
    /// the inode and its whole region are trimmed in that request.
    pub fn unlink(&self, ctx: &Ctx, parent: u64, name: &OsStr) -> Result<()> {
        let _ = (ctx, parent, name);
        todo!()
    }

    /// Removes an empty directory.
    pub fn rmdir(&self, ctx: &Ctx, parent: u64, name: &OsStr) -> Result<()> {
        let _ = (ctx, parent, name);
        todo!()
    }

    /// Renames `parent/name` to `newparent/newname`; `flags` may hold
    /// [`RENAME_NOREPLACE`](super::types::RENAME_NOREPLACE) or
    /// [`RENAME_EXCHANGE`](super::types::RENAME_EXCHANGE).
    pub fn rename(
        &self,
        ctx: &Ctx,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
    ) -> Result<()> {
        let _ = (ctx, parent, name, newparent, newname, flags);
        todo!()
    }
}
