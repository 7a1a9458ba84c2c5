//! The segment table: state, live-sector count, use generation and the
//! record-walk hints GC needs for every segment, plus the free set.

use std::collections::BTreeSet;

/// What a segment holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegState {
    /// Reusable.
    Free = 0,
    /// The open segment of the user log stream.
    OpenUser = 1,
    /// The open segment of the GC log stream.
    OpenGc = 2,
    /// Full: records tile it from `first_rec` to its end.
    Sealed = 3,
    /// Holds the current checkpoint blob.
    Ckpt = 4,
    /// Cleaned by GC; free once the next checkpoint is durable.
    Quarantine = 5,
    /// Cleaned by GC, covered by the durable checkpoint, and a media flush
    /// since: free for the GC stream only (see [`SegTable::recycle`]).
    /// Never stored (a checkpoint writes it as free).
    Recycled = 6,
}

impl SegState {
    /// A state as a checkpoint stores it: quarantined and recycled
    /// segments are stored as free, so 5 and 6 are never valid there.
    pub fn from_u8(v: u8) -> Option<SegState> {
        Some(match v {
            0 => SegState::Free,
            1 => SegState::OpenUser,
            2 => SegState::OpenGc,
            3 => SegState::Sealed,
            4 => SegState::Ckpt,
            _ => return None,
        })
    }
}

/// The record that started in another segment and continues into the head
/// of this one: its header is at (`seg`, `off`), valid while `seg` still has
/// use generation `gen`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    pub seg: u32,
    pub off: u32,
    pub gen: u32,
}

/// Sentinel `first_rec`: no record header starts in this segment.
pub const NO_RECORD: u32 = u32::MAX;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegInfo {
    pub state: SegState,
    /// Mapped sectors whose data lives here.
    pub live: u32,
    /// Use generation: bumped each time the segment is allocated.
    pub gen: u32,
    /// Sector offset of the first record header starting here.
    pub first_rec: u32,
    pub owner: Option<Owner>,
    /// User sequence number when last written (for cost-benefit age).
    pub stamp: u64,
    /// Sealed when the durable checkpoint was taken: every record in it
    /// lies before that checkpoint's stream positions, so recovery never
    /// replays a record from it (runtime and recovery only; not stored:
    /// a stored sealed segment is covered by the checkpoint it is in).
    pub covered: bool,
}

impl SegInfo {
    pub fn free() -> Self {
        SegInfo {
            state: SegState::Free,
            live: 0,
            gen: 0,
            first_rec: NO_RECORD,
            owner: None,
            stamp: 0,
            covered: false,
        }
    }
}

#[derive(Clone, Debug)]
pub struct SegTable {
    pub info: Vec<SegInfo>,
    free: BTreeSet<u32>,
    /// Cleaned segments and the media flush count when each was cleaned.
    quarantine: Vec<(u32, u64)>,
    /// Segments the GC stream may reuse before the next checkpoint.
    recycled: BTreeSet<u32>,
}

impl SegTable {
    pub fn new(n: u32) -> Self {
        Self {
            info: vec![SegInfo::free(); n as usize],
            free: (0..n).collect(),
            quarantine: Vec::new(),
            recycled: BTreeSet::new(),
        }
    }

    /// The table a checkpoint stored (free, open, sealed and checkpoint
    /// segments only): its sealed segments are covered by it.
    pub fn from_info(mut info: Vec<SegInfo>) -> Self {
        for i in &mut info {
            i.covered = i.state == SegState::Sealed;
        }
        let free = (0..info.len() as u32)
            .filter(|s| info[*s as usize].state == SegState::Free)
            .collect();
        Self {
            info,
            free,
            quarantine: Vec::new(),
            recycled: BTreeSet::new(),
        }
    }

    pub fn free_count(&self) -> u64 {
        self.free.len() as u64
    }

    pub fn quarantine_count(&self) -> u64 {
        self.quarantine.len() as u64
    }

    /// Segments the GC stream may take besides the free ones.
    pub fn recycled_count(&self) -> u64 {
        self.recycled.len() as u64
    }

    /// Quarantined segments that [`SegTable::recycle`] would take after a
    /// media flush now.
    pub fn recyclable_count(&self) -> u64 {
        self.quarantine
            .iter()
            .filter(|(s, _)| self.info[*s as usize].covered)
            .count() as u64
    }

    pub fn is_free(&self, s: u32) -> bool {
        self.free.contains(&s)
    }

    fn prepare(&mut self, s: u32, state: SegState) {
        let i = &mut self.info[s as usize];
        debug_assert_eq!(i.live, 0, "allocating segment {s} with live data");
        i.state = state;
        i.gen = i.gen.wrapping_add(1);
        i.first_rec = NO_RECORD;
        i.owner = None;
        i.live = 0;
        i.covered = false;
    }

    /// Takes the lowest free segment.
    pub fn alloc(&mut self, state: SegState) -> Option<u32> {
        let s = self.free.pop_first()?;
        self.prepare(s, state);
        Some(s)
    }

    /// Takes a segment for the GC stream: a recycled one if there is one,
    /// else the lowest free one.
    pub fn alloc_gc(&mut self) -> Option<u32> {
        let s = match self.recycled.pop_first() {
            Some(s) => s,
            None => self.free.pop_first()?,
        };
        self.prepare(s, SegState::OpenGc);
        Some(s)
    }

    /// Takes a specific free segment (replay follows the span lists).
    pub fn take(&mut self, s: u32, state: SegState) -> bool {
        if !self.free.remove(&s) {
            return false;
        }
        self.prepare(s, state);
        true
    }

    /// Whether replay may let a GC record take `s` although the checkpoint
    /// holds it as sealed: it is covered (no record in it is replayed),
    /// nothing maps into it any more, and it was not taken since. At run
    /// time such a segment was cleaned and recycled (`recycle`).
    pub fn reusable_by_gc(&self, s: u32) -> bool {
        let i = &self.info[s as usize];
        i.state == SegState::Sealed && i.covered && i.live == 0
    }

    /// Takes a segment that [`SegTable::reusable_by_gc`] allows for the GC
    /// stream (replay).
    pub fn take_reused(&mut self, s: u32) -> bool {
        if !self.reusable_by_gc(s) {
            return false;
        }
        self.prepare(s, SegState::OpenGc);
        true
    }

    pub fn set_state(&mut self, s: u32, state: SegState) {
        debug_assert!(state != SegState::Free && state != SegState::Quarantine);
        self.info[s as usize].state = state;
    }

    /// GC finished with `s` when `flushes` media flushes had started: hold
    /// it until the next checkpoint, or until `recycle`.
    pub fn quarantine_seg(&mut self, s: u32, flushes: u64) {
        debug_assert_eq!(
            self.info[s as usize].live, 0,
            "quarantining live segment {s}"
        );
        self.info[s as usize].state = SegState::Quarantine;
        self.quarantine.push((s, flushes));
    }

    /// Hands the GC stream every quarantined segment that is covered by
    /// the durable checkpoint and was cleaned before media flush number
    /// `flush` started (that flush has completed). Such a segment can be
    /// rewritten without a checkpoint: recovery starts at that checkpoint,
    /// so it replays no record from the segment, and the records that
    /// moved or overwrote its data are durable (they were written before
    /// that flush), so recovery moves every mapping out of it before it
    /// replays a GC record that writes into it (the GC stream is replayed
    /// after the user stream, in its own order). Only the GC stream may
    /// take it: a user record naming it would be replayed before the GC
    /// records that empty it.
    pub fn recycle(&mut self, flush: u64) {
        let info = &mut self.info;
        let recycled = &mut self.recycled;
        self.quarantine.retain(|&(s, at)| {
            let i = &mut info[s as usize];
            if at < flush && i.covered {
                i.state = SegState::Recycled;
                i.owner = None;
                i.first_rec = NO_RECORD;
                recycled.insert(s);
                false
            } else {
                true
            }
        });
    }

    /// Frees `s` (a durable checkpoint no longer needs it).
    pub fn release(&mut self, s: u32) {
        let i = &mut self.info[s as usize];
        debug_assert_eq!(i.live, 0, "freeing live segment {s}");
        i.state = SegState::Free;
        i.owner = None;
        i.first_rec = NO_RECORD;
        self.free.insert(s);
    }

    /// Empties the quarantine and the recycled set (a durable checkpoint
    /// frees them all).
    pub fn take_quarantine(&mut self) -> Vec<u32> {
        let mut out: Vec<u32> = self.quarantine.drain(..).map(|q| q.0).collect();
        out.extend(std::mem::take(&mut self.recycled));
        out
    }

    /// Marks every sealed segment as covered (a checkpoint is durable).
    pub fn cover_sealed(&mut self) {
        for i in &mut self.info {
            i.covered |= i.state == SegState::Sealed;
        }
    }

    pub fn add_live(&mut self, s: u32, n: u64) {
        let i = &mut self.info[s as usize];
        i.live += n as u32;
    }

    pub fn sub_live(&mut self, s: u32, n: u64) {
        let i = &mut self.info[s as usize];
        debug_assert!(
            u64::from(i.live) >= n,
            "segment {s} live count would go negative"
        );
        i.live = i.live.saturating_sub(n as u32);
    }
}
