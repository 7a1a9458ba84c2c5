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
}

impl SegState {
    pub fn from_u8(v: u8) -> Option<SegState> {
        Some(match v {
            0 => SegState::Free,
            1 => SegState::OpenUser,
            2 => SegState::OpenGc,
            3 => SegState::Sealed,
            4 => SegState::Ckpt,
            5 => SegState::Quarantine,
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
        }
    }
}

#[derive(Clone, Debug)]
pub struct SegTable {
    pub info: Vec<SegInfo>,
    free: BTreeSet<u32>,
    quarantine: Vec<u32>,
}

impl SegTable {
    pub fn new(n: u32) -> Self {
        Self {
            info: vec![SegInfo::free(); n as usize],
            free: (0..n).collect(),
            quarantine: Vec::new(),
        }
    }

    /// Rebuilds the free and quarantine sets from the states.
    pub fn from_info(info: Vec<SegInfo>) -> Self {
        let free = (0..info.len() as u32)
            .filter(|s| info[*s as usize].state == SegState::Free)
            .collect();
        let quarantine = (0..info.len() as u32)
            .filter(|s| info[*s as usize].state == SegState::Quarantine)
            .collect();
        Self {
            info,
            free,
            quarantine,
        }
    }

    pub fn free_count(&self) -> u64 {
        self.free.len() as u64
    }

    pub fn quarantine(&self) -> &[u32] {
        &self.quarantine
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
    }

    /// Takes the lowest free segment.
    pub fn alloc(&mut self, state: SegState) -> Option<u32> {
        let s = self.free.pop_first()?;
        self.prepare(s, state);
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

    pub fn set_state(&mut self, s: u32, state: SegState) {
        debug_assert!(state != SegState::Free && state != SegState::Quarantine);
        self.info[s as usize].state = state;
    }

    /// GC finished with `s`: hold it until the next checkpoint.
    pub fn quarantine_seg(&mut self, s: u32) {
        debug_assert_eq!(
            self.info[s as usize].live, 0,
            "quarantining live segment {s}"
        );
        self.info[s as usize].state = SegState::Quarantine;
        self.quarantine.push(s);
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

    pub fn take_quarantine(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.quarantine)
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
