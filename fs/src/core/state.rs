//! The in-memory state behind the metadata lock.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use super::alloc::InoAlloc;
use super::cache::BucketCache;
use crate::format::{Inode, XattrMap};

/// An open file handle.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Handle {
    pub ino: u64,
    pub flags: i32,
}

/// Caches, open counts and the inode allocator. Only ever modified after a
/// successful submit (see `Fs::commit`), except for read-through cache fills.
pub(crate) struct State {
    /// Set after a device I/O failure: every later change returns EIO.
    pub failed: bool,
    /// Decoded inodes, filled on first use (never evicted: ~200 B each).
    pub inodes: HashMap<u64, Inode>,
    /// Parsed xattrs, filled on first use.
    pub xattrs: HashMap<u64, Arc<XattrMap>>,
    /// Directory bucket sectors (bounded LRU).
    pub buckets: BucketCache,
    /// Open handles per inode (keeps unlinked inodes alive).
    pub open: HashMap<u64, u32>,
    pub handles: HashMap<u64, Handle>,
    pub next_fh: u64,
    /// Inodes with an orphan record on the media.
    pub orphans: BTreeSet<u64>,
    pub alloc: InoAlloc,
    /// Entries handed out per inode that the caller has not forgotten yet
    /// (`MountOptions::hold_lookups`: the FUSE kernel's lookup counts).
    pub held: HashMap<u64, u64>,
    /// Freed inodes whose numbers wait for their last forget.
    pub freed_held: HashSet<u64>,
    /// Source of inode generations.
    pub generation: u32,
}

impl State {
    pub fn new(alloc: InoAlloc, cache_bytes: usize, generation: u32) -> State {
        State {
            failed: false,
            inodes: HashMap::new(),
            xattrs: HashMap::new(),
            buckets: BucketCache::new(cache_bytes),
            open: HashMap::new(),
            handles: HashMap::new(),
            next_fh: 1,
            orphans: BTreeSet::new(),
            alloc,
            held: HashMap::new(),
            freed_held: HashSet::new(),
            generation,
        }
    }

    /// Open handles on `ino`.
    pub fn open_count(&self, ino: u64) -> u32 {
        self.open.get(&ino).copied().unwrap_or(0)
    }
}
