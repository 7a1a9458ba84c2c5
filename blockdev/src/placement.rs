//! Where a record lies on the media. A log stream is a chain of segments;
//! a record starts at (`seg`, `off`) and may continue into the segments of
//! its span list, so one record of any size costs exactly one header and
//! wastes no segment tail.

use crate::layout::Layout;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The segment the record starts in, then its span list.
    pub segs: Vec<u32>,
    /// Sector offset of the header in `segs[0]`.
    pub off: u64,
    /// Header sectors.
    pub h: u64,
    /// Header plus payload sectors.
    pub total: u64,
}

/// Number of span segments a record of `total` sectors starting at `off`
/// needs: every segment it enters after the first, including the one where
/// the stream continues when it ends exactly at a segment boundary.
pub fn span_needed(seg_sectors: u64, off: u64, total: u64) -> u64 {
    let rem = seg_sectors - off;
    if total < rem {
        0
    } else {
        (total - rem) / seg_sectors + 1
    }
}

impl Placement {
    /// Calls `f(phys, sectors)` for the media runs of virtual sectors
    /// `v..v+len` of the record (0 is the first header sector).
    pub fn for_each_phys(&self, l: &Layout, v: u64, len: u64, mut f: impl FnMut(u64, u64)) {
        debug_assert!(v + len <= self.total);
        let mut at = v;
        let end = v + len;
        while at < end {
            // Virtual offset `at` counted from the start of segs[0].
            let abs = self.off + at;
            let i = (abs / l.seg_sectors) as usize;
            let in_seg = abs % l.seg_sectors;
            let n = (l.seg_sectors - in_seg).min(end - at);
            f(l.seg_start(self.segs[i]) + in_seg, n);
            at += n;
        }
    }

    /// Where the stream continues after this record: (segment, offset).
    pub fn end(&self, l: &Layout) -> (u32, u64) {
        let abs = self.off + self.total;
        let i = (abs / l.seg_sectors) as usize;
        (self.segs[i], abs % l.seg_sectors)
    }
}
