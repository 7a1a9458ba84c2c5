//! Directory bucket sectors.
//!
//! A directory's region is a hash table of `2^dir_hash_bits` bucket
//! sectors; bucket `b` is sector `region(dir) + b`. A name's home bucket is
//! `name_hash(name) mod 2^bits`. A bucket holds as many entries as fit;
//! when the home bucket is full the entry goes to the next bucket with room
//! (linear probing, wrapping) and every full bucket passed sets its
//! OVERFLOW flag, so a lookup continues past a bucket only if that flag is
//! set. Empty buckets without the flag are trimmed (unmapped). The flag is
//! never cleared (like a tombstone): with 2^28 buckets probing is rare.
//!
//! Each entry carries a `slot` number unique within its bucket and never
//! changed while the entry exists; readdir cookies are `(bucket, slot)`, so
//! they survive inserts and deletes (entries never move).

use super::codec::*;

/// `"AFDB"` little-endian.
pub const BUCKET_MAGIC: u32 = u32::from_le_bytes(*b"AFDB");
/// Bytes before the first entry.
pub const BUCKET_HEADER: usize = 16;
/// Bytes of an entry before its name.
pub const ENTRY_HEADER: usize = 12;
/// Header flag: some entry whose home is at or before this bucket lives
/// after it; lookups must probe on.
pub const FLAG_OVERFLOW: u16 = 1;
/// Longest name (bytes).
pub const NAME_MAX: usize = 255;

/// One directory entry as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub ino: u64,
    /// Stable position within the bucket (readdir cookie part).
    pub slot: u16,
    /// `DT_*` type code.
    pub dtype: u8,
    pub name: Vec<u8>,
}

impl Entry {
    /// Bytes this entry takes in a bucket.
    pub fn encoded_len(&self) -> usize {
        ENTRY_HEADER + self.name.len()
    }
}

/// A decoded bucket sector (an unmapped sector decodes as empty).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    pub overflow: bool,
    /// Entries sorted by slot.
    pub entries: Vec<Entry>,
}

/// Why a bucket sector did not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BucketError {
    BadMagic,
    BadChecksum,
    /// The sector belongs to another directory.
    WrongDir(u64),
    BadEntry,
}

impl Bucket {
    /// Bytes used by the header and entries.
    pub fn used(&self) -> usize {
        BUCKET_HEADER + self.entries.iter().map(Entry::encoded_len).sum::<usize>()
    }

    /// True if an entry with a `name_len`-byte name fits.
    pub fn fits(&self, name_len: usize, sector_size: u32) -> bool {
        self.used() + ENTRY_HEADER + name_len <= sector_size as usize - 4
            && self.free_slot().is_some()
    }

    /// The smallest slot number not in use.
    pub fn free_slot(&self) -> Option<u16> {
        let mut slot = 0u16;
        for e in &self.entries {
            if e.slot != slot {
                break;
            }
            slot = slot.checked_add(1)?;
        }
        Some(slot)
    }

    /// Inserts keeping slot order.
    pub fn insert(&mut self, entry: Entry) {
        let at = self.entries.partition_point(|e| e.slot < entry.slot);
        self.entries.insert(at, entry);
    }

    /// Position of `name`, if present.
    pub fn find(&self, name: &[u8]) -> Option<usize> {
        self.entries.iter().position(|e| e.name == name)
    }

    /// True if the sector should be unmapped rather than written.
    pub fn is_trimmable(&self) -> bool {
        self.entries.is_empty() && !self.overflow
    }

    /// Encodes the bucket of directory `dir`.
    pub fn encode(&self, dir: u64, sector_size: u32) -> Vec<u8> {
        let mut b = vec![0u8; sector_size as usize];
        assert!(self.used() <= b.len() - 4);
        put_u32(&mut b, 0, BUCKET_MAGIC);
        put_u16(&mut b, 4, self.entries.len() as u16);
        put_u16(&mut b, 6, if self.overflow { FLAG_OVERFLOW } else { 0 });
        put_u64(&mut b, 8, dir);
        let mut at = BUCKET_HEADER;
        for e in &self.entries {
            put_u64(&mut b, at, e.ino);
            put_u16(&mut b, at + 8, e.slot);
            b[at + 10] = e.dtype;
            b[at + 11] = e.name.len() as u8;
            b[at + 12..at + 12 + e.name.len()].copy_from_slice(&e.name);
            at += e.encoded_len();
        }
        seal(&mut b);
        b
    }

    /// Decodes a bucket sector of directory `dir`; zeros decode as empty.
    pub fn decode(b: &[u8], dir: u64) -> Result<Bucket, BucketError> {
        if is_zero(b) {
            return Ok(Bucket::default());
        }
        if get_u32(b, 0) != BUCKET_MAGIC {
            return Err(BucketError::BadMagic);
        }
        if !verify(b) {
            return Err(BucketError::BadChecksum);
        }
        let owner = get_u64(b, 8);
        if owner != dir {
            return Err(BucketError::WrongDir(owner));
        }
        let count = get_u16(b, 4) as usize;
        let overflow = get_u16(b, 6) & FLAG_OVERFLOW != 0;
        let mut entries = Vec::with_capacity(count);
        let mut at = BUCKET_HEADER;
        let end = b.len() - 4;
        for _ in 0..count {
            if at + ENTRY_HEADER > end {
                return Err(BucketError::BadEntry);
            }
            let len = b[at + 11] as usize;
            if len == 0 || at + ENTRY_HEADER + len > end {
                return Err(BucketError::BadEntry);
            }
            let entry = Entry {
                ino: get_u64(b, at),
                slot: get_u16(b, at + 8),
                dtype: b[at + 10],
                name: b[at + 12..at + 12 + len].to_vec(),
            };
            if entries.last().is_some_and(|p: &Entry| p.slot >= entry.slot) {
                return Err(BucketError::BadEntry);
            }
            at += entry.encoded_len();
            entries.push(entry);
        }
        Ok(Bucket { overflow, entries })
    }
}

/// readdir cookie of the position *at* `(bucket, slot)`. Cookies 1 and 2
/// mean "after `.`" and "after `..`"; 0 is the start.
pub fn cookie(bucket: u64, slot: u32) -> u64 {
    3 + ((bucket << 17) | u64::from(slot))
}

/// Inverse of [`cookie`] for cookies >= 3.
pub fn decode_cookie(cookie: u64) -> (u64, u32) {
    let c = cookie - 3;
    (c >> 17, (c & 0x1ffff) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_capacity() {
        let mut bucket = Bucket::default();
        let mut n = 0u16;
        while bucket.fits(10, 512) {
            let slot = bucket.free_slot().unwrap();
            bucket.insert(Entry {
                ino: 100 + u64::from(n),
                slot,
                dtype: 8,
                name: format!("name{n:06}").into_bytes(),
            });
            n += 1;
        }
        assert_eq!(n, 22);
        let b = bucket.encode(5, 512);
        assert_eq!(Bucket::decode(&b, 5), Ok(bucket.clone()));
        assert_eq!(Bucket::decode(&b, 6), Err(BucketError::WrongDir(5)));
        assert_eq!(Bucket::decode(&[0; 512], 6), Ok(Bucket::default()));
        bucket.entries.remove(3);
        assert_eq!(bucket.free_slot(), Some(3));
        assert_eq!(decode_cookie(cookie(12345, 65536)), (12345, 65536));
    }
}
