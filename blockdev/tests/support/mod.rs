//! Shared by the block-level crash explorer and the fault tests: a compact
//! request-stream generator, a digest oracle (the content after every
//! prefix of the stream, as a 128-bit digest), and a runner that plays a
//! stream on a `LogDevice` over `SimMedia` while recording which media
//! events each operation spanned.

#![allow(dead_code)]

use std::fmt;

use atomic_api::conformance::{assert_same_content, pattern};
use atomic_api::{AtomicDevice, Error, MemDevice, Request};
use blockdev::{CrashSpec, DiscardMode, FormatOptions, LogDevice, Media, OpenOptions, SimMedia};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

// ----------------------------------------------------------------- ops

/// One segment of a generated request; data is `pattern(ss, lba, n, tag)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seg {
    W { lba: u64, n: u64, tag: u8 },
    T { lba: u64, n: u64 },
}

/// One step of a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Req(Vec<Seg>),
    Flush,
    Checkpoint,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Flush => f.write_str("flush"),
            Op::Checkpoint => f.write_str("checkpoint"),
            Op::Req(segs) => {
                f.write_str("req")?;
                for s in segs {
                    match s {
                        Seg::W { lba, n, tag } => write!(f, " W{lba}+{n}#{tag}")?,
                        Seg::T { lba, n } => write!(f, " T{lba}+{n}")?,
                    }
                }
                Ok(())
            }
        }
    }
}

impl std::str::FromStr for Op {
    type Err = String;

    /// Parses what `Display` prints (`flush`, `checkpoint`,
    /// `req W12+3#7 T40+8`), optionally after a `NNN:` line number.
    fn from_str(line: &str) -> Result<Self, String> {
        let bad = || format!("bad op {line:?}");
        let line = line.trim();
        let line = match line.split_once(':') {
            Some((n, rest)) if n.trim().chars().all(|c| c.is_ascii_digit()) => rest.trim(),
            _ => line,
        };
        match line {
            "flush" => return Ok(Op::Flush),
            "checkpoint" => return Ok(Op::Checkpoint),
            _ => {}
        }
        let mut words = line.split_whitespace();
        if words.next() != Some("req") {
            return Err(bad());
        }
        let num = |s: &str| s.parse::<u64>().map_err(|_| bad());
        let mut segs = Vec::new();
        for w in words {
            let (kind, rest) = w.split_at(1);
            let (lba, rest) = rest.split_once('+').ok_or_else(bad)?;
            segs.push(match kind {
                "W" => {
                    let (n, tag) = rest.split_once('#').ok_or_else(bad)?;
                    Seg::W {
                        lba: num(lba)?,
                        n: num(n)?,
                        tag: tag.parse().map_err(|_| bad())?,
                    }
                }
                "T" => Seg::T {
                    lba: num(lba)?,
                    n: num(rest)?,
                },
                _ => return Err(bad()),
            });
        }
        Ok(Op::Req(segs))
    }
}

/// Reads a stream printed by the explorer (one op per line; other lines
/// are ignored).
pub fn parse_stream(text: &str) -> Vec<Op> {
    text.lines().filter_map(|l| l.parse().ok()).collect()
}

pub fn build(ss: u32, segs: &[Seg]) -> Request {
    let mut r = Request::new();
    for s in segs {
        match *s {
            Seg::W { lba, n, tag } => {
                r.write(lba, pattern(ss as usize, lba, n, tag));
            }
            Seg::T { lba, n } => {
                r.trim(lba, n);
            }
        }
    }
    r
}

// ----------------------------------------------------------------- config

/// Geometry and knobs of one run, derived from its seed.
#[derive(Clone, Debug)]
pub struct Config {
    pub seed: u64,
    pub ss: u32,
    pub segments: u64,
    pub format: FormatOptions,
    pub open: OpenOptions,
    pub discard: DiscardMode,
    /// Requests and flushes in the stream.
    pub ops: usize,
}

impl Config {
    pub fn for_seed(seed: u64, ops: usize) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xC0FF_EE00);
        let ss = if seed % 4 == 3 { 4096 } else { 512 };
        let segment_size_bytes = if ss == 512 { 64 << 10 } else { 128 << 10 };
        let segments = rng.gen_range(16..=32);
        let ckpt = [64u64 << 10, 128 << 10, 256 << 10][rng.gen_range(0..3)];
        // Odd seeds write their records behind (on a writer thread). The
        // media sees the same writes in the same order, so crash images are
        // as deterministic as without; only a request's start event may be
        // read before the previous record's write lands, which can only
        // widen the allowed range of an image by that request.
        let write_behind = seed % 2 == 1;
        let format = FormatOptions {
            segment_size_bytes,
            overprovision_percent: rng.gen_range(10..=30),
            max_request_bytes: if rng.gen_bool(0.5) {
                Some(64 * u64::from(ss))
            } else {
                None
            },
            buffer_bytes: [None, Some(8 << 10), Some(32 << 10)][rng.gen_range(0..3)],
            checkpoint_interval_bytes: Some(ckpt),
            uuid: Some([seed as u8; 16]),
            write_behind: Some(write_behind),
            ..FormatOptions::default()
        };
        let open = OpenOptions {
            checkpoint_interval_bytes: Some(ckpt),
            write_behind: Some(write_behind),
            ..OpenOptions::default()
        };
        let discard = match rng.gen_range(0..3) {
            0 => DiscardMode::Zero,
            1 => DiscardMode::Keep,
            _ => DiscardMode::Random(seed),
        };
        Config {
            seed,
            ss,
            segments,
            format,
            open,
            discard,
            ops,
        }
    }

    pub fn media(&self) -> SimMedia {
        let len = 16384 + self.segments * self.format.segment_size_bytes;
        let m = SimMedia::new(self.ss, len);
        m.set_discard_mode(self.discard);
        m
    }
}

// ----------------------------------------------------------------- generator

/// A seeded stream for a device with `capacity_sectors` of live space and
/// requests of at most `max_request_sectors`.
pub fn generate(cfg: &Config, capacity_sectors: u64, max_request_sectors: u64) -> Vec<Op> {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let max_n = if cfg.ss == 512 { 64 } else { 16 };
    // Working window: from half the capacity to a bit more than all of it,
    // so the device runs from comfortable to NoSpace-bound.
    let fill = rng.gen_range(0.5..1.1);
    let window = ((capacity_sectors as f64 * fill) as u64).max(2 * max_n);
    let flush_p = rng.gen_range(0.04..0.2);
    let trim_p = rng.gen_range(0.05..0.25);
    let far = 1u64 << rng.gen_range(30..58);
    let mut ops = Vec::with_capacity(cfg.ops);
    while ops.len() < cfg.ops {
        let roll: f64 = rng.gen();
        if roll < flush_p {
            ops.push(Op::Flush);
            continue;
        }
        if roll < flush_p + 0.01 {
            ops.push(Op::Checkpoint);
            continue;
        }
        let mut segs: Vec<Seg> = Vec::new();
        let mut budget = max_request_sectors;
        let count = if rng.gen_bool(0.3) {
            rng.gen_range(2..=4)
        } else {
            1
        };
        for _ in 0..count {
            let n = if rng.gen_bool(0.5) {
                rng.gen_range(1..=8)
            } else {
                rng.gen_range(1..=max_n)
            };
            let base = if rng.gen_bool(0.03) { far } else { 0 };
            let lba = base + rng.gen_range(0..window - n);
            let trim = rng.gen_bool(trim_p);
            let overlaps = segs.iter().any(|s| {
                let (a, m) = match *s {
                    Seg::W { lba, n, .. } | Seg::T { lba, n } => (lba, n),
                };
                a < lba + n && lba < a + m
            });
            if overlaps || (!trim && n > budget) {
                continue;
            }
            if trim {
                // Trims are free and often wide.
                let n = if rng.gen_bool(0.3) { n * 4 } else { n };
                segs.push(Seg::T { lba, n });
            } else {
                budget -= n;
                segs.push(Seg::W {
                    lba,
                    n,
                    tag: rng.gen(),
                });
            }
        }
        // Re-check overlaps after widening trims.
        let mut ranges: Vec<(u64, u64)> = segs
            .iter()
            .map(|s| match *s {
                Seg::W { lba, n, .. } | Seg::T { lba, n } => (lba, lba + n),
            })
            .collect();
        ranges.sort_unstable();
        if segs.is_empty() || ranges.windows(2).any(|w| w[1].0 < w[0].1) {
            continue;
        }
        ops.push(Op::Req(segs));
    }
    ops
}

// ----------------------------------------------------------------- digest

/// Order-independent digest of a device's content: mapped sectors and a
/// pair of 64-bit sums of per-sector hashes of (lba, bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Digest {
    pub sectors: u64,
    pub a: u64,
    pub b: u64,
}

#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Two independent 64-bit hashes of one sector.
pub fn sector_hash(lba: u64, data: &[u8]) -> (u64, u64) {
    let mut a = mix(lba ^ 0x1234_5678_9abc_def1);
    let mut b = mix(lba.wrapping_add(0x0f0f_1e1e_2d2d_3c3c));
    for (i, w) in data.chunks_exact(8).enumerate() {
        let x = u64::from_le_bytes(w.try_into().unwrap());
        a = (a ^ x).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29);
        b = b
            .wrapping_add(x ^ (i as u64))
            .wrapping_mul(0xff51_afd7_ed55_8ccd)
            .rotate_left(31);
    }
    (mix(a), mix(b ^ 0x5555))
}

impl Digest {
    pub fn add(&mut self, h: (u64, u64)) {
        self.sectors += 1;
        self.a = self.a.wrapping_add(h.0);
        self.b = self.b.wrapping_add(h.1);
    }

    pub fn sub(&mut self, h: (u64, u64)) {
        self.sectors -= 1;
        self.a = self.a.wrapping_sub(h.0);
        self.b = self.b.wrapping_sub(h.1);
    }
}

/// The model's content as per-sector hashes, with a running digest.
#[derive(Default, Clone)]
pub struct HashModel {
    sectors: std::collections::HashMap<u64, (u64, u64)>,
    pub digest: Digest,
}

impl HashModel {
    pub fn apply(&mut self, ss: u32, segs: &[Seg]) {
        for s in segs {
            match *s {
                Seg::W { lba, n, tag } => {
                    let data = pattern(ss as usize, lba, n, tag);
                    for (i, chunk) in data.chunks_exact(ss as usize).enumerate() {
                        let at = lba + i as u64;
                        let h = sector_hash(at, chunk);
                        if let Some(old) = self.sectors.insert(at, h) {
                            self.digest.sub(old);
                        }
                        self.digest.add(h);
                    }
                }
                Seg::T { lba, n } => {
                    for at in lba..lba + n {
                        if let Some(old) = self.sectors.remove(&at) {
                            self.digest.sub(old);
                        }
                    }
                }
            }
        }
    }
}

/// The digest of what `dev` holds, walked with `next_mapped` and `read`.
pub fn device_digest(dev: &impl AtomicDevice) -> Result<Digest, Error> {
    let ss = dev.geometry().sector_size as usize;
    let mut d = Digest::default();
    let mut buf = vec![0u8; 256 * ss];
    let mut from = 0;
    while let Some(run) = dev.next_mapped(from)? {
        let mut lba = run.start;
        while lba < run.end {
            let n = (run.end - lba).min(256);
            let b = &mut buf[..n as usize * ss];
            dev.read(lba, b)?;
            for (i, chunk) in b.chunks_exact(ss).enumerate() {
                d.add(sector_hash(lba + i as u64, chunk));
            }
            lba += n;
        }
        from = run.end;
    }
    Ok(d)
}

// ----------------------------------------------------------------- runner

/// What a stream did on the device, for mapping crash points to the
/// allowed prefixes.
pub struct Run {
    pub cfg: Config,
    pub media: SimMedia,
    /// Media events issued by `format`.
    pub format_events: usize,
    /// digests[k]: content after the first k accepted requests.
    pub digests: Vec<Digest>,
    /// Event count when accepted request k+1 started (ascending).
    pub req_start: Vec<usize>,
    /// (event count when a successful flush returned, requests before it).
    pub flushes: Vec<(usize, usize)>,
    /// Accepted requests, in order (for the shrinker's report).
    pub accepted: Vec<usize>,
    pub no_space: usize,
    /// The device's counters at the end of the stream.
    pub stats: atomic_api::Stats,
}

impl Run {
    /// Allowed k for a crash after `at` events: every request acknowledged
    /// by a flush that returned before the crash, and at most those that
    /// had started.
    pub fn bounds(&self, at: usize) -> (usize, usize) {
        let kmax = self.req_start.partition_point(|&e| e <= at);
        let i = self.flushes.partition_point(|&(e, _)| e <= at);
        let kmin = if i == 0 { 0 } else { self.flushes[i - 1].1 };
        (kmin, kmax)
    }
}

pub fn format(cfg: &Config, media: SimMedia) -> LogDevice<SimMedia> {
    LogDevice::format(media, &cfg.format)
        .unwrap_or_else(|e| panic!("seed {}: format failed: {e} ({cfg:?})", cfg.seed))
}

/// Plays `ops` on a fresh device. Checks the live device against a
/// `MemDevice` at the end (read-your-writes) and returns the recording.
pub fn run(cfg: &Config, ops: &[Op], check_live: bool) -> Run {
    run_on(cfg, ops, check_live, |m| m)
}

/// Like [`run`], with the device over `wrap(sim)` (a planted-bug media in
/// mutation tests); crash images still come from the `SimMedia` beneath.
pub fn run_on<M: Media>(
    cfg: &Config,
    ops: &[Op],
    check_live: bool,
    wrap: impl FnOnce(SimMedia) -> M,
) -> Run {
    let media = cfg.media();
    let dev = LogDevice::format(wrap(media.clone()), &cfg.format)
        .unwrap_or_else(|e| panic!("seed {}: format failed: {e} ({cfg:?})", cfg.seed));
    let format_events = media.event_count();
    let model = MemDevice::new(cfg.ss, u64::MAX / 2);
    let mut hm = HashModel::default();
    let mut run = Run {
        cfg: cfg.clone(),
        media,
        format_events,
        digests: vec![Digest::default()],
        req_start: Vec::new(),
        flushes: Vec::new(),
        accepted: Vec::new(),
        no_space: 0,
        stats: atomic_api::Stats::default(),
    };
    for (i, op) in ops.iter().enumerate() {
        let before = run.media.event_count();
        match op {
            Op::Req(segs) => match dev.submit(build(cfg.ss, segs)) {
                Ok(()) => {
                    if check_live {
                        model.submit(build(cfg.ss, segs)).unwrap();
                    }
                    hm.apply(cfg.ss, segs);
                    run.digests.push(hm.digest);
                    run.req_start.push(before);
                    run.accepted.push(i);
                }
                Err(Error::NoSpace { .. }) => run.no_space += 1,
                Err(e) => panic!("seed {}: op {i} ({op}) failed: {e}", cfg.seed),
            },
            Op::Flush => {
                dev.flush()
                    .unwrap_or_else(|e| panic!("seed {}: flush failed: {e}", cfg.seed));
                run.flushes
                    .push((run.media.event_count(), run.req_start.len()));
            }
            Op::Checkpoint => dev
                .checkpoint()
                .unwrap_or_else(|e| panic!("seed {}: checkpoint failed: {e}", cfg.seed)),
        }
    }
    if check_live {
        dev.verify()
            .unwrap_or_else(|e| panic!("seed {}: verify after the stream: {e}", cfg.seed));
        assert_same_content(&dev, &model, &format!("seed {}: live device", cfg.seed));
    }
    run.stats = dev.stats();
    drop(dev);
    run
}

// ----------------------------------------------------------------- checking images

/// Far from anything the generator touches: where post-recovery writes go.
pub const PROBE_LBA: u64 = (1 << 59) + 12345;

/// Outcome of one crash image.
pub enum Verdict {
    Ok { k: usize },
    Violation(String),
}

/// Opens the crash image, checks its content against the allowed digests,
/// and, when `probe`, also checks that the recovered device accepts a new
/// request that survives a flush and a second recovery; when `fsck`, runs
/// `blockdev::check` first and requires no errors.
pub fn check_image(run: &Run, spec: &CrashSpec, probe: bool, fsck: bool) -> Verdict {
    check_image_with(run, spec, probe, fsck, false)
}

/// [`check_image`], and when `nested`, also every crash image of the
/// recovery itself (a second power loss while `open` writes its
/// checkpoint) must recover to the same content.
pub fn check_image_with(
    run: &Run,
    spec: &CrashSpec,
    probe: bool,
    fsck: bool,
    nested: bool,
) -> Verdict {
    let cfg = &run.cfg;
    let image = run.media.image(spec);
    let (kmin, kmax) = run.bounds(spec.at());
    if fsck {
        let report = blockdev::check(&image);
        if !report.is_clean() {
            let errs: Vec<String> = report.errors().map(|f| f.message.clone()).collect();
            return Verdict::Violation(format!("check() found errors: {errs:?}"));
        }
    }
    let dev = match LogDevice::open(image.clone(), &cfg.open) {
        Ok(d) => d,
        Err(e) => return Verdict::Violation(format!("open failed: {e}")),
    };
    if let Err(e) = dev.verify() {
        return Verdict::Violation(format!("verify after recovery: {e}"));
    }
    let d = match device_digest(&dev) {
        Ok(d) => d,
        Err(e) => return Verdict::Violation(format!("reading the recovered device: {e}")),
    };
    let Some(k) = (kmin..=kmax).rev().find(|&k| run.digests[k] == d) else {
        let other = run.digests.iter().position(|x| *x == d);
        return Verdict::Violation(format!(
            "content matches no allowed prefix k in {kmin}..={kmax} ({} sectors); {}",
            d.sectors,
            match other {
                Some(k) => format!("it equals the prefix k={k} (outside the allowed range)"),
                None => "it equals no prefix at all (torn or corrupt)".into(),
            }
        ));
    };
    if nested {
        let specs = image.crash_specs(&blockdev::CrashOptions {
            subsets_per_window: 8,
            torn_per_write: 3,
            seed: spec.at() as u64,
            ..blockdev::CrashOptions::default()
        });
        for inner in specs {
            let again = image.image(&inner);
            match LogDevice::open(again, &cfg.open).map(|d| device_digest(&d)) {
                Ok(Ok(d2)) if d2 == d => {}
                Ok(Ok(_)) => {
                    return Verdict::Violation(format!(
                        "a crash during recovery ({inner} of the recovery's writes) changed the recovered content (k={k})"
                    ))
                }
                Ok(Err(e)) => {
                    return Verdict::Violation(format!("crash during recovery ({inner}): read: {e}"))
                }
                Err(e) => {
                    return Verdict::Violation(format!("crash during recovery ({inner}): open: {e}"))
                }
            }
        }
    }
    if probe {
        // A trim frees space, so it must be accepted however full the
        // recovered device is (one of unmapped sectors: no content change).
        let mut t = Request::new();
        t.trim(PROBE_LBA + 1, 8);
        if let Err(e) = dev.submit(t) {
            return Verdict::Violation(format!("a trim after recovery failed: {e}"));
        }
        // Overwrite the first mapped sector (needs no new space, so it
        // works on a full device) or, on an empty one, write a new sector.
        let ss = cfg.ss as usize;
        let mut expect = run.digests[k];
        let (lba, old) = match dev.next_mapped(0) {
            Ok(Some(r)) => {
                let mut old = vec![0u8; ss];
                if let Err(e) = dev.read(r.start, &mut old) {
                    return Verdict::Violation(format!("read after recovery: {e}"));
                }
                (r.start, Some(old))
            }
            Ok(None) => (PROBE_LBA, None),
            Err(e) => return Verdict::Violation(format!("next_mapped after recovery: {e}")),
        };
        let data = vec![0xA5u8; ss];
        if let Some(old) = old {
            expect.sub(sector_hash(lba, &old));
        }
        expect.add(sector_hash(lba, &data));
        let mut req = Request::new();
        req.write(lba, data);
        if let Err(e) = dev.submit(req).and_then(|_| dev.flush()) {
            return Verdict::Violation(format!("write after recovery failed: {e}"));
        }
        let again = dev.media().durable();
        drop(dev);
        match LogDevice::open(again, &cfg.open).map(|d| device_digest(&d)) {
            Ok(Ok(d2)) if d2 == expect => {}
            Ok(Ok(_)) => {
                return Verdict::Violation(format!(
                    "after recovering k={k}, a flushed one-sector write and a second recovery \
                     did not give the expected content"
                ))
            }
            Ok(Err(e)) => return Verdict::Violation(format!("second recovery read: {e}")),
            Err(e) => return Verdict::Violation(format!("second recovery open: {e}")),
        }
    }
    Verdict::Ok { k }
}

/// Helper for tests that need the capacity and limits before generating.
pub fn probe_geometry(cfg: &Config) -> (u64, u64) {
    let dev = format(cfg, cfg.media());
    let g = dev.geometry();
    let cap = dev.space().capacity_bytes / u64::from(g.sector_size);
    let max_req = g.max_request_bytes / u64::from(g.sector_size);
    let _ = dev.media().len_bytes();
    (cap, max_req)
}
