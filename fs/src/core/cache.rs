//! A bounded cache of decoded directory bucket sectors.
//!
//! The block layer reads with O_DIRECT, so an uncached bucket costs a disk
//! I/O; lookups and creates in a hot directory hit this cache instead.
//! Empty (unmapped) buckets are cached too, so a create's "does the name
//! exist" probe is free after the first time. Keyed by sector in a BTreeMap
//! so a removed directory's range can be dropped at once.
//!
//! Bounded by the memory the decoded buckets take, not by their count: a
//! directory spreads its names over 2^28 buckets, so a bucket usually
//! holds one entry, about a tenth of its sector. Counting sectors, a 32 MiB
//! bound held 65,536 buckets and a `stat` of every file of a
//! 100,000-entry directory missed every time (a cyclic scan defeats LRU).
//!
//! Eviction is CLOCK (second chance): a hit only sets a flag, where an LRU
//! list cost two more tree updates on every lookup; the hand sweeps the
//! keys in order, clearing flags, and evicts the first bucket not used
//! since it last passed.

use std::collections::BTreeMap;
use std::mem::size_of;

use crate::format::{Bucket, Entry};

/// Bytes a cached bucket is charged: the bucket, its entries and names,
/// and the tree slot holding it.
fn charge(bucket: &Bucket) -> usize {
    const SLOT: usize = size_of::<u64>() + size_of::<Cached>() + 16;
    SLOT + bucket
        .entries
        .iter()
        .map(|e| size_of::<Entry>() + e.name.len())
        .sum::<usize>()
}

struct Cached {
    bucket: Bucket,
    /// Used since the hand last passed.
    referenced: bool,
    bytes: usize,
}

pub(crate) struct BucketCache {
    map: BTreeMap<u64, Cached>,
    /// The next key the hand looks at.
    hand: u64,
    bytes: usize,
    capacity_bytes: usize,
}

impl BucketCache {
    pub fn new(capacity_bytes: usize) -> BucketCache {
        BucketCache {
            map: BTreeMap::new(),
            hand: 0,
            bytes: 0,
            capacity_bytes,
        }
    }

    /// The cached bucket at `lba`, marking it used.
    pub fn get(&mut self, lba: u64) -> Option<&Bucket> {
        let cached = self.map.get_mut(&lba)?;
        cached.referenced = true;
        Some(&cached.bucket)
    }

    /// Caches `bucket` at `lba`, evicting until the cache fits its bound
    /// (the new bucket itself is never the victim).
    pub fn put(&mut self, lba: u64, bucket: Bucket) {
        let bytes = charge(&bucket);
        let cached = Cached {
            bucket,
            referenced: true,
            bytes,
        };
        if let Some(old) = self.map.insert(lba, cached) {
            self.bytes -= old.bytes;
        }
        self.bytes += bytes;
        while self.bytes > self.capacity_bytes && self.map.len() > 1 {
            let victim = self.victim(lba);
            let gone = self.map.remove(&victim).expect("victim is cached");
            self.bytes -= gone.bytes;
        }
    }

    /// The key to evict: the first one from the hand on (wrapping) whose
    /// flag is clear, clearing the flags it passes. At most two sweeps: the
    /// first clears every flag. `keep` is passed over.
    fn victim(&mut self, keep: u64) -> u64 {
        for _ in 0..2 {
            for upper in [false, true] {
                let range = if upper {
                    self.map.range_mut(..self.hand)
                } else {
                    self.map.range_mut(self.hand..)
                };
                for (&lba, cached) in range {
                    if lba == keep {
                        continue;
                    }
                    if !cached.referenced {
                        self.hand = lba.wrapping_add(1);
                        return lba;
                    }
                    cached.referenced = false;
                }
            }
        }
        unreachable!("a cache of two or more buckets has a victim after two sweeps")
    }

    /// Drops every bucket in `start..end` (a freed directory's region).
    pub fn remove_range(&mut self, start: u64, end: u64) {
        let doomed: Vec<u64> = self.map.range(start..end).map(|(lba, _)| *lba).collect();
        for lba in doomed {
            if let Some(gone) = self.map.remove(&lba) {
                self.bytes -= gone.bytes;
            }
        }
    }

    /// Buckets cached (tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_entry(ino: u64) -> Bucket {
        Bucket {
            overflow: false,
            entries: vec![Entry {
                ino,
                slot: 0,
                dtype: 8,
                name: format!("file{ino:06}").into_bytes(),
            }],
        }
    }

    #[test]
    fn evicts_what_was_not_used_since_the_hand_passed() {
        let per = charge(&one_entry(0));
        let mut c = BucketCache::new(2 * per);
        c.put(1, one_entry(1));
        c.put(2, one_entry(2));
        // Both fresh: the sweep clears both flags and takes the first.
        c.put(3, one_entry(3));
        assert!(c.get(1).is_none());
        assert_eq!(c.len(), 2);
        // 3 was just used, 2 was not: 2 goes.
        c.get(3);
        c.put(4, one_entry(4));
        assert!(c.get(2).is_none());
        assert!(c.get(3).is_some() && c.get(4).is_some());
        c.remove_range(0, 4);
        assert!(c.get(3).is_none());
        assert_eq!(c.bytes, per);
    }

    #[test]
    fn bound_is_memory_and_holds_under_any_sequence() {
        let per = charge(&one_entry(0));
        let mut c = BucketCache::new(1000 * per);
        let mut x = 7u64;
        for i in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let lba = x % 3000;
            if i % 3 == 0 {
                c.put(lba, one_entry(lba));
            } else {
                c.get(lba);
            }
            assert!(c.bytes <= c.capacity_bytes);
            assert_eq!(c.bytes, c.map.values().map(|v| v.bytes).sum::<usize>());
        }
        assert_eq!(c.len(), 1000);
    }

    #[test]
    fn a_cyclic_scan_that_fits_always_hits() {
        // 100,000 one-entry buckets in a 32 MiB bound: a second scan in the
        // same order finds every one (the LRU over sector counts held
        // 65,536 and missed them all).
        let mut c = BucketCache::new(32 << 20);
        for lba in 0..100_000 {
            c.put(lba, one_entry(lba));
        }
        assert!((0..100_000).all(|lba| c.get(lba).is_some()));
    }
}
