//! Block-level crash explorer (DESIGN.md §5, issue 2).
//!
//! Seeded random request streams (writes of 1..64 sectors, overlapping
//! rewrites, wide trims, multi-segment requests, flushes, checkpoints) run on
//! a `LogDevice` over `SimMedia` with a tiny geometry (16–32 segments of 64
//! KiB, checkpoints every 64–256 KiB), so GC and checkpoints happen many
//! times per run. Then every crash image the media recorded — each write
//! boundary, subsets of the writes since the last flush, torn writes — is
//! reopened with `LogDevice::open` and its content (walked with
//! `next_mapped` + `read`) must equal the model after requests 1..k for
//! some k between the last flushed request and the last started one. Some
//! images also go through `blockdev::check` (no errors allowed) and through
//! a write + flush + second recovery.
//!
//! Replay: `ATOMFS_SEED=<seed> cargo test -p blockdev --test crash_explorer
//! -- --nocapture` runs one seed (add `ATOMFS_SPEC=<spec>` to check one
//! image, e.g. `torn@812[0,3]`). `ATOMFS_EXPLORER_SEEDS=<n>` runs more seeds
//! (a longer, nightly-style run); `ATOMFS_SEED_BASE` shifts them and
//! `ATOMFS_EXPLORER_OPS` sets the stream length (default 400). The count
//! line is also written to `<target>/tmp/blockdev-crash-explorer.txt`
//! (`CARGO_TARGET_TMPDIR`), for CI logs. A replay
//! must use the same `ATOMFS_EXPLORER_OPS` as the failing run. To replay
//! the shrunk stream of a report, save its op lines to a file and add
//! `ATOMFS_STREAM=<file>` (with the report's `ATOMFS_SEED`, which picks the
//! geometry).

mod support;

use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use blockdev::{CrashOptions, CrashSpec};
use support::{check_image_with, generate, probe_geometry, run, Config, Op, Run, Verdict};

/// Stream length of one run.
const OPS: usize = 400;
/// Seeds per CI run.
const SEEDS: u64 = 24;
/// Images required per CI run.
const MIN_IMAGES: u64 = 100_000;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
    })
}

fn crash_options(cfg: &Config, run: &Run) -> CrashOptions {
    CrashOptions {
        prefixes: true,
        subsets_per_window: 48,
        torn_per_write: 6,
        from: run.format_events,
        seed: cfg.seed,
    }
}

struct Failure {
    spec: CrashSpec,
    why: String,
    bounds: (usize, usize),
}

/// Checks every crash image of `run` (or only `only`); returns the image
/// count and the first failure.
fn explore(run: &Run, only: Option<&CrashSpec>, stop_at_first: bool) -> (u64, Vec<Failure>) {
    let specs = match only {
        Some(s) => vec![s.clone()],
        None => run.media.crash_specs(&crash_options(&run.cfg, run)),
    };
    let mut failures = Vec::new();
    let mut n = 0;
    for (i, spec) in specs.iter().enumerate() {
        n += 1;
        let probe = i % 23 == 0;
        let fsck = i % 17 == 0;
        let nested = i % 31 == 0;
        if let Verdict::Violation(why) = check_image_with(run, spec, probe, fsck, nested) {
            failures.push(Failure {
                spec: spec.clone(),
                why,
                bounds: run.bounds(spec.at()),
            });
            if stop_at_first {
                break;
            }
        }
    }
    (n, failures)
}

/// Plays `ops` and reports whether some crash image violates the contract.
fn fails(cfg: &Config, ops: &[Op]) -> Option<Failure> {
    let r = std::panic::catch_unwind(|| {
        let run = run(cfg, ops, false);
        explore(&run, None, true).1.into_iter().next()
    });
    match r {
        Ok(f) => f,
        Err(_) => Some(Failure {
            spec: CrashSpec::Prefix { at: 0 },
            why: "the run itself panicked".into(),
            bounds: (0, 0),
        }),
    }
}

/// Drops chunks of operations while some crash image still fails (delta
/// debugging, bounded in time).
fn shrink(cfg: &Config, ops: Vec<Op>) -> (Vec<Op>, Option<Failure>) {
    let deadline = Instant::now() + std::time::Duration::from_secs(120);
    let mut best = ops;
    let mut last = fails(cfg, &best);
    let mut chunk = best.len().div_ceil(2);
    while chunk >= 1 && Instant::now() < deadline {
        let mut i = 0;
        let mut progressed = false;
        while i < best.len() && Instant::now() < deadline {
            let mut candidate = best.clone();
            candidate.drain(i..(i + chunk).min(best.len()));
            if let Some(f) = fails(cfg, &candidate) {
                best = candidate;
                last = Some(f);
                progressed = true;
            } else {
                i += chunk;
            }
        }
        if !progressed {
            if chunk == 1 {
                break;
            }
            chunk /= 2;
        }
    }
    (best, last)
}

fn report(cfg: &Config, ops: &[Op], f: &Failure) -> String {
    let mut s = format!(
        "crash explorer VIOLATION\n  seed: {} (replay: ATOMFS_SEED={} ATOMFS_SPEC='{}' cargo test -p blockdev --test crash_explorer -- --nocapture)\n  config: {:?}\n  spec: {}\n  allowed k: {}..={}\n  why: {}\n",
        cfg.seed, cfg.seed, f.spec, cfg, f.spec, f.bounds.0, f.bounds.1, f.why
    );
    // A replayed stream is already small: do not shrink it again.
    let (small, sf) = if std::env::var("ATOMFS_STREAM").is_ok() {
        (ops.to_vec(), None)
    } else {
        shrink(cfg, ops.to_vec())
    };
    s += &format!("  smallest reproducing stream ({} ops", small.len());
    if let Some(sf) = sf {
        s += &format!(
            "; fails at spec {} allowed {}..={}: {}",
            sf.spec, sf.bounds.0, sf.bounds.1, sf.why
        );
    }
    s += "; replay: save the lines below to a file and add ATOMFS_STREAM=<file>):\n";
    for (i, op) in small.iter().enumerate() {
        s += &format!("    {i:3}: {op}\n");
    }
    s
}

fn one_seed(seed: u64, only: Option<&CrashSpec>) -> (u64, Vec<String>) {
    let ops = env_u64("ATOMFS_EXPLORER_OPS").map_or(OPS, |n| n as usize);
    let cfg = Config::for_seed(seed, ops);
    let (cap, max_req) = probe_geometry(&cfg);
    let ops = match std::env::var("ATOMFS_STREAM") {
        // Replay a (shrunk) stream saved from a failure report.
        Ok(path) => support::parse_stream(
            &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")),
        ),
        Err(_) => generate(&cfg, cap, max_req),
    };
    let run = run(&cfg, &ops, true);
    let t = Instant::now();
    let (n, failures) = explore(&run, only, true);
    if std::env::var("ATOMFS_VERBOSE").is_ok() {
        println!(
            "seed {seed}: {} accepted, {} NoSpace, {} events, GC {} KiB, checkpoint {} KiB, {n} images in {:.2} s",
            run.accepted.len(),
            run.no_space,
            run.media.event_count(),
            run.stats.media_gc_bytes >> 10,
            run.stats.media_checkpoint_bytes >> 10,
            t.elapsed().as_secs_f64()
        );
    }
    let reports = failures.iter().map(|f| report(&cfg, &ops, f)).collect();
    (n, reports)
}

#[test]
fn crash_explorer() {
    let start = Instant::now();
    let only_spec: Option<CrashSpec> = std::env::var("ATOMFS_SPEC")
        .ok()
        .map(|s| s.parse().expect("ATOMFS_SPEC"));
    let seeds: Vec<u64> = match env_u64("ATOMFS_SEED") {
        Some(seed) => vec![seed],
        None => {
            let base = env_u64("ATOMFS_SEED_BASE").unwrap_or(0);
            let count = env_u64("ATOMFS_EXPLORER_SEEDS").unwrap_or(SEEDS);
            (base..base + count).collect()
        }
    };
    let full_run = seeds.len() as u64 >= SEEDS && only_spec.is_none();
    let next = AtomicUsize::new(0);
    let images = AtomicU64::new(0);
    let failures = Mutex::new(Vec::<String>::new());
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .min(seeds.len());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&seed) = seeds.get(i) else { break };
                let (n, reports) = one_seed(seed, only_spec.as_ref());
                images.fetch_add(n, Ordering::Relaxed);
                if !reports.is_empty() {
                    for r in &reports {
                        eprintln!("{r}");
                    }
                    failures.lock().unwrap().extend(reports);
                }
            });
        }
    });
    let images = images.load(Ordering::Relaxed);
    let failures = failures.into_inner().unwrap();
    // Written to the real stderr, past the test harness's capture, so CI
    // logs show the count even when the test passes.
    let _ = writeln!(
        std::io::stderr(),
        "crash explorer: {images} images, {} violations ({} seeds, {:.1} s)",
        failures.len(),
        seeds.len(),
        start.elapsed().as_secs_f64()
    );
    // And to a file, for CI scripts that print evidence from test runs
    // (nextest captures the output of passing tests unless configured).
    let summary = format!(
        "crash explorer: {images} images, {} violations ({} seeds of {} ops, seed base {})\n",
        failures.len(),
        seeds.len(),
        env_u64("ATOMFS_EXPLORER_OPS").unwrap_or(OPS as u64),
        seeds.first().copied().unwrap_or(0)
    );
    let _ = std::fs::write(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("blockdev-crash-explorer.txt"),
        summary,
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    if full_run {
        assert!(
            images >= MIN_IMAGES,
            "only {images} crash images (want {MIN_IMAGES})"
        );
    }
}

// ----------------------------------------------------------------- mutation tests

/// A media with a planted bug, to show the explorer catches it.
struct Mutant {
    inner: blockdev::SimMedia,
    kind: MutantKind,
    writes: AtomicU64,
}

#[derive(Clone, Copy, Debug)]
enum MutantKind {
    /// `flush` returns Ok without flushing (a lying disk cache).
    LyingFlush,
    /// Every 7th write returns Ok but is lost.
    LostWrite,
}

impl blockdev::Media for Mutant {
    fn sector_size(&self) -> u32 {
        self.inner.sector_size()
    }
    fn len_bytes(&self) -> u64 {
        self.inner.len_bytes()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.inner.read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let n = self.writes.fetch_add(1, Ordering::Relaxed);
        if matches!(self.kind, MutantKind::LostWrite) && n > 20 && n % 7 == 0 {
            return Ok(());
        }
        self.inner.write_at(offset, data)
    }
    fn flush(&self) -> std::io::Result<()> {
        match self.kind {
            MutantKind::LyingFlush => Ok(()),
            MutantKind::LostWrite => self.inner.flush(),
        }
    }
    fn discard(&self, offset: u64, len: u64) -> std::io::Result<()> {
        self.inner.discard(offset, len)
    }
    fn describe(&self) -> String {
        format!("mutant {:?}", self.kind)
    }
}

#[test]
fn explorer_catches_planted_media_bugs() {
    for kind in [MutantKind::LyingFlush, MutantKind::LostWrite] {
        let cfg = Config::for_seed(1, 200);
        let (cap, max_req) = probe_geometry(&cfg);
        let ops = generate(&cfg, cap, max_req);
        let r = std::panic::catch_unwind(|| {
            support::run_on(&cfg, &ops, false, |inner| Mutant {
                inner,
                kind,
                writes: AtomicU64::new(0),
            })
        });
        // A lost write may already break the live device (reads of lost
        // data fail their checks); that counts as caught too.
        let Ok(run) = r else {
            println!("mutant {kind:?}: caught while running the stream");
            continue;
        };
        let (n, failures) = explore(&run, None, true);
        let f = failures
            .first()
            .unwrap_or_else(|| panic!("mutant {kind:?}: {n} images and no violation found"));
        println!("mutant {kind:?}: caught at {}: {}", f.spec, f.why);
    }
}

// ----------------------------------------------------------------- regressions

/// Found by a long explorer run (`ATOMFS_SEED_BASE=1000
/// ATOMFS_EXPLORER_SEEDS=60 ATOMFS_EXPLORER_OPS=1200`). The crash image is
/// of a full, fragmented device taken after GC had cleaned three segments
/// but before the checkpoint that would have freed them. Recovery replays
/// the GC records, which leaves those segments sealed with no live data
/// (recovery cannot tell they were quarantined), so the device came up
/// with 2 free segments where the cleaner demanded 3 (checkpoint + GC
/// headroom) before it would clean anything, even a victim with nothing to
/// copy: every request, even a one-sector trim, failed with `NoSpace`, and
/// the checkpoint at open did not help. Now the checkpoint releases sealed
/// segments with no live data, the cleaner runs whenever its planned copy
/// plus a checkpoint fit, and a trim is accepted even when the reserve
/// cannot be restored.
///
/// The recovered device must accept a trim and then a long run of
/// overwrites of mapped data at full capacity (which need no new space),
/// keep its content, and recover it again after a clean close.
#[test]
fn no_wedge_after_recovery_seed_1026() {
    use atomic_api::conformance::{assert_same_content, mapped_runs, pattern};
    use atomic_api::{AtomicDevice, MemDevice, Request};
    use rand::{Rng, SeedableRng};

    let cfg = Config::for_seed(1026, 1200);
    let (cap, max_req) = probe_geometry(&cfg);
    let ops = generate(&cfg, cap, max_req);
    let run = run(&cfg, &ops, false);
    let spec: CrashSpec = "prefix@1857".parse().unwrap();
    let dev = blockdev::LogDevice::open(run.media.image(&spec), &cfg.open).unwrap();
    dev.verify().unwrap();
    let ss = cfg.ss as usize;
    // The model starts as a copy of what was recovered (checked against
    // the allowed prefixes by the explorer itself).
    let model = MemDevice::new(cfg.ss, u64::MAX / 2);
    for r in mapped_runs(&dev) {
        let mut buf = vec![0u8; (r.end - r.start) as usize * ss];
        dev.read(r.start, &mut buf).unwrap();
        let mut w = Request::new();
        w.write(r.start, buf);
        model.submit(w).unwrap();
    }
    let space = dev.space();
    assert!(
        space.free_bytes < 16 * ss as u64,
        "the image is meant to be of a full device: {space:?}"
    );
    let both = |req: Request, what: &str| {
        dev.submit(req.clone())
            .unwrap_or_else(|e| panic!("{what} after recovery: {e}"));
        model.submit(req).unwrap();
    };
    let mut trim = Request::new();
    trim.trim(0, 1);
    both(trim, "a one-sector trim");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1026);
    for i in 0..600 {
        let runs = mapped_runs(&dev);
        let r = &runs[rng.gen_range(0..runs.len())];
        let n = rng.gen_range(1..=(r.end - r.start).min(16));
        let at = rng.gen_range(r.start..=r.end - n);
        let mut w = Request::new();
        w.write(at, pattern(ss, at, n, rng.gen()));
        both(w, &format!("overwrite {i} of mapped data on a full device"));
        if i % 40 == 39 {
            dev.flush().unwrap();
        }
    }
    dev.verify().unwrap();
    assert_same_content(&dev, &model, "after overwrites at full capacity");
    let media = dev.close().unwrap();
    let dev = blockdev::LogDevice::open(media, &cfg.open).unwrap();
    assert_same_content(&dev, &model, "after close and reopen");
}

#[test]
fn printed_streams_parse_back() {
    let cfg = Config::for_seed(5, 120);
    let ops = generate(&cfg, 1000, 64);
    let text: String = ops
        .iter()
        .enumerate()
        .map(|(i, op)| format!("    {i:3}: {op}\n"))
        .collect();
    assert_eq!(support::parse_stream(&text), ops);
}
