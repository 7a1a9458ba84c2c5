//! Building ONE request per operation, and the cache accessors it uses.
//!
//! An operation reads what it needs through the caches, stages every new
//! inode, bucket, data sector and trim in a [`Txn`], and calls
//! [`Fs::commit`], which encodes the request, submits it, and only then
//! installs the staged metadata in the caches. Reads made while staging see
//! the staged versions first, so an operation that touches the same inode or
//! bucket twice (a rename within one bucket, a parent that loses and gains
//! an entry) composes correctly and writes each sector once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use atomic_api::{AtomicDevice, Request};

use super::perm;
use super::state::State;
use super::types::{FileAttr, FileKind, Timespec};
use super::Fs;
use crate::errno::{Errno, Result};
use crate::format::{orphan, Bucket, Inode, InodeError, XattrMap};

/// The staged changes of one operation.
#[derive(Default)]
pub(crate) struct Txn {
    /// New versions of inodes to write.
    pub inodes: BTreeMap<u64, Inode>,
    /// Inodes to free: inode sector, whole region and orphan record trimmed.
    pub freed: BTreeSet<u64>,
    /// New versions of bucket sectors: lba → (directory, bucket).
    pub buckets: BTreeMap<u64, (u64, Bucket)>,
    pub orphan_add: BTreeSet<u64>,
    pub orphan_del: BTreeSet<u64>,
    /// Raw sector writes (file data, symlink targets, external xattrs).
    pub writes: Vec<(u64, Vec<u8>)>,
    /// Raw trims (lba, sectors).
    pub trims: Vec<(u64, u64)>,
    /// New parsed xattrs to cache.
    pub xattrs: Vec<(u64, Arc<XattrMap>)>,
    /// Inode numbers taken from the allocator (given back on failure).
    pub allocated: Vec<u64>,
}

impl Txn {
    pub fn put(&mut self, inode: Inode) {
        self.inodes.insert(inode.ino, inode);
    }
}

impl<D: AtomicDevice> Fs<D> {
    pub(crate) fn now(&self) -> Timespec {
        self.clock.now()
    }

    pub(crate) fn sector_size(&self) -> u32 {
        self.layout.sector_size
    }

    /// The cached inode `ino`, reading it on first use. ENOENT for a free or
    /// out-of-range number, EIO for a damaged sector.
    pub(crate) fn inode<'a>(&self, st: &'a mut State, ino: u64) -> Result<&'a Inode> {
        if ino == 0 || ino > self.layout.max_ino {
            return Err(Errno::ENOENT);
        }
        #[allow(clippy::map_entry)] // the read between may fail
        if !st.inodes.contains_key(&ino) {
            let mut buf = vec![0u8; self.sector_size() as usize];
            self.dev
                .read(self.layout.inode_lba(ino), &mut buf)
                .map_err(|e| Errno(e.errno()))?;
            let inode = match Inode::decode(&buf, ino) {
                Ok(inode) => inode,
                Err(InodeError::Free) => return Err(Errno::ENOENT),
                Err(e) => {
                    log::error!("atomfs: inode {ino} is damaged: {e:?}");
                    return Err(Errno::EIO);
                }
            };
            st.inodes.insert(ino, inode);
        }
        Ok(&st.inodes[&ino])
    }

    /// The inode as staged in `txn`, else as cached.
    pub(crate) fn tinode(&self, st: &mut State, txn: &Txn, ino: u64) -> Result<Inode> {
        if txn.freed.contains(&ino) {
            return Err(Errno::ENOENT);
        }
        match txn.inodes.get(&ino) {
            Some(inode) => Ok(inode.clone()),
            None => self.inode(st, ino).cloned(),
        }
    }

    /// Bucket `idx` of directory `dir` as staged in `txn`, else as cached.
    pub(crate) fn tbucket(&self, st: &mut State, txn: &Txn, dir: u64, idx: u64) -> Result<Bucket> {
        let lba = self.layout.bucket_lba(dir, idx);
        if let Some((_, b)) = txn.buckets.get(&lba) {
            return Ok(b.clone());
        }
        self.bucket(st, dir, idx).cloned()
    }

    /// Bucket `idx` of directory `dir` from the cache, reading on a miss.
    pub(crate) fn bucket<'a>(&self, st: &'a mut State, dir: u64, idx: u64) -> Result<&'a Bucket> {
        let lba = self.layout.bucket_lba(dir, idx);
        if st.buckets.get(lba).is_none() {
            let mut buf = vec![0u8; self.sector_size() as usize];
            self.dev.read(lba, &mut buf).map_err(|e| Errno(e.errno()))?;
            let bucket = Bucket::decode(&buf, dir).map_err(|e| {
                log::error!("atomfs: directory {dir} bucket {idx} is damaged: {e:?}");
                Errno::EIO
            })?;
            st.buckets.put(lba, bucket);
        }
        Ok(st.buckets.get(lba).expect("just cached"))
    }

    /// Attributes of an inode.
    pub(crate) fn attr_of(&self, inode: &Inode) -> FileAttr {
        let per = u64::from(self.sector_size() / 512);
        FileAttr {
            ino: inode.ino,
            generation: u64::from(inode.generation),
            size: inode.size,
            blocks: inode.data_sectors * per,
            atime: inode.atime,
            mtime: inode.mtime,
            ctime: inode.ctime,
            crtime: inode.btime,
            kind: FileKind::from_mode(inode.mode).unwrap_or(FileKind::RegularFile),
            perm: (inode.mode & 0o7777) as u16,
            nlink: inode.nlink,
            uid: inode.uid,
            gid: inode.gid,
            rdev: inode.rdev as u32,
            blksize: self.sector_size().max(4096),
            flags: inode.flags,
        }
    }

    /// Encodes `txn` as one request. The raw writes move into it (a file
    /// write's data is not copied again).
    fn build(&self, st: &State, txn: &mut Txn) -> Request {
        let l = &self.layout;
        let ss = self.sector_size();
        let mut req = Request::new();
        for (ino, inode) in &txn.inodes {
            // An inode equal to its cached version (the one on the media)
            // is not written: a rewrite of file data within one clock tick
            // changes nothing in it (see `SystemClock`).
            if !txn.freed.contains(ino) && st.inodes.get(ino) != Some(inode) {
                req.write(l.inode_lba(*ino), inode.encode(ss));
            }
        }
        for ino in &txn.freed {
            req.trim(l.inode_lba(*ino), 1);
            req.trim(l.region(*ino), l.region_sectors);
            if st.orphans.contains(ino) || txn.orphan_add.contains(ino) {
                req.trim(l.orphan_lba(*ino), 1);
            }
        }
        for (lba, (dir, bucket)) in &txn.buckets {
            if txn.freed.contains(dir) {
                continue;
            }
            if bucket.is_trimmable() {
                req.trim(*lba, 1);
            } else {
                req.write(*lba, bucket.encode(*dir, ss));
            }
        }
        for ino in txn.orphan_add.difference(&txn.freed) {
            req.write(l.orphan_lba(*ino), orphan::encode(*ino, ss));
        }
        for ino in txn.orphan_del.difference(&txn.freed) {
            req.trim(l.orphan_lba(*ino), 1);
        }
        for (lba, data) in std::mem::take(&mut txn.writes) {
            req.write(lba, data);
        }
        for (lba, sectors) in &txn.trims {
            req.trim(*lba, *sectors);
        }
        req
    }

    /// Submits `txn` as ONE request; on success installs it in the caches,
    /// on failure gives back allocated inode numbers and changes nothing.
    pub(crate) fn commit(&self, st: &mut State, mut txn: Txn) -> Result<()> {
        if let Err(e) = self.writable(st) {
            for ino in &txn.allocated {
                st.alloc.release(*ino);
            }
            return Err(e);
        }
        let req = self.build(st, &mut txn);
        if let Err(e) = self.submit(st, req) {
            for ino in &txn.allocated {
                st.alloc.release(*ino);
            }
            return Err(e);
        }
        let l = self.layout;
        for (ino, inode) in txn.inodes {
            if !txn.freed.contains(&ino) {
                st.inodes.insert(ino, inode);
            }
        }
        for (lba, (dir, bucket)) in txn.buckets {
            if !txn.freed.contains(&dir) {
                st.buckets.put(lba, bucket);
            }
        }
        for (ino, map) in txn.xattrs {
            st.xattrs.insert(ino, map);
        }
        for ino in txn.orphan_add {
            st.orphans.insert(ino);
        }
        for ino in txn.orphan_del {
            st.orphans.remove(&ino);
        }
        for ino in txn.freed {
            let was_dir = st.inodes.get(&ino).is_some_and(perm::is_dir);
            st.inodes.remove(&ino);
            st.xattrs.remove(&ino);
            st.orphans.remove(&ino);
            st.open.remove(&ino);
            if was_dir {
                st.buckets
                    .remove_range(l.region(ino), l.region(ino) + l.region_sectors);
            }
            Self::release_ino(st, ino);
        }
        Ok(())
    }

    /// A fresh inode generation.
    pub(crate) fn next_generation(&self, st: &mut State) -> u32 {
        st.generation = st.generation.wrapping_add(1);
        st.generation
    }
}
