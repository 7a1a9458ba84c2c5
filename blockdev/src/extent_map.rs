//! The logical-to-physical extent map.
//!
//! A `BTreeMap` keyed by logical start sector. Memory grows with the number
//! of extents, never with the logical size. Adjacent extents that are
//! contiguous both logically and physically are merged, so sequential data
//! maps as a few large extents. Extents may also point into the group-commit
//! buffer (`pending`), so reads, space accounting and `next_mapped` see one
//! map.

use std::collections::BTreeMap;
use std::ops::Range;

/// Where `len` sectors starting at a logical sector live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// Media sector, or sector index in the group-commit buffer if `pending`.
    pub loc: u64,
    pub len: u32,
    pub pending: bool,
}

/// A piece of a mapping, as reported by lookups and removals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Piece {
    pub lba: u64,
    pub len: u64,
    pub loc: u64,
    pub pending: bool,
}

const MAX_EXTENT: u64 = u32::MAX as u64;

#[derive(Default, Clone, Debug)]
pub struct ExtentMap {
    map: BTreeMap<u64, Extent>,
    mapped: u64,
}

impl ExtentMap {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of extents.
    pub fn extents(&self) -> usize {
        self.map.len()
    }

    /// Number of mapped sectors.
    pub fn mapped(&self) -> u64 {
        self.mapped
    }

    pub fn iter(&self) -> impl Iterator<Item = Piece> + '_ {
        self.map.iter().map(|(lba, e)| Piece {
            lba: *lba,
            len: u64::from(e.len),
            loc: e.loc,
            pending: e.pending,
        })
    }

    /// Calls `f` for every mapped piece inside `lba..lba+len`, in order.
    pub fn for_each_in(&self, lba: u64, len: u64, mut f: impl FnMut(Piece)) {
        let end = lba + len;
        // One descent for the common cases: nothing mapped in the range, or
        // one extent covering its start (then the only one in it, since the
        // last extent starting before `end` starts at or before `lba`).
        match self.map.range(..end).next_back() {
            None => return,
            Some((&k, e)) => {
                let e_end = k + u64::from(e.len);
                if e_end <= lba {
                    return;
                }
                if k <= lba {
                    f(Piece {
                        lba,
                        len: e_end.min(end) - lba,
                        loc: e.loc + (lba - k),
                        pending: e.pending,
                    });
                    return;
                }
            }
        }
        if let Some((&k, e)) = self.map.range(..lba).next_back() {
            let e_end = k + u64::from(e.len);
            if e_end > lba {
                f(Piece {
                    lba,
                    len: e_end.min(end) - lba,
                    loc: e.loc + (lba - k),
                    pending: e.pending,
                });
            }
        }
        for (&k, e) in self.map.range(lba..end) {
            let e_end = k + u64::from(e.len);
            f(Piece {
                lba: k,
                len: e_end.min(end) - k,
                loc: e.loc,
                pending: e.pending,
            });
        }
    }

    /// The pieces inside `lba..lba+len`.
    pub fn pieces(&self, lba: u64, len: u64) -> Vec<Piece> {
        let mut v = Vec::new();
        self.for_each_in(lba, len, |p| v.push(p));
        v
    }

    /// Mapped sectors inside `lba..lba+len`.
    pub fn mapped_in(&self, lba: u64, len: u64) -> u64 {
        let mut n = 0;
        self.for_each_in(lba, len, |p| n += p.len);
        n
    }

    /// Unmaps `lba..lba+len`, reporting every removed piece to `f`.
    /// O(log n + extents touched).
    pub fn remove(&mut self, lba: u64, len: u64, mut f: impl FnMut(Piece)) {
        let end = lba + len;
        // Fast path (one descent): nothing mapped in the range, or a single
        // extent starting at or before `lba` covers all of its mapped part.
        match self.map.range_mut(..end).next_back() {
            None => return,
            Some((&k, e)) => {
                let e_end = k + u64::from(e.len);
                if e_end <= lba {
                    return;
                }
                if k <= lba {
                    // `e` is the only extent in the range (one starting
                    // inside it would be the last before `end`): keep its
                    // head before `lba` if any, and its tail past `end`.
                    let old = *e;
                    if k < lba {
                        e.len = (lba - k) as u32;
                    } else {
                        self.map.remove(&k);
                    }
                    let cut_end = e_end.min(end);
                    f(Piece {
                        lba,
                        len: cut_end - lba,
                        loc: old.loc + (lba - k),
                        pending: old.pending,
                    });
                    self.mapped -= cut_end - lba;
                    if e_end > end {
                        self.map.insert(
                            end,
                            Extent {
                                loc: old.loc + (end - k),
                                len: (e_end - end) as u32,
                                pending: old.pending,
                            },
                        );
                    }
                    return;
                }
            }
        }
        if let Some((&k, &e)) = self.map.range(..lba).next_back() {
            let e_end = k + u64::from(e.len);
            if e_end > lba {
                let cut_end = e_end.min(end);
                f(Piece {
                    lba,
                    len: cut_end - lba,
                    loc: e.loc + (lba - k),
                    pending: e.pending,
                });
                self.mapped -= cut_end - lba;
                self.map.get_mut(&k).expect("extent").len = (lba - k) as u32;
                if e_end > end {
                    self.map.insert(
                        end,
                        Extent {
                            loc: e.loc + (end - k),
                            len: (e_end - end) as u32,
                            pending: e.pending,
                        },
                    );
                }
            }
        }
        while let Some((&k, &e)) = self.map.range(lba..end).next() {
            self.map.remove(&k);
            let e_end = k + u64::from(e.len);
            let cut_end = e_end.min(end);
            f(Piece {
                lba: k,
                len: cut_end - k,
                loc: e.loc,
                pending: e.pending,
            });
            self.mapped -= cut_end - k;
            if e_end > end {
                self.map.insert(
                    end,
                    Extent {
                        loc: e.loc + (end - k),
                        len: (e_end - end) as u32,
                        pending: e.pending,
                    },
                );
            }
        }
    }

    /// Maps `lba..lba+len` to `loc..loc+len`, replacing (and reporting to
    /// `f`) whatever was mapped there; merges with contiguous neighbours.
    pub fn insert(
        &mut self,
        lba: u64,
        len: u64,
        loc: u64,
        pending: bool,
        mut f: impl FnMut(Piece),
    ) {
        if len <= MAX_EXTENT && self.insert_fast(lba, len, loc, pending, false, &mut f) {
            return;
        }
        self.remove(lba, len, f);
        let mut at = 0;
        while at < len {
            let n = (len - at).min(MAX_EXTENT);
            self.insert_one(lba + at, n, loc + at, pending);
            at += n;
        }
    }

    /// `insert` in the two common cases, with one descent to look at the
    /// neighbourhood: nothing mapped in `lba..lba+len`, or exactly one
    /// extent covering exactly that range (an overwrite of same-sized
    /// data). Returns false, changing nothing, in every other case (and,
    /// with `keep_pending`, when the extent replaced is pending). Merges
    /// with contiguous neighbours exactly as `insert_one` does.
    fn insert_fast(
        &mut self,
        lba: u64,
        len: u64,
        loc: u64,
        pending: bool,
        keep_pending: bool,
        f: &mut impl FnMut(Piece),
    ) -> bool {
        debug_assert!(len > 0 && len <= MAX_EXTENT);
        let end = lba + len;
        // Walking back from `end`: the extent starting at `end` (a merge
        // candidate), the last one starting before `end`, and (if that is
        // the one being replaced) the one before it.
        let mut it = self.map.range(..=end).rev();
        let mut last = it.next();
        let mut next = None;
        if let Some((&k, e)) = last {
            if k == end {
                next = Some(*e);
                last = it.next();
            }
        }
        let (replaced, prev) = match last {
            None => (None, None),
            Some((&k, &e)) => {
                let e_end = k + u64::from(e.len);
                if e_end <= lba {
                    (None, Some((k, e)))
                } else if k == lba && e_end == end && !(keep_pending && e.pending) {
                    (Some(e), it.next().map(|(&k, &e)| (k, e)))
                } else {
                    return false;
                }
            }
        };
        let merge_prev = prev.filter(|&(k, p)| {
            k + u64::from(p.len) == lba
                && p.pending == pending
                && p.loc + u64::from(p.len) == loc
                && u64::from(p.len) + len <= MAX_EXTENT
        });
        let merged_len = len + merge_prev.map_or(0, |(_, p)| u64::from(p.len));
        let merge_next = next.filter(|n| {
            n.pending == pending
                && loc + len == n.loc
                && merged_len + u64::from(n.len) <= MAX_EXTENT
        });
        match replaced {
            Some(old) => f(Piece {
                lba,
                len,
                loc: old.loc,
                pending: old.pending,
            }),
            None => self.mapped += len,
        }
        let next_len = match merge_next {
            Some(n) => {
                self.map.remove(&end);
                n.len
            }
            None => 0,
        };
        match merge_prev {
            Some((k, _)) => {
                if replaced.is_some() {
                    self.map.remove(&lba);
                }
                let e = self.map.get_mut(&k).expect("previous extent");
                e.len += len as u32 + next_len;
            }
            None => {
                self.map.insert(
                    lba,
                    Extent {
                        loc,
                        len: len as u32 + next_len,
                        pending,
                    },
                );
            }
        }
        true
    }

    fn insert_one(&mut self, lba: u64, len: u64, loc: u64, pending: bool) {
        self.mapped += len;
        let mut start = lba;
        let mut ext = Extent {
            loc,
            len: len as u32,
            pending,
        };
        if let Some((&k, e)) = self.map.range(..lba).next_back() {
            if k + u64::from(e.len) == lba
                && e.pending == pending
                && e.loc + u64::from(e.len) == loc
                && u64::from(e.len) + len <= MAX_EXTENT
            {
                start = k;
                ext = Extent {
                    loc: e.loc,
                    len: e.len + len as u32,
                    pending,
                };
            }
        }
        let end = lba + len;
        if let Some(next) = self.map.get(&end).copied() {
            if next.pending == pending
                && loc + len == next.loc
                && u64::from(ext.len) + u64::from(next.len) <= MAX_EXTENT
            {
                self.map.remove(&end);
                ext.len += next.len;
            }
        }
        self.map.insert(start, ext);
    }

    /// `insert(lba, len, loc, pending, f)` if that can be done with one
    /// descent and replaces no pending data: nothing is mapped in the
    /// range, or exactly one media extent covers exactly the range. Returns
    /// false, changing nothing, otherwise.
    pub fn insert_over_media(
        &mut self,
        lba: u64,
        len: u64,
        loc: u64,
        pending: bool,
        mut f: impl FnMut(Piece),
    ) -> bool {
        len <= MAX_EXTENT && self.insert_fast(lba, len, loc, pending, true, &mut f)
    }

    /// If `lba..lba+len` is exactly one pending extent at buffer position
    /// `bpos`, that extent (otherwise `None`).
    pub fn exact_pending(&self, lba: u64, len: u64, bpos: u64) -> Option<Extent> {
        self.map
            .get(&lba)
            .filter(|e| e.pending && e.loc == bpos && u64::from(e.len) == len)
            .copied()
    }

    /// Turns the pending extent that is exactly `lba..lba+len` at buffer
    /// position `bpos` into a media extent at `phys`, in place (one
    /// descent). Returns false, changing nothing, if the map does not hold
    /// exactly that extent. Does not merge with neighbours: a media extent
    /// can only be contiguous with one from the same record, which the
    /// caller has already joined.
    pub fn commit_pending(&mut self, lba: u64, len: u64, bpos: u64, phys: u64) -> bool {
        match self.map.get_mut(&lba) {
            Some(e) if e.pending && e.loc == bpos && u64::from(e.len) == len => {
                e.loc = phys;
                e.pending = false;
                true
            }
            _ => false,
        }
    }

    /// The maximal run of mapped sectors at or after `from` (adjacent
    /// extents are joined even when physically apart).
    pub fn next_mapped(&self, from: u64) -> Option<Range<u64>> {
        let (start, mut end) = match self.map.range(..=from).next_back() {
            Some((&k, e)) if k + u64::from(e.len) > from => (from, k + u64::from(e.len)),
            _ => {
                let (&k, e) = self.map.range(from..).next()?;
                (k, k + u64::from(e.len))
            }
        };
        while let Some(e) = self.map.get(&end) {
            end += u64::from(e.len);
        }
        Some(start..end)
    }

    /// Checks the invariants: no empty or overlapping extents, the mapped
    /// count adds up. O(n); for tests and `check`.
    pub fn verify(&self) -> Result<(), String> {
        let mut prev_end = 0u64;
        let mut total = 0u64;
        for (i, (&k, e)) in self.map.iter().enumerate() {
            if e.len == 0 {
                return Err(format!("empty extent at {k}"));
            }
            if i > 0 && k < prev_end {
                return Err(format!(
                    "extent at {k} overlaps the previous one ending at {prev_end}"
                ));
            }
            prev_end = k + u64::from(e.len);
            total += u64::from(e.len);
        }
        if total != self.mapped {
            return Err(format!(
                "mapped count {} != sum of extents {total}",
                self.mapped
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn model_check(m: &ExtentMap, model: &BTreeMap<u64, u64>) {
        m.verify().unwrap();
        let mut got = BTreeMap::new();
        for p in m.iter() {
            for i in 0..p.len {
                got.insert(p.lba + i, p.loc + i);
            }
        }
        assert_eq!(&got, model);
    }

    #[test]
    fn random_ops_match_a_sector_model() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut m = ExtentMap::new();
        let mut model = BTreeMap::new();
        let mut next_loc = 1000u64;
        for _ in 0..3000 {
            let lba = rng.gen_range(0..200u64);
            let len = rng.gen_range(1..20u64);
            if rng.gen_bool(0.3) {
                let mut removed = 0;
                m.remove(lba, len, |p| removed += p.len);
                let mut expect = 0;
                for i in lba..lba + len {
                    if model.remove(&i).is_some() {
                        expect += 1;
                    }
                }
                assert_eq!(removed, expect);
            } else {
                let loc = if rng.gen_bool(0.5) {
                    next_loc
                } else {
                    lba + 5000
                };
                next_loc += len;
                m.insert(lba, len, loc, false, |_| {});
                for i in 0..len {
                    model.insert(lba + i, loc + i);
                }
            }
            model_check(&m, &model);
            let from = rng.gen_range(0..220u64);
            let expect = model.range(from..).next().map(|(&s, _)| {
                let mut e = s + 1;
                while model.contains_key(&e) {
                    e += 1;
                }
                s..e
            });
            assert_eq!(m.next_mapped(from), expect, "from {from}");
        }
    }

    /// The one-descent paths (`insert_fast`, the fast cases of `remove`
    /// and `for_each_in`) give exactly what the general ones give: the
    /// same extents (merged the same way), mapped count and pieces.
    #[test]
    fn fast_paths_match_the_general_ones() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let mut m = ExtentMap::new();
        for _ in 0..20_000 {
            let lba = rng.gen_range(0..300u64);
            let len = rng.gen_range(1..12u64);
            // Overwrites of exactly one extent are made common on purpose.
            let (lba, len) = match m.iter().nth(rng.gen_range(0..m.extents().max(1))) {
                Some(p) if rng.gen_bool(0.4) => (p.lba, p.len),
                _ => (lba, len),
            };
            let pending = rng.gen_bool(0.5);
            // Contiguous with logical neighbours half the time (merges).
            let loc = if rng.gen_bool(0.5) {
                lba + 7000
            } else {
                rng.gen_range(0..100_000u64)
            };
            // The general paths: pieces from the two-range walk, removal
            // and insertion through `remove` + `insert_one`.
            let mut want_pieces = Vec::new();
            for (&k, e) in m.map.iter() {
                let (a, b) = (k.max(lba), (k + u64::from(e.len)).min(lba + len));
                if a < b {
                    want_pieces.push(Piece {
                        lba: a,
                        len: b - a,
                        loc: e.loc + (a - k),
                        pending: e.pending,
                    });
                }
            }
            assert_eq!(m.pieces(lba, len), want_pieces);
            let mut slow = m.clone();
            let mut slow_removed = Vec::new();
            if rng.gen_bool(0.2) {
                slow.remove(lba, len, |p| slow_removed.push(p));
                let mut removed = Vec::new();
                m.remove(lba, len, |p| removed.push(p));
                assert_eq!(removed, want_pieces);
                assert_eq!(slow_removed, want_pieces);
            } else {
                // `remove` is itself checked against the model above.
                slow.remove(lba, len, |p| slow_removed.push(p));
                slow.insert_one(lba, len, loc, pending);
                let mut removed = Vec::new();
                m.insert(lba, len, loc, pending, |p| removed.push(p));
                assert_eq!(removed, slow_removed);
                assert_eq!(m.map, slow.map, "insert {lba}+{len} at {loc} {pending}");
            }
            assert_eq!(m.mapped, slow.mapped);
            m.verify().unwrap();
        }
    }

    #[test]
    fn sequential_writes_merge_and_huge_trims_are_cheap() {
        let mut m = ExtentMap::new();
        for i in 0..1000u64 {
            m.insert(i * 8, 8, 50 + i * 8, false, |_| {});
        }
        assert_eq!(m.extents(), 1);
        let mut pieces = 0;
        m.remove(1 << 20, 1 << 31, |_| pieces += 1);
        assert_eq!(pieces, 0);
        m.remove(0, 1 << 40, |_| pieces += 1);
        assert_eq!(pieces, 1);
        assert_eq!(m.mapped(), 0);
    }
}
