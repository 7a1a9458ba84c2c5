//! Fixed on-disk layout: the superblock and where everything lives
//! (see `blockdev/FORMAT.md`).
//!
//! ```text
//! byte 0       superblock copy A (one media sector, zero padded)
//! byte 4096    superblock copy B
//! byte 8192    checkpoint slot 0 (4096 bytes)
//! byte 12288   checkpoint slot 1 (4096 bytes)
//! byte 16384   segment 0, segment 1, ... (segment_bytes each)
//! ```

use crate::codec::{get_u32, get_u64, put_u32, put_u64};

/// Magic at byte 0 of a superblock.
pub const SB_MAGIC: [u8; 8] = *b"ATOMFSBL";
/// On-disk format version this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Incompatible feature bits this code understands.
pub const SUPPORTED_INCOMPAT: u32 = INCOMPAT_GC_RECYCLE;
/// Incompatible feature: GC records may reuse segments cleaned since the
/// checkpoint (FORMAT.md, "Recycling without a checkpoint"). Recovery
/// without it stops at such a record, so a build that does not know the
/// bit must not open the media. Set by `format`; media formatted without it
/// are never written that way.
pub const INCOMPAT_GC_RECYCLE: u32 = 1;
/// Read-only-compatible feature bits this code understands (none yet).
pub const SUPPORTED_RO_COMPAT: u32 = 0;
/// Byte offsets of the two superblock copies.
pub const SB_OFFSETS: [u64; 2] = [0, 4096];
/// Byte offsets of the two checkpoint slots.
pub const SLOT_OFFSETS: [u64; 2] = [8192, 12288];
/// Size of one checkpoint slot in bytes.
pub const SLOT_BYTES: usize = 4096;
/// Byte offset of segment 0.
pub const DATA_START_BYTES: u64 = 16384;
/// Bytes of the superblock that carry data (the rest of its sector is zero).
pub const SB_BYTES: usize = 512;
/// Offset of the superblock crc32c (over bytes `0..SB_CRC_AT`).
const SB_CRC_AT: usize = 508;

/// The superblock: written once by `format`, never changed afterwards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Superblock {
    pub version: u32,
    pub compat: u32,
    pub incompat: u32,
    pub ro_compat: u32,
    pub uuid: [u8; 16],
    pub sector_size: u32,
    pub segment_bytes: u64,
    pub segment_count: u32,
    pub media_bytes: u64,
    pub logical_sectors: u64,
    pub max_request_bytes: u64,
    pub max_segments: u32,
    pub overprovision_percent: u32,
    pub buffer_bytes: u64,
}

/// Why a superblock copy did not decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SbError {
    NoMagic,
    BadCrc,
}

impl Superblock {
    pub fn encode(&self) -> [u8; SB_BYTES] {
        let mut b = [0u8; SB_BYTES];
        b[0..8].copy_from_slice(&SB_MAGIC);
        put_u32(&mut b, 8, self.version);
        put_u32(&mut b, 12, self.compat);
        put_u32(&mut b, 16, self.incompat);
        put_u32(&mut b, 20, self.ro_compat);
        b[24..40].copy_from_slice(&self.uuid);
        put_u32(&mut b, 40, self.sector_size);
        put_u32(&mut b, 44, self.segment_count);
        put_u64(&mut b, 48, self.segment_bytes);
        put_u64(&mut b, 56, self.media_bytes);
        put_u64(&mut b, 64, self.logical_sectors);
        put_u64(&mut b, 72, self.max_request_bytes);
        put_u32(&mut b, 80, self.max_segments);
        put_u32(&mut b, 84, self.overprovision_percent);
        put_u64(&mut b, 88, self.buffer_bytes);
        let crc = crc32c::crc32c(&b[..SB_CRC_AT]);
        put_u32(&mut b, SB_CRC_AT, crc);
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self, SbError> {
        if b.len() < SB_BYTES || b[0..8] != SB_MAGIC {
            return Err(SbError::NoMagic);
        }
        if crc32c::crc32c(&b[..SB_CRC_AT]) != get_u32(b, SB_CRC_AT) {
            return Err(SbError::BadCrc);
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[24..40]);
        Ok(Self {
            version: get_u32(b, 8),
            compat: get_u32(b, 12),
            incompat: get_u32(b, 16),
            ro_compat: get_u32(b, 20),
            uuid,
            sector_size: get_u32(b, 40),
            segment_count: get_u32(b, 44),
            segment_bytes: get_u64(b, 48),
            media_bytes: get_u64(b, 56),
            logical_sectors: get_u64(b, 64),
            max_request_bytes: get_u64(b, 72),
            max_segments: get_u32(b, 80),
            overprovision_percent: get_u32(b, 84),
            buffer_bytes: get_u64(b, 88),
        })
    }

    /// Checks the geometry fields for internal consistency (a superblock
    /// with a valid crc but nonsense values is still refused).
    pub fn sanity(&self) -> Result<(), String> {
        let ss = u64::from(self.sector_size);
        if self.sector_size != 512 && self.sector_size != 4096 {
            return Err(format!(
                "sector size {} is not 512 or 4096",
                self.sector_size
            ));
        }
        if self.segment_bytes < 16384
            || self.segment_bytes % 4096 != 0
            || self.segment_bytes > 1 << 30
        {
            return Err(format!("segment size {} is invalid", self.segment_bytes));
        }
        if self.segment_count < 8 {
            return Err(format!("{} segments is too few", self.segment_count));
        }
        let need = DATA_START_BYTES + self.segment_bytes * u64::from(self.segment_count);
        if need > self.media_bytes {
            return Err(format!(
                "segments end at byte {need}, past the media size {} recorded at format",
                self.media_bytes
            ));
        }
        if self.max_request_bytes < 64 * ss
            || self.max_request_bytes % ss != 0
            || self.max_request_bytes > 100 * self.segment_bytes
        {
            return Err(format!(
                "max request bytes {} is invalid",
                self.max_request_bytes
            ));
        }
        if self.buffer_bytes < ss || self.buffer_bytes > 100 * self.segment_bytes {
            return Err(format!("buffer bytes {} is invalid", self.buffer_bytes));
        }
        if self.max_segments == 0 || self.max_segments > 65536 {
            return Err(format!("max segments {} is invalid", self.max_segments));
        }
        if self.overprovision_percent == 0 || self.overprovision_percent > 90 {
            return Err(format!(
                "overprovision {}% is invalid",
                self.overprovision_percent
            ));
        }
        if self.logical_sectors < atomic_api::MIN_LOGICAL_SECTORS || self.logical_sectors > 1 << 62
        {
            return Err(format!(
                "logical sectors {} is invalid",
                self.logical_sectors
            ));
        }
        Ok(())
    }
}

/// Bytes of the fixed part of a checkpoint blob.
pub const BLOB_HEADER_BYTES: u64 = 128;
/// Bytes per segment-table entry in a checkpoint blob.
pub const BLOB_SEG_BYTES: u64 = 24;
/// Bytes per extent in a checkpoint blob.
pub const BLOB_EXTENT_BYTES: u64 = 16;
/// Segments the GC stream may consume before a checkpoint must run.
pub const GC_HEADROOM_SEGS: u64 = 2;

/// Geometry derived from the superblock: sizes in sectors, reserves and
/// capacity.
#[derive(Clone, Debug)]
pub struct Layout {
    pub sb: Superblock,
    /// Sector size in bytes.
    pub ss: u64,
    /// Sectors per segment.
    pub seg_sectors: u64,
    /// Number of segments.
    pub segs: u32,
    /// First sector of segment 0.
    pub data_start: u64,
    /// Largest record payload (sectors): max(buffer, max request).
    pub max_record_sectors: u64,
    /// Worst-case segments one checkpoint blob needs.
    pub ckpt_segs: u64,
    /// Segments a full batch (one maximal record) can need.
    #[allow(dead_code)]
    pub batch_segs: u64,
    /// Free segments that must exist before a batch starts.
    pub hard_free: u64,
    /// Capacity in sectors of live data.
    pub capacity_sectors: u64,
}

impl Layout {
    /// Whether GC may rewrite cleaned segments before the next checkpoint
    /// (`INCOMPAT_GC_RECYCLE`).
    pub fn gc_recycles(&self) -> bool {
        self.sb.incompat & INCOMPAT_GC_RECYCLE != 0
    }

    pub fn new(sb: Superblock) -> Result<Self, String> {
        sb.sanity()?;
        let ss = u64::from(sb.sector_size);
        let seg_sectors = sb.segment_bytes / ss;
        let n = u64::from(sb.segment_count);
        let max_record_sectors = sb.buffer_bytes.max(sb.max_request_bytes).div_ceil(ss);
        // Header of a maximal record: the entries are bounded by the
        // per-batch entry budget (see `State::entry_budget`), charged as
        // payload sectors, so a record never exceeds max_record_sectors + 1
        // header sectors beyond that budget.
        let record_bytes = (max_record_sectors + 2) * ss;
        let batch_segs = record_bytes.div_ceil(sb.segment_bytes) + 1;
        let raw_capacity = n * seg_sectors;
        let blob = BLOB_HEADER_BYTES + n * BLOB_SEG_BYTES + raw_capacity * BLOB_EXTENT_BYTES;
        let ckpt_segs = blob.div_ceil(sb.segment_bytes);
        let hard_free = ckpt_segs + batch_segs + GC_HEADROOM_SEGS;
        // Open user + open GC segment, the current blob, and the free reserve.
        let reserved = 2 + ckpt_segs + hard_free;
        if n < reserved + 2 {
            return Err(format!(
                "{n} segments of {} bytes leave no room for data: {reserved} are reserved \
                 (checkpoints {ckpt_segs} x2, batch {batch_segs}, GC {GC_HEADROOM_SEGS}, 2 open)",
                sb.segment_bytes
            ));
        }
        let usable = n - reserved;
        let capacity_sectors =
            usable * seg_sectors * (100 - u64::from(sb.overprovision_percent)) / 100;
        Ok(Self {
            ss,
            seg_sectors,
            segs: sb.segment_count,
            data_start: DATA_START_BYTES / ss,
            max_record_sectors,
            ckpt_segs,
            batch_segs,
            hard_free,
            capacity_sectors,
            sb,
        })
    }

    /// First media sector of segment `s`.
    pub fn seg_start(&self, s: u32) -> u64 {
        self.data_start + u64::from(s) * self.seg_sectors
    }

    /// Segment holding media sector `phys`.
    pub fn seg_of(&self, phys: u64) -> u32 {
        debug_assert!(phys >= self.data_start);
        ((phys - self.data_start) / self.seg_sectors) as u32
    }

    /// Calls `f(segment, sectors)` for each segment that `len` sectors from
    /// `phys` touch.
    pub fn for_each_seg(&self, phys: u64, len: u64, mut f: impl FnMut(u32, u64)) {
        let mut at = phys;
        let end = phys + len;
        while at < end {
            let s = self.seg_of(at);
            let seg_end = self.seg_start(s) + self.seg_sectors;
            let n = seg_end.min(end) - at;
            f(s, n);
            at += n;
        }
    }

    pub fn geometry(&self) -> atomic_api::Geometry {
        atomic_api::Geometry {
            sector_size: self.sb.sector_size,
            logical_sectors: self.sb.logical_sectors,
            max_segments: self.sb.max_segments,
            max_request_bytes: self.sb.max_request_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Superblock {
        Superblock {
            version: FORMAT_VERSION,
            compat: 0,
            incompat: 0,
            ro_compat: 0,
            uuid: [7; 16],
            sector_size: 512,
            segment_bytes: 64 << 10,
            segment_count: 32,
            media_bytes: DATA_START_BYTES + 32 * (64 << 10),
            logical_sectors: 1 << 60,
            max_request_bytes: 128 << 10,
            max_segments: 1024,
            overprovision_percent: 20,
            buffer_bytes: 128 << 10,
        }
    }

    #[test]
    fn superblock_round_trip_and_crc() {
        let sb = sample();
        let mut b = sb.encode();
        assert_eq!(Superblock::decode(&b), Ok(sb));
        b[100] ^= 1;
        assert_eq!(Superblock::decode(&b), Err(SbError::BadCrc));
        assert_eq!(Superblock::decode(&[0u8; 512]), Err(SbError::NoMagic));
    }

    #[test]
    fn layout_has_capacity() {
        let l = Layout::new(sample()).unwrap();
        assert!(l.capacity_sectors > 0);
        assert_eq!(l.seg_of(l.seg_start(3) + 5), 3);
        let mut parts = Vec::new();
        l.for_each_seg(l.seg_start(1) + l.seg_sectors - 2, 5, |s, n| {
            parts.push((s, n))
        });
        assert_eq!(parts, vec![(1, 2), (2, 3)]);
    }
}
