//! Where everything lives in the sparse logical space.
//!
//! The logical space is cut into equal *regions* of [`REGION_BYTES`]. Region 0
//! holds the fixed metadata: the superblock (sector 0) and its backup
//! (sector 1), the inode table (one sector per inode, at
//! `inode_base + ino`) and the orphan table (one sector per
//! open-but-unlinked inode, at `orphan_base + ino`). Region `ino` (ino >= 1)
//! belongs to inode `ino`: file byte `o` lives at sector
//! `ino * region_sectors + o / sector_size`; a directory's region holds its
//! hash table; the top [`XATTR_AREA_BYTES`] of every region hold xattrs that
//! do not fit in the inode sector. There are no bitmaps and no extent trees:
//! the block layer's map says what is in use.

/// Bytes of logical space owned by each inode (2 TiB): room for a file of
/// at least 1 TiB plus the xattr area.
pub const REGION_BYTES: u64 = 1 << 41;
/// Bytes at the top of each region reserved for spilled xattrs (1 MiB).
pub const XATTR_AREA_BYTES: u64 = 1 << 20;
/// Largest file size: the region below the xattr area.
pub const MAX_FILE_SIZE: u64 = REGION_BYTES - XATTR_AREA_BYTES;
/// Number of hash buckets of every directory is `2^DIR_HASH_BITS`: large
/// enough never to need resizing, small enough to fit a region with 4 KiB
/// sectors (2^29 sectors) below the xattr area.
pub const DIR_HASH_BITS: u32 = 28;
/// Inode number of the root directory (FUSE's root is 1).
pub const ROOT_INO: u64 = 1;
/// Sector of the primary superblock.
pub const SUPERBLOCK_LBA: u64 = 0;
/// Sector of the backup superblock (written by mkfs only).
pub const BACKUP_SUPERBLOCK_LBA: u64 = 1;

/// The geometry of the regions, computed by mkfs from the device and stored
/// in the superblock (mount uses the stored values).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub sector_size: u32,
    /// Sectors per region (`REGION_BYTES / sector_size`).
    pub region_sectors: u64,
    /// Sector of inode 0's slot (inode `ino` at `inode_base + ino`).
    pub inode_base: u64,
    /// Sector of orphan slot 0 (orphan `ino` at `orphan_base + ino`).
    pub orphan_base: u64,
    /// Largest valid inode number.
    pub max_ino: u64,
    pub dir_hash_bits: u32,
}

impl Layout {
    /// The layout for a device with `sector_size` and `logical_sectors`;
    /// `None` when the space cannot hold the metadata region and a root.
    pub fn for_device(sector_size: u32, logical_sectors: u64) -> Option<Layout> {
        if sector_size != 512 && sector_size != 4096 {
            return None;
        }
        let region_sectors = REGION_BYTES / u64::from(sector_size);
        let quarter = region_sectors / 4;
        let regions = logical_sectors / region_sectors;
        let max_ino = (quarter - 1).min(regions.checked_sub(1)?);
        (max_ino >= 2).then_some(Layout {
            sector_size,
            region_sectors,
            inode_base: quarter,
            orphan_base: 2 * quarter,
            max_ino,
            dir_hash_bits: DIR_HASH_BITS,
        })
    }

    pub fn sector_bytes(&self) -> u64 {
        u64::from(self.sector_size)
    }

    /// Sector of `ino`'s inode.
    pub fn inode_lba(&self, ino: u64) -> u64 {
        self.inode_base + ino
    }

    /// Sector of `ino`'s orphan record.
    pub fn orphan_lba(&self, ino: u64) -> u64 {
        self.orphan_base + ino
    }

    /// First sector of `ino`'s region.
    pub fn region(&self, ino: u64) -> u64 {
        ino * self.region_sectors
    }

    /// Sector holding byte `offset` of `ino`'s data.
    pub fn data_lba(&self, ino: u64, offset: u64) -> u64 {
        self.region(ino) + offset / self.sector_bytes()
    }

    /// First sector of `ino`'s xattr area.
    pub fn xattr_lba(&self, ino: u64) -> u64 {
        self.region(ino) + MAX_FILE_SIZE / self.sector_bytes()
    }

    /// Sectors in the xattr area.
    pub fn xattr_sectors(&self) -> u64 {
        XATTR_AREA_BYTES / self.sector_bytes()
    }

    /// Sector of bucket `bucket` of directory `ino`.
    pub fn bucket_lba(&self, ino: u64, bucket: u64) -> u64 {
        self.region(ino) + bucket
    }

    /// Number of buckets per directory.
    pub fn buckets(&self) -> u64 {
        1 << self.dir_hash_bits
    }

    /// Data sectors of a file of `size` bytes (rounded up).
    pub fn sectors_for(&self, size: u64) -> u64 {
        size.div_ceil(self.sector_bytes())
    }

    /// Checks that the layout is self-consistent (for mount and fsck).
    pub fn validate(&self, logical_sectors: u64) -> Result<(), String> {
        let ss = u64::from(self.sector_size);
        if self.sector_size != 512 && self.sector_size != 4096 {
            return Err(format!("sector size {}", self.sector_size));
        }
        if self.region_sectors * ss != REGION_BYTES {
            return Err(format!("region of {} sectors", self.region_sectors));
        }
        if self.inode_base < 2
            || self.orphan_base < self.inode_base + self.max_ino + 1
            || self.orphan_base + self.max_ino + 1 > self.region_sectors
        {
            return Err("metadata tables overlap".into());
        }
        if (1u64 << self.dir_hash_bits) > MAX_FILE_SIZE / ss {
            return Err(format!("{} hash bits", self.dir_hash_bits));
        }
        match (self.max_ino + 1).checked_mul(self.region_sectors) {
            Some(end) if end <= logical_sectors && self.max_ino >= 2 => Ok(()),
            _ => Err(format!(
                "{} inodes do not fit {} logical sectors",
                self.max_ino, logical_sectors
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_for_both_sector_sizes_are_valid() {
        for ss in [512u32, 4096] {
            let l = Layout::for_device(ss, 1 << 60).unwrap();
            l.validate(1 << 60).unwrap();
            assert!(l.max_ino > 1_000_000);
            assert!(l.buckets() <= MAX_FILE_SIZE / u64::from(ss));
        }
        assert!(Layout::for_device(512, 1 << 20).is_none());
    }
}
