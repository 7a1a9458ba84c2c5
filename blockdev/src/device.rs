//! `LogDevice`: the public face of the log-structured block layer.

use std::hash::{BuildHasher, Hasher};
use std::io;
use std::ops::Range;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};

use atomic_api::{check_read, AtomicDevice, Error, Geometry, Request, Result, Space, Stats};

use crate::layout::{
    Layout, Superblock, DATA_START_BYTES, FORMAT_VERSION, INCOMPAT_GC_RECYCLE, SB_OFFSETS,
};
use crate::media::Media;
use crate::segments::SegState;
use crate::state::{io_err, State};
use crate::write_behind::WriteBehind;

/// Options for [`LogDevice::format`].
#[derive(Clone, Debug)]
pub struct FormatOptions {
    /// Segment size in bytes (multiple of 4096, at least 16 KiB). Default 4 MiB.
    pub segment_size_bytes: u64,
    /// Share of the usable segments kept free for cleaning. Default 20.
    pub overprovision_percent: u32,
    /// Largest request in bytes; default min(4 MiB, 2 segments), at least
    /// 64 sectors.
    pub max_request_bytes: Option<u64>,
    /// Most segments per request. Default 1024.
    pub max_segments: Option<u32>,
    /// Group-commit buffer bound in bytes: a batch larger than this is
    /// written out (without a media flush). Default min(4 MiB, 2 segments).
    pub buffer_bytes: Option<u64>,
    /// Log bytes between checkpoints for the returned device (see
    /// [`OpenOptions::checkpoint_interval_bytes`]).
    pub checkpoint_interval_bytes: Option<u64>,
    /// Cleaning batch for the returned device (see
    /// [`OpenOptions::gc_batch_segments`]).
    pub gc_batch_segments: Option<u64>,
    /// Fixed uuid (tests); random by default.
    pub uuid: Option<[u8; 16]>,
    /// Write-behind for the returned device (see
    /// [`OpenOptions::write_behind`]).
    pub write_behind: Option<bool>,
}

impl Default for FormatOptions {
    fn default() -> Self {
        Self {
            segment_size_bytes: 4 << 20,
            overprovision_percent: 20,
            max_request_bytes: None,
            max_segments: None,
            buffer_bytes: None,
            checkpoint_interval_bytes: None,
            gc_batch_segments: None,
            uuid: None,
            write_behind: None,
        }
    }
}

/// Options for [`LogDevice::open`].
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    /// Never write the media; `submit` and `flush` return `ReadOnly`.
    pub read_only: bool,
    /// Log bytes between checkpoints (at least; it also grows with the map
    /// size). Default min(64 MiB, media/8), at least 1 MiB.
    pub checkpoint_interval_bytes: Option<u64>,
    /// Segments a cleaning round frees beyond the hard reserve before the
    /// one checkpoint that returns its victims. Default: an eighth of the
    /// segments live data does not need, between 1 and segments/16. Tests
    /// set 0 (one victim per checkpoint) so GC and checkpoints run inside
    /// short workloads.
    pub gc_batch_segments: Option<u64>,
    /// Write each full batch record on a writer thread while the caller
    /// fills the next batch (one write in flight, two batch buffers). The
    /// media sees the same writes in the same order either way; a write
    /// error then fails the device at the next call instead of the one that
    /// issued the write, and `flush` still returns only once everything is
    /// written and flushed. Default: [`Media::write_behind`] (on for
    /// `FileMedia`, off for `SimMedia`).
    pub write_behind: Option<bool>,
}

/// Why `format` or `open` failed. Each message names the media.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{media}: no atomfs block layer found (no superblock magic at byte 0 or 4096)")]
    NotAtomfs { media: String },
    #[error("{media}: block layer format version {found} is not supported (this build reads version {supported})")]
    UnsupportedVersion {
        media: String,
        found: u32,
        supported: u32,
    },
    #[error("{media}: unknown {kind} features {bits:#x}")]
    UnknownFeatures {
        media: String,
        bits: u32,
        kind: &'static str,
    },
    #[error("{media}: corrupt block layer: {detail}")]
    Corrupt { media: String, detail: String },
    #[error("{media}: too small: {detail}")]
    TooSmall {
        media: String,
        detail: String,
        needed_bytes: u64,
        have_bytes: u64,
    },
    #[error("{media}: invalid format options: {detail}")]
    InvalidOptions { media: String, detail: String },
    #[error("{media}: I/O error during {op}: {source}")]
    Io {
        media: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

/// The log-structured translation layer over a [`Media`].
pub struct LogDevice<M: Media> {
    /// Shared with the write-behind thread while a write is in flight.
    media: Arc<M>,
    geometry: Geometry,
    state: Mutex<State>,
    /// Signalled when a flush that ran without the state lock is done.
    flushed: Condvar,
    /// `State::readers`, reachable without the state lock.
    readers: Arc<RwLock<()>>,
}

fn random_uuid() -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(i);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        h.write_u32(std::process::id());
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    out
}

impl<M: Media> LogDevice<M> {
    /// Writes a fresh, empty block layer onto `media` (destroying what was
    /// there) and returns it open.
    pub fn format(media: M, options: &FormatOptions) -> std::result::Result<Self, OpenError> {
        let m: &dyn Media = &media;
        let describe = || m.describe();
        let ss = m.sector_size();
        let invalid = |detail: String| OpenError::InvalidOptions {
            media: describe(),
            detail,
        };
        if ss != 512 && ss != 4096 {
            return Err(invalid(format!(
                "media sector size {ss} is not 512 or 4096"
            )));
        }
        let ss64 = u64::from(ss);
        let seg = options.segment_size_bytes;
        if seg < 16384 || seg % 4096 != 0 || seg > 1 << 30 {
            return Err(invalid(format!(
                "segment size {seg} must be a multiple of 4096 between 16 KiB and 1 GiB"
            )));
        }
        if options.overprovision_percent == 0 || options.overprovision_percent > 90 {
            return Err(invalid(format!(
                "overprovision {}% must be between 1 and 90",
                options.overprovision_percent
            )));
        }
        let default_req = (4u64 << 20).min(2 * seg).max(64 * ss64);
        let max_request_bytes = options.max_request_bytes.unwrap_or(default_req);
        if max_request_bytes < 64 * ss64
            || max_request_bytes % ss64 != 0
            || max_request_bytes > 100 * seg
        {
            return Err(invalid(format!(
                "max request bytes {max_request_bytes} must be whole sectors, at least 64 sectors and at most 100 segments"
            )));
        }
        let buffer_bytes = options.buffer_bytes.unwrap_or((4u64 << 20).min(2 * seg));
        if buffer_bytes < ss64 || buffer_bytes > 100 * seg {
            return Err(invalid(format!(
                "buffer bytes {buffer_bytes} must be between one sector and 100 segments"
            )));
        }
        let len = m.len_bytes();
        let segment_count = len.saturating_sub(DATA_START_BYTES) / seg;
        let sb = Superblock {
            version: FORMAT_VERSION,
            compat: 0,
            incompat: INCOMPAT_GC_RECYCLE,
            ro_compat: 0,
            uuid: options.uuid.unwrap_or_else(random_uuid),
            sector_size: ss,
            segment_bytes: seg,
            segment_count: segment_count.min(u64::from(u32::MAX / 2)) as u32,
            media_bytes: len,
            logical_sectors: atomic_api::MIN_LOGICAL_SECTORS,
            max_request_bytes,
            max_segments: options.max_segments.unwrap_or(1024),
            overprovision_percent: options.overprovision_percent,
            buffer_bytes,
        };
        let too_small = |detail: String| OpenError::TooSmall {
            media: describe(),
            detail,
            needed_bytes: DATA_START_BYTES + 16 * seg,
            have_bytes: len,
        };
        if segment_count < 8 {
            return Err(too_small(format!(
                "{len} bytes hold {segment_count} segments of {seg} bytes; at least 8 (better 16+) are needed"
            )));
        }
        let layout = Layout::new(sb.clone()).map_err(too_small)?;
        let mut st = State::new(layout, sb.uuid, false, options.checkpoint_interval_bytes);
        st.gc_batch_segs = options.gc_batch_segments;
        let ioe = |op: &'static str| {
            move |source| OpenError::Io {
                media: describe(),
                op,
                source,
            }
        };
        let mut block = vec![0u8; ss as usize];
        block[..crate::layout::SB_BYTES].copy_from_slice(&sb.encode());
        for &at in &SB_OFFSETS {
            m.write_at(at, &block).map_err(ioe("superblock write"))?;
            st.stats.media_checkpoint_bytes += block.len() as u64;
        }
        st.epoch = 1;
        st.user.seg = st.segs.alloc(SegState::OpenUser).expect("segments");
        st.gc.seg = st.segs.alloc(SegState::OpenGc).expect("segments");
        st.checkpoint_core(m).map_err(|e| match e {
            Error::Io { op, source } => OpenError::Io {
                media: describe(),
                op,
                source,
            },
            other => OpenError::Corrupt {
                media: describe(),
                detail: other.to_string(),
            },
        })?;
        let wb = options.write_behind.unwrap_or_else(|| media.write_behind());
        Ok(Self::wrap(media, st, wb))
    }

    /// Opens the block layer on `media`: loads the newest checkpoint and
    /// rolls the log forward. A read-write open then writes a checkpoint
    /// (with a new epoch, so records left over from before can never
    /// validate again).
    pub fn open(media: M, options: &OpenOptions) -> std::result::Result<Self, OpenError> {
        let m: &dyn Media = &media;
        let (mut st, info) =
            crate::recovery::load(m, options.read_only, options.checkpoint_interval_bytes)?;
        st.gc_batch_segs = options.gc_batch_segments;
        log::debug!(
            "{}: checkpoint {}, rolled forward {} user and {} GC records ({}; {})",
            m.describe(),
            info.ckpt_gen,
            info.user_records,
            info.gc_records,
            info.user_end,
            info.gc_end
        );
        if !options.read_only {
            st.epoch += 1;
            st.checkpoint_core(m).map_err(|e| match e {
                Error::Io { op, source } => OpenError::Io {
                    media: m.describe(),
                    op,
                    source,
                },
                other => OpenError::Corrupt {
                    media: m.describe(),
                    detail: format!("cannot write the recovery checkpoint: {other}"),
                },
            })?;
        }
        let wb = options.write_behind.unwrap_or_else(|| media.write_behind());
        Ok(Self::wrap(media, st, wb))
    }

    fn wrap(media: M, mut st: State, write_behind: bool) -> Self {
        let media = Arc::new(media);
        if write_behind && !st.read_only {
            st.wb = Some(WriteBehind::new(media.clone()));
        }
        Self {
            geometry: st.l.geometry(),
            media,
            readers: Arc::clone(&st.readers),
            state: Mutex::new(st),
            flushed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state under the lock (white-box tests of the space manager).
    #[cfg(test)]
    pub(crate) fn lock_state(&self) -> MutexGuard<'_, State> {
        self.lock()
    }

    /// Flushes, writes a checkpoint and hands the media back.
    pub fn close(self) -> Result<M> {
        {
            let mut st = self.lock();
            let r = st.settle();
            st.poison(r)?;
            st.healthy()?;
            // Nothing since the last checkpoint (a read-only workload on a
            // read-write open): that checkpoint already describes the
            // device, and rewriting the whole map cost megabytes per
            // unmount.
            if !st.read_only && st.changed_since_checkpoint() {
                let m: &dyn Media = &*self.media;
                let r = st.checkpoint(m);
                st.poison(r)?;
            }
        }
        // The state holds the writer's share of the media; with no write in
        // flight (settled above) that is the only other one.
        let Self { media, state, .. } = self;
        drop(state);
        match Arc::try_unwrap(media) {
            Ok(m) => Ok(m),
            Err(_) => unreachable!("the media is still shared after close"),
        }
    }

    /// Writes the batch and a checkpoint now.
    pub fn checkpoint(&self) -> Result<()> {
        let mut st = self.lock();
        st.writable()?;
        let r = st.checkpoint(&*self.media);
        st.poison(r)
    }

    pub fn media(&self) -> &M {
        &self.media
    }

    /// Whether write-behind is on (see [`OpenOptions::write_behind`]).
    pub fn write_behind(&self) -> bool {
        self.lock().wb.is_some()
    }

    /// Number of extents in the map (for memory measurements).
    pub fn extent_count(&self) -> usize {
        self.lock().map.extents()
    }

    /// Runs the internal consistency checks (map invariants, segment live
    /// counts against the map). For tests; O(map).
    pub fn verify(&self) -> std::result::Result<(), String> {
        let st = self.lock();
        st.map.verify()?;
        let mut live = vec![0u64; st.l.segs as usize];
        for p in st.map.iter().filter(|p| !p.pending) {
            st.l.for_each_seg(p.loc, p.len, |s, n| live[s as usize] += n);
        }
        for (s, info) in st.segs.info.iter().enumerate() {
            if u64::from(info.live) != live[s] {
                return Err(format!(
                    "segment {s}: live count {} but the map has {}",
                    info.live, live[s]
                ));
            }
            if live[s] > 0
                && matches!(
                    info.state,
                    SegState::Free | SegState::Ckpt | SegState::Quarantine | SegState::Recycled
                )
            {
                return Err(format!(
                    "segment {s} is {:?} but holds live data",
                    info.state
                ));
            }
        }
        Ok(())
    }
}

impl<M: Media> AtomicDevice for LogDevice<M> {
    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn submit(&self, request: Request) -> Result<()> {
        request.validate(&self.geometry)?;
        let mut st = self.lock();
        st.writable()?;
        let r = st.submit(&*self.media, request);
        st.poison(r)
    }

    /// The media reads happen after the state lock is let go, so reads
    /// run in parallel with each other and with submits (readahead keeps
    /// several file reads in flight).
    fn read(&self, lba: u64, buf: &mut [u8]) -> Result<()> {
        check_read(&self.geometry, lba, buf.len())?;
        let r = {
            let mut st = self.lock();
            st.healthy()?;
            let plan = st.plan_read(lba, buf);
            let plan = st.poison(plan)?;
            // Taken before the state lock is let go: the only release of a
            // segment (a checkpoint, under the state lock) then waits for
            // this read. The reverse order cannot happen (no one waits for
            // the state lock while holding this), so no deadlock.
            let _reading = self.readers.read().unwrap_or_else(|e| e.into_inner());
            drop(st);
            plan.iter().try_for_each(|r| {
                self.media
                    .read_at(r.offset, &mut buf[r.at..r.at + r.len])
                    .map_err(|e| io_err("read", e))
            })
        };
        match r {
            Ok(()) => Ok(()),
            Err(e) => self.lock().poison(Err(e)),
        }
    }

    /// Group commit across threads: the media flush (fdatasync, the slow
    /// part) runs without the state lock, so other threads keep
    /// submitting meanwhile, and a caller whose requests a flush already
    /// in progress covers waits for that one instead of starting another.
    fn flush(&self) -> Result<()> {
        let mut st = self.lock();
        st.writable()?;
        // Every request submitted before this call must be durable when
        // it returns.
        let ticket = st.stats.requests;
        loop {
            if st.durable_requests >= ticket {
                st.stats.flushes += 1;
                return Ok(());
            }
            if !st.flushing {
                break;
            }
            st = self.flushed.wait(st).unwrap_or_else(|e| e.into_inner());
            st.healthy()?;
        }
        // This thread flushes, for everyone who submitted so far.
        let r = st.flush_prepare(&*self.media);
        st.poison(r)?;
        let covers = st.stats.requests;
        if st.unsynced {
            let written = st.write_gen;
            let index = st.start_media_flush();
            st.flushing = true;
            drop(st);
            let r = self.media.flush().map_err(|e| io_err("flush", e));
            st = self.lock();
            st.flushing = false;
            self.flushed.notify_all();
            st.poison(r)?;
            st.media_flushed(index);
            if st.write_gen == written {
                st.unsynced = false;
            }
        }
        st.durable_requests = st.durable_requests.max(covers);
        st.stats.flushes += 1;
        Ok(())
    }

    fn next_mapped(&self, from: u64) -> Result<Option<Range<u64>>> {
        let st = self.lock();
        st.healthy()?;
        Ok(st.map.next_mapped(from))
    }

    fn space(&self) -> Space {
        let st = self.lock();
        let ss = st.l.ss;
        let cap = st.capacity_sectors();
        let live = st.map.mapped();
        Space {
            capacity_bytes: cap * ss,
            free_bytes: cap.saturating_sub(live) * ss,
            live_bytes: live * ss,
        }
    }

    fn stats(&self) -> Stats {
        self.lock().stats
    }
}

#[allow(dead_code)]
fn _assert_send_sync<M: Media>() {
    fn is<T: Send + Sync>() {}
    is::<LogDevice<M>>();
}
