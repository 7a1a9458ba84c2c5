//! A small read-around cache of media chunks, for metadata reads.
//!
//! Why at the media level: atomfs spreads related metadata over its logical
//! space (an inode sector in the inode table, its name in a hashed
//! directory bucket of a 2^28-sector table), but the log writes the sectors
//! of one request, and of requests made one after another, next to each
//! other on the media. A cold `stat` of files created together is two
//! scattered 512-byte logical reads per file, yet physically they sit in a
//! few hundred KiB. So a small read (at most [`SMALL_READ`] bytes) fetches
//! the whole aligned chunk around it, and the next small reads that land in
//! that chunk are served from memory. Large reads (file data) pass through
//! untouched and never fill the cache.
//!
//! Coherence: every media write and discard drops the chunks it overlaps
//! ([`ReadCache::invalidate`], called by the media *after* the write
//! completed). A fill that raced with a write is not kept: fills remember
//! the write generation they started under and are dropped if any write
//! finished meanwhile. So a hit always returns what the media holds now.
//!
//! Bounded: at most `max_chunks` chunks, least recently used evicted.

use std::collections::BTreeMap;
use std::io;
use std::sync::Mutex;

use crate::media::AlignedBuf;

/// Reads up to this size are widened to a whole chunk (a sector, or a
/// 4 KiB page of 512-byte sectors).
pub const SMALL_READ: usize = 4096;
/// Chunk size: one O_DIRECT read of this size costs little more than a
/// 4 KiB one on SSDs and loop devices, and holds ~60 file creates' records.
pub const DEFAULT_CHUNK_BYTES: u64 = 128 << 10;
/// Default bound: 16 MiB of chunks.
pub const DEFAULT_MAX_CHUNKS: usize = 128;

/// Hit and fill counters (for tests and benchmarks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadCacheStats {
    pub hits: u64,
    pub fills: u64,
}

struct Inner {
    /// chunk index → (bytes, last use tick).
    chunks: BTreeMap<u64, (AlignedBuf, u64)>,
    /// last use tick → chunk index.
    lru: BTreeMap<u64, u64>,
    tick: u64,
    /// Bumped by every completed write or discard.
    write_gen: u64,
    stats: ReadCacheStats,
}

/// See the module documentation.
pub struct ReadCache {
    chunk_bytes: u64,
    max_chunks: usize,
    /// Media size: chunks at the end are cut short here.
    media_len: u64,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for ReadCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadCache")
            .field("chunk_bytes", &self.chunk_bytes)
            .field("max_chunks", &self.max_chunks)
            .field("stats", &self.stats())
            .finish()
    }
}

impl ReadCache {
    /// A cache of at most `max_chunks` chunks of `chunk_bytes` (a power of
    /// two, a multiple of the sector size) over media of `media_len` bytes.
    /// `max_chunks == 0` disables it (every read passes through).
    pub fn new(chunk_bytes: u64, max_chunks: usize, media_len: u64) -> ReadCache {
        assert!(
            chunk_bytes.is_power_of_two(),
            "chunk size must be a power of two"
        );
        ReadCache {
            chunk_bytes,
            max_chunks,
            media_len,
            inner: Mutex::new(Inner {
                chunks: BTreeMap::new(),
                lru: BTreeMap::new(),
                tick: 0,
                write_gen: 0,
                stats: ReadCacheStats::default(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every critical section leaves the maps consistent before any
        // call that could panic, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn stats(&self) -> ReadCacheStats {
        self.lock().stats
    }

    /// Chunks held now.
    pub fn len(&self) -> usize {
        self.lock().chunks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads `buf.len()` bytes at `offset`, through the cache when the read
    /// is small and inside one chunk. `media_read(offset, buf)` reads the
    /// media itself (exactly, like [`crate::Media::read_at`]).
    pub fn read(
        &self,
        offset: u64,
        buf: &mut [u8],
        media_read: impl Fn(u64, &mut [u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        let len = buf.len() as u64;
        let idx = offset / self.chunk_bytes;
        let start = idx * self.chunk_bytes;
        let small = buf.len() <= SMALL_READ && len > 0;
        if self.max_chunks == 0 || !small || (offset + len - 1) / self.chunk_bytes != idx {
            return media_read(offset, buf);
        }
        let at = (offset - start) as usize;
        let gen = {
            let mut g = self.lock();
            g.tick += 1;
            let tick = g.tick;
            if let Some((bytes, used)) = g.chunks.get_mut(&idx) {
                buf.copy_from_slice(&bytes[at..at + buf.len()]);
                let old = std::mem::replace(used, tick);
                g.lru.remove(&old);
                g.lru.insert(tick, idx);
                g.stats.hits += 1;
                return Ok(());
            }
            g.write_gen
        };
        // Miss: read the whole chunk without holding the lock.
        let end = (start + self.chunk_bytes).min(self.media_len);
        let mut chunk = AlignedBuf::zeroed((end - start) as usize);
        media_read(start, &mut chunk)?;
        buf.copy_from_slice(&chunk[at..at + buf.len()]);
        let mut g = self.lock();
        g.stats.fills += 1;
        if g.write_gen == gen && !g.chunks.contains_key(&idx) {
            g.tick += 1;
            let tick = g.tick;
            g.chunks.insert(idx, (chunk, tick));
            g.lru.insert(tick, idx);
            while g.chunks.len() > self.max_chunks {
                let Some((_, victim)) = g.lru.pop_first() else {
                    break;
                };
                g.chunks.remove(&victim);
            }
        }
        Ok(())
    }

    /// Forgets every chunk overlapping `offset..offset + len`; called after
    /// each media write and discard.
    pub fn invalidate(&self, offset: u64, len: u64) {
        if self.max_chunks == 0 {
            return;
        }
        let mut g = self.lock();
        g.write_gen += 1;
        if len == 0 || g.chunks.is_empty() {
            return;
        }
        let first = offset / self.chunk_bytes;
        let last = (offset + len - 1) / self.chunk_bytes;
        let doomed: Vec<(u64, u64)> = g
            .chunks
            .range(first..=last)
            .map(|(idx, (_, used))| (*idx, *used))
            .collect();
        for (idx, used) in doomed {
            g.chunks.remove(&idx);
            g.lru.remove(&used);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use proptest::prelude::*;

    use super::*;

    const SS: u64 = 512;
    const MEDIA: u64 = 64 * SS;

    /// A media model: a byte vector, with a count of reads that reached it.
    struct Model {
        bytes: RefCell<Vec<u8>>,
        reads: RefCell<u64>,
    }

    impl Model {
        fn new() -> Model {
            Model {
                bytes: RefCell::new((0..MEDIA).map(|i| (i / SS) as u8).collect()),
                reads: RefCell::new(0),
            }
        }
        fn read(&self, off: u64, buf: &mut [u8]) -> io::Result<()> {
            *self.reads.borrow_mut() += 1;
            let b = self.bytes.borrow();
            buf.copy_from_slice(&b[off as usize..off as usize + buf.len()]);
            Ok(())
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Read { sector: u64, sectors: u64 },
        Write { sector: u64, sectors: u64, fill: u8 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0..MEDIA / SS, 1..4u64).prop_map(|(sector, sectors)| Op::Read { sector, sectors }),
            1 => (0..MEDIA / SS, 1..12u64, any::<u8>())
                .prop_map(|(sector, sectors, fill)| Op::Write { sector, sectors, fill }),
        ]
    }

    proptest! {
        /// Every read returns what the media holds, whatever the mix of
        /// reads and writes; the cache never holds more than its bound.
        #[test]
        fn reads_see_every_write(ops in proptest::collection::vec(op(), 1..200), max in 0..4usize) {
            let media = Model::new();
            let cache = ReadCache::new(4 * SS, max, MEDIA);
            for op in ops {
                match op {
                    Op::Read { sector, sectors } => {
                        let n = sectors.min(MEDIA / SS - sector);
                        let mut got = vec![0u8; (n * SS) as usize];
                        cache.read(sector * SS, &mut got, |o, b| media.read(o, b)).unwrap();
                        let mut want = vec![0u8; got.len()];
                        media.read(sector * SS, &mut want).unwrap();
                        prop_assert_eq!(got, want);
                    }
                    Op::Write { sector, sectors, fill } => {
                        let n = sectors.min(MEDIA / SS - sector);
                        let (a, b) = ((sector * SS) as usize, ((sector + n) * SS) as usize);
                        media.bytes.borrow_mut()[a..b].fill(fill);
                        cache.invalidate(sector * SS, n * SS);
                    }
                }
                prop_assert!(cache.len() <= max);
            }
        }
    }

    #[test]
    fn neighbours_of_a_small_read_are_hits() {
        let media = Model::new();
        let cache = ReadCache::new(8 * SS, 4, MEDIA);
        let mut buf = vec![0u8; SS as usize];
        for s in 8..16 {
            cache
                .read(s * SS, &mut buf, |o, b| media.read(o, b))
                .unwrap();
            assert_eq!(buf[0], s as u8);
        }
        assert_eq!(*media.reads.borrow(), 1, "one chunk read for eight sectors");
        assert_eq!(cache.stats(), ReadCacheStats { hits: 7, fills: 1 });
    }

    #[test]
    fn large_reads_pass_through_and_do_not_fill() {
        let media = Model::new();
        let cache = ReadCache::new(16 * SS, 4, MEDIA);
        let mut buf = vec![0u8; SMALL_READ + SS as usize];
        cache.read(0, &mut buf, |o, b| media.read(o, b)).unwrap();
        assert!(cache.is_empty());
        // A small read straddling two chunks also passes through.
        let mut two = vec![0u8; 2 * SS as usize];
        cache
            .read(15 * SS, &mut two, |o, b| media.read(o, b))
            .unwrap();
        assert!(cache.is_empty());
    }

    #[test]
    fn a_fill_racing_a_write_is_not_kept() {
        let media = Model::new();
        let cache = ReadCache::new(8 * SS, 4, MEDIA);
        let mut buf = vec![0u8; SS as usize];
        // The write completes while the chunk is being read.
        cache
            .read(0, &mut buf, |o, b| {
                media.read(o, b)?;
                media.bytes.borrow_mut()[..SS as usize].fill(0xee);
                cache.invalidate(0, SS);
                Ok(())
            })
            .unwrap();
        assert!(cache.is_empty());
        cache.read(0, &mut buf, |o, b| media.read(o, b)).unwrap();
        assert_eq!(buf[0], 0xee);
    }

    #[test]
    fn last_chunk_is_cut_at_the_media_end() {
        let media = Model::new();
        let cache = ReadCache::new(128 * SS, 4, MEDIA);
        let mut buf = vec![0u8; SS as usize];
        cache
            .read(MEDIA - SS, &mut buf, |o, b| media.read(o, b))
            .unwrap();
        assert_eq!(buf[0], (MEDIA / SS - 1) as u8);
    }
}
