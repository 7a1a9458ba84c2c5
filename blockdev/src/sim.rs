//! `SimMedia`: an in-memory [`Media`] for crash and fault tests
//! (DESIGN.md §2, "SimMedia").
//!
//! It records every write, discard and flush as an event stream and turns
//! any point of that stream into a *crash image*: a new, independent
//! `SimMedia` holding what the media could contain had the power failed
//! there. Three kinds of crash are modelled (see [`CrashSpec`]):
//!
//! * [`CrashSpec::Prefix`]: every event before a point reached the media.
//! * [`CrashSpec::Subset`]: a volatile write cache lost some of the writes
//!   issued since the last completed flush: any subset of them is applied,
//!   in issue order, over the contents as of that flush.
//! * [`CrashSpec::Torn`]: one write reached the media only in part — any
//!   subset of its sectors. Sectors themselves are never torn.
//!
//! [`SimMedia::crash_specs`] enumerates crash points cheaply (exhaustively
//! when the unflushed window is small, by seeded sampling when it is large)
//! and [`SimMedia::image`] builds one. Images are cheap: contents live in
//! copy-on-write pages shared between the media, its snapshots at every
//! flush and the images made from them, so an image costs the pages its
//! unflushed writes touch, not the size of the media.
//!
//! Fault injection ([`SimFault`]) fails the Nth write, the next flush or a
//! read, or writes only part of a write before failing (a short write), so
//! tests can check that the layer above stops (fail-stop) and loses nothing
//! it acknowledged.
//!
//! Discards are recorded; what a discarded range reads back as afterwards is
//! chosen by [`DiscardMode`] (zeros, old data, or a seeded random mix) to
//! catch code that relies on either.
//!
//! Misuse that can only be a bug in the caller — an offset or length that is
//! not a whole number of sectors — panics with a clear message. I/O past the
//! end of the media returns an error (a truncated image is a legitimate
//! runtime condition).

use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::media::Media;

/// Bytes per copy-on-write page (at least one sector).
const PAGE_BYTES: usize = 16 << 10;

// ----------------------------------------------------------------- store

/// Copy-on-write page store: cloning it shares every page; writing a
/// shared page copies it first.
#[derive(Clone)]
struct Store {
    page: usize,
    len: u64,
    pages: Vec<Arc<Vec<u8>>>,
}

impl Store {
    fn zeroed(len: u64, sector_size: u32) -> Self {
        let page = PAGE_BYTES.max(sector_size as usize);
        let count = (len as usize).div_ceil(page);
        let zero = Arc::new(vec![0u8; page]);
        Store {
            page,
            len,
            pages: vec![zero; count],
        }
    }

    fn read(&self, offset: u64, buf: &mut [u8]) {
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset as usize + done;
            let (p, o) = (at / self.page, at % self.page);
            let n = (self.page - o).min(buf.len() - done);
            buf[done..done + n].copy_from_slice(&self.pages[p][o..o + n]);
            done += n;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let mut done = 0usize;
        while done < data.len() {
            let at = offset as usize + done;
            let (p, o) = (at / self.page, at % self.page);
            let n = (self.page - o).min(data.len() - done);
            Arc::make_mut(&mut self.pages[p])[o..o + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
    }

    fn zero(&mut self, offset: u64, len: u64) {
        let mut done = 0u64;
        while done < len {
            let at = (offset + done) as usize;
            let (p, o) = (at / self.page, at % self.page);
            let n = ((self.page - o) as u64).min(len - done) as usize;
            if o == 0 && n == self.page {
                self.pages[p] = Arc::new(vec![0u8; self.page]);
            } else {
                Arc::make_mut(&mut self.pages[p])[o..o + n].fill(0);
            }
            done += n as u64;
        }
    }

    fn to_vec(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.len as usize];
        self.read(0, &mut out);
        out
    }
}

// ----------------------------------------------------------------- public types

/// What a discarded range reads back as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiscardMode {
    /// The old contents stay (a media that ignores discard).
    Keep,
    /// The range reads as zeros (deterministic zeroing, like many SSDs).
    Zero,
    /// Each sector independently keeps its data or becomes zeros, decided
    /// by a generator seeded with this value.
    Random(u64),
}

/// A failure to inject. Counts refer to calls made after `inject`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimFault {
    /// The write call number `skip` from now (0 = the next) fails with EIO
    /// and changes nothing.
    WriteError { skip: u64 },
    /// The write call number `skip` from now writes only its first
    /// `sectors` sectors (clamped below the write's length) and then fails
    /// with EIO.
    ShortWrite { skip: u64, sectors: u32 },
    /// The next flush fails with EIO; the writes before it stay unflushed.
    FlushError,
    /// The read call number `skip` from now fails with EIO.
    ReadError { skip: u64 },
    /// Every write, flush and discard from now on fails with EIO (a media
    /// that went away).
    Dead,
}

/// One recorded media operation (data omitted; see [`SimMedia::events`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SimEvent {
    Write { offset: u64, len: u64 },
    Discard { offset: u64, len: u64 },
    Flush,
}

impl fmt::Display for SimEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SimEvent::Write { offset, len } => write!(f, "write {offset}+{len}"),
            SimEvent::Discard { offset, len } => write!(f, "discard {offset}+{len}"),
            SimEvent::Flush => write!(f, "flush"),
        }
    }
}

/// A crash point: which recorded events reached the media.
///
/// Event indices refer to [`SimMedia::events`]. The *window* of a point
/// `at` is the run of events after the last flush before `at`: the writes
/// that a volatile cache may still hold.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CrashSpec {
    /// Events `0..at` all reached the media.
    Prefix { at: usize },
    /// The contents as of the last flush before `at`, plus only the window
    /// events listed in `kept` (ascending), applied in issue order.
    Subset { at: usize, kept: Vec<usize> },
    /// Events `0..at` reached the media, and of the write `at` only the
    /// listed sectors (ascending, relative to the write's start).
    Torn { at: usize, sectors: Vec<u32> },
}

impl CrashSpec {
    /// The stream position of the crash.
    pub fn at(&self) -> usize {
        match self {
            CrashSpec::Prefix { at }
            | CrashSpec::Subset { at, .. }
            | CrashSpec::Torn { at, .. } => *at,
        }
    }
}

fn list<T: fmt::Display>(f: &mut fmt::Formatter<'_>, items: &[T]) -> fmt::Result {
    for (i, x) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(",")?;
        }
        write!(f, "{x}")?;
    }
    Ok(())
}

impl fmt::Display for CrashSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CrashSpec::Prefix { at } => write!(f, "prefix@{at}"),
            CrashSpec::Subset { at, kept } => {
                write!(f, "subset@{at}[")?;
                list(f, kept)?;
                f.write_str("]")
            }
            CrashSpec::Torn { at, sectors } => {
                write!(f, "torn@{at}[")?;
                list(f, sectors)?;
                f.write_str("]")
            }
        }
    }
}

impl std::str::FromStr for CrashSpec {
    type Err = String;

    /// Parses what `Display` prints (`prefix@7`, `subset@9[4,6]`,
    /// `torn@5[0,3]`), so a failing spec can be pasted into a replay.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("bad crash spec {s:?}");
        let (kind, rest) = s.split_once('@').ok_or_else(bad)?;
        let (at, items) = match rest.split_once('[') {
            Some((at, tail)) => (at, Some(tail.strip_suffix(']').ok_or_else(bad)?)),
            None => (rest, None),
        };
        let at: usize = at.parse().map_err(|_| bad())?;
        let parse_list = |items: Option<&str>| -> Result<Vec<u64>, String> {
            let items = items.ok_or_else(bad)?;
            if items.is_empty() {
                return Ok(Vec::new());
            }
            items
                .split(',')
                .map(|x| x.parse::<u64>().map_err(|_| bad()))
                .collect()
        };
        match kind {
            "prefix" if items.is_none() => Ok(CrashSpec::Prefix { at }),
            "subset" => Ok(CrashSpec::Subset {
                at,
                kept: parse_list(items)?.into_iter().map(|x| x as usize).collect(),
            }),
            "torn" => Ok(CrashSpec::Torn {
                at,
                sectors: parse_list(items)?.into_iter().map(|x| x as u32).collect(),
            }),
            _ => Err(bad()),
        }
    }
}

/// Bounds for [`SimMedia::crash_specs`].
#[derive(Clone, Debug)]
pub struct CrashOptions {
    /// One [`CrashSpec::Prefix`] after every write and discard (and at 0).
    pub prefixes: bool,
    /// Most [`CrashSpec::Subset`]s per window (taken at the end of each
    /// window: just before each flush and at the end of the stream). When
    /// every proper subset fits, all are listed; otherwise this many are
    /// sampled. Subsets that equal a prefix are left out.
    pub subsets_per_window: usize,
    /// Most [`CrashSpec::Torn`]s per write of two or more sectors:
    /// exhaustive when all fit, sampled otherwise.
    pub torn_per_write: usize,
    /// Only events with index `>= from` are considered (to skip, e.g., the
    /// writes of `format`).
    pub from: usize,
    /// Seed of the sampling.
    pub seed: u64,
}

impl Default for CrashOptions {
    fn default() -> Self {
        Self {
            prefixes: true,
            subsets_per_window: 32,
            torn_per_write: 4,
            from: 0,
            seed: 0,
        }
    }
}

/// Counters of a `SimMedia` (shared by its clones).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    pub writes: u64,
    pub write_bytes: u64,
    pub reads: u64,
    pub read_bytes: u64,
    pub flushes: u64,
    pub discards: u64,
    pub discard_bytes: u64,
    /// Injected faults that fired.
    pub faults_fired: u64,
}

// ----------------------------------------------------------------- rng

/// splitmix64: small, seedable, good enough for sampling.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
}

// ----------------------------------------------------------------- media

enum Op {
    Write {
        offset: u64,
        data: Arc<[u8]>,
    },
    /// Ranges the discard zeroed (empty when it kept the old data).
    Discard {
        offset: u64,
        len: u64,
        zeroed: Vec<(u64, u64)>,
    },
    Flush,
}

struct State {
    ss: u32,
    store: Store,
    recording: bool,
    ops: Vec<Op>,
    /// (k, store): the contents once events `0..k` have reached the media,
    /// for every k just after a flush (and the start of recording).
    snapshots: Vec<(usize, Store)>,
    discard_mode: DiscardMode,
    discard_rng: Rng,
    faults: Vec<(SimFault, u64)>,
    dead: bool,
    stats: SimStats,
}

/// In-memory media with an event log, crash images and fault injection.
///
/// `Clone` shares the media (an `Arc` inside), so a test keeps a handle
/// while a `LogDevice` owns another. Images from [`image`](Self::image),
/// [`snapshot`](Self::snapshot) and [`durable`](Self::durable) are new,
/// independent media.
#[derive(Clone)]
pub struct SimMedia {
    ss: u32,
    len: u64,
    name: Arc<str>,
    state: Arc<Mutex<State>>,
}

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("sim: injected {what} error (EIO)"))
}

impl SimMedia {
    /// A zero-filled media of `len_bytes` (rounded down to whole sectors)
    /// with `sector_size`-byte sectors (512 or 4096), recording on,
    /// discards zeroing.
    pub fn new(sector_size: u32, len_bytes: u64) -> Self {
        assert!(
            sector_size == 512 || sector_size == 4096,
            "SimMedia: sector size must be 512 or 4096, not {sector_size}"
        );
        let len = len_bytes / u64::from(sector_size) * u64::from(sector_size);
        Self::from_store(
            sector_size,
            Store::zeroed(len, sector_size),
            DiscardMode::Zero,
        )
    }

    /// A media holding `bytes` (length rounded down to whole sectors).
    pub fn from_bytes(sector_size: u32, bytes: &[u8]) -> Self {
        let m = Self::new(sector_size, bytes.len() as u64);
        let n = m.len as usize;
        m.lock().store.write(0, &bytes[..n]);
        m
    }

    fn from_store(ss: u32, store: Store, discard_mode: DiscardMode) -> Self {
        let len = store.len;
        let seed = match discard_mode {
            DiscardMode::Random(s) => s,
            _ => 0,
        };
        SimMedia {
            ss,
            len,
            name: Arc::from("sim"),
            state: Arc::new(Mutex::new(State {
                ss,
                snapshots: vec![(0, store.clone())],
                store,
                recording: true,
                ops: Vec::new(),
                discard_mode,
                discard_rng: Rng(seed),
                faults: Vec::new(),
                dead: false,
                stats: SimStats::default(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the name `describe` reports (default "sim").
    pub fn with_name(mut self, name: &str) -> Self {
        self.name = Arc::from(name);
        self
    }

    /// Chooses what discarded ranges read back as.
    pub fn set_discard_mode(&self, mode: DiscardMode) {
        let mut st = self.lock();
        st.discard_mode = mode;
        if let DiscardMode::Random(seed) = mode {
            st.discard_rng = Rng(seed);
        }
    }

    /// Turns event recording on or off. Off saves memory and time for big
    /// runs (benchmarks); crash images then see no history. Turning it on
    /// starts a fresh history whose base is the current contents.
    pub fn set_recording(&self, on: bool) {
        let mut st = self.lock();
        st.recording = on;
        st.ops.clear();
        st.snapshots.clear();
        if on {
            let base = st.store.clone();
            st.snapshots.push((0, base));
        }
    }

    /// Drops the recorded history; the current contents become the base
    /// (as if just flushed). Event indices restart at 0.
    pub fn forget_history(&self) {
        let on = self.lock().recording;
        self.set_recording(on);
    }

    /// Arms a fault. Several may be armed at once.
    pub fn inject(&self, fault: SimFault) {
        let mut st = self.lock();
        if fault == SimFault::Dead {
            st.dead = true;
        } else {
            st.faults.push((fault, 0));
        }
    }

    /// Disarms every fault (and revives a dead media).
    pub fn clear_faults(&self) {
        let mut st = self.lock();
        st.faults.clear();
        st.dead = false;
    }

    pub fn stats(&self) -> SimStats {
        self.lock().stats
    }

    /// Number of recorded events.
    pub fn event_count(&self) -> usize {
        self.lock().ops.len()
    }

    /// The recorded events (without data).
    pub fn events(&self) -> Vec<SimEvent> {
        self.lock()
            .ops
            .iter()
            .map(|op| match op {
                Op::Write { offset, data } => SimEvent::Write {
                    offset: *offset,
                    len: data.len() as u64,
                },
                Op::Discard { offset, len, .. } => SimEvent::Discard {
                    offset: *offset,
                    len: *len,
                },
                Op::Flush => SimEvent::Flush,
            })
            .collect()
    }

    /// Number of writes and discards since the last completed flush.
    pub fn unflushed(&self) -> usize {
        let st = self.lock();
        let base = st.snapshots.last().map_or(0, |s| s.0);
        st.ops.len() - base
    }

    /// The whole contents.
    pub fn contents(&self) -> Vec<u8> {
        self.lock().store.to_vec()
    }

    /// Writes bytes directly, bypassing recording and faults (to plant
    /// garbage or damage in tests). Recorded history is dropped.
    pub fn poke(&self, offset: u64, data: &[u8]) {
        {
            let mut st = self.lock();
            assert!(offset + data.len() as u64 <= self.len, "poke past the end");
            st.store.write(offset, data);
        }
        self.forget_history();
    }

    /// A new media with the current contents (every write reached it).
    pub fn snapshot(&self) -> SimMedia {
        let st = self.lock();
        Self::from_store(st.ss, st.store.clone(), st.discard_mode).with_name(&self.name)
    }

    /// A new media with the contents as of the last completed flush.
    pub fn durable(&self) -> SimMedia {
        let n = self.event_count();
        let st = self.lock();
        let (_, base) = base_for(&st, n);
        Self::from_store(st.ss, base.clone(), st.discard_mode).with_name(&self.name)
    }

    /// A new media of `len` bytes holding the first `len` bytes of this one
    /// (a truncated image).
    pub fn truncated(&self, len: u64) -> SimMedia {
        let bytes = self.contents();
        let len = (len as usize).min(bytes.len());
        SimMedia::from_bytes(self.ss, &bytes[..len]).with_name(&self.name)
    }

    /// The crash image `spec` describes, as a new independent media (same
    /// sector size and discard mode, fresh history, no faults).
    ///
    /// Panics if `spec` does not fit the recorded history.
    pub fn image(&self, spec: &CrashSpec) -> SimMedia {
        let st = self.lock();
        assert!(
            spec.at() <= st.ops.len(),
            "crash spec {spec} is past the {} recorded events",
            st.ops.len()
        );
        let (base_at, base) = base_for(&st, spec.at());
        let mut store = base.clone();
        match spec {
            CrashSpec::Prefix { at } => {
                for op in &st.ops[base_at..*at] {
                    apply(&mut store, op);
                }
            }
            CrashSpec::Subset { at, kept } => {
                let mut last = None;
                for &k in kept {
                    assert!(
                        k >= base_at && k < *at && last.is_none_or(|l| l < k),
                        "crash spec {spec}: kept events must ascend inside the window {base_at}..{at}"
                    );
                    last = Some(k);
                    apply(&mut store, &st.ops[k]);
                }
            }
            CrashSpec::Torn { at, sectors } => {
                for op in &st.ops[base_at..*at] {
                    apply(&mut store, op);
                }
                let Some(Op::Write { offset, data }) = st.ops.get(*at) else {
                    panic!("crash spec {spec}: event {at} is not a write");
                };
                let ss = st.ss as usize;
                for &s in sectors {
                    let s = s as usize;
                    assert!(
                        (s + 1) * ss <= data.len(),
                        "crash spec {spec}: sector {s} is past the write"
                    );
                    store.write(offset + (s * ss) as u64, &data[s * ss..(s + 1) * ss]);
                }
            }
        }
        Self::from_store(st.ss, store, st.discard_mode).with_name(&self.name)
    }

    /// Crash points of the recorded history, bounded by `options`.
    pub fn crash_specs(&self, options: &CrashOptions) -> Vec<CrashSpec> {
        let st = self.lock();
        let ss = u64::from(st.ss);
        let mut rng = Rng(options.seed ^ 0x5eed_c4a5_4e11);
        let mut out = Vec::new();
        let n = st.ops.len();
        let from = options.from.min(n);
        if options.prefixes {
            out.push(CrashSpec::Prefix { at: from });
            for (i, op) in st.ops.iter().enumerate().skip(from) {
                if !matches!(op, Op::Flush) {
                    out.push(CrashSpec::Prefix { at: i + 1 });
                }
            }
        }
        // Window ends: just before each flush, and the end of the stream.
        if options.subsets_per_window > 0 {
            let mut start = 0usize;
            for end in (0..=n).filter(|&i| i == n || matches!(st.ops[i], Op::Flush)) {
                let window: Vec<usize> = (start.max(from)..end).collect();
                start = end + 1;
                subsets(&window, end, options.subsets_per_window, &mut rng, &mut out);
            }
        }
        if options.torn_per_write > 0 {
            for (i, op) in st.ops.iter().enumerate().skip(from) {
                if let Op::Write { data, .. } = op {
                    let sectors = data.len() as u64 / ss;
                    if sectors >= 2 {
                        torn(i, sectors, options.torn_per_write, &mut rng, &mut out);
                    }
                }
            }
        }
        out
    }
}

/// The snapshot a crash at `at` starts from: the last one taken at or
/// before `at`.
fn base_for(st: &State, at: usize) -> (usize, &Store) {
    let i = st.snapshots.partition_point(|(k, _)| *k <= at);
    match i.checked_sub(1).map(|i| &st.snapshots[i]) {
        Some((k, store)) => (*k, store),
        None => panic!("SimMedia: no recorded history (recording is off)"),
    }
}

fn apply(store: &mut Store, op: &Op) {
    match op {
        Op::Write { offset, data } => store.write(*offset, data),
        Op::Discard { zeroed, .. } => {
            for &(o, l) in zeroed {
                store.zero(o, l);
            }
        }
        Op::Flush => {}
    }
}

/// Proper, non-empty subsets of `window` that are not prefixes of it.
fn subsets(window: &[usize], at: usize, limit: usize, rng: &mut Rng, out: &mut Vec<CrashSpec>) {
    let w = window.len();
    if w < 2 {
        return;
    }
    let is_prefix = |mask: u64| (mask + 1).is_power_of_two();
    let pick = |mask: u64| -> Vec<usize> {
        (0..w)
            .filter(|b| mask >> b & 1 == 1)
            .map(|b| window[b])
            .collect()
    };
    if w <= 20 && (1u64 << w) - 1 - w as u64 <= limit as u64 {
        for mask in 1..(1u64 << w) - 1 {
            if !is_prefix(mask) {
                out.push(CrashSpec::Subset {
                    at,
                    kept: pick(mask),
                });
            }
        }
        return;
    }
    let mut seen = std::collections::HashSet::new();
    // Structured picks first: each write alone dropped, each write alone kept.
    let mut candidates: Vec<Vec<usize>> = Vec::new();
    for skip in (0..w).rev() {
        candidates.push((0..w).filter(|&b| b != skip).map(|b| window[b]).collect());
        candidates.push(vec![window[skip]]);
    }
    let mut tries = 0;
    while seen.len() < limit && tries < limit * 4 + 8 {
        tries += 1;
        let structured = if tries % 2 == 0 {
            candidates.pop()
        } else {
            None
        };
        let kept = match structured {
            Some(c) => c,
            None => {
                let p = 1 + rng.below(7); // keep probability p/8
                (0..w)
                    .filter(|_| rng.below(8) < p)
                    .map(|b| window[b])
                    .collect()
            }
        };
        let full = kept.len() == w;
        let prefix = kept.iter().enumerate().all(|(i, &k)| k == window[i]);
        if kept.is_empty() || full || prefix {
            continue;
        }
        if seen.insert(kept.clone()) {
            out.push(CrashSpec::Subset { at, kept });
        }
    }
}

/// Torn versions of write `at` (of `sectors` sectors): proper, non-empty
/// subsets of its sectors.
fn torn(at: usize, sectors: u64, limit: usize, rng: &mut Rng, out: &mut Vec<CrashSpec>) {
    if sectors <= 12 && (1u64 << sectors) - 2 <= limit as u64 {
        for mask in 1..(1u64 << sectors) - 1 {
            let s = (0..sectors as u32).filter(|b| mask >> b & 1 == 1).collect();
            out.push(CrashSpec::Torn { at, sectors: s });
        }
        return;
    }
    let n = sectors as u32;
    let mut seen = std::collections::HashSet::new();
    let mut tries = 0;
    while seen.len() < limit && tries < limit * 4 + 8 {
        let kind = tries % 4;
        tries += 1;
        let s: Vec<u32> = match kind {
            // The first part only (a write cut short).
            0 => (0..1 + rng.below(u64::from(n - 1)) as u32).collect(),
            // The last part only (sectors written back to front).
            1 => (1 + rng.below(u64::from(n - 1)) as u32..n).collect(),
            // All but one sector.
            2 => {
                let hole = rng.below(u64::from(n)) as u32;
                (0..n).filter(|&s| s != hole).collect()
            }
            // Any mix.
            _ => (0..n).filter(|_| rng.coin()).collect(),
        };
        if s.is_empty() || s.len() == n as usize {
            continue;
        }
        if seen.insert(s.clone()) {
            out.push(CrashSpec::Torn { at, sectors: s });
        }
    }
}

impl State {
    /// Returns the fault that fires for this call, advancing the counters
    /// of the armed faults of that kind.
    fn fire(&mut self, kind: fn(&SimFault) -> Option<u64>) -> Option<SimFault> {
        let mut hit = None;
        for (i, (fault, seen)) in self.faults.iter_mut().enumerate() {
            if let Some(skip) = kind(fault) {
                if hit.is_none() && *seen == skip {
                    hit = Some(i);
                } else {
                    *seen += 1;
                }
            }
        }
        let fault = hit.map(|i| self.faults.remove(i).0);
        if fault.is_some() {
            self.stats.faults_fired += 1;
        }
        fault
    }

    fn record(&mut self, op: Op) {
        if !self.recording {
            return;
        }
        let is_flush = matches!(op, Op::Flush);
        self.ops.push(op);
        if is_flush {
            let k = self.ops.len();
            let store = self.store.clone();
            self.snapshots.push((k, store));
        }
    }
}

impl SimMedia {
    fn check_aligned(&self, what: &str, offset: u64, len: usize) {
        let ss = u64::from(self.ss);
        assert!(
            offset % ss == 0 && len as u64 % ss == 0,
            "SimMedia: {what} at offset {offset} of {len} bytes is not whole {ss}-byte sectors"
        );
    }

    fn check_range(&self, what: &str, offset: u64, len: u64) -> io::Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len => Ok(()),
            _ => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{}: {what} of {len} bytes at {offset} is past the end ({} bytes)",
                    self.name, self.len
                ),
            )),
        }
    }
}

impl Media for SimMedia {
    fn sector_size(&self) -> u32 {
        self.ss
    }

    fn len_bytes(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.check_aligned("read", offset, buf.len());
        self.check_range("read", offset, buf.len() as u64)?;
        let mut st = self.lock();
        if st
            .fire(|f| match f {
                SimFault::ReadError { skip } => Some(*skip),
                _ => None,
            })
            .is_some()
        {
            return Err(eio("read"));
        }
        st.stats.reads += 1;
        st.stats.read_bytes += buf.len() as u64;
        st.store.read(offset, buf);
        Ok(())
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.check_aligned("write", offset, data.len());
        self.check_range("write", offset, data.len() as u64)?;
        let mut st = self.lock();
        if st.dead {
            return Err(eio("write"));
        }
        let fault = st.fire(|f| match f {
            SimFault::WriteError { skip } | SimFault::ShortWrite { skip, .. } => Some(*skip),
            _ => None,
        });
        let data = match fault {
            Some(SimFault::ShortWrite { sectors, .. }) => {
                let max = data.len() / self.ss as usize - 1;
                let keep = (sectors as usize).min(max) * self.ss as usize;
                if keep > 0 {
                    st.store.write(offset, &data[..keep]);
                    st.record(Op::Write {
                        offset,
                        data: Arc::from(&data[..keep]),
                    });
                }
                return Err(eio("short write"));
            }
            Some(_) => return Err(eio("write")),
            None => data,
        };
        st.stats.writes += 1;
        st.stats.write_bytes += data.len() as u64;
        st.store.write(offset, data);
        if st.recording {
            st.record(Op::Write {
                offset,
                data: Arc::from(data),
            });
        }
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        let mut st = self.lock();
        if st.dead {
            return Err(eio("flush"));
        }
        if st
            .fire(|f| matches!(f, SimFault::FlushError).then_some(0))
            .is_some()
        {
            return Err(eio("flush"));
        }
        st.stats.flushes += 1;
        st.record(Op::Flush);
        Ok(())
    }

    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.check_aligned("discard", offset, len as usize);
        self.check_range("discard", offset, len)?;
        let mut st = self.lock();
        if st.dead {
            return Err(eio("discard"));
        }
        st.stats.discards += 1;
        st.stats.discard_bytes += len;
        let ss = u64::from(self.ss);
        let zeroed: Vec<(u64, u64)> = match st.discard_mode {
            DiscardMode::Keep => Vec::new(),
            DiscardMode::Zero => vec![(offset, len)],
            DiscardMode::Random(_) => {
                let mut runs: Vec<(u64, u64)> = Vec::new();
                let mut s = 0;
                while s < len / ss {
                    // Runs of 1..=8 sectors share a decision.
                    let run = (1 + st.discard_rng.below(8)).min(len / ss - s);
                    if st.discard_rng.coin() {
                        match runs.last_mut() {
                            Some((o, l)) if *o + *l == offset + s * ss => *l += run * ss,
                            _ => runs.push((offset + s * ss, run * ss)),
                        }
                    }
                    s += run;
                }
                runs
            }
        };
        for &(o, l) in &zeroed {
            st.store.zero(o, l);
        }
        st.record(Op::Discard {
            offset,
            len,
            zeroed,
        });
        Ok(())
    }

    fn describe(&self) -> String {
        self.name.to_string()
    }
}

// ----------------------------------------------------------------- tests

#[cfg(test)]
mod tests {
    use super::*;

    fn sector(ss: u32, tag: u8) -> Vec<u8> {
        vec![tag; ss as usize]
    }

    fn read(m: &SimMedia, offset: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        m.read_at(offset, &mut buf).unwrap();
        buf
    }

    #[test]
    fn reads_back_writes_and_clones_share() {
        let m = SimMedia::new(512, 1 << 20);
        let other = m.clone();
        m.write_at(4096, &sector(512, 7)).unwrap();
        assert_eq!(read(&other, 4096, 512), sector(512, 7));
        // Crossing a page boundary.
        let big: Vec<u8> = (0..40960u32).map(|i| i as u8).collect();
        m.write_at(PAGE_BYTES as u64 - 512, &big).unwrap();
        assert_eq!(read(&m, PAGE_BYTES as u64 - 512, big.len()), big);
        assert_eq!(m.len_bytes(), 1 << 20);
        let snap = m.snapshot();
        m.write_at(4096, &sector(512, 8)).unwrap();
        assert_eq!(
            read(&snap, 4096, 512),
            sector(512, 7),
            "snapshots are independent"
        );
    }

    #[test]
    fn past_end_is_an_error_and_misalignment_panics() {
        let m = SimMedia::new(4096, 8192);
        assert!(m.write_at(8192, &sector(4096, 1)).is_err());
        assert!(m.read_at(4096, &mut [0u8; 8192]).is_err());
        let r = std::panic::catch_unwind(|| m.write_at(512, &[0u8; 4096]));
        assert!(r.is_err());
    }

    #[test]
    fn prefixes_and_durable() {
        let m = SimMedia::new(512, 64 << 10);
        m.write_at(0, &sector(512, 1)).unwrap(); // 0
        m.flush().unwrap(); // 1
        m.write_at(0, &sector(512, 2)).unwrap(); // 2
        m.write_at(512, &sector(512, 3)).unwrap(); // 3
        assert_eq!(m.unflushed(), 2);
        assert_eq!(
            read(&m.durable(), 0, 1024),
            [sector(512, 1), sector(512, 0)].concat()
        );
        let specs = m.crash_specs(&CrashOptions {
            subsets_per_window: 0,
            torn_per_write: 0,
            ..Default::default()
        });
        assert_eq!(
            specs,
            vec![
                CrashSpec::Prefix { at: 0 },
                CrashSpec::Prefix { at: 1 },
                CrashSpec::Prefix { at: 3 },
                CrashSpec::Prefix { at: 4 },
            ]
        );
        let contents: Vec<Vec<u8>> = specs.iter().map(|s| read(&m.image(s), 0, 1024)).collect();
        assert_eq!(contents[0], vec![0u8; 1024]);
        assert_eq!(contents[1], [sector(512, 1), sector(512, 0)].concat());
        assert_eq!(contents[2], [sector(512, 2), sector(512, 0)].concat());
        assert_eq!(contents[3], [sector(512, 2), sector(512, 3)].concat());
        // Images are independent and have a fresh history.
        let img = m.image(&CrashSpec::Prefix { at: 4 });
        assert_eq!(img.event_count(), 0);
        img.write_at(0, &sector(512, 9)).unwrap();
        assert_eq!(read(&m, 0, 512), sector(512, 2));
    }

    #[test]
    fn subsets_are_exhaustive_when_small_and_skip_prefixes() {
        let m = SimMedia::new(512, 64 << 10);
        m.flush().unwrap(); // 0
        for i in 0..3u8 {
            m.write_at(u64::from(i) * 512, &sector(512, i + 1)).unwrap(); // 1,2,3
        }
        m.flush().unwrap(); // 4
        let specs = m.crash_specs(&CrashOptions {
            prefixes: false,
            torn_per_write: 0,
            ..Default::default()
        });
        // Proper non-empty subsets of {1,2,3} (6) minus prefixes {1},{1,2}.
        let mut kept: Vec<Vec<usize>> = specs
            .iter()
            .map(|s| match s {
                CrashSpec::Subset { at: 4, kept } => kept.clone(),
                other => panic!("unexpected {other}"),
            })
            .collect();
        kept.sort();
        assert_eq!(kept, vec![vec![1, 3], vec![2], vec![2, 3], vec![3]]);
        let img = m.image(&CrashSpec::Subset {
            at: 4,
            kept: vec![1, 3],
        });
        assert_eq!(
            read(&img, 0, 1536),
            [sector(512, 1), sector(512, 0), sector(512, 3)].concat()
        );
    }

    #[test]
    fn subsets_are_sampled_when_large() {
        let m = SimMedia::new(512, 64 << 10);
        for i in 0..40u64 {
            m.write_at(i * 512, &sector(512, i as u8)).unwrap();
        }
        let opts = CrashOptions {
            prefixes: false,
            torn_per_write: 0,
            subsets_per_window: 50,
            seed: 3,
            ..Default::default()
        };
        let specs = m.crash_specs(&opts);
        assert_eq!(specs.len(), 50);
        assert_eq!(specs, m.crash_specs(&opts), "seeded: reproducible");
        let set: std::collections::HashSet<_> = specs.iter().collect();
        assert_eq!(set.len(), 50, "no duplicates");
        for s in &specs {
            let _ = m.image(s);
        }
    }

    #[test]
    fn torn_writes_keep_whole_sectors() {
        let m = SimMedia::new(4096, 64 << 10);
        let data: Vec<u8> = [sector(4096, 1), sector(4096, 2), sector(4096, 3)].concat();
        m.write_at(0, &data).unwrap();
        let specs = m.crash_specs(&CrashOptions {
            prefixes: false,
            subsets_per_window: 0,
            torn_per_write: 100,
            ..Default::default()
        });
        assert_eq!(specs.len(), 6, "2^3 - 2 proper subsets");
        let img = m.image(&CrashSpec::Torn {
            at: 0,
            sectors: vec![0, 2],
        });
        assert_eq!(
            read(&img, 0, 3 * 4096),
            [sector(4096, 1), sector(4096, 0), sector(4096, 3)].concat()
        );
        // Big writes are sampled, never whole or empty.
        let m = SimMedia::new(512, 1 << 20);
        m.write_at(0, &vec![5u8; 128 * 512]).unwrap();
        let specs = m.crash_specs(&CrashOptions {
            prefixes: false,
            subsets_per_window: 0,
            torn_per_write: 10,
            ..Default::default()
        });
        assert_eq!(specs.len(), 10);
        for s in specs {
            let CrashSpec::Torn { sectors, .. } = &s else {
                panic!()
            };
            assert!(!sectors.is_empty() && sectors.len() < 128);
        }
    }

    #[test]
    fn spec_display_round_trips() {
        for s in [
            CrashSpec::Prefix { at: 7 },
            CrashSpec::Subset {
                at: 9,
                kept: vec![4, 6],
            },
            CrashSpec::Torn {
                at: 5,
                sectors: vec![0, 3],
            },
        ] {
            assert_eq!(s.to_string().parse::<CrashSpec>().unwrap(), s);
        }
        assert!("nope@1".parse::<CrashSpec>().is_err());
    }

    #[test]
    fn faults_fire_once_at_the_right_call() {
        let m = SimMedia::new(512, 64 << 10);
        m.inject(SimFault::WriteError { skip: 1 });
        m.write_at(0, &sector(512, 1)).unwrap();
        assert!(m.write_at(512, &sector(512, 2)).is_err());
        assert_eq!(
            read(&m, 512, 512),
            sector(512, 0),
            "failed write changes nothing"
        );
        m.write_at(512, &sector(512, 3)).unwrap();
        m.inject(SimFault::FlushError);
        assert!(m.flush().is_err());
        assert_eq!(m.unflushed(), 2, "a failed flush is not a flush");
        m.flush().unwrap();
        m.inject(SimFault::ShortWrite {
            skip: 0,
            sectors: 2,
        });
        assert!(m.write_at(0, &[9u8; 2048]).is_err());
        assert!(
            read(&m, 0, 2048) == [vec![9u8; 1024], vec![0u8; 1024]].concat(),
            "the first two sectors are written, the rest untouched"
        );
        assert_eq!(m.unflushed(), 1, "the short write's part is recorded");
        m.inject(SimFault::ReadError { skip: 0 });
        assert!(m.read_at(0, &mut [0u8; 512]).is_err());
        m.read_at(0, &mut [0u8; 512]).unwrap();
        m.inject(SimFault::Dead);
        assert!(m.write_at(0, &sector(512, 1)).is_err());
        assert!(m.flush().is_err());
        m.clear_faults();
        m.flush().unwrap();
        assert_eq!(m.stats().faults_fired, 4);
    }

    #[test]
    fn discard_modes() {
        for (mode, expect_zero) in [
            (DiscardMode::Zero, Some(true)),
            (DiscardMode::Keep, Some(false)),
            (DiscardMode::Random(1), None),
        ] {
            let m = SimMedia::new(512, 64 << 10);
            m.set_discard_mode(mode);
            m.write_at(0, &vec![7u8; 32 << 10]).unwrap();
            m.flush().unwrap();
            m.discard(0, 32 << 10).unwrap();
            let after = read(&m, 0, 32 << 10);
            match expect_zero {
                Some(true) => assert!(after.iter().all(|&b| b == 0)),
                Some(false) => assert!(after.iter().all(|&b| b == 7)),
                None => {
                    assert!(after.contains(&0) && after.contains(&7), "random mixes");
                    assert!(
                        after.chunks(512).all(|s| s.iter().all(|&b| b == s[0])),
                        "whole sectors"
                    );
                }
            }
            // A crash that loses the discard keeps the old data.
            let img = m.image(&CrashSpec::Prefix { at: 2 });
            assert!(read(&img, 0, 32 << 10).iter().all(|&b| b == 7));
            assert_eq!(m.stats().discards, 1);
        }
    }

    #[test]
    fn recording_off_and_forget() {
        let m = SimMedia::new(512, 1 << 20);
        m.set_recording(false);
        m.write_at(0, &sector(512, 1)).unwrap();
        m.flush().unwrap();
        assert_eq!(m.event_count(), 0);
        m.set_recording(true);
        m.write_at(512, &sector(512, 2)).unwrap();
        let img = m.image(&CrashSpec::Prefix { at: 0 });
        assert_eq!(
            read(&img, 0, 1024),
            [sector(512, 1), sector(512, 0)].concat()
        );
        m.forget_history();
        assert_eq!(m.event_count(), 0);
        assert_eq!(read(&m.durable(), 512, 512), sector(512, 2));
    }

    #[test]
    fn images_are_cheap() {
        // 256 MiB media, 2000 images: only touched pages are copied.
        let m = SimMedia::new(4096, 256 << 20);
        for i in 0..50u64 {
            m.write_at(i * 8192, &sector(4096, i as u8)).unwrap();
            if i % 10 == 9 {
                m.flush().unwrap();
            }
        }
        let start = std::time::Instant::now();
        for i in 0..2000 {
            let img = m.image(&CrashSpec::Prefix { at: i % 55 });
            assert_eq!(img.len_bytes(), 256 << 20);
        }
        assert!(start.elapsed().as_secs() < 20);
    }
}
