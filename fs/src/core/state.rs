//! The in-memory state behind the metadata lock.

/// Caches, open counts and the inode allocator.
#[derive(Default)]
pub(crate) struct State {
    /// Set after a device I/O failure: every later change returns EIO.
    pub failed: bool,
}
