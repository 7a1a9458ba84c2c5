//! Geometry: the addressing unit and the limits of one request.

/// Smallest logical address space an implementation may offer.
///
/// The file system gives every inode a region of its own in the logical
/// space (2^40 bytes each), so the space must be vast even on a small media;
/// implementations are thin-provisioned and only written sectors use media.
pub const MIN_LOGICAL_SECTORS: u64 = 1 << 60;

/// The shape of an [`AtomicDevice`](crate::AtomicDevice).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// The atomic and addressing unit in bytes: the underlying media's
    /// logical block size, 512 or 4096. No sector is ever torn.
    pub sector_size: u32,
    /// Size of the logical address space in sectors (at least
    /// [`MIN_LOGICAL_SECTORS`]); far larger than the media.
    pub logical_sectors: u64,
    /// Most segments (writes plus trims) one request may hold.
    pub max_segments: u32,
    /// Most bytes of write data one request may hold (trims are free).
    pub max_request_bytes: u64,
}

impl Geometry {
    /// Number of sectors that `bytes` bytes cover, if `bytes` is a whole
    /// number of sectors.
    pub fn sectors_in(&self, bytes: usize) -> Option<u64> {
        let size = self.sector_size as usize;
        (bytes % size == 0).then_some((bytes / size) as u64)
    }

    /// Byte count of `sectors` sectors.
    pub fn bytes_of(&self, sectors: u64) -> u64 {
        sectors * u64::from(self.sector_size)
    }
}
