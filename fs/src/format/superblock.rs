//! The superblock: sector 0, with an identical backup in sector 1.
//!
//! Written once by mkfs (one request with the root directory) and never
//! rewritten by the file system, so it cannot be torn by normal operation;
//! mount falls back to the backup if the primary fails its checksum.

use super::codec::*;
use super::layout::Layout;
use crate::core::types::Timespec;

/// `"ATOMFSSB"`: the first eight bytes of sector 0.
pub const MAGIC: [u8; 8] = *b"ATOMFSSB";
/// The on-disk format version this code reads and writes.
pub const VERSION: u32 = 1;
/// Compatible features this build knows (none yet).
pub const COMPAT_KNOWN: u64 = 0;
/// Incompatible features this build knows (none yet): any other bit set
/// makes mount refuse the file system.
pub const INCOMPAT_KNOWN: u64 = 0;
/// Read-only-compatible features this build knows (none yet): any other bit
/// set allows only a read-only mount.
pub const RO_COMPAT_KNOWN: u64 = 0;
/// Longest label in bytes.
pub const LABEL_MAX: usize = 64;

/// Decoded superblock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Superblock {
    pub version: u32,
    pub compat: u64,
    pub incompat: u64,
    pub ro_compat: u64,
    pub layout: Layout,
    pub root_ino: u64,
    pub uuid: [u8; 16],
    pub created: Timespec,
    pub label: Vec<u8>,
}

/// Why a superblock sector did not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SuperblockError {
    BadMagic,
    BadChecksum,
}

impl Superblock {
    /// Encodes into one sector of `layout.sector_size` bytes.
    pub fn encode(&self) -> Vec<u8> {
        let ss = self.layout.sector_size as usize;
        let mut b = vec![0u8; ss];
        b[0..8].copy_from_slice(&MAGIC);
        put_u32(&mut b, 8, self.version);
        put_u32(&mut b, 12, self.layout.sector_size);
        put_u64(&mut b, 16, self.compat);
        put_u64(&mut b, 24, self.incompat);
        put_u64(&mut b, 32, self.ro_compat);
        put_u64(&mut b, 40, self.layout.region_sectors);
        put_u64(&mut b, 48, self.layout.inode_base);
        put_u64(&mut b, 56, self.layout.orphan_base);
        put_u64(&mut b, 64, self.layout.max_ino);
        put_u32(&mut b, 72, self.layout.dir_hash_bits);
        put_u64(&mut b, 80, self.root_ino);
        b[88..104].copy_from_slice(&self.uuid);
        put_i64(&mut b, 104, self.created.sec);
        put_u32(&mut b, 112, self.created.nsec);
        let label = &self.label[..self.label.len().min(LABEL_MAX)];
        put_u32(&mut b, 116, label.len() as u32);
        b[120..120 + label.len()].copy_from_slice(label);
        seal(&mut b);
        b
    }

    /// Decodes one sector; checks magic and checksum only (the caller checks
    /// version, features and layout, to report each precisely).
    pub fn decode(b: &[u8]) -> Result<Superblock, SuperblockError> {
        if b.len() < 512 || b[0..8] != MAGIC {
            return Err(SuperblockError::BadMagic);
        }
        if !verify(b) {
            return Err(SuperblockError::BadChecksum);
        }
        let label_len = (get_u32(b, 116) as usize).min(LABEL_MAX);
        Ok(Superblock {
            version: get_u32(b, 8),
            compat: get_u64(b, 16),
            incompat: get_u64(b, 24),
            ro_compat: get_u64(b, 32),
            layout: Layout {
                sector_size: get_u32(b, 12),
                region_sectors: get_u64(b, 40),
                inode_base: get_u64(b, 48),
                orphan_base: get_u64(b, 56),
                max_ino: get_u64(b, 64),
                dir_hash_bits: get_u32(b, 72),
            },
            root_ino: get_u64(b, 80),
            uuid: b[88..104].try_into().unwrap(),
            created: Timespec::new(get_i64(b, 104), get_u32(b, 112)),
            label: b[120..120 + label_len].to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_corruption() {
        for ss in [512, 4096] {
            let sb = Superblock {
                version: VERSION,
                compat: 1,
                incompat: 2,
                ro_compat: 3,
                layout: Layout::for_device(ss, 1 << 60).unwrap(),
                root_ino: 1,
                uuid: [7; 16],
                created: Timespec::new(1_700_000_000, 5),
                label: b"hello".to_vec(),
            };
            let mut b = sb.encode();
            assert_eq!(b.len(), ss as usize);
            assert_eq!(Superblock::decode(&b), Ok(sb));
            b[100] ^= 1;
            assert_eq!(Superblock::decode(&b), Err(SuperblockError::BadChecksum));
            b[0] ^= 1;
            assert_eq!(Superblock::decode(&b), Err(SuperblockError::BadMagic));
        }
    }
}
