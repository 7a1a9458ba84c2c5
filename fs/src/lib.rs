//! atomfs: a journal-free POSIX file system in which every state-changing
//! operation is ONE atomic multi-segment request to the block layer.
//!
//! * [`format`]: the on-disk layout (FORMAT.md), shared with mkfs and fsck.
//! * [`Fs`]: the core, POSIX operations by inode number over any
//!   [`AtomicDevice`](atomic_api::AtomicDevice); no FUSE types.
//! * [`inspect`]: `dump_tree`, the tree oracle for tests.
//! * [`budget`]: the per-operation byte budgets tests assert.
//! * [`fuse`]: the FUSE adapter and the mount daemon of the `atomfs`
//!   binary (the only code that uses fuser).

pub mod budget;
pub mod core;
pub mod errno;
pub mod format;
pub mod fsck;
pub mod fuse;
pub mod inspect;

pub use crate::core::types::{
    Clock, Ctx, DirEntry, FileAttr, FileKind, Groups, MkfsOptions, MountError, MountOptions,
    SetAttr, StatFs, SystemClock, TimeSet, Timespec, Whence, FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_PUNCH_HOLE, RENAME_EXCHANGE, RENAME_NOREPLACE, XATTR_CREATE, XATTR_REPLACE,
};
pub use crate::core::{mkfs, Fs};
pub use crate::errno::{Errno, Result};
pub use crate::format::{MAX_FILE_SIZE, NAME_MAX, ROOT_INO};
