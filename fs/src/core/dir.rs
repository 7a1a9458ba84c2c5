//! Directory listing: opendir, readdir with stable cookies.

use atomic_api::AtomicDevice;

use super::types::{Ctx, DirEntry};
use super::Fs;
use crate::errno::Result;

impl<D: AtomicDevice> Fs<D> {
    /// Checks that `ino` is a directory the caller may open with `flags`;
    /// returns a handle (the core keeps no per-handle directory state).
    pub fn opendir(&self, ctx: &Ctx, ino: u64, flags: i32) -> Result<u64> {
        let _ = (ctx, ino, flags);
        todo!()
    }

    /// Lists directory `ino` from cookie `offset` (0 = start), calling `add`
    /// for each entry (`.` and `..` first) until it returns true ("buffer
    /// full") or the directory ends. Each entry's `offset` is the cookie to
    /// continue after it. Cookies survive concurrent inserts and deletes:
    /// every entry present throughout is returned exactly once.
    pub fn readdir(
        &self,
        ctx: &Ctx,
        ino: u64,
        offset: u64,
        add: impl FnMut(&DirEntry) -> bool,
    ) -> Result<()> {
        let _ = (ctx, ino, offset, add);
        todo!()
    }

    /// Convenience: every entry (except `.` and `..`) of directory `ino`.
    pub fn readdir_all(&self, ctx: &Ctx, ino: u64) -> Result<Vec<DirEntry>> {
        let mut out = Vec::new();
        self.readdir(ctx, ino, 2, |e| {
            out.push(e.clone());
            false
        })?;
        Ok(out)
    }
}
