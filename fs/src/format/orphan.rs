//! Orphan records: one sector at `orphan_base + ino` for every inode that is
//! unlinked (nlink 0) but still open. Written in the same request as the
//! unlink; trimmed in the same request that frees the inode at last close.
//! Mount frees every inode that still has one (the crash case).

use super::codec::*;

/// `"AFOR"` little-endian.
pub const ORPHAN_MAGIC: u32 = u32::from_le_bytes(*b"AFOR");

/// Encodes the orphan record of `ino`.
pub fn encode(ino: u64, sector_size: u32) -> Vec<u8> {
    let mut b = vec![0u8; sector_size as usize];
    put_u32(&mut b, 0, ORPHAN_MAGIC);
    put_u64(&mut b, 8, ino);
    seal(&mut b);
    b
}

/// The inode number in an orphan record, if the sector is a valid one.
pub fn decode(b: &[u8]) -> Option<u64> {
    (get_u32(b, 0) == ORPHAN_MAGIC && verify(b)).then(|| get_u64(b, 8))
}

#[cfg(test)]
mod tests {
    #[test]
    fn roundtrip() {
        let b = super::encode(77, 4096);
        assert_eq!(super::decode(&b), Some(77));
        assert_eq!(super::decode(&[0; 512]), None);
    }
}
