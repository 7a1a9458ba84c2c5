//! The repair plan: every sector write and trim fsck decided on, turned
//! into ONE request whose segments do not overlap.
//!
//! Repairs are decided independently (free an inode = trim its whole
//! region; rewrite a bucket inside some region), so they may overlap. The
//! rule that gives the intended final state: a written sector wins over a
//! trim covering it. [`Plan::into_request`] cuts trims around written
//! sectors and merges neighbouring writes and trims.

use std::collections::BTreeMap;

use atomic_api::Request;

#[derive(Default)]
pub(crate) struct Plan {
    /// Single-sector writes by lba (a later write of a sector replaces an earlier one).
    writes: BTreeMap<u64, Vec<u8>>,
    /// (start, sectors).
    trims: Vec<(u64, u64)>,
}

impl Plan {
    pub fn write(&mut self, lba: u64, sector: Vec<u8>) {
        self.writes.insert(lba, sector);
    }

    /// Cancels a planned write (the sector is trimmed or left alone instead).
    pub fn unwrite(&mut self, lba: u64) {
        self.writes.remove(&lba);
    }

    pub fn trim(&mut self, lba: u64, sectors: u64) {
        if sectors > 0 {
            self.trims.push((lba, sectors));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.trims.is_empty()
    }

    /// True when `lba` is inside a planned trim and not rewritten.
    #[cfg(test)]
    pub fn trimmed(&self, lba: u64) -> bool {
        !self.writes.contains_key(&lba) && self.trims.iter().any(|&(s, n)| lba >= s && lba - s < n)
    }

    /// The non-overlapping request: merged trims minus written sectors,
    /// runs of consecutive written sectors as one write each.
    pub fn into_request(self) -> Request {
        let mut trims = self.trims;
        trims.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::new(); // (start, end)
        for (s, n) in trims {
            let e = s.saturating_add(n);
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        let mut req = Request::new();
        for (s, e) in merged {
            let mut at = s;
            for (&lba, _) in self.writes.range(s..e) {
                if lba > at {
                    req.trim(at, lba - at);
                }
                at = lba + 1;
            }
            if e > at {
                req.trim(at, e - at);
            }
        }
        let mut run: Option<(u64, Vec<u8>, u64)> = None; // (start, data, next lba)
        for (lba, data) in self.writes {
            match &mut run {
                Some((_, buf, next)) if *next == lba => {
                    buf.extend_from_slice(&data);
                    *next += 1;
                }
                _ => {
                    if let Some((start, buf, _)) = run.take() {
                        req.write(start, buf);
                    }
                    run = Some((lba, data, lba + 1));
                }
            }
        }
        if let Some((start, buf, _)) = run {
            req.write(start, buf);
        }
        req
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use atomic_api::{Geometry, Segment};

    #[test]
    fn writes_win_over_trims_and_nothing_overlaps() {
        let mut p = Plan::default();
        p.trim(100, 50);
        p.trim(120, 50);
        p.write(110, vec![1; 512]);
        p.write(111, vec![2; 512]);
        p.write(200, vec![3; 512]);
        assert!(p.trimmed(105) && !p.trimmed(110) && !p.trimmed(170));
        let req = p.into_request();
        let geo = Geometry {
            sector_size: 512,
            logical_sectors: 1 << 60,
            max_segments: 1024,
            max_request_bytes: 1 << 20,
        };
        req.validate(&geo).unwrap();
        let segs = req.segments();
        assert_eq!(segs.len(), 4);
        assert_eq!(
            segs[0],
            Segment::Trim {
                lba: 100,
                sectors: 10
            }
        );
        assert_eq!(
            segs[1],
            Segment::Trim {
                lba: 112,
                sectors: 58
            }
        );
        assert!(matches!(&segs[2], Segment::Write { lba: 110, data } if data.len() == 1024));
        assert!(matches!(&segs[3], Segment::Write { lba: 200, .. }));
    }
}
