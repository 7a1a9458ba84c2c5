//! Format and recovery: write a fresh layout, or load the newest valid
//! checkpoint and roll both log streams forward to the first record that is
//! missing, torn, stale or out of sequence.

use std::io;

use crate::checkpoint::{decode_blob, Slot};
use crate::device::OpenError;
use crate::layout::{
    Layout, SbError, Superblock, FORMAT_VERSION, SB_OFFSETS, SLOT_BYTES, SLOT_OFFSETS,
    SUPPORTED_INCOMPAT, SUPPORTED_RO_COMPAT,
};
use crate::media::Media;
use crate::placement::{span_needed, Placement};
use crate::record::{parse_entries, parse_fixed, record_crc, stored_crc, Kind};
use crate::segments::{SegState, SegTable};
use crate::state::State;

/// What recovery saw, for `check` and logs.
#[derive(Clone, Debug, Default)]
pub struct LoadInfo {
    /// Problems with a superblock copy (the other one was used).
    pub superblock_notes: Vec<String>,
    /// Checkpoint generation loaded and notes about the other slot.
    pub ckpt_gen: u64,
    pub slot_notes: Vec<String>,
    /// Records rolled forward per stream and why each stream ended.
    pub user_records: u64,
    pub gc_records: u64,
    pub user_end: String,
    pub gc_end: String,
}

fn io<'a>(m: &'a dyn Media, op: &'static str) -> impl FnOnce(io::Error) -> OpenError + 'a {
    move |source| OpenError::Io {
        media: m.describe(),
        op,
        source,
    }
}

fn corrupt(m: &dyn Media, detail: impl Into<String>) -> OpenError {
    OpenError::Corrupt {
        media: m.describe(),
        detail: detail.into(),
    }
}

/// Reads and validates the superblock copies.
pub fn read_superblock(
    m: &dyn Media,
    read_only: bool,
) -> Result<(Superblock, Vec<String>), OpenError> {
    let ss = m.sector_size();
    if ss != 512 && ss != 4096 {
        return Err(corrupt(
            m,
            format!("media sector size {ss} is not 512 or 4096"),
        ));
    }
    let len = m.len_bytes();
    let mut found = Vec::new();
    let mut notes = Vec::new();
    let mut any_magic = false;
    for (i, &at) in SB_OFFSETS.iter().enumerate() {
        if at + u64::from(ss) > len {
            notes.push(format!("superblock copy {i}: beyond the end of the media"));
            continue;
        }
        let mut b = vec![0u8; ss as usize];
        m.read_at(at, &mut b).map_err(io(m, "superblock read"))?;
        match Superblock::decode(&b) {
            Ok(sb) => {
                any_magic = true;
                found.push(sb);
            }
            Err(SbError::BadCrc) => {
                any_magic = true;
                notes.push(format!(
                    "superblock copy {i} (byte {at}): checksum mismatch"
                ));
            }
            Err(SbError::NoMagic) => {
                notes.push(format!("superblock copy {i} (byte {at}): no magic"))
            }
        }
    }
    let Some(sb) = found.first().cloned() else {
        if any_magic {
            return Err(corrupt(
                m,
                "both superblock copies are damaged (checksum mismatch)",
            ));
        }
        return Err(OpenError::NotAtomfs {
            media: m.describe(),
        });
    };
    if found.len() == 2 && found[0] != found[1] {
        notes.push("the two superblock copies differ; using copy 0".into());
    }
    if sb.version != FORMAT_VERSION {
        return Err(OpenError::UnsupportedVersion {
            media: m.describe(),
            found: sb.version,
            supported: FORMAT_VERSION,
        });
    }
    let unknown = sb.incompat & !SUPPORTED_INCOMPAT;
    if unknown != 0 {
        return Err(OpenError::UnknownFeatures {
            media: m.describe(),
            bits: unknown,
            kind: "incompatible",
        });
    }
    let unknown_ro = sb.ro_compat & !SUPPORTED_RO_COMPAT;
    if unknown_ro != 0 && !read_only {
        return Err(OpenError::UnknownFeatures {
            media: m.describe(),
            bits: unknown_ro,
            kind: "read-only-compatible (open read-only to use it)",
        });
    }
    if sb.sector_size != ss {
        return Err(corrupt(
            m,
            format!(
                "formatted with {}-byte sectors, the media has {ss}-byte sectors",
                sb.sector_size
            ),
        ));
    }
    sb.sanity()
        .map_err(|d| corrupt(m, format!("superblock: {d}")))?;
    if len < sb.media_bytes {
        return Err(OpenError::TooSmall {
            media: m.describe(),
            detail: format!(
                "the image is truncated: formatted for {} bytes, it has {len}",
                sb.media_bytes
            ),
            needed_bytes: sb.media_bytes,
            have_bytes: len,
        });
    }
    Ok((sb, notes))
}

/// Loads the newest checkpoint and rolls the log forward. Never writes.
pub fn load(
    m: &dyn Media,
    read_only: bool,
    ckpt_interval: Option<u64>,
) -> Result<(State, LoadInfo), OpenError> {
    let (sb, notes) = read_superblock(m, read_only)?;
    let mut info = LoadInfo {
        superblock_notes: notes,
        ..LoadInfo::default()
    };
    let l = Layout::new(sb.clone()).map_err(|d| corrupt(m, format!("superblock: {d}")))?;
    let mut slots = Vec::new();
    for (i, &at) in SLOT_OFFSETS.iter().enumerate() {
        let mut b = vec![0u8; SLOT_BYTES];
        m.read_at(at, &mut b)
            .map_err(io(m, "checkpoint slot read"))?;
        match Slot::decode(&b) {
            Ok(s) if s.uuid == sb.uuid => slots.push(s),
            Ok(_) => info
                .slot_notes
                .push(format!("slot {i}: left from another format (uuid differs)")),
            Err(e) => info.slot_notes.push(format!("slot {i}: {e}")),
        }
    }
    slots.sort_by_key(|s| std::cmp::Reverse(s.gen));
    let mut chosen = None;
    for slot in slots {
        match read_blob(m, &l, &slot) {
            Ok(blob) => {
                chosen = Some((slot, blob));
                break;
            }
            Err(e) => info
                .slot_notes
                .push(format!("checkpoint {}: {e}", slot.gen)),
        }
    }
    let Some((slot, blob)) = chosen else {
        return Err(corrupt(
            m,
            format!("no valid checkpoint ({})", info.slot_notes.join("; ")),
        ));
    };
    info.ckpt_gen = slot.gen;
    let mut st = State::new(l, sb.uuid, read_only, ckpt_interval);
    st.epoch = slot.epoch;
    st.ckpt_gen = slot.gen;
    st.ckpt_segs = slot.blob_segs.clone();
    st.last_blob_bytes = slot.blob_bytes;
    let n = st.l.segs;
    for (name, pos, want) in [
        ("user", blob.user, SegState::OpenUser),
        ("gc", blob.gc, SegState::OpenGc),
    ] {
        if pos.seg >= n
            || u64::from(pos.off) >= st.l.seg_sectors
            || blob.segs[pos.seg as usize].state != want
        {
            return Err(corrupt(
                m,
                format!(
                    "checkpoint {}: bad {name} stream position {pos:?}",
                    slot.gen
                ),
            ));
        }
    }
    st.segs = SegTable::from_info(blob.segs);
    for &s in &slot.blob_segs {
        if st.segs.info[s as usize].state != SegState::Ckpt {
            return Err(corrupt(
                m,
                format!("checkpoint {}: blob segment {s} not marked", slot.gen),
            ));
        }
    }
    st.user.seg = blob.user.seg;
    st.user.off = u64::from(blob.user.off);
    st.user.seq = blob.user.seq;
    st.gc.seg = blob.gc.seg;
    st.gc.off = u64::from(blob.gc.off);
    st.gc.seq = blob.gc.seq;
    let data_end = st.l.seg_start(n);
    let mut prev_end = 0u64;
    for (i, &(lba, phys, len)) in blob.extents.iter().enumerate() {
        if len == 0
            || phys < st.l.data_start
            || phys + len > data_end
            || (i > 0 && lba < prev_end)
            || lba.checked_add(len).is_none_or(|e| e > sb.logical_sectors)
        {
            return Err(corrupt(
                m,
                format!(
                    "checkpoint {}: extent {i} ({lba}, {phys}, {len}) is invalid",
                    slot.gen
                ),
            ));
        }
        prev_end = lba + len;
        st.map_media(lba, len, phys);
    }
    let (count, end) = replay(&mut st, m, Kind::User).map_err(io(m, "log read"))?;
    info.user_records = count;
    info.user_end = end;
    let (count, end) = replay(&mut st, m, Kind::Gc).map_err(io(m, "log read"))?;
    info.gc_records = count;
    info.gc_end = end;
    Ok((st, info))
}

fn read_blob(m: &dyn Media, l: &Layout, slot: &Slot) -> Result<crate::checkpoint::Blob, String> {
    let seg_bytes = l.sb.segment_bytes;
    if slot.blob_segs.iter().any(|s| *s >= l.segs) {
        return Err("names a segment past the end".into());
    }
    if slot.blob_bytes > seg_bytes * slot.blob_segs.len() as u64 {
        return Err("blob larger than its segments".into());
    }
    let padded = slot.blob_bytes.next_multiple_of(l.ss) as usize;
    let mut b = vec![0u8; padded];
    for (i, chunk) in b.chunks_mut(seg_bytes as usize).enumerate() {
        m.read_at(l.seg_start(slot.blob_segs[i]) * l.ss, chunk)
            .map_err(|e| format!("read error: {e}"))?;
    }
    b.truncate(slot.blob_bytes as usize);
    if crc32c::crc32c(&b) != slot.blob_crc {
        return Err("blob checksum mismatch".into());
    }
    let blob = decode_blob(&b, l.segs)?;
    if blob.gen != slot.gen || blob.epoch != slot.epoch || blob.uuid != slot.uuid {
        return Err("blob does not belong to its slot".into());
    }
    Ok(blob)
}

/// Rolls one stream forward. Returns the records applied and why it
/// stopped. Only media read errors are errors.
fn replay(st: &mut State, m: &dyn Media, kind: Kind) -> io::Result<(u64, String)> {
    let ss = st.l.ss as usize;
    let mut count = 0;
    loop {
        let stream = match kind {
            Kind::User => st.user,
            Kind::Gc => st.gc,
        };
        let at = st.l.seg_start(stream.seg) + stream.off;
        let mut first = vec![0u8; ss];
        m.read_at(at * st.l.ss, &mut first)?;
        let stop = |why: &str| {
            Ok((
                count,
                format!(
                    "{why} at segment {} sector {} (seq {})",
                    stream.seg, stream.off, stream.seq
                ),
            ))
        };
        let mut h = match parse_fixed(&first) {
            Ok(h) => h,
            Err(e) => return stop(e),
        };
        if h.kind != kind || h.uuid != st.uuid {
            return stop("foreign record");
        }
        if h.epoch != st.epoch {
            return stop("stale record (older epoch)");
        }
        if h.seq != stream.seq {
            return stop("out-of-sequence record");
        }
        let hs = u64::from(h.header_sectors);
        if hs > 1 + st.l.max_record_sectors
            || h.payload_sectors > st.l.max_record_sectors + st.l.seg_sectors
        {
            return stop("record too large");
        }
        let total = hs + h.payload_sectors;
        if span_needed(st.l.seg_sectors, stream.off, total) != h.span.len() as u64 {
            return stop("span list does not match the record size");
        }
        let mut distinct = h.span.clone();
        distinct.sort_unstable();
        distinct.dedup();
        // A GC record may also enter a segment the checkpoint holds as
        // sealed once nothing maps into it any more: the run time recycled
        // it (`SegTable::recycle`).
        let recycles = kind == Kind::Gc && st.l.gc_recycles();
        let usable = |s: u32| st.segs.is_free(s) || (recycles && st.segs.reusable_by_gc(s));
        if distinct.len() != h.span.len() || h.span.iter().any(|s| *s >= st.l.segs || !usable(*s)) {
            return stop("span names a segment in use");
        }
        let mut segs = vec![stream.seg];
        segs.extend_from_slice(&h.span);
        let place = Placement {
            segs,
            off: stream.off,
            h: hs,
            total,
        };
        let mut buf = vec![0u8; total as usize * ss];
        let mut pieces = Vec::new();
        place.for_each_phys(&st.l, 0, total, |phys, n| pieces.push((phys, n)));
        let mut v = 0usize;
        for (phys, n) in pieces {
            let len = n as usize * ss;
            m.read_at(phys * st.l.ss, &mut buf[v..v + len])?;
            v += len;
        }
        let hb = hs as usize * ss;
        if record_crc(&buf[..hb], &buf[hb..]) != stored_crc(&buf[..hb]) {
            return stop("torn or damaged record (checksum mismatch)");
        }
        if let Err(e) = parse_entries(&buf[..hb], &mut h) {
            return stop(e);
        }
        if h.runs.iter().any(|r| {
            r.lba
                .checked_add(r.len)
                .is_none_or(|e| e > st.l.sb.logical_sectors)
        }) || h.trims.iter().any(|t| {
            t.0.checked_add(t.1)
                .is_none_or(|e| e > st.l.sb.logical_sectors)
        }) {
            return stop("record addresses sectors outside the logical space");
        }
        // Accept.
        let open = match kind {
            Kind::User => SegState::OpenUser,
            Kind::Gc => SegState::OpenGc,
        };
        for &s in &h.span {
            let taken = st.segs.take(s, open) || st.segs.take_reused(s);
            debug_assert!(taken, "span segment {s} checked usable");
        }
        for &(lba, n) in &h.trims {
            st.unmap(lba, n);
        }
        let mut d = hs;
        for run in &h.runs {
            let mut x = 0;
            let mut pieces = Vec::new();
            place.for_each_phys(&st.l, d, run.len, |phys, n| pieces.push((phys, n)));
            for (phys, n) in pieces {
                let lba = run.lba + x;
                match kind {
                    Kind::User => st.map_media(lba, n, phys),
                    Kind::Gc => {
                        // Only where the sector still lives where GC copied
                        // it from (the user stream may have moved on).
                        let old = run.old + x;
                        let matching: Vec<_> = st
                            .map
                            .pieces(lba, n)
                            .into_iter()
                            .filter(|p| !p.pending && p.loc == old + (p.lba - lba))
                            .collect();
                        for p in matching {
                            st.map_media(p.lba, p.len, phys + (p.lba - lba));
                        }
                    }
                }
                x += n;
            }
            d += run.len;
        }
        st.note_record(kind, &place);
        count += 1;
    }
}
