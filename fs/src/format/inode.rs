//! The inode sector: one sector per inode at `inode_base + ino`.
//!
//! Everything `stat` shows lives here, plus the parent (for a directory's
//! `..`), the count of mapped data sectors (for `st_blocks` without walking
//! the map) and an inline area for a short symlink target and small xattrs.

use super::codec::*;
use crate::core::types::Timespec;

/// `"AFIN"` little-endian.
pub const INODE_MAGIC: u32 = u32::from_le_bytes(*b"AFIN");
/// Byte offset of the inline area.
pub const INLINE_OFFSET: usize = 128;
/// Layout flag: the symlink target is in the inline area.
pub const LF_TARGET_INLINE: u32 = 1;
/// Layout flag: the xattr blob is in the xattr area of the region, not inline.
pub const LF_XATTR_EXTERNAL: u32 = 2;

/// Bytes of inline area in a sector of `sector_size` bytes.
pub fn inline_capacity(sector_size: u32) -> usize {
    sector_size as usize - INLINE_OFFSET - 4
}

/// A decoded inode.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inode {
    pub ino: u64,
    pub generation: u32,
    /// Full `st_mode`: type and permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    /// Bytes (files, symlinks) or number of entries (directories).
    pub size: u64,
    pub atime: Timespec,
    pub mtime: Timespec,
    pub ctime: Timespec,
    pub btime: Timespec,
    pub rdev: u64,
    /// `chattr`-style flags (reserved, 0).
    pub flags: u32,
    /// Parent directory (directories only; the root is its own parent).
    pub parent: u64,
    /// Mapped sectors in the data part of the region (for `st_blocks`).
    pub data_sectors: u64,
    /// The symlink target when it fits inline (`LF_TARGET_INLINE`).
    pub inline_target: Option<Vec<u8>>,
    /// Length of the serialized xattr blob.
    pub xattr_len: u32,
    /// The xattr blob lives in the xattr area (`LF_XATTR_EXTERNAL`).
    pub xattr_external: bool,
    /// The xattr blob when inline (empty otherwise).
    pub xattr_inline: Vec<u8>,
}

/// Why an inode sector did not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InodeError {
    /// All zeros: the slot is free.
    Free,
    BadMagic,
    BadChecksum,
    /// The sector belongs to another inode number (misdirected write).
    WrongIno(u64),
    /// Lengths point outside the sector.
    BadLength,
}

impl Inode {
    /// Bytes of inline area this inode uses.
    pub fn inline_used(&self) -> usize {
        self.inline_target.as_ref().map_or(0, Vec::len) + self.xattr_inline.len()
    }

    /// Encodes into one sector; panics if the inline area overflows (callers
    /// check [`inline_capacity`] first).
    pub fn encode(&self, sector_size: u32) -> Vec<u8> {
        let mut b = vec![0u8; sector_size as usize];
        assert!(self.inline_used() <= inline_capacity(sector_size));
        put_u32(&mut b, 0, INODE_MAGIC);
        put_u32(&mut b, 4, self.generation);
        put_u64(&mut b, 8, self.ino);
        put_u32(&mut b, 16, self.mode);
        put_u32(&mut b, 20, self.uid);
        put_u32(&mut b, 24, self.gid);
        put_u32(&mut b, 28, self.nlink);
        put_u64(&mut b, 32, self.size);
        for (i, t) in [self.atime, self.mtime, self.ctime, self.btime]
            .iter()
            .enumerate()
        {
            put_i64(&mut b, 40 + 8 * i, t.sec);
            put_u32(&mut b, 72 + 4 * i, t.nsec);
        }
        put_u64(&mut b, 88, self.rdev);
        put_u32(&mut b, 96, self.flags);
        let mut lf = 0;
        if self.inline_target.is_some() {
            lf |= LF_TARGET_INLINE;
        }
        if self.xattr_external {
            lf |= LF_XATTR_EXTERNAL;
        }
        put_u32(&mut b, 100, lf);
        put_u64(&mut b, 104, self.parent);
        put_u64(&mut b, 112, self.data_sectors);
        let target = self.inline_target.as_deref().unwrap_or(&[]);
        put_u16(&mut b, 120, target.len() as u16);
        put_u32(&mut b, 124, self.xattr_len);
        let mut at = INLINE_OFFSET;
        b[at..at + target.len()].copy_from_slice(target);
        at += target.len();
        b[at..at + self.xattr_inline.len()].copy_from_slice(&self.xattr_inline);
        seal(&mut b);
        b
    }

    /// Decodes the sector of inode `ino`.
    pub fn decode(b: &[u8], ino: u64) -> Result<Inode, InodeError> {
        if is_zero(b) {
            return Err(InodeError::Free);
        }
        if get_u32(b, 0) != INODE_MAGIC {
            return Err(InodeError::BadMagic);
        }
        if !verify(b) {
            return Err(InodeError::BadChecksum);
        }
        let stored = get_u64(b, 8);
        if stored != ino {
            return Err(InodeError::WrongIno(stored));
        }
        let lf = get_u32(b, 100);
        let target_len = get_u16(b, 120) as usize;
        let xattr_len = get_u32(b, 124);
        let external = lf & LF_XATTR_EXTERNAL != 0;
        let inline_xattr = if external { 0 } else { xattr_len as usize };
        let cap = b.len() - INLINE_OFFSET - 4;
        if target_len + inline_xattr > cap || (lf & LF_TARGET_INLINE == 0 && target_len != 0) {
            return Err(InodeError::BadLength);
        }
        let time = |i: usize| Timespec::new(get_i64(b, 40 + 8 * i), get_u32(b, 72 + 4 * i));
        let t_end = INLINE_OFFSET + target_len;
        Ok(Inode {
            ino,
            generation: get_u32(b, 4),
            mode: get_u32(b, 16),
            uid: get_u32(b, 20),
            gid: get_u32(b, 24),
            nlink: get_u32(b, 28),
            size: get_u64(b, 32),
            atime: time(0),
            mtime: time(1),
            ctime: time(2),
            btime: time(3),
            rdev: get_u64(b, 88),
            flags: get_u32(b, 96),
            parent: get_u64(b, 104),
            data_sectors: get_u64(b, 112),
            inline_target: (lf & LF_TARGET_INLINE != 0).then(|| b[INLINE_OFFSET..t_end].to_vec()),
            xattr_len,
            xattr_external: external,
            xattr_inline: b[t_end..t_end + inline_xattr].to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_corruption() {
        let ino = Inode {
            ino: 42,
            generation: 3,
            mode: 0o120777,
            uid: 1000,
            gid: 100,
            nlink: 1,
            size: 5,
            atime: Timespec::new(1, 2),
            mtime: Timespec::new(-3, 4),
            ctime: Timespec::new(5, 999_999_999),
            btime: Timespec::new(7, 8),
            rdev: 0x1234,
            flags: 0,
            parent: 1,
            data_sectors: 9,
            inline_target: Some(b"hello".to_vec()),
            xattr_len: 3,
            xattr_external: false,
            xattr_inline: vec![1, 2, 3],
        };
        for ss in [512, 4096] {
            let mut b = ino.encode(ss);
            assert_eq!(Inode::decode(&b, 42), Ok(ino.clone()));
            assert_eq!(Inode::decode(&b, 43), Err(InodeError::WrongIno(42)));
            b[50] ^= 0x10;
            assert_eq!(Inode::decode(&b, 42), Err(InodeError::BadChecksum));
            assert_eq!(
                Inode::decode(&vec![0; ss as usize], 42),
                Err(InodeError::Free)
            );
        }
    }
}
