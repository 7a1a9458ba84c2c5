//! A small read-around cache of media chunks, for metadata reads.
//!
//! Why at the media level: atomfs spreads related metadata over its logical
//! space (an inode sector in the inode table, its name in a hashed
//! directory bucket of a 2^28-sector table), but the log writes the sectors
//! of one request, and of requests made one after another, next to each
//! other on the media. A cold `stat` of files created together is two
//! scattered logical reads per file, yet physically they sit in a few
//! hundred KiB. So a small read (at most [`SMALL_READ`] bytes) fetches the
//! whole aligned chunk around it, and the next small reads that land in
//! that chunk are served from memory. Large reads (file data) pass through
//! untouched and never fill the cache.
//!
//! Sequential misses read ahead: a miss on the chunk right after the last
//! fill reads twice as many chunks as that fill did, up to
//! [`MAX_WINDOW_CHUNKS`]; any other miss reads one chunk. A cold `stat` of
//! every file of a directory walks the log in order, and one read of 1 MiB
//! costs far less than eight of 128 KiB (cold stat of 20,000 files in
//! creation order on an image file: 30.7 instead of 35.6 µs each), while a
//! random metadata read still fetches only 128 KiB. The chunks of one fill
//! stay together as one entry (no copy to split them).
//!
//! Coherence: every media write and discard drops the entries it overlaps
//! ([`ReadCache::invalidate`], called by the media *after* the write
//! completed). A fill that raced with a write is not kept: fills remember
//! the write generation they started under and are dropped if any write
//! finished meanwhile. So a hit always returns what the media holds now.
//!
//! Bounded: at most `max_chunks` chunks, least recently used entry evicted
//! first; evicted buffers are reused by later fills (up to one window's
//! worth kept aside), so a scan does not page-fault a fresh buffer per
//! fill.

use std::collections::BTreeMap;
use std::io;
use std::sync::Mutex;

use crate::media::{AlignedBuf, DIRECT_IO_ALIGN};

/// Reads up to this size are widened to a whole chunk (a sector, or a
/// 4 KiB page of 512-byte sectors).
pub const SMALL_READ: usize = 4096;
/// Chunk size: one O_DIRECT read of this size costs little more than a
/// 4 KiB one on SSDs and loop devices, and holds ~60 file creates' records.
pub const DEFAULT_CHUNK_BYTES: u64 = 128 << 10;
/// Default bound: 16 MiB of chunks.
pub const DEFAULT_MAX_CHUNKS: usize = 128;
/// Chunks one sequential fill reads at most (1 MiB of 128 KiB chunks).
pub const MAX_WINDOW_CHUNKS: u64 = 8;

/// Hit and fill counters (for tests and benchmarks). A fill is one media
/// read, of one chunk or of a read-ahead window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadCacheStats {
    pub hits: u64,
    pub fills: u64,
}

/// `chunks` consecutive chunks read by one fill.
struct Entry {
    bytes: AlignedBuf,
    chunks: u64,
    /// Last use tick (key in `Inner::lru`).
    used: u64,
}

struct Inner {
    /// First chunk index → entry. Entries never overlap.
    entries: BTreeMap<u64, Entry>,
    /// Last use tick → first chunk index of the entry.
    lru: BTreeMap<u64, u64>,
    /// Chunks held by `entries`.
    held: u64,
    tick: u64,
    /// Bumped by every completed write or discard.
    write_gen: u64,
    /// The chunk right after the last fill, and that fill's size in chunks:
    /// a miss there continues a sequential scan.
    next_seq: u64,
    window: u64,
    /// Buffers of evicted or discarded entries, for later fills.
    spares: Vec<AlignedBuf>,
    stats: ReadCacheStats,
}

impl Inner {
    /// First chunk index of the entry holding chunk `idx`.
    fn entry_of(&self, idx: u64) -> Option<u64> {
        self.entries
            .range(..=idx)
            .next_back()
            .filter(|(first, e)| *first + e.chunks > idx)
            .map(|(first, _)| *first)
    }

    /// Whether any entry holds one of chunks `first..end`. Entries are
    /// disjoint and sorted, so only the last one that starts before `end`
    /// can reach into the range.
    fn overlaps(&self, first: u64, end: u64) -> bool {
        self.entries
            .range(..end)
            .next_back()
            .is_some_and(|(start, e)| start + e.chunks > first)
    }

    /// Drops the entry that starts at chunk `first` (and its `lru` key, if
    /// still there), keeping its buffer as a spare.
    fn remove(&mut self, first: u64, spare_bytes_max: u64) {
        if let Some(e) = self.entries.remove(&first) {
            self.lru.remove(&e.used);
            self.held -= e.chunks;
            self.keep_spare(e.bytes, spare_bytes_max);
        }
    }

    /// Keeps `buf` for a later fill unless the spares already hold
    /// `spare_bytes_max`.
    fn keep_spare(&mut self, buf: AlignedBuf, spare_bytes_max: u64) {
        let kept: u64 = self.spares.iter().map(|b| b.capacity() as u64).sum();
        if kept + buf.capacity() as u64 <= spare_bytes_max {
            self.spares.push(buf);
        }
    }

    /// A buffer of `capacity` bytes (as allocated: rounded up to the
    /// O_DIRECT alignment): a spare of that capacity if there is one.
    fn take_buffer(&mut self, capacity: usize) -> AlignedBuf {
        let rounded = capacity.max(1).next_multiple_of(DIRECT_IO_ALIGN);
        match self.spares.iter().position(|b| b.capacity() == rounded) {
            Some(i) => self.spares.swap_remove(i),
            None => AlignedBuf::with_capacity(0, capacity),
        }
    }
}

/// See the module documentation.
pub struct ReadCache {
    chunk_bytes: u64,
    max_chunks: usize,
    /// Chunks one fill reads at most.
    max_window: u64,
    /// Media size: chunks at the end are cut short here.
    media_len: u64,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for ReadCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadCache")
            .field("chunk_bytes", &self.chunk_bytes)
            .field("max_chunks", &self.max_chunks)
            .field("max_window", &self.max_window)
            .field("stats", &self.stats())
            .finish()
    }
}

impl ReadCache {
    /// A cache of at most `max_chunks` chunks of `chunk_bytes` (a power of
    /// two, a multiple of the sector size) over media of `media_len` bytes,
    /// reading ahead up to [`MAX_WINDOW_CHUNKS`] (at most `max_chunks`) on
    /// sequential misses. `max_chunks == 0` disables it (every read passes
    /// through).
    pub fn new(chunk_bytes: u64, max_chunks: usize, media_len: u64) -> ReadCache {
        assert!(
            chunk_bytes.is_power_of_two(),
            "chunk size must be a power of two"
        );
        ReadCache {
            chunk_bytes,
            max_chunks,
            max_window: MAX_WINDOW_CHUNKS.min(max_chunks as u64).max(1),
            media_len,
            inner: Mutex::new(Inner {
                entries: BTreeMap::new(),
                lru: BTreeMap::new(),
                held: 0,
                tick: 0,
                write_gen: 0,
                next_seq: u64::MAX,
                window: 0,
                spares: Vec::new(),
                stats: ReadCacheStats::default(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every critical section leaves the maps consistent before any
        // call that could panic, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes of spare buffers kept for reuse at most: one full window.
    fn spare_bytes_max(&self) -> u64 {
        self.max_window * self.chunk_bytes
    }

    pub fn stats(&self) -> ReadCacheStats {
        self.lock().stats
    }

    /// Chunks held now.
    pub fn len(&self) -> usize {
        self.lock().held as usize
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
        let cb = self.chunk_bytes;
        let idx = offset / cb;
        let small = buf.len() <= SMALL_READ && len > 0;
        if self.max_chunks == 0 || !small || (offset + len - 1) / cb != idx {
            return media_read(offset, buf);
        }
        let (gen, chunks, mut fill) = {
            let mut g = self.lock();
            g.tick += 1;
            let tick = g.tick;
            if let Some(first) = g.entry_of(idx) {
                let e = g.entries.get_mut(&first).expect("entry found");
                let at = (offset - first * cb) as usize;
                buf.copy_from_slice(&e.bytes[at..at + buf.len()]);
                let old = std::mem::replace(&mut e.used, tick);
                g.lru.remove(&old);
                g.lru.insert(tick, first);
                g.stats.hits += 1;
                return Ok(());
            }
            // Read ahead only when this miss continues the last fill, and
            // never over chunks already held or past the media end.
            let want = if idx == g.next_seq {
                (g.window * 2).min(self.max_window)
            } else {
                1
            };
            let next_held = g.entries.range(idx + 1..).next().map(|(first, _)| *first);
            let last_chunk = (self.media_len - 1) / cb;
            let chunks = want
                .min(next_held.map_or(u64::MAX, |n| n - idx))
                .min(last_chunk - idx + 1);
            debug_assert!(chunks >= 1);
            g.next_seq = idx + chunks;
            g.window = chunks;
            let fill = g.take_buffer((chunks * cb) as usize);
            (g.write_gen, chunks, fill)
        };
        // Miss: read the chunks without holding the lock.
        let start = idx * cb;
        let end = (start + chunks * cb).min(self.media_len);
        fill.set_len_keep((end - start) as usize);
        media_read(start, &mut fill)?;
        let at = (offset - start) as usize;
        buf.copy_from_slice(&fill[at..at + buf.len()]);
        let mut g = self.lock();
        g.stats.fills += 1;
        if g.write_gen != gen || g.overlaps(idx, idx + chunks) {
            g.keep_spare(fill, self.spare_bytes_max());
            return Ok(());
        }
        g.tick += 1;
        let tick = g.tick;
        g.entries.insert(
            idx,
            Entry {
                bytes: fill,
                chunks,
                used: tick,
            },
        );
        g.lru.insert(tick, idx);
        g.held += chunks;
        while g.held > self.max_chunks as u64 {
            let Some((_, victim)) = g.lru.pop_first() else {
                break;
            };
            g.remove(victim, self.spare_bytes_max());
        }
        debug_assert!(g.held <= self.max_chunks as u64);
        Ok(())
    }

    /// Forgets every entry overlapping `offset..offset + len`; called after
    /// each media write and discard.
    pub fn invalidate(&self, offset: u64, len: u64) {
        if self.max_chunks == 0 {
            return;
        }
        let mut g = self.lock();
        g.write_gen += 1;
        if len == 0 || g.entries.is_empty() {
            return;
        }
        let first = offset / self.chunk_bytes;
        let last = (offset + len - 1) / self.chunk_bytes;
        // Entries are disjoint and sorted: walk back from the last one that
        // starts in range until one ends before it.
        let doomed: Vec<u64> = g
            .entries
            .range(..=last)
            .rev()
            .take_while(|(start, e)| *start + e.chunks > first)
            .map(|(start, _)| *start)
            .collect();
        for start in doomed {
            g.remove(start, self.spare_bytes_max());
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
        Read {
            sector: u64,
            sectors: u64,
        },
        /// One-sector reads of `sectors` consecutive sectors: sequential
        /// misses, so fills of growing windows.
        Scan {
            sector: u64,
            sectors: u64,
        },
        Write {
            sector: u64,
            sectors: u64,
            fill: u8,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0..MEDIA / SS, 1..4u64).prop_map(|(sector, sectors)| Op::Read { sector, sectors }),
            1 => (0..MEDIA / SS, 1..48u64).prop_map(|(sector, sectors)| Op::Scan { sector, sectors }),
            1 => (0..MEDIA / SS, 1..12u64, any::<u8>())
                .prop_map(|(sector, sectors, fill)| Op::Write { sector, sectors, fill }),
        ]
    }

    fn check_read(
        cache: &ReadCache,
        media: &Model,
        sector: u64,
        sectors: u64,
    ) -> Result<(), TestCaseError> {
        let n = sectors.min(MEDIA / SS - sector);
        let mut got = vec![0u8; (n * SS) as usize];
        cache
            .read(sector * SS, &mut got, |o, b| media.read(o, b))
            .unwrap();
        let mut want = vec![0u8; got.len()];
        media.read(sector * SS, &mut want).unwrap();
        prop_assert_eq!(got, want);
        Ok(())
    }

    proptest! {
        /// Every read returns what the media holds, whatever the mix of
        /// reads, scans (read-ahead windows) and writes; the cache never
        /// holds more than its bound.
        #[test]
        fn reads_see_every_write(ops in proptest::collection::vec(op(), 1..200), max in 0..12usize) {
            let media = Model::new();
            let cache = ReadCache::new(4 * SS, max, MEDIA);
            for op in ops {
                match op {
                    Op::Read { sector, sectors } => check_read(&cache, &media, sector, sectors)?,
                    Op::Scan { sector, sectors } => {
                        for s in sector..(sector + sectors).min(MEDIA / SS) {
                            check_read(&cache, &media, s, 1)?;
                        }
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

    /// A scan reads ahead in windows of 1, 2, 4, 8, 8... chunks, each one
    /// media read; every sector it reads comes back right.
    #[test]
    fn sequential_misses_read_ahead_in_growing_windows() {
        let media = Model::new();
        // 16 chunks of 4 sectors.
        let cache = ReadCache::new(4 * SS, 64, MEDIA);
        let mut buf = vec![0u8; SS as usize];
        for s in 0..MEDIA / SS {
            cache
                .read(s * SS, &mut buf, |o, b| media.read(o, b))
                .unwrap();
            assert_eq!(buf[0], s as u8);
        }
        // Windows 1 + 2 + 4 + 8 = 15 chunks, then the last one alone (the
        // media ends there).
        assert_eq!(*media.reads.borrow(), 5);
        assert_eq!(cache.stats().fills, 5);
        assert_eq!(cache.len(), 16);
    }

    /// Misses that do not follow the last fill read one chunk each.
    #[test]
    fn scattered_misses_read_one_chunk() {
        let media = Model::new();
        let cache = ReadCache::new(4 * SS, 64, MEDIA);
        let mut buf = vec![0u8; SS as usize];
        for chunk in [9u64, 2, 14, 5, 11] {
            cache
                .read(chunk * 4 * SS, &mut buf, |o, b| media.read(o, b))
                .unwrap();
        }
        assert_eq!(cache.len(), 5);
        assert_eq!(cache.stats().fills, 5);
    }

    /// A window stops short of a chunk already held, and the bound counts
    /// chunks, not entries: the oldest entries go first.
    #[test]
    fn windows_stop_at_held_chunks_and_respect_the_bound() {
        let media = Model::new();
        let cache = ReadCache::new(4 * SS, 6, MEDIA);
        let mut buf = vec![0u8; SS as usize];
        let mut read_chunk = |c: u64| {
            cache
                .read(c * 4 * SS, &mut buf, |o, b| media.read(o, b))
                .unwrap();
        };
        read_chunk(2); // [2]
        read_chunk(0); // [0]
        read_chunk(1); // sequential: a window of 2, cut at the held 2: [1]
        assert_eq!((cache.len(), *media.reads.borrow()), (3, 3));
        read_chunk(3); // not right after the last fill (2): [3]
        read_chunk(4); // sequential: [4, 5]
        assert_eq!((cache.len(), *media.reads.borrow()), (6, 5));
        read_chunk(6); // sequential: [6..9], 10 chunks > 6: the four oldest go
        assert_eq!((cache.len(), *media.reads.borrow()), (6, 6));
        read_chunk(5); // held
        assert_eq!(*media.reads.borrow(), 6);
        read_chunk(2); // evicted
        assert_eq!(*media.reads.borrow(), 7);
        assert!(cache.len() <= 6);
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
