//! `dump_tree`: a comparable snapshot of the whole tree, used by tests as
//! the oracle ("before == after" for failed requests, "remount == before",
//! and by the crash-consistency suite).
//!
//! It uses only the public, read-only API as root, so it submits nothing.
//! Inode numbers and timestamps are left out (they legitimately differ
//! between a file system and a model of it); hard links show up as equal
//! nodes under several paths with the same `nlink`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;

use atomic_api::AtomicDevice;

use crate::{Ctx, Errno, FileKind, Fs, Whence, ROOT_INO};

/// What the dump records of one path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub kind: FileKind,
    /// Permission bits (`mode & 0o7777`).
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    /// Bytes for files and symlinks, entry count for directories.
    pub size: u64,
    /// Digest of a regular file's contents (0 for other kinds): crc32c over
    /// `(offset, chunk)` of every 4 KiB chunk that is not all zeros, so a
    /// hole and written zeros digest alike and sparse files are cheap.
    pub digest: u32,
    /// Symlink target (empty for other kinds).
    pub target: Vec<u8>,
    pub rdev: u32,
    /// Extended attributes, sorted by name.
    pub xattrs: BTreeMap<OsString, Vec<u8>>,
}

/// Path (relative to the root, which is `""`) → node.
pub type Tree = BTreeMap<PathBuf, Node>;

/// Walks the whole tree from the root.
pub fn dump_tree<D: AtomicDevice>(fs: &Fs<D>) -> Result<Tree, Errno> {
    let ctx = Ctx::root();
    let mut tree = Tree::new();
    let mut stack = vec![(PathBuf::new(), ROOT_INO)];
    while let Some((path, ino)) = stack.pop() {
        let attr = fs.getattr(ino)?;
        let mut node = Node {
            kind: attr.kind,
            perm: attr.perm,
            uid: attr.uid,
            gid: attr.gid,
            nlink: attr.nlink,
            size: attr.size,
            digest: 0,
            target: Vec::new(),
            rdev: attr.rdev,
            xattrs: BTreeMap::new(),
        };
        match attr.kind {
            FileKind::RegularFile => node.digest = content_digest(fs, ino, attr.size)?,
            FileKind::Symlink => node.target = fs.readlink(ino)?,
            FileKind::Directory => {
                for entry in fs.readdir_all(&ctx, ino)? {
                    stack.push((path.join(&entry.name), entry.ino));
                }
            }
            _ => {}
        }
        let list = fs.listxattr(&ctx, ino)?;
        for name in list.split(|&b| b == 0).filter(|n| !n.is_empty()) {
            use std::os::unix::ffi::OsStrExt;
            let name = std::ffi::OsStr::from_bytes(name);
            node.xattrs
                .insert(name.to_owned(), fs.getxattr(&ctx, ino, name)?);
        }
        tree.insert(path, node);
    }
    Ok(tree)
}

/// See [`Node::digest`]. Skips holes with `SEEK_DATA`/`SEEK_HOLE`.
fn content_digest<D: AtomicDevice>(fs: &Fs<D>, ino: u64, size: u64) -> Result<u32, Errno> {
    const CHUNK: u64 = 4096;
    let mut crc = 0;
    let mut at = 0;
    while at < size {
        let data = match fs.lseek(ino, at, Whence::Data) {
            Ok(d) => d,
            Err(e) if e == Errno::ENXIO => break,
            Err(e) => return Err(e),
        };
        let hole = fs.lseek(ino, data, Whence::Hole)?;
        let mut chunk_at = data / CHUNK * CHUNK;
        while chunk_at < hole {
            let mut chunk = fs.read(ino, chunk_at, CHUNK as usize)?;
            if chunk.iter().any(|&b| b != 0) {
                chunk.resize(CHUNK as usize, 0);
                crc = crc32c::crc32c_append(crc, &chunk_at.to_le_bytes());
                crc = crc32c::crc32c_append(crc, &chunk);
            }
            chunk_at += CHUNK;
        }
        at = hole.max(chunk_at);
    }
    Ok(crc)
}

/// The [`Node::digest`] of a file whose contents are `data` (for models
/// that keep file contents in memory).
pub fn digest_bytes(data: &[u8]) -> u32 {
    let mut crc = 0;
    for (i, chunk) in data.chunks(4096).enumerate() {
        if chunk.iter().any(|&b| b != 0) {
            let mut full = chunk.to_vec();
            full.resize(4096, 0);
            crc = crc32c::crc32c_append(crc, &(i as u64 * 4096).to_le_bytes());
            crc = crc32c::crc32c_append(crc, &full);
        }
    }
    crc
}
