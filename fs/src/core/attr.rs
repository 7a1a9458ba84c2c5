//! Attributes: getattr, setattr (chmod, chown, truncate, utimens), access,
//! statfs.

use atomic_api::AtomicDevice;

use super::types::{Ctx, FileAttr, SetAttr, StatFs};
use super::Fs;
use crate::errno::Result;

impl<D: AtomicDevice> Fs<D> {
    /// Attributes of `ino`.
    pub fn getattr(&self, ino: u64) -> Result<FileAttr> {
        let _ = ino;
        todo!()
    }

    /// Changes attributes (one request, including any truncation).
    pub fn setattr(&self, ctx: &Ctx, ino: u64, attr: &SetAttr) -> Result<FileAttr> {
        let _ = (ctx, ino, attr);
        todo!()
    }

    /// `access(2)`: `mask` is `F_OK` or a combination of `R_OK`, `W_OK`, `X_OK`.
    pub fn access(&self, ctx: &Ctx, ino: u64, mask: i32) -> Result<()> {
        let _ = (ctx, ino, mask);
        todo!()
    }

    /// Space from the device, inode counts from the allocator.
    pub fn statfs(&self) -> Result<StatFs> {
        todo!()
    }
}
