//! Extended attributes.

use std::ffi::OsStr;

use atomic_api::AtomicDevice;

use super::types::Ctx;
use super::Fs;
use crate::errno::Result;

impl<D: AtomicDevice> Fs<D> {
    /// Sets `name` to `value`; `flags` may hold
    /// [`XATTR_CREATE`](super::types::XATTR_CREATE) or
    /// [`XATTR_REPLACE`](super::types::XATTR_REPLACE). Values up to 64 KiB.
    pub fn setxattr(
        &self,
        ctx: &Ctx,
        ino: u64,
        name: &OsStr,
        value: &[u8],
        flags: u32,
    ) -> Result<()> {
        let _ = (ctx, ino, name, value, flags);
        todo!()
    }

    /// The value of `name` (ENODATA if absent).
    pub fn getxattr(&self, ctx: &Ctx, ino: u64, name: &OsStr) -> Result<Vec<u8>> {
        let _ = (ctx, ino, name);
        todo!()
    }

    /// Every attribute name, each followed by a NUL (the `listxattr(2)` format).
    pub fn listxattr(&self, ctx: &Ctx, ino: u64) -> Result<Vec<u8>> {
        let _ = (ctx, ino);
        todo!()
    }

    /// Removes `name` (ENODATA if absent).
    pub fn removexattr(&self, ctx: &Ctx, ino: u64, name: &OsStr) -> Result<()> {
        let _ = (ctx, ino, name);
        todo!()
    }
}
