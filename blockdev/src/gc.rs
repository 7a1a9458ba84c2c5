//! Garbage collection: pick a sealed segment, find its live sectors by
//! reading its record headers (the segment summary) and checking each
//! (lba, phys) against the map, copy them forward as GC records into the
//! separate GC stream, and quarantine the segment until the next checkpoint
//! (or until a media flush recycles it for the GC stream).

use atomic_api::Result;

use crate::media::{AlignedBuf, Media};
use crate::placement::{span_needed, Placement};
use crate::record::{entry_bytes, parse_entries, parse_fixed, Kind, Run};
use crate::segments::{SegState, NO_RECORD};
use crate::state::{record_size, State};

/// Chooses a victim among sealed segments: fewest live sectors when
/// `greedy`, else an empty one, else best cost-benefit (age x free / (1 +
/// used)).
pub fn pick_victim(st: &State, greedy: bool) -> Option<u32> {
    let seg = st.l.seg_sectors as f64;
    let now = st.user.seq;
    let mut best: Option<(f64, u32)> = None;
    for (i, s) in st.segs.info.iter().enumerate() {
        if s.state != SegState::Sealed || u64::from(s.live) >= st.l.seg_sectors {
            continue;
        }
        let u = f64::from(s.live) / seg;
        let score = if greedy {
            -f64::from(s.live)
        } else if s.live == 0 {
            // Nothing to copy: free to clean, whatever its age (the age
            // term would otherwise pass over a young segment that
            // overwrites have emptied).
            f64::INFINITY
        } else {
            if u > 0.9 {
                continue;
            }
            let age = (now.saturating_sub(s.stamp) + 1) as f64;
            age * (1.0 - u) / (1.0 + u)
        };
        if best.is_none_or(|(b, _)| score > b) {
            best = Some((score, i as u32));
        }
    }
    best.map(|(_, s)| s)
}

/// (lba, phys, len) of every live sector run in segment `v`.
fn find_live(st: &mut State, m: &dyn Media, v: u32) -> Result<Vec<(u64, u64, u64)>> {
    let mut live = Vec::new();
    match live_from_headers(st, m, v, &mut live)? {
        true if live.iter().map(|r| r.2).sum::<u64>()
            == u64::from(st.segs.info[v as usize].live) =>
        {
            Ok(live)
        }
        ok => {
            debug_assert!(!ok, "segment {v}: headers disagree with the live count");
            log::warn!("segment {v}: record headers unusable, scanning the map");
            let start = st.l.seg_start(v);
            Ok(scan_map(st, start, start + st.l.seg_sectors))
        }
    }
}

/// Live runs whose media location lies in `from..to`, by scanning the map.
fn scan_map(st: &State, from: u64, to: u64) -> Vec<(u64, u64, u64)> {
    let mut out = Vec::new();
    for p in st.map.iter() {
        if p.pending {
            continue;
        }
        let a = p.loc.max(from);
        let b = (p.loc + p.len).min(to);
        if a < b {
            out.push((p.lba + (a - p.loc), a, b - a));
        }
    }
    out
}

/// Reads the header of the record at (`seg`, `off`): placement and runs.
pub fn read_record_header(
    st: &mut State,
    m: &dyn Media,
    seg: u32,
    off: u64,
) -> Result<Option<(Placement, Vec<Run>)>> {
    let ss = st.l.ss as usize;
    let mut first = vec![0u8; ss];
    st.read_media(m, st.l.seg_start(seg) + off, &mut first)?;
    let Ok(mut h) = parse_fixed(&first) else {
        return Ok(None);
    };
    if h.uuid != st.uuid || h.span.iter().any(|s| *s >= st.l.segs) {
        return Ok(None);
    }
    let mut segs = vec![seg];
    segs.extend_from_slice(&h.span);
    let hs = u64::from(h.header_sectors);
    let place = Placement {
        segs,
        off,
        h: hs,
        total: hs + h.payload_sectors,
    };
    if crate::placement::span_needed(st.l.seg_sectors, off, place.total) != h.span.len() as u64 {
        return Ok(None);
    }
    let mut header = first;
    if hs > 1 {
        header.resize(hs as usize * ss, 0);
        let mut v = 0usize;
        let mut pieces = Vec::new();
        place.for_each_phys(&st.l, 0, hs, |phys, n| pieces.push((phys, n)));
        for (phys, n) in pieces {
            let len = n as usize * ss;
            st.read_media(m, phys, &mut header[v..v + len])?;
            v += len;
        }
    }
    if parse_entries(&header, &mut h).is_err() {
        return Ok(None);
    }
    Ok(Some((place, h.runs)))
}

/// Collects live runs of `v` from its record headers; false if a header
/// could not be read (the caller then scans the map).
fn live_from_headers(
    st: &mut State,
    m: &dyn Media,
    v: u32,
    live: &mut Vec<(u64, u64, u64)>,
) -> Result<bool> {
    let info = st.segs.info[v as usize];
    let seg_sectors = st.l.seg_sectors;
    let v_start = st.l.seg_start(v);
    let v_end = v_start + seg_sectors;
    let mut records = Vec::new();
    let head_end = if info.first_rec == NO_RECORD {
        seg_sectors
    } else {
        u64::from(info.first_rec)
    };
    if head_end > 0 {
        match info.owner {
            Some(o)
                if st.segs.info[o.seg as usize].gen == o.gen
                    && st.segs.info[o.seg as usize].state != SegState::Free =>
            {
                records.push((o.seg, u64::from(o.off)));
            }
            // The record owning the head was cleaned with its first
            // segment and its header is gone: find the head's live data
            // (if any) in the map.
            _ => live.extend(scan_map(st, v_start, v_start + head_end)),
        }
    }
    let mut off = head_end;
    let mut first = true;
    while off < seg_sectors {
        if first && info.first_rec == NO_RECORD {
            break;
        }
        first = false;
        let Some((place, _)) = read_record_header(st, m, v, off)? else {
            return Ok(false);
        };
        records.push((v, off));
        off += place.total;
    }
    for (seg, off) in records {
        let Some((place, runs)) = read_record_header(st, m, seg, off)? else {
            return Ok(false);
        };
        let mut d = place.h;
        for run in runs {
            let mut x = 0;
            place.for_each_phys(&st.l, d, run.len, |phys, n| {
                let (a, b) = (phys.max(v_start), (phys + n).min(v_end));
                if a < b {
                    let lba = run.lba + x + (a - phys);
                    st.map.for_each_in(lba, b - a, |p| {
                        if !p.pending && p.loc == a + (p.lba - lba) {
                            live.push((p.lba, p.loc, p.len));
                        }
                    });
                }
                x += n;
            });
            d += run.len;
        }
    }
    live.sort_unstable_by_key(|r| r.1);
    Ok(true)
}

/// What cleaning one victim will write: its live runs cut into GC
/// records, and how many free segments the GC stream enters doing so.
pub struct CleanPlan {
    pub victim: u32,
    records: Vec<Vec<Run>>,
    /// Free segments the GC records take (the span lists of all of them).
    pub segments: u64,
}

/// Finds the live sectors of `v` and cuts them into GC records, without
/// writing anything, so the caller can check that the segments the copy
/// needs are there before it starts (a victim with no live data needs
/// none: it can always be cleaned).
pub fn plan_clean(st: &mut State, m: &dyn Media, v: u32) -> Result<CleanPlan> {
    let mut live = find_live(st, m, v)?;
    let limit = st.l.max_record_sectors;
    let seg_sectors = st.l.seg_sectors;
    let mut records = Vec::new();
    let mut off = st.gc.off;
    let mut segments = 0;
    let mut i = 0;
    while i < live.len() {
        // One GC record of at most `limit` sectors.
        let mut runs = Vec::new();
        let mut total = 0u64;
        while i < live.len() && total < limit {
            let (lba, phys, len) = live[i];
            let n = len.min(limit - total);
            runs.push(Run {
                lba,
                len: n,
                old: phys,
            });
            total += n;
            if n < len {
                live[i] = (lba + n, phys + n, len - n);
            } else {
                i += 1;
            }
        }
        // The same size computation `write_record` makes.
        let eb = entry_bytes(Kind::Gc, &runs, &[]);
        let (_, sectors) = record_size(&st.l, off, total, eb);
        segments += span_needed(seg_sectors, off, sectors);
        off = (off + sectors) % seg_sectors;
        records.push(runs);
    }
    Ok(CleanPlan {
        victim: v,
        records,
        segments,
    })
}

/// Carries out `plan`: copies the victim's live sectors into the GC stream
/// and quarantines it. Nothing may change between planning and this call.
pub fn clean(st: &mut State, m: &dyn Media, plan: CleanPlan) -> Result<()> {
    let v = plan.victim;
    let ss = st.l.ss as usize;
    let takeable = |st: &State| st.segs.free_count() + st.segs.recycled_count();
    let before = takeable(st);
    for runs in plan.records {
        let total: u64 = runs.iter().map(|r| r.len).sum();
        // Room for exactly the header `write_record` will need, so the
        // record is written from this buffer without a copy.
        let eb = entry_bytes(Kind::Gc, &runs, &[]);
        let (h, _) = record_size(&st.l, st.gc.off, total, eb);
        let mut reserve = h;
        let mut buf = AlignedBuf::zeroed((h + total) as usize * ss);
        let mut at = h as usize * ss;
        for r in &runs {
            let len = r.len as usize * ss;
            st.read_media(m, r.old, &mut buf[at..at + len])?;
            at += len;
        }
        let place =
            st.write_record(m, Kind::Gc, &[], &runs, &mut buf, &mut reserve, false, None)?;
        debug_assert_eq!(reserve, place.h);
        let mut d = place.h;
        for r in &runs {
            let mut x = 0;
            let mut pieces = Vec::new();
            place.for_each_phys(&st.l, d, r.len, |phys, n| pieces.push((phys, n)));
            for (phys, n) in pieces {
                st.map_media(r.lba + x, n, phys);
                x += n;
            }
            d += r.len;
        }
    }
    debug_assert_eq!(
        before - takeable(st),
        plan.segments,
        "cleaning segment {v} took other than the planned segments"
    );
    debug_assert_eq!(
        st.segs.info[v as usize].live, 0,
        "segment {v} still live after GC"
    );
    if st.segs.info[v as usize].live == 0 {
        st.segs.quarantine_seg(v, st.media_flush_starts);
    }
    Ok(())
}
