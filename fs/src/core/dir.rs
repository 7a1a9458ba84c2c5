//! Directories: the hash table of bucket sectors (find, insert, remove,
//! replace) and readdir with stable `(bucket, slot)` cookies.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use atomic_api::AtomicDevice;

use super::perm::{self, MAY_READ, MAY_WRITE};
use super::state::State;
use super::txn::Txn;
use super::types::{Ctx, DirEntry, FileKind};
use super::Fs;
use crate::errno::{Errno, Result};
use crate::format::dirent::{cookie, decode_cookie};
use crate::format::{home_bucket, Entry, Inode};

/// Where an entry was found.
pub(crate) struct Found {
    pub bucket: u64,
    pub entry: Entry,
}

impl<D: AtomicDevice> Fs<D> {
    /// Finds `name` in directory `dir`: reads the home bucket and probes on
    /// only while buckets carry the overflow flag (O(1) in practice).
    pub(crate) fn dir_find(
        &self,
        st: &mut State,
        txn: &Txn,
        dir: u64,
        name: &[u8],
    ) -> Result<Option<Found>> {
        let n = self.layout.buckets();
        let mut idx = home_bucket(name, self.layout.dir_hash_bits);
        for _ in 0..n {
            // Borrowed, not cloned (`tbucket`): a lookup copies only the
            // entry it finds.
            let lba = self.layout.bucket_lba(dir, idx);
            let bucket = match txn.buckets.get(&lba) {
                Some((_, staged)) => staged,
                None => self.bucket(st, dir, idx)?,
            };
            if let Some(pos) = bucket.find(name) {
                return Ok(Some(Found {
                    bucket: idx,
                    entry: bucket.entries[pos].clone(),
                }));
            }
            if !bucket.overflow {
                return Ok(None);
            }
            idx = (idx + 1) % n;
        }
        Ok(None)
    }

    /// Stages a new entry `name → ino` in directory `dir_inode` (the caller
    /// has checked that the name is absent). Keeps the directory's count of
    /// mapped bucket sectors (its `st_blocks`) in `dir_inode`.
    pub(crate) fn dir_insert(
        &self,
        st: &mut State,
        txn: &mut Txn,
        dir_inode: &mut Inode,
        name: &[u8],
        ino: u64,
        kind: FileKind,
    ) -> Result<()> {
        let dir = dir_inode.ino;
        let n = self.layout.buckets();
        let ss = self.sector_size();
        let mut idx = home_bucket(name, self.layout.dir_hash_bits);
        for _ in 0..n {
            let mut bucket = self.tbucket(st, txn, dir, idx)?;
            let was_mapped = !bucket.is_trimmable();
            let lba = self.layout.bucket_lba(dir, idx);
            if bucket.fits(name.len(), ss) {
                let slot = bucket.free_slot().expect("fits checked a free slot");
                bucket.insert(Entry {
                    ino,
                    slot,
                    dtype: kind.dtype(),
                    name: name.to_vec(),
                });
                if !was_mapped {
                    dir_inode.data_sectors += 1;
                }
                txn.buckets.insert(lba, (dir, bucket));
                return Ok(());
            }
            if !bucket.overflow {
                bucket.overflow = true;
                if !was_mapped {
                    dir_inode.data_sectors += 1;
                }
                txn.buckets.insert(lba, (dir, bucket));
            }
            idx = (idx + 1) % n;
        }
        Err(Errno::ENOSPC)
    }

    /// Stages the removal of `found` from directory `dir_inode`.
    pub(crate) fn dir_remove(
        &self,
        st: &mut State,
        txn: &mut Txn,
        dir_inode: &mut Inode,
        found: &Found,
    ) -> Result<()> {
        let dir = dir_inode.ino;
        let mut bucket = self.tbucket(st, txn, dir, found.bucket)?;
        let pos = bucket.find(&found.entry.name).ok_or(Errno::EIO)?;
        bucket.entries.remove(pos);
        if bucket.is_trimmable() {
            dir_inode.data_sectors = dir_inode.data_sectors.saturating_sub(1);
        }
        txn.buckets
            .insert(self.layout.bucket_lba(dir, found.bucket), (dir, bucket));
        Ok(())
    }

    /// Stages pointing the existing entry `found` at another inode, in place
    /// (same slot, so readdir cookies stay valid).
    pub(crate) fn dir_replace(
        &self,
        st: &mut State,
        txn: &mut Txn,
        dir: u64,
        found: &Found,
        ino: u64,
        kind: FileKind,
    ) -> Result<()> {
        let mut bucket = self.tbucket(st, txn, dir, found.bucket)?;
        let pos = bucket.find(&found.entry.name).ok_or(Errno::EIO)?;
        bucket.entries[pos].ino = ino;
        bucket.entries[pos].dtype = kind.dtype();
        txn.buckets
            .insert(self.layout.bucket_lba(dir, found.bucket), (dir, bucket));
        Ok(())
    }

    /// Checks that `ino` is a directory the caller may open with `flags`;
    /// returns a handle (the core keeps no per-handle directory state).
    pub fn opendir(&self, ctx: &Ctx, ino: u64, flags: i32) -> Result<u64> {
        let mut st = self.lock();
        let inode = self.inode(&mut st, ino)?;
        if !perm::is_dir(inode) {
            return Err(Errno::ENOTDIR);
        }
        let mask = match flags & libc::O_ACCMODE {
            libc::O_RDONLY => MAY_READ,
            _ => return Err(Errno::EISDIR),
        };
        perm::check(inode, ctx, mask)?;
        let _ = MAY_WRITE;
        Ok(0)
    }

    /// Lists directory `ino` from cookie `offset` (0 = start), calling `add`
    /// for each entry (`.` and `..` first) until it returns true ("buffer
    /// full") or the directory ends. Each entry's `offset` is the cookie to
    /// continue after it. Cookies survive concurrent inserts and deletes:
    /// every entry present throughout is returned exactly once. Walks only
    /// mapped buckets (`next_mapped`).
    pub fn readdir(
        &self,
        ctx: &Ctx,
        ino: u64,
        offset: u64,
        mut add: impl FnMut(&DirEntry) -> bool,
    ) -> Result<()> {
        let _ = ctx;
        let mut st = self.lock();
        let inode = self.inode(&mut st, ino)?;
        if !perm::is_dir(inode) {
            return Err(Errno::ENOTDIR);
        }
        let parent = inode.parent;
        if offset == 0 && add(&dot(ino, 1, ".")) {
            return Ok(());
        }
        if offset <= 1 && add(&dot(parent, 2, "..")) {
            return Ok(());
        }
        let (mut idx, mut slot) = if offset <= 2 {
            (0, 0)
        } else {
            decode_cookie(offset)
        };
        let region = self.layout.region(ino);
        let end = region + self.layout.buckets();
        let txn = Txn::default();
        while region + idx < end {
            let range = self
                .dev
                .next_mapped(region + idx)
                .map_err(|e| Errno(e.errno()))?;
            let Some(range) = range else { break };
            if range.start >= end {
                break;
            }
            for lba in range.start.max(region + idx)..range.end.min(end) {
                let b = lba - region;
                if b != idx {
                    slot = 0;
                }
                let bucket = self.tbucket(&mut st, &txn, ino, b)?;
                for e in bucket.entries.iter().filter(|e| u32::from(e.slot) >= slot) {
                    let entry = DirEntry {
                        ino: e.ino,
                        offset: cookie(b, u32::from(e.slot) + 1),
                        kind: FileKind::from_dtype(e.dtype).unwrap_or(FileKind::RegularFile),
                        name: OsString::from_vec(e.name.clone()),
                    };
                    if add(&entry) {
                        return Ok(());
                    }
                }
            }
            idx = range.end - region;
            slot = 0;
        }
        Ok(())
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

fn dot(ino: u64, offset: u64, name: &str) -> DirEntry {
    DirEntry {
        ino,
        offset,
        kind: FileKind::Directory,
        name: name.into(),
    }
}
