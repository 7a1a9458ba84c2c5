//! A bounded LRU cache of decoded directory bucket sectors.
//!
//! The block layer reads with O_DIRECT, so an uncached bucket costs a disk
//! I/O; lookups and creates in a hot directory hit this cache instead.
//! Empty (unmapped) buckets are cached too, so a create's "does the name
//! exist" probe is free after the first time. Keyed by sector in a BTreeMap
//! so a removed directory's range can be dropped at once.

use std::collections::BTreeMap;

use crate::format::Bucket;

pub(crate) struct BucketCache {
    map: BTreeMap<u64, (Bucket, u64)>,
    lru: BTreeMap<u64, u64>,
    tick: u64,
    capacity: usize,
}

impl BucketCache {
    pub fn new(capacity: usize) -> BucketCache {
        BucketCache {
            map: BTreeMap::new(),
            lru: BTreeMap::new(),
            tick: 0,
            capacity,
        }
    }

    /// The cached bucket at `lba`, marking it recently used.
    pub fn get(&mut self, lba: u64) -> Option<&Bucket> {
        self.tick += 1;
        let tick = self.tick;
        let (bucket, used) = self.map.get_mut(&lba)?;
        self.lru.remove(used);
        *used = tick;
        self.lru.insert(tick, lba);
        Some(bucket)
    }

    /// Caches `bucket` at `lba`, evicting the least recently used if full.
    pub fn put(&mut self, lba: u64, bucket: Bucket) {
        self.tick += 1;
        if let Some((_, used)) = self.map.insert(lba, (bucket, self.tick)) {
            self.lru.remove(&used);
        }
        self.lru.insert(self.tick, lba);
        while self.map.len() > self.capacity {
            let Some((_, victim)) = self.lru.pop_first() else {
                break;
            };
            self.map.remove(&victim);
        }
    }

    /// Drops every bucket in `start..end` (a freed directory's region).
    pub fn remove_range(&mut self, start: u64, end: u64) {
        let doomed: Vec<(u64, u64)> = self
            .map
            .range(start..end)
            .map(|(lba, (_, used))| (*lba, *used))
            .collect();
        for (lba, used) in doomed {
            self.map.remove(&lba);
            self.lru.remove(&used);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used() {
        let mut c = BucketCache::new(2);
        c.put(1, Bucket::default());
        c.put(2, Bucket::default());
        assert!(c.get(1).is_some());
        c.put(3, Bucket::default());
        assert!(c.get(2).is_none());
        assert!(c.get(1).is_some() && c.get(3).is_some());
        c.remove_range(0, 2);
        assert!(c.get(1).is_none());
    }
}
