//! Log records: a header (one sector in the common case) followed by the
//! payload sectors, written as one sequential media write. The checksum
//! covers the header and the payload, so a torn or partly written record
//! never validates (see [`record_crc`] for why it is not a plain crc32c). See `blockdev/FORMAT.md` for the byte layout.

use crate::codec::{
    get_u16, get_u32, get_u64, get_varint, put_u32, put_u64, put_varint, varint_len,
};

/// Magic at byte 0 of every record header: "ATMR".
pub const REC_MAGIC: u32 = u32::from_le_bytes(*b"ATMR");
/// Record format version written. Version 1 records (a payload digest
/// seeded with the payload length, [`payload_digest_v1`]) are still read.
pub const REC_VERSION: u8 = 2;
/// The first record version, still accepted by recovery.
const REC_VERSION_1: u8 = 1;
/// Bytes of the fixed part of the first header sector.
pub const REC_FIXED: usize = 64;
/// Offset of the crc32c inside the header.
const CRC_AT: usize = 56;
/// Most segments one record may continue into (all listed in its first 512
/// bytes).
pub const MAX_SPAN: usize = (512 - REC_FIXED) / 4;

/// Which log stream a record belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Caller requests (a group-commit batch).
    User = 1,
    /// Live data moved by garbage collection.
    Gc = 2,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        match v {
            1 => Some(Kind::User),
            2 => Some(Kind::Gc),
            _ => None,
        }
    }
}

/// A run of payload: `len` sectors for logical sectors `lba..`; for GC
/// records `old` is the media sector the data was copied from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    pub lba: u64,
    pub len: u64,
    pub old: u64,
}

/// Everything in a record header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    pub kind: Kind,
    pub header_sectors: u32,
    pub uuid: [u8; 16],
    pub epoch: u64,
    pub seq: u64,
    pub payload_sectors: u64,
    /// Segments the record (and then the stream) continues into, in order.
    pub span: Vec<u32>,
    /// Payload runs, in payload order.
    pub runs: Vec<Run>,
    /// Trimmed ranges `(lba, sectors)`; applied before the runs.
    pub trims: Vec<(u64, u64)>,
}

/// Bytes the entries of a record take.
pub fn entry_bytes(kind: Kind, runs: &[Run], trims: &[(u64, u64)]) -> usize {
    let r: usize = runs
        .iter()
        .map(|r| {
            varint_len(r.len << 1)
                + varint_len(r.lba)
                + if kind == Kind::Gc {
                    varint_len(r.old)
                } else {
                    0
                }
        })
        .sum();
    let t: usize = trims
        .iter()
        .map(|(lba, n)| varint_len((n << 1) | 1) + varint_len(*lba))
        .sum();
    r + t
}

/// Header sectors for a record with `span` continuation segments and
/// `entry_bytes` of entries.
pub fn header_sectors_for(ss: u64, span: usize, entry_bytes: usize) -> u32 {
    ((REC_FIXED + 4 * span + entry_bytes) as u64).div_ceil(ss) as u32
}

impl RecordHeader {
    /// Encodes into `out` (exactly `header_sectors * ss` bytes) with the crc
    /// field zero; fill it with [`set_crc`] once the payload is known.
    pub fn encode_into(&self, out: &mut [u8]) {
        out.fill(0);
        put_u32(out, 0, REC_MAGIC);
        out[4] = REC_VERSION;
        out[5] = self.kind as u8;
        out[6..8].copy_from_slice(&(self.span.len() as u16).to_le_bytes());
        out[8..24].copy_from_slice(&self.uuid);
        put_u64(out, 24, self.epoch);
        put_u64(out, 32, self.seq);
        put_u32(out, 40, self.payload_sectors as u32);
        put_u32(out, 44, self.header_sectors);
        put_u32(out, 48, (self.runs.len() + self.trims.len()) as u32);
        let mut at = REC_FIXED;
        for s in &self.span {
            put_u32(out, at, *s);
            at += 4;
        }
        let mut e = Vec::with_capacity(entry_bytes(self.kind, &self.runs, &self.trims));
        for (lba, n) in &self.trims {
            put_varint(&mut e, (n << 1) | 1);
            put_varint(&mut e, *lba);
        }
        for r in &self.runs {
            put_varint(&mut e, r.len << 1);
            put_varint(&mut e, r.lba);
            if self.kind == Kind::Gc {
                put_varint(&mut e, r.old);
            }
        }
        put_u32(out, 52, e.len() as u32);
        out[at..at + e.len()].copy_from_slice(&e);
    }
}

/// The checksum of a record: crc32c of the header (crc field as zero)
/// followed by the 8-byte digest of the payload ([`PayloadDigest`] for
/// version 2 records, [`payload_digest_v1`] for version 1, by the version
/// byte of `header`).
///
/// Not crc32c over the payload itself: a CRC is affine, and the crc32c of
/// any block that ends with its own crc32c is the same constant, so if the
/// payload is made of such blocks (atomfs metadata sectors, database pages
/// with crc32c trailers) every block's contribution to a crc32c over the
/// whole record is a constant too. A torn record whose header reached the
/// media over an older self-checksummed sector would then validate and
/// recovery would install the stale sector (found by the file-system crash
/// explorer, `tests/`).
pub fn record_crc(header: &[u8], payload: &[u8]) -> u32 {
    let digest = if header[4] == REC_VERSION_1 {
        payload_digest_v1(payload)
    } else {
        PayloadDigest::of(payload)
    };
    record_crc_with(header, digest)
}

/// [`record_crc`] with the payload digest already computed.
pub fn record_crc_with(header: &[u8], digest: u64) -> u32 {
    let c = crc32c::crc32c(&header[..CRC_AT]);
    let c = crc32c::crc32c_append(c, &[0u8; 4]);
    let c = crc32c::crc32c_append(c, &header[CRC_AT + 4..]);
    crc32c::crc32c_append(c, &digest.to_le_bytes())
}

const DIGEST_K: u64 = 0x9e37_79b9_7f4a_7c15;
const DIGEST_SEED: u64 = 0x243f_6a88_85a3_08d3;

#[inline(always)]
fn digest_step(h: u64, x: u64) -> u64 {
    let h = (h ^ x).wrapping_mul(DIGEST_K);
    h ^ (h >> 29)
}

/// The payload digest of version 2 records: a non-linear 64-bit digest
/// computed as the payload is appended, so that a batch is digested while
/// its data is still in the cache from the copy into the batch buffer (a
/// second pass over a 3 MiB record cost as much as the copy).
///
/// Word `i` (little-endian, 8 bytes) feeds lane `i % 4` with
/// `step(h, x) = { h = (h ^ x) * K; h ^ (h >> 29) }`; lanes start at
/// `S, S^1, S^2, S^3`; the digest is `step(step(step(step(l0, l1), l2), l3),
/// payload bytes)`. Each step is a bijection of the word for a fixed lane
/// state and of the state for a fixed word, so payloads differing in one
/// word always digest differently; other differences collide with
/// probability about 2^-64. Four independent lanes run about four times
/// faster than one serial multiply chain. Updates must be whole 32-byte
/// groups (sectors are).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PayloadDigest {
    lanes: [u64; 4],
    bytes: u64,
}

impl Default for PayloadDigest {
    fn default() -> Self {
        Self::new()
    }
}

impl PayloadDigest {
    pub fn new() -> PayloadDigest {
        PayloadDigest {
            lanes: [
                DIGEST_SEED,
                DIGEST_SEED ^ 1,
                DIGEST_SEED ^ 2,
                DIGEST_SEED ^ 3,
            ],
            bytes: 0,
        }
    }

    /// Feeds `data` (a multiple of 32 bytes) after what was fed so far.
    pub fn update(&mut self, data: &[u8]) {
        debug_assert_eq!(data.len() % 32, 0);
        let l = &mut self.lanes;
        for g in data.chunks_exact(32) {
            for (i, lane) in l.iter_mut().enumerate() {
                let x = u64::from_le_bytes(g[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
                *lane = digest_step(*lane, x);
            }
        }
        self.bytes += data.len() as u64;
    }

    pub fn finish(&self) -> u64 {
        let l = &self.lanes;
        digest_step(
            digest_step(digest_step(digest_step(l[0], l[1]), l[2]), l[3]),
            self.bytes,
        )
    }

    /// The digest of a whole payload.
    pub fn of(payload: &[u8]) -> u64 {
        let mut d = PayloadDigest::new();
        d.update(payload);
        d.finish()
    }
}

/// The payload digest of version 1 records: as [`PayloadDigest`], but the
/// lanes start from `S ^ payload bytes` and no final length step, so it
/// can only be computed once the whole payload is known.
pub fn payload_digest_v1(payload: &[u8]) -> u64 {
    debug_assert_eq!(payload.len() % 32, 0);
    let seed = DIGEST_SEED ^ payload.len() as u64;
    let mut l = [seed, seed ^ 1, seed ^ 2, seed ^ 3];
    for g in payload.chunks_exact(32) {
        for (i, lane) in l.iter_mut().enumerate() {
            let x = u64::from_le_bytes(g[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
            *lane = digest_step(*lane, x);
        }
    }
    digest_step(digest_step(digest_step(l[0], l[1]), l[2]), l[3])
}

pub fn set_crc(header: &mut [u8], crc: u32) {
    put_u32(header, CRC_AT, crc);
}

pub fn stored_crc(header: &[u8]) -> u32 {
    get_u32(header, CRC_AT)
}

/// Parses the fixed part and the span list from the first header sector.
/// Entries are left empty; see [`parse_entries`]. Checks only structure.
pub fn parse_fixed(first: &[u8]) -> Result<RecordHeader, &'static str> {
    if first.len() < 512 {
        return Err("short header");
    }
    if get_u32(first, 0) != REC_MAGIC {
        return Err("no record magic");
    }
    if first[4] != REC_VERSION && first[4] != REC_VERSION_1 {
        return Err("unknown record version");
    }
    let kind = Kind::from_u8(first[5]).ok_or("unknown record kind")?;
    let span_count = get_u16(first, 6) as usize;
    if span_count > MAX_SPAN {
        return Err("span list too long");
    }
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&first[8..24]);
    let header_sectors = get_u32(first, 44);
    if header_sectors == 0 {
        return Err("zero header sectors");
    }
    let span = (0..span_count)
        .map(|i| get_u32(first, REC_FIXED + 4 * i))
        .collect();
    Ok(RecordHeader {
        kind,
        header_sectors,
        uuid,
        epoch: get_u64(first, 24),
        seq: get_u64(first, 32),
        payload_sectors: u64::from(get_u32(first, 40)),
        span,
        runs: Vec::new(),
        trims: Vec::new(),
    })
}

/// Parses the entries of a full header (all `header_sectors`) into `h`.
pub fn parse_entries(header: &[u8], h: &mut RecordHeader) -> Result<(), &'static str> {
    let count = get_u32(header, 48) as usize;
    let bytes = get_u32(header, 52) as usize;
    let mut at = REC_FIXED + 4 * h.span.len();
    let end = at.checked_add(bytes).ok_or("entry bytes overflow")?;
    if end > header.len() {
        return Err("entries overflow the header");
    }
    let e = &header[..end];
    let mut payload = 0u64;
    for _ in 0..count {
        let tag = get_varint(e, &mut at).ok_or("truncated entry")?;
        let lba = get_varint(e, &mut at).ok_or("truncated entry")?;
        let len = tag >> 1;
        if len == 0 {
            return Err("empty entry");
        }
        if tag & 1 == 1 {
            h.trims.push((lba, len));
        } else {
            let old = if h.kind == Kind::Gc {
                get_varint(e, &mut at).ok_or("truncated entry")?
            } else {
                0
            };
            payload = payload.checked_add(len).ok_or("payload overflow")?;
            h.runs.push(Run { lba, len, old });
        }
    }
    if at != end {
        return Err("entry byte count mismatch");
    }
    if payload != h.payload_sectors {
        return Err("entries do not cover the payload");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let runs = vec![
            Run {
                lba: 1 << 40,
                len: 3,
                old: 0,
            },
            Run {
                lba: 7,
                len: 1,
                old: 0,
            },
        ];
        let trims = vec![(100, 1 << 31)];
        let eb = entry_bytes(Kind::User, &runs, &trims);
        let hs = header_sectors_for(512, 2, eb);
        assert_eq!(hs, 1);
        let h = RecordHeader {
            kind: Kind::User,
            header_sectors: hs,
            uuid: [3; 16],
            epoch: 9,
            seq: 77,
            payload_sectors: 4,
            span: vec![5, 6],
            runs,
            trims,
        };
        let mut buf = vec![0u8; 512];
        h.encode_into(&mut buf);
        let payload = vec![1u8; 4 * 512];
        let crc = record_crc(&buf, &payload);
        set_crc(&mut buf, crc);
        assert_eq!(record_crc(&buf, &payload), stored_crc(&buf));
        let mut back = parse_fixed(&buf).unwrap();
        parse_entries(&buf, &mut back).unwrap();
        assert_eq!(back, h);
    }

    /// Regression: a record whose payload sectors each end with their own
    /// crc32c (as atomfs inode sectors do) must not validate when a payload
    /// sector is replaced by another self-checksummed sector (a torn write
    /// over stale data). A crc32c over header and payload cannot tell them
    /// apart; the record checksum must.
    #[test]
    fn stale_self_checksummed_payload_fails_the_check() {
        let sector = |fill: u8| {
            let mut s = vec![fill; 512];
            let c = crc32c::crc32c(&s[..508]);
            s[508..].copy_from_slice(&c.to_le_bytes());
            s
        };
        let header = vec![0x5au8; 512];
        let new = [sector(1), sector(2)].concat();
        let stale = [sector(9), sector(2)].concat();
        let naive = |p: &[u8]| crc32c::crc32c_append(crc32c::crc32c(&header), p);
        assert_eq!(
            naive(&new),
            naive(&stale),
            "the CRC residue property this guards against"
        );
        assert_ne!(record_crc(&header, &new), record_crc(&header, &stale));
    }

    #[test]
    fn payload_digest_sees_every_word() {
        // Aperiodic bytes, so swapping any two sectors or words changes them.
        let mut x = 0x1234_5678_9abc_def1u64;
        let base: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        type Digest = fn(&[u8]) -> u64;
        let digests: [(&str, Digest); 2] = [("v2", PayloadDigest::of), ("v1", payload_digest_v1)];
        for (name, digest) in digests {
            let d = digest(&base);
            for w in 0..base.len() / 8 {
                let mut p = base.clone();
                p[w * 8] ^= 0x80;
                assert_ne!(digest(&p), d, "{name}: word {w} changed");
            }
            // Two words of one sector swapped (an order the lanes must see).
            let mut p = base.clone();
            let (a, b) = p.split_at_mut(8);
            a.swap_with_slice(&mut b[..8]);
            assert_ne!(digest(&p), d, "{name}");
            // Whole sectors swapped.
            let mut p = base.clone();
            let (a, b) = p.split_at_mut(512);
            a.swap_with_slice(&mut b[..512]);
            assert_ne!(digest(&p), d, "{name}");
            assert_ne!(digest(&[0u8; 512]), digest(&[0u8; 1024]), "{name}");
        }
    }

    /// The incremental digest does not depend on how the payload was cut
    /// into appends.
    #[test]
    fn payload_digest_in_pieces_equals_the_whole() {
        let base: Vec<u8> = (0..8192u32).map(|i| (i * 7 + i / 13) as u8).collect();
        let whole = PayloadDigest::of(&base);
        for cut in [0, 32, 512, 4064, 8192] {
            let mut d = PayloadDigest::new();
            d.update(&base[..cut]);
            d.update(&base[cut..]);
            assert_eq!(d.finish(), whole, "cut at {cut}");
        }
        assert_ne!(whole, payload_digest_v1(&base));
    }

    /// Records written before version 2 still validate (and a version 1
    /// header is not checked with the version 2 digest).
    #[test]
    fn version_1_records_still_validate() {
        let h = RecordHeader {
            kind: Kind::User,
            header_sectors: 1,
            uuid: [3; 16],
            epoch: 1,
            seq: 1,
            payload_sectors: 2,
            span: vec![],
            runs: vec![Run {
                lba: 0,
                len: 2,
                old: 0,
            }],
            trims: vec![],
        };
        let payload: Vec<u8> = (0..1024u32).map(|i| i as u8).collect();
        let mut buf = vec![0u8; 512];
        h.encode_into(&mut buf);
        buf[4] = REC_VERSION_1;
        let crc = record_crc_with(&buf, payload_digest_v1(&payload));
        set_crc(&mut buf, crc);
        assert_eq!(record_crc(&buf, &payload), stored_crc(&buf));
        assert!(parse_fixed(&buf).is_ok());
        buf[4] = REC_VERSION;
        assert_ne!(record_crc(&buf, &payload), crc);
        buf[4] = 3;
        assert_eq!(parse_fixed(&buf).unwrap_err(), "unknown record version");
    }

    #[test]
    fn thirty_entries_fit_one_sector() {
        let runs: Vec<Run> = (0..30u64)
            .map(|i| Run {
                lba: (i + 5) << 31,
                len: 8,
                old: 0,
            })
            .collect();
        let eb = entry_bytes(Kind::User, &runs, &[]);
        assert_eq!(header_sectors_for(512, 1, eb), 1, "{eb} entry bytes");
    }
}
