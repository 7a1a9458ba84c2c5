//! Checkpoints: a blob (stream positions, the segment table and the whole
//! extent map) written into free segments, and a 4 KiB slot at a fixed
//! place that points at it. Two slots alternate; the valid slot with the
//! highest generation wins. See `blockdev/FORMAT.md`.

use crate::codec::{get_u32, get_u64, put_u32, put_u64};
use crate::layout::{BLOB_EXTENT_BYTES, BLOB_HEADER_BYTES, BLOB_SEG_BYTES, SLOT_BYTES};
use crate::segments::{Owner, SegInfo, SegState, NO_RECORD};

pub const SLOT_MAGIC: u32 = u32::from_le_bytes(*b"ATCK");
pub const BLOB_MAGIC: u32 = u32::from_le_bytes(*b"ATCB");
pub const CKPT_VERSION: u32 = 1;
const SLOT_CRC_AT: usize = 56;
const SLOT_SEGS_AT: usize = 64;
/// Most segments one blob may occupy.
pub const MAX_BLOB_SEGS: usize = (SLOT_BYTES - SLOT_SEGS_AT) / 4;
/// Longest extent one blob entry can describe (24-bit length).
const BLOB_MAX_LEN: u64 = (1 << 24) - 1;
const PHYS_BITS: u32 = 40;

/// Where a log stream continues: the next record goes at (`seg`, `off`)
/// with sequence number `seq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamPos {
    pub seg: u32,
    pub off: u32,
    pub seq: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    pub uuid: [u8; 16],
    pub gen: u64,
    pub epoch: u64,
    pub blob_bytes: u64,
    pub blob_crc: u32,
    pub blob_segs: Vec<u32>,
}

impl Slot {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; SLOT_BYTES];
        put_u32(&mut b, 0, SLOT_MAGIC);
        put_u32(&mut b, 4, CKPT_VERSION);
        b[8..24].copy_from_slice(&self.uuid);
        put_u64(&mut b, 24, self.gen);
        put_u64(&mut b, 32, self.epoch);
        put_u64(&mut b, 40, self.blob_bytes);
        put_u32(&mut b, 48, self.blob_crc);
        put_u32(&mut b, 52, self.blob_segs.len() as u32);
        for (i, s) in self.blob_segs.iter().enumerate() {
            put_u32(&mut b, SLOT_SEGS_AT + 4 * i, *s);
        }
        let crc = crc32c::crc32c(&b);
        put_u32(&mut b, SLOT_CRC_AT, crc);
        b
    }

    pub fn decode(b: &[u8]) -> Result<Slot, String> {
        if b.len() < SLOT_BYTES || get_u32(b, 0) != SLOT_MAGIC {
            return Err("no checkpoint slot magic".into());
        }
        let mut copy = b[..SLOT_BYTES].to_vec();
        put_u32(&mut copy, SLOT_CRC_AT, 0);
        if crc32c::crc32c(&copy) != get_u32(b, SLOT_CRC_AT) {
            return Err("checkpoint slot crc mismatch (torn or damaged)".into());
        }
        if get_u32(b, 4) != CKPT_VERSION {
            return Err(format!("unknown checkpoint version {}", get_u32(b, 4)));
        }
        let n = get_u32(b, 52) as usize;
        if n > MAX_BLOB_SEGS {
            return Err(format!("checkpoint lists {n} segments"));
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&b[8..24]);
        Ok(Slot {
            uuid,
            gen: get_u64(b, 24),
            epoch: get_u64(b, 32),
            blob_bytes: get_u64(b, 40),
            blob_crc: get_u32(b, 48),
            blob_segs: (0..n).map(|i| get_u32(b, SLOT_SEGS_AT + 4 * i)).collect(),
        })
    }
}

/// The decoded contents of a blob.
#[derive(Clone, Debug)]
pub struct Blob {
    pub uuid: [u8; 16],
    pub gen: u64,
    pub epoch: u64,
    pub user: StreamPos,
    pub gc: StreamPos,
    /// Segment table with `live` zero (recomputed from the map).
    pub segs: Vec<SegInfo>,
    /// (lba, phys, len)
    pub extents: Vec<(u64, u64, u64)>,
}

/// Upper bound of the encoded size of a blob.
pub fn blob_bytes_bound(segs: usize, extents: usize) -> u64 {
    // Extents longer than the 24-bit entry length split; the map's extents
    // are u32 long, so each may become up to 256 entries: bound by using the
    // actual count at encode time instead. This bound is for 2^24-capped
    // extents, the common case; `encode_blob` returns the exact size.
    BLOB_HEADER_BYTES + segs as u64 * BLOB_SEG_BYTES + extents as u64 * BLOB_EXTENT_BYTES
}

/// Encodes a blob. `extents` yields (lba, phys, len) in lba order.
#[allow(clippy::too_many_arguments)]
pub fn encode_blob(
    uuid: [u8; 16],
    gen: u64,
    epoch: u64,
    user: StreamPos,
    gc: StreamPos,
    segs: &[SegInfo],
    extents: impl Iterator<Item = (u64, u64, u64)>,
    capacity_hint: usize,
) -> Vec<u8> {
    let mut b = Vec::with_capacity(capacity_hint);
    b.resize(BLOB_HEADER_BYTES as usize, 0);
    put_u32(&mut b, 0, BLOB_MAGIC);
    put_u32(&mut b, 4, CKPT_VERSION);
    b[8..24].copy_from_slice(&uuid);
    put_u64(&mut b, 24, gen);
    put_u64(&mut b, 32, epoch);
    put_u32(&mut b, 40, user.seg);
    put_u32(&mut b, 44, user.off);
    put_u64(&mut b, 48, user.seq);
    put_u32(&mut b, 56, gc.seg);
    put_u32(&mut b, 60, gc.off);
    put_u64(&mut b, 64, gc.seq);
    put_u32(&mut b, 72, segs.len() as u32);
    for s in segs {
        let mut e = [0u8; BLOB_SEG_BYTES as usize];
        e[0] = s.state as u8;
        e[1] = u8::from(s.owner.is_some());
        put_u32(&mut e, 4, s.gen);
        put_u32(&mut e, 8, s.first_rec);
        let o = s.owner.unwrap_or(Owner {
            seg: u32::MAX,
            off: 0,
            gen: 0,
        });
        put_u32(&mut e, 12, o.seg);
        put_u32(&mut e, 16, o.off);
        put_u32(&mut e, 20, o.gen);
        b.extend_from_slice(&e);
    }
    let mut count = 0u64;
    for (lba, phys, len) in extents {
        let mut at = 0;
        while at < len {
            let n = (len - at).min(BLOB_MAX_LEN);
            b.extend_from_slice(&(lba + at).to_le_bytes());
            b.extend_from_slice(&((phys + at) | (n << PHYS_BITS)).to_le_bytes());
            count += 1;
            at += n;
        }
    }
    put_u64(&mut b, 80, count);
    b
}

/// Decodes a blob, checking its structure against the segment count.
pub fn decode_blob(b: &[u8], seg_count: u32) -> Result<Blob, String> {
    if b.len() < BLOB_HEADER_BYTES as usize || get_u32(b, 0) != BLOB_MAGIC {
        return Err("checkpoint blob has no magic".into());
    }
    if get_u32(b, 4) != CKPT_VERSION {
        return Err(format!("unknown checkpoint blob version {}", get_u32(b, 4)));
    }
    let nsegs = get_u32(b, 72);
    if nsegs != seg_count {
        return Err(format!(
            "checkpoint describes {nsegs} segments, the superblock {seg_count}"
        ));
    }
    let count = get_u64(b, 80);
    let need = BLOB_HEADER_BYTES + u64::from(nsegs) * BLOB_SEG_BYTES + count * BLOB_EXTENT_BYTES;
    if (b.len() as u64) < need {
        return Err(format!(
            "checkpoint blob is {} bytes, its header needs {need}",
            b.len()
        ));
    }
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&b[8..24]);
    let pos = |at: usize| StreamPos {
        seg: get_u32(b, at),
        off: get_u32(b, at + 4),
        seq: get_u64(b, at + 8),
    };
    let mut segs = Vec::with_capacity(nsegs as usize);
    let mut at = BLOB_HEADER_BYTES as usize;
    for i in 0..nsegs {
        let e = &b[at..at + BLOB_SEG_BYTES as usize];
        let state = SegState::from_u8(e[0])
            .ok_or_else(|| format!("segment {i} has unknown state {}", e[0]))?;
        let owner = (e[1] == 1).then(|| Owner {
            seg: get_u32(e, 12),
            off: get_u32(e, 16),
            gen: get_u32(e, 20),
        });
        if let Some(o) = owner {
            if o.seg >= seg_count {
                return Err(format!("segment {i} names owner segment {}", o.seg));
            }
        }
        segs.push(SegInfo {
            state,
            live: 0,
            gen: get_u32(e, 4),
            first_rec: get_u32(e, 8),
            owner,
            stamp: 0,
            covered: false,
        });
        at += BLOB_SEG_BYTES as usize;
    }
    let mut extents = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let lba = get_u64(b, at);
        let v = get_u64(b, at + 8);
        extents.push((lba, v & ((1 << PHYS_BITS) - 1), v >> PHYS_BITS));
        at += BLOB_EXTENT_BYTES as usize;
    }
    let _ = NO_RECORD;
    Ok(Blob {
        uuid,
        gen: get_u64(b, 24),
        epoch: get_u64(b, 32),
        user: pos(40),
        gc: pos(56),
        segs,
        extents,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_and_blob_round_trip() {
        let slot = Slot {
            uuid: [1; 16],
            gen: 5,
            epoch: 2,
            blob_bytes: 1000,
            blob_crc: 42,
            blob_segs: vec![3, 4],
        };
        let mut b = slot.encode();
        assert_eq!(Slot::decode(&b).unwrap(), slot);
        b[70] ^= 1;
        assert!(Slot::decode(&b).is_err());
        let mut segs = vec![SegInfo::free(); 4];
        segs[1].state = SegState::Sealed;
        segs[1].owner = Some(Owner {
            seg: 0,
            off: 7,
            gen: 3,
        });
        let user = StreamPos {
            seg: 0,
            off: 9,
            seq: 100,
        };
        let gc = StreamPos {
            seg: 2,
            off: 0,
            seq: 1,
        };
        let ext = [(0u64, 100u64, 3u64), (1 << 50, 200, 1 << 25)];
        let enc = encode_blob([1; 16], 5, 2, user, gc, &segs, ext.iter().copied(), 0);
        let blob = decode_blob(&enc, 4).unwrap();
        assert_eq!(blob.user, user);
        assert_eq!(blob.gc, gc);
        assert_eq!(blob.segs, segs);
        assert_eq!(blob.extents.len(), 4, "long extent split in 2^24-1 pieces");
        assert_eq!(blob.extents[0], (0, 100, 3));
        assert!(decode_blob(&enc, 5).is_err());
    }
}
