//! File data: open/release, read, write, fallocate, lseek, readlink.

use atomic_api::AtomicDevice;

use super::types::{Ctx, Whence};
use super::Fs;
use crate::errno::Result;

impl<D: AtomicDevice> Fs<D> {
    /// Opens `ino` with `open(2)` flags (access mode, `O_TRUNC`,
    /// `O_APPEND`); checks permissions and returns a handle for
    /// [`Fs::release`]. The open count keeps an unlinked inode alive.
    pub fn open(&self, ctx: &Ctx, ino: u64, flags: i32) -> Result<u64> {
        let _ = (ctx, ino, flags);
        todo!()
    }

    /// Closes a handle. The last close of an unlinked inode frees its
    /// region, inode and orphan record in one request.
    pub fn release(&self, ino: u64, fh: u64) -> Result<()> {
        let _ = (ino, fh);
        todo!()
    }

    /// Reads up to `size` bytes at `offset` (short at end of file).
    pub fn read(&self, ino: u64, offset: u64, size: usize) -> Result<Vec<u8>> {
        let _ = (ino, offset, size);
        todo!()
    }

    /// Writes `data` at `offset` (or at end of file if `append`) as one
    /// request with the inode update; returns the bytes written. A write
    /// larger than one request can hold writes a prefix (a POSIX-legal short
    /// write). Clears setuid/setgid when the caller is not root.
    pub fn write(
        &self,
        ctx: &Ctx,
        ino: u64,
        offset: u64,
        data: &[u8],
        append: bool,
    ) -> Result<usize> {
        let _ = (ctx, ino, offset, data, append);
        todo!()
    }

    /// `fallocate(2)`: mode 0, `FALLOC_FL_KEEP_SIZE`, or
    /// `FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE`. Mode 0 on a
    /// thin-provisioned device checks free space but cannot reserve it.
    pub fn fallocate(
        &self,
        ctx: &Ctx,
        ino: u64,
        offset: u64,
        length: u64,
        mode: u32,
    ) -> Result<()> {
        let _ = (ctx, ino, offset, length, mode);
        todo!()
    }

    /// `lseek` with `SEEK_DATA` / `SEEK_HOLE`, from the block layer's map.
    pub fn lseek(&self, ino: u64, offset: u64, whence: Whence) -> Result<u64> {
        let _ = (ino, offset, whence);
        todo!()
    }

    /// The target of a symbolic link.
    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        let _ = ino;
        todo!()
    }
}
