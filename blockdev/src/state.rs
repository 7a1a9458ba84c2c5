//! The in-memory state of a `LogDevice` and its write path: group-commit
//! batch, record writer, checkpoint writer and the space manager that runs
//! GC. Everything here runs under the device mutex.

use std::io;
use std::sync::{Arc, RwLock};

use atomic_api::{Error, Request, Result, Segment, Stats};

use crate::checkpoint::{encode_blob, Slot, StreamPos, MAX_BLOB_SEGS};
use crate::extent_map::{ExtentMap, Piece};
use crate::layout::{Layout, GC_HEADROOM_SEGS, SLOT_OFFSETS};
use crate::media::{AlignedBuf, Media};
use crate::placement::{span_needed, Placement};
use crate::record::{
    entry_bytes, header_sectors_for, record_crc, record_crc_with, set_crc, Kind, PayloadDigest,
    RecordHeader, Run, MAX_SPAN,
};
use crate::segments::{SegState, SegTable, NO_RECORD};
use crate::write_behind::{RecordPiece, WriteBehind};

/// Bytes charged against the batch bound per header entry (an upper bound
/// of the varint encoding of one run or trim).
const ENTRY_CHARGE: u64 = 24;

/// A log stream's write position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stream {
    pub kind: Kind,
    pub seg: u32,
    pub off: u64,
    pub seq: u64,
}

impl Stream {
    pub fn pos(&self) -> StreamPos {
        StreamPos {
            seg: self.seg,
            off: self.off as u32,
            seq: self.seq,
        }
    }
}

pub fn io_err(op: &'static str, source: io::Error) -> Error {
    Error::Io { op, source }
}

pub struct State {
    pub l: Layout,
    pub uuid: [u8; 16],
    pub epoch: u64,
    pub ckpt_gen: u64,
    pub ckpt_segs: Vec<u32>,
    pub map: ExtentMap,
    pub segs: SegTable,
    pub user: Stream,
    pub gc: Stream,
    // ---- group-commit batch
    /// `hdr_reserve` sectors of room for the record header at the front,
    /// then the batch data.
    pub buf: Option<AlignedBuf>,
    /// Sectors reserved at the front of `buf` for the record header (at
    /// least 1). The header is written into the last `h` of them, so the
    /// record goes to the media straight from `buf`; when a batch needs a
    /// larger header the data is moved up once and the reserve stays
    /// larger (at most `max_hdr_reserve`).
    pub hdr_reserve: u64,
    /// Bound on `hdr_reserve`: room in `buf` beyond a maximal batch.
    pub max_hdr_reserve: u64,
    /// Data sectors in `buf` (including dead ones).
    pub buf_sectors: u64,
    /// Sectors in `buf` no longer referenced (trimmed after being written).
    pub dead: u64,
    /// Sectors of pending extents in the map.
    pub pending_sectors: u64,
    /// Digest of the batch's data sectors, fed as they are appended (while
    /// they are in the cache from the copy); None once a sector was
    /// overwritten in place, which the running digest cannot take back.
    pub digest: Option<PayloadDigest>,
    /// Appended runs (buffer position, lba, len), in buffer order.
    pub runs: Vec<(u64, u64, u64)>,
    /// Trims of the batch, in order.
    pub trims: Vec<(u64, u64)>,
    /// Header entries charged to the batch.
    pub entries: u64,
    /// Bound on batch sectors (data plus charged header bytes).
    pub batch_limit: u64,
    // ---- durability bookkeeping
    pub unsynced: bool,
    /// Bumped by every record written; a flush that ran without the lock
    /// clears `unsynced` only if nothing was written meanwhile.
    pub write_gen: u64,
    /// Media flushes started (the number of the latest one): a cleaned
    /// segment remembers it and is recycled by a later one.
    pub media_flush_starts: u64,
    /// A `LogDevice::flush` is flushing the media without the lock.
    pub flushing: bool,
    /// Requests (by `stats.requests`) that a completed flush made durable.
    pub durable_requests: u64,
    pub log_since_ckpt: u64,
    pub ckpt_interval_base: u64,
    /// Fixed cleaning batch (see `clean_batch_segs`); None = automatic.
    pub gc_batch_segs: Option<u64>,
    pub last_blob_bytes: u64,
    pub stats: Stats,
    pub failed: Option<String>,
    pub read_only: bool,
    /// Write-behind of user records (None: every write is synchronous).
    pub wb: Option<WriteBehind>,
    /// Held shared by every read that goes to the media after the state
    /// lock is let go ([`State::plan_read`]); taken exclusively before a
    /// segment is released, since a released segment may be discarded and
    /// rewritten under a read that still expects its old data.
    pub readers: Arc<RwLock<()>>,
}

/// Part of a read that goes to the media: `len` bytes at media byte
/// `offset`, into the caller's buffer from byte `at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MediaRead {
    pub offset: u64,
    pub at: usize,
    pub len: usize,
}

impl State {
    /// An empty state (no map, every segment free) for `format` and
    /// `open`, which fill it in.
    pub fn new(l: Layout, uuid: [u8; 16], read_only: bool, ckpt_interval: Option<u64>) -> Self {
        let ss = l.ss;
        let capacity = (l.max_record_sectors + l.sb.max_request_bytes / ss + 1) * ss;
        let buf = (!read_only).then(|| {
            let mut b = AlignedBuf::with_capacity(ss as usize, capacity as usize);
            b.resize(ss as usize);
            b
        });
        let media_bytes = l.sb.media_bytes;
        // `buf` holds a maximal batch (max_record_sectors) plus this much.
        let max_hdr_reserve = 1 + l.sb.max_request_bytes / ss;
        Self {
            segs: SegTable::new(l.segs),
            batch_limit: l.sb.buffer_bytes / ss,
            l,
            uuid,
            epoch: 0,
            ckpt_gen: 0,
            ckpt_segs: Vec::new(),
            map: ExtentMap::new(),
            user: Stream {
                kind: Kind::User,
                seg: 0,
                off: 0,
                seq: 1,
            },
            gc: Stream {
                kind: Kind::Gc,
                seg: 0,
                off: 0,
                seq: 1,
            },
            buf,
            hdr_reserve: 1,
            max_hdr_reserve,
            buf_sectors: 0,
            dead: 0,
            pending_sectors: 0,
            digest: Some(PayloadDigest::new()),
            runs: Vec::new(),
            trims: Vec::new(),
            entries: 0,
            unsynced: false,
            write_gen: 0,
            media_flush_starts: 0,
            flushing: false,
            durable_requests: 0,
            log_since_ckpt: 0,
            ckpt_interval_base: ckpt_interval.unwrap_or((media_bytes / 8).clamp(1 << 20, 64 << 20)),
            gc_batch_segs: None,
            last_blob_bytes: 0,
            stats: Stats::default(),
            failed: None,
            read_only,
            wb: None,
            readers: Arc::new(RwLock::new(())),
        }
    }

    pub fn healthy(&self) -> Result<()> {
        match &self.failed {
            Some(cause) => Err(Error::Failed {
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    pub fn writable(&self) -> Result<()> {
        self.healthy()?;
        if self.read_only {
            return Err(Error::ReadOnly);
        }
        Ok(())
    }

    /// Fail-stop: an I/O error poisons the device.
    pub fn poison<T>(&mut self, r: Result<T>) -> Result<T> {
        if let Err(Error::Io { op, source }) = &r {
            self.failed = Some(format!("media I/O error during {op}: {source}"));
        }
        r
    }

    /// Waits for every write-behind write queued or in progress. A failure
    /// fails the device: the map already points at what it was writing.
    pub fn settle(&mut self) -> Result<()> {
        let Some(wb) = self.wb.as_mut() else {
            return Ok(());
        };
        let r = wb.wait();
        self.write_behind_outcome(r)
    }

    /// Waits for the oldest write-behind write if the queue is full, so
    /// that one more record can be queued.
    fn settle_slot(&mut self) -> Result<()> {
        let Some(wb) = self.wb.as_mut() else {
            return Ok(());
        };
        if !wb.full() {
            return Ok(());
        }
        let r = wb.wait_oldest();
        self.write_behind_outcome(r)
    }

    fn write_behind_outcome(&mut self, r: io::Result<()>) -> Result<()> {
        r.map_err(|e| {
            if self.failed.is_none() {
                self.failed = Some(format!("media I/O error during write-behind write: {e}"));
            }
            io_err("write-behind write", e)
        })
    }

    /// `settle` if a queued write covers any of media sectors
    /// `phys..phys + n` (reads of other sectors need not wait).
    fn settle_for(&mut self, phys: u64, n: u64) -> Result<()> {
        if self.wb.as_ref().is_some_and(|wb| wb.overlaps(phys, n)) {
            self.settle()?;
        }
        Ok(())
    }

    /// No write-behind write in flight: the media may be written, flushed
    /// or discarded.
    fn media_idle(&self) -> bool {
        !self.wb.as_ref().is_some_and(|wb| wb.busy())
    }

    pub fn capacity_sectors(&self) -> u64 {
        self.l.capacity_sectors
    }

    fn batch_empty(&self) -> bool {
        self.runs.is_empty() && self.trims.is_empty()
    }

    // ------------------------------------------------------------ reads

    /// Fills what of `lba..` is not on the media (unmapped: zeros; still in
    /// the batch: copied from it) and returns the media reads that complete
    /// `out`. Those sectors are on the media once this returns (a
    /// write-behind write covering them has been waited for) and stay there
    /// while the caller holds [`State::readers`] shared.
    pub fn plan_read(&mut self, lba: u64, out: &mut [u8]) -> Result<Vec<MediaRead>> {
        let ss = self.l.ss as usize;
        let n = (out.len() / ss) as u64;
        let pieces = self.map.pieces(lba, n);
        let mut reads = Vec::new();
        // Only the unmapped gaps are zeroed: zeroing all of `out` first
        // cost as much CPU as the copy on large reads.
        let mut done = 0;
        for p in pieces {
            let at = (p.lba - lba) as usize * ss;
            out[done..at].fill(0);
            done = at + p.len as usize * ss;
            if p.pending {
                let buf = self.buf.as_ref().expect("pending data needs a buffer");
                let src = (self.hdr_reserve + p.loc) as usize * ss;
                out[at..done].copy_from_slice(&buf[src..src + (done - at)]);
            } else {
                self.settle_for(p.loc, p.len)?;
                reads.push(MediaRead {
                    offset: p.loc * self.l.ss,
                    at,
                    len: done - at,
                });
                self.stats.media_read_bytes += (done - at) as u64;
            }
        }
        out[done..].fill(0);
        Ok(reads)
    }

    pub fn read_media(&mut self, m: &dyn Media, phys: u64, out: &mut [u8]) -> Result<()> {
        self.settle_for(phys, out.len() as u64 / self.l.ss)?;
        m.read_at(phys * self.l.ss, out)
            .map_err(|e| io_err("read", e))?;
        self.stats.media_read_bytes += out.len() as u64;
        Ok(())
    }

    // ------------------------------------------------------------ submit

    /// Applies a validated request to the batch.
    pub fn submit(&mut self, m: &dyn Media, req: Request) -> Result<()> {
        let ss = self.l.ss;
        let req_sectors = req.write_bytes() / ss;
        let live = self.map.mapped();
        let cap = self.capacity_sectors();
        // The request grows the mapped space by at most its write sectors,
        // so the exact growth (map lookups per segment) is only needed
        // near full.
        if live + req_sectors > cap {
            let mut grow: i128 = 0;
            for seg in req.segments() {
                match seg {
                    Segment::Write { lba, data } => {
                        let n = data.len() as u64 / ss;
                        grow += i128::from(n - self.map.mapped_in(*lba, n));
                    }
                    Segment::Trim { lba, sectors } => {
                        grow -= i128::from(self.map.mapped_in(*lba, *sectors));
                    }
                }
            }
            debug_assert!(grow <= i128::from(req_sectors));
            if grow > 0 && i128::from(live) + grow > i128::from(cap) {
                return Err(Error::NoSpace {
                    needed_bytes: grow as u64 * ss,
                    free_bytes: cap.saturating_sub(live) * ss,
                });
            }
        }
        let req_entries = req.segments().len() as u64;
        if !self.batch_empty()
            && self.buf_sectors
                + req_sectors
                + ((self.entries + req_entries) * ENTRY_CHARGE).div_ceil(ss)
                > self.batch_limit
        {
            self.write_batch(m, true)?;
        }
        if self.batch_empty() {
            match self.make_room(m) {
                Ok(()) => {}
                // A trim only frees space, so it is never refused for the
                // lack of it: write it at once as its own record, from the
                // checkpoint reserve's margin, so the cleaner can use what
                // it frees and no later write joins an unreserved batch.
                Err(Error::NoSpace { .. }) if req_sectors == 0 => {
                    return self.submit_trims_unreserved(m, req);
                }
                Err(e) => return Err(e),
            }
        }
        let mut trimmed = 0;
        for seg in req.into_segments() {
            match seg {
                Segment::Write { lba, data } => self.batch_write(lba, &data),
                Segment::Trim { lba, sectors } => {
                    trimmed += sectors;
                    self.batch_trim(lba, sectors);
                }
            }
        }
        self.stats.requests += 1;
        self.stats.submitted_bytes += req_sectors * ss;
        self.stats.trimmed_sectors += trimmed;
        Ok(())
    }

    /// A trim-only request that arrives when `make_room` cannot restore
    /// the free-segment reserve: applied and written as one user record
    /// right away (no media flush), if that record and a worst-case
    /// checkpoint fit in the free segments. The batch is empty.
    fn submit_trims_unreserved(&mut self, m: &dyn Media, req: Request) -> Result<()> {
        debug_assert!(self.batch_empty());
        let trims: Vec<(u64, u64)> = req
            .segments()
            .iter()
            .map(|s| match s {
                Segment::Trim { lba, sectors } => (*lba, *sectors),
                Segment::Write { .. } => unreachable!("trim-only request"),
            })
            .collect();
        let eb = entry_bytes(Kind::User, &[], &trims);
        let (_, total) = record_size(&self.l, self.user.off, 0, eb);
        let need = span_needed(self.l.seg_sectors, self.user.off, total) + self.l.ckpt_segs;
        let free = self.segs.free_count();
        if free < need {
            return Err(Error::NoSpace {
                needed_bytes: need * self.l.sb.segment_bytes,
                free_bytes: free * self.l.sb.segment_bytes,
            });
        }
        let mut trimmed = 0;
        for &(lba, n) in &trims {
            trimmed += n;
            self.batch_trim(lba, n);
        }
        self.write_batch(m, true)?;
        self.stats.requests += 1;
        self.stats.trimmed_sectors += trimmed;
        Ok(())
    }

    fn batch_write(&mut self, lba: u64, data: &[u8]) {
        let ss = self.l.ss;
        let n = data.len() as u64 / ss;
        let end = lba + n;
        // The common case, with one map lookup: none of it is in the batch
        // yet (unmapped, or one media extent replaced whole).
        let pos = self.buf_sectors;
        let (l, segs) = (&self.l, &mut self.segs);
        if self.map.insert_over_media(lba, n, pos, true, |p| {
            debug_assert!(!p.pending, "appended over pending data");
            l.for_each_seg(p.loc, p.len, |s, k| segs.sub_live(s, k));
        }) {
            self.batch_appended(lba, data);
            return;
        }
        // Sectors already in the batch are overwritten in place (written
        // once); `covered` counts them.
        let mut covered = 0;
        {
            let (map, buf, reserve) = (&self.map, &mut self.buf, self.hdr_reserve);
            let buf = buf.as_mut().expect("batch buffer");
            map.for_each_in(lba, n, |p| {
                if p.pending {
                    let src = &data[((p.lba - lba) * ss) as usize..][..(p.len * ss) as usize];
                    let dst = ((reserve + p.loc) * ss) as usize;
                    buf[dst..dst + src.len()].copy_from_slice(src);
                    covered += p.len;
                }
            });
        }
        if covered == 0 {
            // The common case: nothing of it in the batch yet.
            self.batch_append(lba, data);
            return;
        }
        self.digest = None;
        if covered == n {
            return;
        }
        // Append the gaps between the pending pieces.
        let pending: Vec<Piece> = self
            .map
            .pieces(lba, n)
            .into_iter()
            .filter(|p| p.pending)
            .collect();
        let mut at = lba;
        for p in pending {
            if p.lba > at {
                self.batch_append(
                    at,
                    &data[((at - lba) * ss) as usize..((p.lba - lba) * ss) as usize],
                );
            }
            at = p.lba + p.len;
        }
        if at < end {
            self.batch_append(at, &data[((at - lba) * ss) as usize..]);
        }
    }

    fn batch_append(&mut self, lba: u64, data: &[u8]) {
        let n = data.len() as u64 / self.l.ss;
        let pos = self.buf_sectors;
        let (l, segs) = (&self.l, &mut self.segs);
        self.map.insert(lba, n, pos, true, |p| {
            debug_assert!(!p.pending, "appended over pending data");
            l.for_each_seg(p.loc, p.len, |s, k| segs.sub_live(s, k));
        });
        self.batch_appended(lba, data);
    }

    /// The rest of `batch_append` once the map holds `lba..` as pending
    /// at the end of the buffer: the data, the counters and the run list.
    fn batch_appended(&mut self, lba: u64, data: &[u8]) {
        let ss = self.l.ss;
        let n = data.len() as u64 / ss;
        let pos = self.buf_sectors;
        let buf = self.buf.as_mut().expect("batch buffer");
        debug_assert_eq!(buf.len() as u64, (self.hdr_reserve + pos) * ss);
        debug_assert!(self.hdr_reserve <= self.max_hdr_reserve);
        match self.digest.as_mut() {
            // In pieces, so that each is digested while it is still in the
            // L1/L2 cache from the copy.
            Some(digest) => {
                for piece in data.chunks(DIGEST_PIECE_BYTES) {
                    buf.extend_from_slice(piece);
                    digest.update(piece);
                }
            }
            None => buf.extend_from_slice(data),
        }
        self.buf_sectors += n;
        self.pending_sectors += n;
        match self.runs.last_mut() {
            Some((bpos, rlba, rlen)) if *bpos + *rlen == pos && *rlba + *rlen == lba => *rlen += n,
            _ => {
                self.runs.push((pos, lba, n));
                self.entries += 1;
            }
        }
    }

    fn batch_trim(&mut self, lba: u64, n: u64) {
        let (l, segs) = (&self.l, &mut self.segs);
        let mut dead = 0;
        self.map.remove(lba, n, |p| {
            if p.pending {
                dead += p.len;
            } else {
                l.for_each_seg(p.loc, p.len, |s, k| segs.sub_live(s, k));
            }
        });
        self.dead += dead;
        self.pending_sectors -= dead;
        match self.trims.last_mut() {
            Some((tl, tn)) if *tl + *tn == lba => *tn += n,
            _ => {
                self.trims.push((lba, n));
                self.entries += 1;
            }
        }
    }

    /// Writes the batch as one user record (no media flush). `behind`: with
    /// write-behind on, only start the write (the caller goes on without
    /// waiting for it). Callers that wait right after (flush, checkpoint)
    /// pass false: handing the record to the writer thread and waiting for
    /// it costs two thread wake-ups for nothing.
    pub fn write_batch(&mut self, m: &dyn Media, behind: bool) -> Result<()> {
        if self.batch_empty() {
            return Ok(());
        }
        let ss = self.l.ss as usize;
        // Live pieces of the batch, in buffer order: (buffer position, lba,
        // len, whether it is exactly one pending extent of the map).
        let mut live: Vec<(u64, u64, u64)> = Vec::with_capacity(self.runs.len());
        let mut exact: Vec<bool> = Vec::with_capacity(self.runs.len());
        for &(bpos, lba, len) in &self.runs {
            // With no dead sectors every run is still whole in the map
            // (sectors of the batch leave it only by a trim, which counts
            // them dead; overwrites go in place): no lookup needed.
            if self.dead == 0 || self.map.exact_pending(lba, len, bpos).is_some() {
                debug_assert!(
                    self.map.mapped_in(lba, len) == len && {
                        let mut whole = true;
                        self.map.for_each_in(lba, len, |p| {
                            whole &= p.pending && p.loc == bpos + (p.lba - lba)
                        });
                        whole
                    },
                    "run {lba}+{len} at {bpos} is not whole in the map"
                );
                // It cannot join the previous piece: runs that continue
                // each other are merged when appended.
                debug_assert!(
                    !matches!(live.last(), Some((b, l, n)) if *b + *n == bpos && *l + *n == lba)
                );
                live.push((bpos, lba, len));
                exact.push(true);
                continue;
            }
            self.map.for_each_in(lba, len, |p| {
                if p.pending && p.loc == bpos + (p.lba - lba) {
                    match live.last_mut() {
                        Some((b, l, n)) if *b + *n == p.loc && *l + *n == p.lba => {
                            *n += p.len;
                            *exact.last_mut().expect("one per piece") = false;
                        }
                        _ => {
                            live.push((p.loc, p.lba, p.len));
                            exact.push(false);
                        }
                    }
                }
            });
        }
        let mut buf = self.buf.take().expect("batch buffer");
        let mut reserve = self.hdr_reserve;
        let r0 = reserve as usize * ss;
        // Where the map's pending extents point, then compact away dead
        // sectors.
        let orig: Vec<u64> = live.iter().map(|e| e.0).collect();
        let mut dst = 0u64;
        for e in live.iter_mut() {
            if e.0 != dst {
                let from = r0 + e.0 as usize * ss;
                buf.copy_within(from..from + e.2 as usize * ss, r0 + dst as usize * ss);
                e.0 = dst;
            }
            dst += e.2;
        }
        buf.resize(r0 + dst as usize * ss);
        let runs: Vec<Run> = live
            .iter()
            .map(|&(_, lba, len)| Run { lba, len, old: 0 })
            .collect();
        let trims = std::mem::take(&mut self.trims);
        // Dead sectors were compacted away above: the running digest then
        // covers bytes that are no longer in the record.
        let digest = self
            .digest
            .replace(PayloadDigest::new())
            .filter(|_| self.dead == 0)
            .map(|d| d.finish());
        let r = self.write_record(
            m,
            Kind::User,
            &trims,
            &runs,
            &mut buf,
            &mut reserve,
            behind,
            digest,
        );
        self.hdr_reserve = reserve;
        buf.resize(reserve as usize * ss);
        self.buf = Some(buf);
        // Any failure here (not only I/O) leaves the map pointing into a
        // buffer that no longer holds the batch: fail-stop, never go on.
        let place = match r {
            Ok(place) => place,
            Err(e) => {
                if self.failed.is_none() {
                    self.failed = Some(format!("batch write failed: {e}"));
                }
                return Err(e);
            }
        };
        let mut d = 0;
        for (i, run) in runs.iter().enumerate() {
            let mut first = None;
            let mut pieces = 0;
            place.for_each_phys(&self.l, place.h + d, run.len, |phys, n| {
                first.get_or_insert((phys, n));
                pieces += 1;
            });
            let (phys, n) = first.expect("a run has sectors");
            if exact[i] && pieces == 1 && self.map.commit_pending(run.lba, n, orig[i], phys) {
                // In place: the extent was exactly this run's pending data.
                debug_assert_eq!(n, run.len);
                self.pending_sectors -= n;
                let (l, segs) = (&self.l, &mut self.segs);
                l.for_each_seg(phys, n, |s, k| segs.add_live(s, k));
            } else {
                let mut x = 0;
                let mut all = Vec::with_capacity(pieces);
                place.for_each_phys(&self.l, place.h + d, run.len, |phys, n| all.push((phys, n)));
                for (phys, n) in all {
                    self.map_media(run.lba + x, n, phys);
                    x += n;
                }
            }
            d += run.len;
        }
        debug_assert_eq!(
            self.pending_sectors, 0,
            "pending extents left after a batch"
        );
        self.runs.clear();
        self.buf_sectors = 0;
        self.dead = 0;
        self.entries = 0;
        Ok(())
    }

    /// Maps `lba..lba+n` to media sectors `phys..`, keeping segment live
    /// counts (and the pending count) right.
    pub fn map_media(&mut self, lba: u64, n: u64, phys: u64) {
        let (l, segs) = (&self.l, &mut self.segs);
        let mut pending = 0;
        self.map.insert(lba, n, phys, false, |p| {
            if p.pending {
                pending += p.len;
            } else {
                l.for_each_seg(p.loc, p.len, |s, k| segs.sub_live(s, k));
            }
        });
        self.pending_sectors -= pending;
        l.for_each_seg(phys, n, |s, k| segs.add_live(s, k));
    }

    /// Unmaps `lba..lba+n` (media extents only; used by replay).
    pub fn unmap(&mut self, lba: u64, n: u64) {
        let (l, segs) = (&self.l, &mut self.segs);
        self.map.remove(lba, n, |p| {
            debug_assert!(!p.pending);
            l.for_each_seg(p.loc, p.len, |s, k| segs.sub_live(s, k));
        });
    }

    // ------------------------------------------------------------ records

    /// Appends one record to `kind`'s stream. `buf` holds `*reserve`
    /// sectors of room for the header followed by the payload; the header
    /// goes into the last of them and the record is written from `buf`
    /// without a copy. If the header needs more room, the payload is moved
    /// up inside `buf` (when its capacity allows; `*reserve` then grows),
    /// else copied once into a new buffer. Returns where it went; the
    /// caller updates the map. With write-behind on and `behind`, a record
    /// written from `buf` is only started: `buf` goes to the writer thread
    /// and is replaced by the spare (empty) buffer. `digest`: the
    /// payload's digest if the caller kept it while filling `buf`.
    #[allow(clippy::too_many_arguments)]
    pub fn write_record(
        &mut self,
        m: &dyn Media,
        kind: Kind,
        trims: &[(u64, u64)],
        runs: &[Run],
        buf: &mut AlignedBuf,
        reserve: &mut u64,
        behind: bool,
        digest: Option<u64>,
    ) -> Result<Placement> {
        let ss = self.l.ss;
        let seg_sectors = self.l.seg_sectors;
        debug_assert!(*reserve >= 1 && buf.len() as u64 >= *reserve * ss);
        let data = buf.len() as u64 / ss - *reserve;
        let eb = entry_bytes(kind, runs, trims);
        let stream = match kind {
            Kind::User => self.user,
            Kind::Gc => self.gc,
        };
        let (h, total) = record_size(&self.l, stream.off, data, eb);
        let k = span_needed(seg_sectors, stream.off, total);
        if k as usize > MAX_SPAN {
            return Err(Error::TooLarge {
                detail: format!("a record of {total} sectors spans {k} segments"),
            });
        }
        // The GC stream also takes recycled segments (first).
        let available = match kind {
            Kind::User => self.segs.free_count(),
            Kind::Gc => self.segs.free_count() + self.segs.recycled_count(),
        };
        if available < k {
            return Err(Error::NoSpace {
                needed_bytes: k * self.l.sb.segment_bytes,
                free_bytes: available * self.l.sb.segment_bytes,
            });
        }
        let span: Vec<u32> = (0..k)
            .map(|_| {
                match kind {
                    Kind::User => self.segs.alloc(SegState::OpenUser),
                    Kind::Gc => self.segs.alloc_gc(),
                }
                .expect("free segment counted")
            })
            .collect();
        let header = RecordHeader {
            kind,
            header_sectors: h as u32,
            uuid: self.uuid,
            epoch: self.epoch,
            seq: stream.seq,
            payload_sectors: data,
            span: span.clone(),
            runs: runs.to_vec(),
            trims: trims.to_vec(),
        };
        let mut segs_list = Vec::with_capacity(1 + span.len());
        segs_list.push(stream.seg);
        segs_list.extend_from_slice(&span);
        let place = Placement {
            segs: segs_list,
            off: stream.off,
            h,
            total,
        };
        // The record goes out from byte `start` of `buf`, or from `big`
        // when the header outgrew what `buf` can make room for.
        let mut big = None;
        let r = *reserve;
        let grow_ok = (h + data) * ss <= buf.capacity() as u64
            && (kind != Kind::User || h <= self.max_hdr_reserve);
        let start = if h <= r {
            ((r - h) * ss) as usize
        } else if grow_ok {
            let old_len = buf.len();
            buf.resize(((h + data) * ss) as usize);
            buf.copy_within((r * ss) as usize..old_len, (h * ss) as usize);
            *reserve = h;
            0
        } else {
            let mut b = AlignedBuf::zeroed((total * ss) as usize);
            b[(h * ss) as usize..].copy_from_slice(&buf[(r * ss) as usize..]);
            big = Some(b);
            0
        };
        {
            let out: &mut [u8] = match big.as_mut() {
                Some(b) => &mut b[..],
                None => &mut buf[start..],
            };
            debug_assert_eq!(out.len() as u64, total * ss);
            let hb = (h * ss) as usize;
            header.encode_into(&mut out[..hb]);
            let crc = match digest {
                Some(d) => {
                    debug_assert_eq!(d, PayloadDigest::of(&out[hb..]), "running digest");
                    record_crc_with(&out[..hb], d)
                }
                None => record_crc(&out[..hb], &out[hb..]),
            };
            set_crc(&mut out[..hb], crc);
        }
        let mut pieces = Vec::with_capacity(place.segs.len());
        let mut v = 0u64;
        place.for_each_phys(&self.l, 0, total, |phys, n| {
            pieces.push(RecordPiece { phys, v, n });
            v += n;
        });
        // Everything above (header, digest) is CPU work that overlaps the
        // writes in flight. A record that goes behind joins the writer's
        // queue (once it has room); one written here waits until the queue
        // is empty. Either way records reach the media in stream order, one
        // write at a time.
        if behind && big.is_none() && self.wb.is_some() {
            self.settle_slot()?;
        } else {
            self.settle()?;
        }
        match (self.wb.as_mut(), big) {
            // A batch record in the batch buffer goes behind: the buffer
            // travels to the writer thread and the batch continues in the
            // spare. (GC and oversized records are rare; they go at once.)
            (Some(wb), None) if behind => {
                debug_assert!(wb.is_media(m), "write-behind on another media");
                let spare = wb.take_spare(buf.capacity());
                let full = std::mem::replace(buf, spare);
                wb.start(full, start, pieces, ss)
                    .map_err(|e| io_err("write-behind start", e))?;
            }
            (_, big) => {
                debug_assert!(self.media_idle(), "write while a write is in flight");
                let out: &[u8] = match &big {
                    Some(b) => &b[..],
                    None => &buf[start..],
                };
                for p in pieces {
                    let from = (p.v * ss) as usize;
                    m.write_at(p.phys * ss, &out[from..from + (p.n * ss) as usize])
                        .map_err(|e| io_err("write", e))?;
                }
            }
        }
        match kind {
            Kind::User => {
                self.stats.media_header_bytes += h * ss;
                self.stats.media_payload_bytes += data * ss;
            }
            Kind::Gc => self.stats.media_gc_bytes += total * ss,
        }
        self.unsynced = true;
        self.write_gen += 1;
        self.log_since_ckpt += total * ss;
        self.note_record(kind, &place);
        Ok(place)
    }

    /// Segment and stream bookkeeping for a record just written or
    /// replayed (its span segments already taken from the free set).
    pub fn note_record(&mut self, kind: Kind, place: &Place) {
        let start = place.segs[0];
        let stamp = self.user.seq;
        let owner = crate::segments::Owner {
            seg: start,
            off: place.off as u32,
            gen: self.segs.info[start as usize].gen,
        };
        {
            let si = &mut self.segs.info[start as usize];
            if si.first_rec == NO_RECORD {
                si.first_rec = place.off as u32;
            }
            si.stamp = stamp;
        }
        let (end_seg, end_off) = place.end(&self.l);
        let n = place.segs.len();
        for (i, &s) in place.segs.iter().enumerate() {
            if i > 0 {
                let si = &mut self.segs.info[s as usize];
                si.owner = Some(owner);
                si.stamp = stamp;
            }
            if i + 1 < n {
                self.segs.set_state(s, SegState::Sealed);
            }
        }
        let stream = match kind {
            Kind::User => &mut self.user,
            Kind::Gc => &mut self.gc,
        };
        debug_assert_eq!(end_seg, place.segs[n - 1]);
        stream.seg = end_seg;
        stream.off = end_off;
        stream.seq += 1;
    }

    // ------------------------------------------------------------ flush

    /// The part of a flush that needs the lock: the batch is written and
    /// every write-behind write is done, so a media flush from here on
    /// covers every request submitted so far.
    pub fn flush_prepare(&mut self, m: &dyn Media) -> Result<()> {
        self.write_batch(m, false)?;
        // Every acknowledged request is on the media before it is flushed.
        self.settle()
    }

    /// Flushes the media (everything written is durable), then recycles
    /// what that flush made recyclable.
    fn media_flush(&mut self, m: &dyn Media) -> Result<()> {
        debug_assert!(self.media_idle());
        let index = self.start_media_flush();
        m.flush().map_err(|e| io_err("flush", e))?;
        self.media_flushed(index);
        self.unsynced = false;
        Ok(())
    }

    /// Numbers a media flush about to start (see `media_flushed`).
    pub fn start_media_flush(&mut self) -> u64 {
        self.media_flush_starts += 1;
        self.media_flush_starts
    }

    /// Media flush number `index` completed: everything written before it
    /// started is durable.
    pub fn media_flushed(&mut self, index: u64) {
        self.stats.media_flushes += 1;
        self.recycle(index);
    }

    /// Hands the GC stream the cleaned segments that media flush number
    /// `index` made reusable without a checkpoint (see `SegTable::recycle`
    /// for why that is safe), once no read of them is in flight.
    fn recycle(&mut self, index: u64) {
        if !self.l.gc_recycles() || self.segs.recyclable_count() == 0 {
            return;
        }
        let readers = Arc::clone(&self.readers);
        let _no_reads = readers.write().unwrap_or_else(|e| e.into_inner());
        self.segs.recycle(index);
    }

    fn ckpt_interval(&self) -> u64 {
        self.ckpt_interval_base.max(16 * self.last_blob_bytes)
    }

    /// Whether anything was written or cleaned since the last checkpoint:
    /// every change of the map or the segment table goes through a record
    /// (counted in `log_since_ckpt`) or the batch, and cleaning leaves its
    /// victims in quarantine.
    pub fn changed_since_checkpoint(&self) -> bool {
        !self.batch_empty()
            || self.log_since_ckpt > 0
            || self.segs.quarantine_count() > 0
            || self.segs.recycled_count() > 0
    }

    /// Writes the batch, then a checkpoint.
    pub fn checkpoint(&mut self, m: &dyn Media) -> Result<()> {
        self.write_batch(m, false)?;
        self.checkpoint_core(m)
    }

    /// Writes a checkpoint of the current state (the batch must be empty):
    /// blob into free segments, media flush, slot, media flush. Then frees
    /// the quarantined segments and the previous blob's segments.
    pub fn checkpoint_core(&mut self, m: &dyn Media) -> Result<()> {
        debug_assert!(self.batch_empty() && self.pending_sectors == 0);
        // The blob maps the record in flight: it must be written before the
        // checkpoint's media flush (and nothing is discarded under it).
        self.settle()?;
        let ss = self.l.ss;
        let seg_bytes = self.l.sb.segment_bytes;
        let gen = self.ckpt_gen + 1;
        let entries: u64 = self.map.iter().map(|p| p.len.div_ceil((1 << 24) - 1)).sum();
        let bound = crate::checkpoint::blob_bytes_bound(self.l.segs as usize, entries as usize);
        let k = bound.div_ceil(seg_bytes);
        if k as usize > MAX_BLOB_SEGS || self.segs.free_count() < k {
            return Err(Error::NoSpace {
                needed_bytes: bound,
                free_bytes: self.segs.free_count() * seg_bytes,
            });
        }
        let blob_segs: Vec<u32> = (0..k)
            .map(|_| {
                self.segs
                    .alloc(SegState::Ckpt)
                    .expect("free segment counted")
            })
            .collect();
        // A sealed segment with no live data (emptied by overwrites and
        // trims, or cleaned before a crash and found so again by recovery,
        // which does not know what was quarantined) is as dead as a
        // quarantined one: once this checkpoint is durable nothing can read
        // it. Releasing it here, without a cleaning pass, is what lets the
        // checkpoint written at open give back what GC had freed before a
        // crash instead of leaving it to a cleaner that may be short of
        // headroom.
        let empty: Vec<u32> = (0..self.l.segs)
            .filter(|&s| {
                let i = &self.segs.info[s as usize];
                i.state == SegState::Sealed && i.live == 0
            })
            .collect();
        for s in empty {
            self.segs.quarantine_seg(s, self.media_flush_starts);
        }
        // The segment table as it is once this checkpoint is durable.
        let mut table = self.segs.info.clone();
        for i in &mut table {
            if matches!(i.state, SegState::Quarantine | SegState::Recycled) {
                i.state = SegState::Free;
            }
        }
        for &s in &self.ckpt_segs {
            table[s as usize].state = SegState::Free;
        }
        for i in &mut table {
            if i.state == SegState::Free {
                i.owner = None;
                i.first_rec = NO_RECORD;
            }
        }
        let mut blob = encode_blob(
            self.uuid,
            gen,
            self.epoch,
            self.user.pos(),
            self.gc.pos(),
            &table,
            self.map.iter().map(|p| (p.lba, p.loc, p.len)),
            bound as usize,
        );
        let blob_bytes = blob.len() as u64;
        let blob_crc = crc32c::crc32c(&blob);
        blob.resize(blob.len().next_multiple_of(ss as usize), 0);
        let mut written = 0u64;
        debug_assert!(self.media_idle(), "checkpoint while a write is in flight");
        for (i, chunk) in blob.chunks(seg_bytes as usize).enumerate() {
            let at = self.l.seg_start(blob_segs[i]) * ss;
            m.write_at(at, chunk)
                .map_err(|e| io_err("checkpoint write", e))?;
            written += chunk.len() as u64;
        }
        self.media_flush_starts += 1;
        m.flush().map_err(|e| io_err("checkpoint flush", e))?;
        let slot = Slot {
            uuid: self.uuid,
            gen,
            epoch: self.epoch,
            blob_bytes,
            blob_crc,
            blob_segs: blob_segs.clone(),
        };
        let sb = slot.encode();
        m.write_at(SLOT_OFFSETS[(gen % 2) as usize], &sb)
            .map_err(|e| io_err("checkpoint slot write", e))?;
        self.media_flush_starts += 1;
        m.flush().map_err(|e| io_err("checkpoint flush", e))?;
        self.stats.media_flushes += 2;
        self.stats.media_checkpoint_bytes += written + sb.len() as u64;
        // Durable: release what only the previous checkpoint needed, once
        // no read that may still be reading it is in flight. Every sealed
        // segment is now covered by this checkpoint (cleaned, it can be
        // recycled without another one).
        let mut freed = self.segs.take_quarantine();
        freed.append(&mut self.ckpt_segs);
        let readers = Arc::clone(&self.readers);
        let _no_reads = readers.write().unwrap_or_else(|e| e.into_inner());
        for s in freed {
            self.segs.release(s);
            let _ = m.discard(self.l.seg_start(s) * ss, seg_bytes);
        }
        self.segs.cover_sealed();
        self.ckpt_segs = blob_segs;
        self.ckpt_gen = gen;
        self.log_since_ckpt = 0;
        self.unsynced = false;
        self.durable_requests = self.stats.requests;
        self.last_blob_bytes = blob_bytes;
        Ok(())
    }

    // ------------------------------------------------------------ space

    /// Segments one cleaning round frees beyond the hard reserve: an eighth
    /// of the segments that live data does not need, between 1 and
    /// segs/16, so the checkpoint that returns them is shared by many
    /// victims while little space sits in quarantine near full.
    fn clean_batch_segs(&self) -> u64 {
        if let Some(fixed) = self.gc_batch_segs {
            return fixed;
        }
        let live_sectors: u64 = self.segs.info.iter().map(|i| u64::from(i.live)).sum();
        let live_segs = live_sectors.div_ceil(self.l.seg_sectors);
        // The open user and GC segments, the current blob and the reserve.
        let fixed = 2 + self.l.ckpt_segs + self.l.hard_free;
        let spare = u64::from(self.l.segs).saturating_sub(fixed + live_segs);
        (spare / 8).clamp(1, (u64::from(self.l.segs) / 16).max(1))
    }

    /// Runs with an empty batch: checkpoints by log volume, and cleans
    /// segments until enough are free for a whole batch plus the reserves.
    ///
    /// Watermarks: cleaning starts when no more than `hard_free` segments
    /// are free and goes on until `clean_batch_segs` more are free,
    /// quarantined or recycled, then one checkpoint returns them all. A
    /// checkpoint writes the whole map, so cleaning one victim per
    /// checkpoint made checkpoints cost more than the GC copies (0.5 bytes
    /// per payload byte at 50% fill); a fixed batch of segs/16, on the
    /// other hand, holds back space the copies need near full.
    ///
    /// The copies themselves go into recycled victims (`SegTable::recycle`:
    /// cleaned, covered by the durable checkpoint, and a media flush
    /// since), so near full, where a victim is mostly live, a round no
    /// longer eats the free segments it is meant to return and stops for a
    /// checkpoint after every few victims. When the copy of the next victim
    /// needs more than is recycled and `RECYCLE_BATCH` victims (or all
    /// that the free pool can spare) wait for a flush, the media is
    /// flushed to recycle them.
    ///
    /// Reserve rule: a cleaning pass starts only if, after the GC records
    /// it will write (planned exactly, see `gc::plan_clean`), a worst-case
    /// checkpoint still fits; a checkpoint then returns the victims. So a
    /// victim with no live data can always be cleaned, and below the GC
    /// headroom the cleaner still makes progress with victims whose copy
    /// fits, instead of waiting for headroom that only cleaning can create.
    pub fn make_room(&mut self, m: &dyn Media) -> Result<()> {
        debug_assert!(self.batch_empty());
        if self.log_since_ckpt >= self.ckpt_interval() {
            self.checkpoint_core(m)?;
        }
        let hard = self.l.hard_free;
        if self.segs.free_count() > hard {
            return Ok(());
        }
        let soft = hard + 1 + self.clean_batch_segs();
        let ckpt_reserve = self.l.ckpt_segs;
        let headroom = ckpt_reserve + GC_HEADROOM_SEGS;
        // What a checkpoint would return besides the free segments.
        let returned = |st: &State| st.segs.quarantine_count() + st.segs.recycled_count();
        let mut rounds = 0u64;
        while self.segs.free_count() < soft {
            rounds += 1;
            if rounds > 4 * u64::from(self.l.segs) + 16 {
                break;
            }
            let free = self.segs.free_count();
            // Short of space (greedy) counts what the copies can draw on
            // without a checkpoint: recycled segments and those a flush
            // would recycle. Counting free segments alone, a round that
            // spent a few on its first copies ran greedy to its end (90/10
            // hot/cold at 80%: GC WA 2.94 instead of 2.02).
            let waiting = if self.l.gc_recycles() {
                self.segs.recyclable_count()
            } else {
                0
            };
            let drawable = free + self.segs.recycled_count() + waiting;
            let greedy = drawable < hard;
            if let Some(v) = crate::gc::pick_victim(self, greedy) {
                let plan = crate::gc::plan_clean(self, m, v)?;
                let mut from_free = plan.segments.saturating_sub(self.segs.recycled_count());
                if from_free > 0
                    && waiting > 0
                    && (waiting >= RECYCLE_BATCH || free < headroom + from_free)
                {
                    self.settle()?;
                    self.media_flush(m)?;
                    from_free = plan.segments.saturating_sub(self.segs.recycled_count());
                }
                if free >= ckpt_reserve + from_free {
                    crate::gc::clean(self, m, plan)?;
                    debug_assert!(self.segs.free_count() >= ckpt_reserve);
                    let free = self.segs.free_count();
                    if free < headroom || free + returned(self) >= soft {
                        self.checkpoint_core(m)?;
                    }
                    continue;
                }
            }
            if returned(self) > 0 {
                self.checkpoint_core(m)?;
                continue;
            }
            break;
        }
        if self.segs.free_count() < hard {
            return Err(Error::NoSpace {
                needed_bytes: (hard - self.segs.free_count()) * self.l.sb.segment_bytes,
                free_bytes: 0,
            });
        }
        Ok(())
    }
}

/// Bytes copied into the batch buffer between digest updates: small enough
/// to stay in the L1/L2 cache from the copy to the digest.
const DIGEST_PIECE_BYTES: usize = 32 << 10;

/// Cleaned victims the cleaner lets wait for a media flush before it
/// flushes to recycle them (unless the free pool cannot spare more): one
/// flush per few victims, not per victim.
const RECYCLE_BATCH: u64 = 4;

/// Header sectors and total sectors of a record with `data` payload
/// sectors and `eb` bytes of entries, written at sector `off` of its
/// stream's open segment. The header grows with the span list, which
/// depends on the record's size: estimate the span from a one-sector-larger
/// header and round up (a slightly large header is harmless; every caller
/// that plans space uses this same function, so plans and writes agree).
pub fn record_size(l: &Layout, off: u64, data: u64, eb: usize) -> (u64, u64) {
    let h0 = u64::from(header_sectors_for(l.ss, 0, eb));
    let span_est = (span_needed(l.seg_sectors, off, h0 + 1 + data) as usize + 1).min(MAX_SPAN);
    let h = u64::from(header_sectors_for(l.ss, span_est, eb));
    (h, h + data)
}

/// Alias used by the bookkeeping helpers.
pub type Place = Placement;

#[cfg(test)]
mod tests {
    use atomic_api::conformance::pattern;
    use atomic_api::{AtomicDevice, Error, Request};

    use crate::segments::SegState;
    use crate::{FormatOptions, LogDevice, OpenOptions, SimMedia};

    const SEG: u64 = 64 << 10;

    /// 24 segments of 64 KiB with 512-byte sectors; no checkpoints by log
    /// volume, so the tests decide when they happen.
    fn small() -> LogDevice<SimMedia> {
        let media = SimMedia::new(512, 16384 + 24 * SEG);
        LogDevice::format(
            media,
            &FormatOptions {
                segment_size_bytes: SEG,
                checkpoint_interval_bytes: Some(1 << 30),
                uuid: Some([9; 16]),
                ..FormatOptions::default()
            },
        )
        .unwrap()
    }

    fn write(dev: &LogDevice<SimMedia>, lba: u64, n: u64, tag: u8) {
        let mut r = Request::new();
        r.write(lba, pattern(512, lba, n, tag));
        dev.submit(r).unwrap();
    }

    fn trim(dev: &LogDevice<SimMedia>, lba: u64, n: u64) -> atomic_api::Result<()> {
        let mut r = Request::new();
        r.trim(lba, n);
        dev.submit(r)
    }

    /// Takes free segments away (marked as checkpoint segments that no
    /// checkpoint owns, so nothing ever returns them) until `left` remain.
    fn steal_free(dev: &LogDevice<SimMedia>, left: u64) {
        let mut st = dev.lock_state();
        while st.segs.free_count() > left {
            st.segs.alloc(SegState::Ckpt).unwrap();
        }
    }

    /// Segments the map's data lives in.
    fn segs_of(dev: &LogDevice<SimMedia>, lba: u64, n: u64) -> Vec<u32> {
        let st = dev.lock_state();
        let mut out = Vec::new();
        for p in st.map.pieces(lba, n) {
            st.l.for_each_seg(p.loc, p.len, |s, _| out.push(s));
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    #[test]
    fn checkpoint_releases_sealed_segments_without_live_data() {
        let dev = small();
        for i in 0..8 {
            write(&dev, i * 64, 64, 1);
        }
        dev.flush().unwrap();
        let used = segs_of(&dev, 0, 512);
        trim(&dev, 0, 512).unwrap();
        dev.flush().unwrap();
        let (empty, free_before) = {
            let st = dev.lock_state();
            let empty: Vec<u32> = used
                .iter()
                .copied()
                .filter(|&s| st.segs.info[s as usize].state == SegState::Sealed)
                .collect();
            for &s in &empty {
                assert_eq!(st.segs.info[s as usize].live, 0);
            }
            (empty, st.segs.free_count())
        };
        assert!(empty.len() >= 3, "sealed segments {empty:?}");
        dev.checkpoint().unwrap();
        let st = dev.lock_state();
        for &s in &empty {
            assert_eq!(
                st.segs.info[s as usize].state,
                SegState::Free,
                "segment {s} has no live data and a checkpoint no longer needs it"
            );
        }
        assert!(st.segs.free_count() >= free_before + empty.len() as u64);
        drop(st);
        dev.verify().unwrap();
        let report = crate::check(&dev.media().durable());
        assert!(report.is_clean(), "{:?}", report.findings);
    }

    #[test]
    fn cleaner_runs_below_gc_headroom_when_the_copy_fits() {
        let dev = small();
        for i in 0..8 {
            write(&dev, i * 64, 64, 2);
        }
        dev.flush().unwrap();
        // The segment holding lba 0; trim everything in it but lba 5.
        let victim = segs_of(&dev, 0, 1)[0];
        let ranges: Vec<(u64, u64)> = {
            let st = dev.lock_state();
            let start = st.l.seg_start(victim);
            let end = start + st.l.seg_sectors;
            st.map
                .iter()
                .filter(|p| p.loc < end && p.loc + p.len > start)
                .map(|p| {
                    let a = p.loc.max(start);
                    let b = (p.loc + p.len).min(end);
                    (p.lba + (a - p.loc), b - a)
                })
                .collect()
        };
        for (lba, n) in ranges {
            if (lba..lba + n).contains(&5) {
                if lba < 5 {
                    trim(&dev, lba, 5 - lba).unwrap();
                }
                if lba + n > 6 {
                    trim(&dev, 6, lba + n - 6).unwrap();
                }
            } else {
                trim(&dev, lba, n).unwrap();
            }
        }
        dev.flush().unwrap();
        let ckpt = {
            let st = dev.lock_state();
            assert_eq!(st.segs.info[victim as usize].state, SegState::Sealed);
            assert_eq!(st.segs.info[victim as usize].live, 1);
            st.l.ckpt_segs
        };
        // One segment above the checkpoint reserve: below the GC headroom,
        // but the one live sector fits in the open GC segment.
        steal_free(&dev, ckpt + 1);
        {
            let mut st = dev.lock_state();
            let r = st.make_room(dev.media());
            assert!(
                matches!(r, Ok(()) | Err(Error::NoSpace { .. })),
                "make_room: {r:?}"
            );
            assert!(
                matches!(
                    st.segs.info[victim as usize].state,
                    SegState::Free | SegState::Quarantine
                ),
                "victim {victim} with one live sector was not cleaned: {:?}",
                st.segs.info[victim as usize]
            );
        }
        dev.verify().unwrap();
        let mut buf = vec![0u8; 512];
        dev.read(5, &mut buf).unwrap();
        assert_eq!(buf, pattern(512, 5, 1, 2));
    }

    #[test]
    fn flush_waits_for_a_write_behind_write_when_the_batch_is_empty() {
        let dev = LogDevice::format(
            SimMedia::new(512, 16384 + 24 * SEG),
            &FormatOptions {
                segment_size_bytes: SEG,
                checkpoint_interval_bytes: Some(1 << 30),
                write_behind: Some(true),
                ..FormatOptions::default()
            },
        )
        .unwrap();
        write(&dev, 0, 64, 5);
        {
            // What a trim-only record written past the reserve, or a
            // submit that fails with NoSpace after writing the batch,
            // leaves behind: an empty batch and a write in flight.
            let mut st = dev.lock_state();
            st.write_batch(dev.media(), true).unwrap();
            assert!(st.batch_empty() && st.wb.as_ref().unwrap().busy());
        }
        dev.flush().unwrap();
        assert!(
            !dev.lock_state().wb.as_ref().unwrap().busy(),
            "flush returned with a write in flight"
        );
        let back = LogDevice::open(
            dev.media().durable(),
            &OpenOptions {
                read_only: true,
                ..OpenOptions::default()
            },
        )
        .unwrap();
        let mut buf = vec![0u8; 64 * 512];
        back.read(0, &mut buf).unwrap();
        assert_eq!(buf, pattern(512, 0, 64, 5));
    }

    #[test]
    fn trims_are_accepted_when_the_reserve_cannot_be_restored() {
        let dev = small();
        write(&dev, 0, 64, 3);
        dev.flush().unwrap();
        let ckpt = dev.lock_state().l.ckpt_segs;
        // Nothing to clean and only the checkpoint reserve left.
        steal_free(&dev, ckpt);
        let mut r = Request::new();
        r.write(1000, vec![7; 512]);
        assert!(matches!(dev.submit(r), Err(Error::NoSpace { .. })));
        trim(&dev, 0, 8).expect("a trim frees space and must be accepted");
        trim(&dev, 5000, 3).expect("a trim of unmapped sectors too");
        let mut r = Request::new();
        r.trim(20, 2);
        r.trim(40, 4);
        dev.submit(r).expect("a multi-segment trim too");
        dev.flush().unwrap();
        dev.verify().unwrap();
        let check = |dev: &LogDevice<SimMedia>| {
            let mut buf = vec![0u8; 64 * 512];
            dev.read(0, &mut buf).unwrap();
            let want = pattern(512, 0, 64, 3);
            for s in 0..64usize {
                let got = &buf[s * 512..(s + 1) * 512];
                if s < 8 || (20..22).contains(&s) || (40..44).contains(&s) {
                    assert!(got.iter().all(|&b| b == 0), "sector {s} not trimmed");
                } else {
                    assert_eq!(got, &want[s * 512..(s + 1) * 512], "sector {s}");
                }
            }
        };
        check(&dev);
        let again = LogDevice::open(
            dev.media().durable(),
            &OpenOptions {
                read_only: true,
                ..OpenOptions::default()
            },
        )
        .unwrap();
        check(&again);
    }

    /// Random 4 KiB overwrites of half the capacity of a 64-segment
    /// device; returns (checkpoint bytes, GC bytes, payload bytes) and
    /// checks every block reads back its last write.
    fn overwrite_half_full(gc_batch_segments: Option<u64>) -> (u64, u64, u64) {
        overwrite(64, SEG, gc_batch_segments, 0.5, true)
    }

    /// Random 4 KiB overwrites, six times the live data, with `fill` of
    /// the capacity live; `recycle` false runs as on a media formatted
    /// without `INCOMPAT_GC_RECYCLE`. Checks the content at the end and
    /// returns the checkpoint, GC and payload bytes of the overwrites.
    fn overwrite(
        segments: u64,
        segment_bytes: u64,
        gc_batch_segments: Option<u64>,
        fill: f64,
        recycle: bool,
    ) -> (u64, u64, u64) {
        let media = SimMedia::new(512, 16384 + segments * segment_bytes);
        media.set_recording(false);
        let dev = LogDevice::format(
            media,
            &FormatOptions {
                segment_size_bytes: segment_bytes,
                overprovision_percent: 10,
                gc_batch_segments,
                uuid: Some([3; 16]),
                ..FormatOptions::default()
            },
        )
        .unwrap();
        if !recycle {
            dev.lock_state().l.sb.incompat &= !crate::layout::INCOMPAT_GC_RECYCLE;
        }
        let blocks = (dev.space().capacity_bytes as f64 / 4096.0 * fill) as u64;
        let mut last = vec![0u8; blocks as usize];
        for b in 0..blocks {
            write(&dev, b * 8, 8, 0);
        }
        dev.flush().unwrap();
        let before = dev.stats();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for i in 0..blocks * 6 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = x % blocks;
            let tag = (i % 250) as u8 + 1;
            write(&dev, b * 8, 8, tag);
            last[b as usize] = tag;
            if i % 16 == 15 {
                dev.flush().unwrap();
            }
        }
        dev.flush().unwrap();
        let mut buf = vec![0u8; 4096];
        for b in 0..blocks {
            dev.read(b * 8, &mut buf).unwrap();
            assert!(
                buf == pattern(512, b * 8, 8, last[b as usize]),
                "block {b} does not hold its last write"
            );
        }
        let s = dev.stats() - before;
        (
            s.media_checkpoint_bytes,
            s.media_gc_bytes,
            s.media_payload_bytes,
        )
    }

    /// A cleaning round frees several segments for one checkpoint: with one
    /// victim per checkpoint (the old rule), checkpoints of the whole map
    /// cost more than the GC copies themselves.
    #[test]
    fn cleaning_rounds_share_one_checkpoint() {
        let (ckpt_one, gc_one, payload) = overwrite_half_full(Some(0));
        let (ckpt_auto, gc_auto, payload_auto) = overwrite_half_full(None);
        assert_eq!(payload, payload_auto);
        assert!(gc_one > 0 && gc_auto > 0, "GC never ran");
        assert!(
            ckpt_auto * 3 < ckpt_one,
            "checkpoint bytes: {ckpt_auto} batched vs {ckpt_one} one victim per checkpoint"
        );
        // Batching holds a few segments back, which costs some GC copies,
        // but far less than the checkpoints it saves.
        assert!(
            ckpt_auto + gc_auto < ckpt_one + gc_one,
            "batched {ckpt_auto}+{gc_auto} vs {ckpt_one}+{gc_one}"
        );
    }

    /// Near full, cleaned victims recycled for the GC copies save most of
    /// the checkpoints (and the copies the held-back space cost), and the
    /// content stays right (checked by `overwrite`). Without the feature
    /// bit no segment is ever recycled.
    #[test]
    fn recycling_cleaned_segments_saves_checkpoints_near_full() {
        // Many small segments: the cleaning rounds are long enough (an
        // eighth of the spare segments) for the copies to matter.
        let (ckpt_old, gc_old, payload) = overwrite(512, 16 << 10, None, 0.9, false);
        let (ckpt_new, gc_new, payload_new) = overwrite(512, 16 << 10, None, 0.9, true);
        assert_eq!(payload, payload_new);
        assert!(gc_old > 0 && gc_new > 0, "GC never ran");
        assert!(
            ckpt_new * 2 < ckpt_old,
            "checkpoint bytes: {ckpt_new} recycling vs {ckpt_old} without"
        );
        assert!(
            ckpt_new + gc_new < ckpt_old + gc_old,
            "recycling {ckpt_new}+{gc_new} vs {ckpt_old}+{gc_old} without"
        );
    }

    #[test]
    fn without_the_feature_bit_nothing_is_recycled() {
        let media = SimMedia::new(512, 16384 + 32 * SEG);
        let dev = LogDevice::format(
            media,
            &FormatOptions {
                segment_size_bytes: SEG,
                gc_batch_segments: Some(0),
                ..FormatOptions::default()
            },
        )
        .unwrap();
        dev.lock_state().l.sb.incompat = 0;
        let blocks = dev.space().capacity_bytes / 4096 * 8 / 10;
        let mut x = 7u64;
        for i in 0..blocks * 4 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            write(&dev, (x % blocks) * 8, 8, (i % 200) as u8 + 1);
            assert_eq!(dev.lock_state().segs.recycled_count(), 0);
            if i % 8 == 7 {
                dev.flush().unwrap();
            }
        }
        assert!(dev.stats().media_gc_bytes > 0, "GC never ran");
    }
}
