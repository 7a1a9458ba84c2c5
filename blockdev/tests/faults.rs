//! Fault injection and space exhaustion on a `LogDevice` over `SimMedia`.
//!
//! * A media write error, a short write, a failed flush, a read error or a
//!   media that disappears makes the device fail-stop: the call that hit it
//!   returns `Io`, every later call returns `Failed`, and no data
//!   acknowledged by a successful flush is lost (every crash image of the
//!   media, and the media as left, recover to an allowed prefix).
//! * NoSpace: fill to the limit; a request that does not fit fails with
//!   `NoSpace` and no effect; overwriting mapped data on a full device
//!   always succeeds; trimming makes room again; GC never deadlocks.

mod support;

use std::sync::mpsc;
use std::time::Duration;

use atomic_api::conformance::assert_same_content;
use atomic_api::{AtomicDevice, Error, MemDevice, Request};
use blockdev::{CrashOptions, CrashSpec, LogDevice, SimFault, SimMedia};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use support::{
    build, check_image, device_digest, generate, probe_geometry, Config, Digest, HashModel, Op,
    Run, Verdict,
};

/// Runs `f` on another thread and fails if it takes longer than `secs`
/// (a GC deadlock or livelock would otherwise hang the suite).
fn with_deadline<T: Send + 'static>(
    secs: u64,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(v) => {
            handle.join().unwrap();
            v
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // The thread panicked: propagate its message.
            match handle.join() {
                Err(p) => std::panic::resume_unwind(p),
                Ok(()) => unreachable!(),
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: no progress in {secs} s (deadlock?)")
        }
    }
}

// ----------------------------------------------------------------- fail-stop

fn is_failed(r: &Result<(), Error>) -> bool {
    matches!(r, Err(Error::Failed { .. }))
}

/// Plays `ops` and arms `fault` before op `arm_at`. Returns the run record
/// (up to the failure) and whether the fault was hit.
fn run_with_fault(cfg: &Config, ops: &[Op], arm_at: usize, fault: SimFault) -> (Run, bool) {
    let media = cfg.media();
    let dev = support::format(cfg, media.clone());
    let format_events = media.event_count();
    let mut hm = HashModel::default();
    let mut run = Run {
        cfg: cfg.clone(),
        media: media.clone(),
        format_events,
        digests: vec![Digest::default()],
        req_start: Vec::new(),
        flushes: Vec::new(),
        accepted: Vec::new(),
        no_space: 0,
        stats: Default::default(),
    };
    let ss = cfg.ss;
    let mut hit = false;
    for (i, op) in ops.iter().enumerate() {
        if i == arm_at {
            media.inject(fault);
            if matches!(fault, SimFault::ReadError { .. }) {
                // Reads of mapped data go to the media.
                if let Ok(Some(r)) = dev.next_mapped(0) {
                    let mut buf = vec![0u8; ss as usize];
                    match dev.read(r.start, &mut buf) {
                        Ok(()) => {} // served from the buffer
                        Err(Error::Io { .. }) => {
                            hit = true;
                            break;
                        }
                        Err(e) => panic!("seed {}: read error surfaced as {e}", cfg.seed),
                    }
                }
            }
        }
        let before = media.event_count();
        let result = match op {
            Op::Req(segs) => dev.submit(build(ss, segs)),
            Op::Flush => dev.flush(),
            Op::Checkpoint => dev.checkpoint(),
        };
        match result {
            Ok(()) => match op {
                Op::Req(segs) => {
                    hm.apply(ss, segs);
                    run.digests.push(hm.digest);
                    run.req_start.push(before);
                    run.accepted.push(i);
                }
                Op::Flush => run.flushes.push((media.event_count(), run.req_start.len())),
                Op::Checkpoint => {}
            },
            Err(Error::NoSpace { .. }) => run.no_space += 1,
            Err(Error::Io { .. }) => {
                hit = true;
                // A request that failed with Io may or may not have reached
                // the media: count it as started, so k may include it.
                if let Op::Req(segs) = op {
                    hm.apply(ss, segs);
                    run.digests.push(hm.digest);
                    run.req_start.push(before);
                }
                break;
            }
            Err(e) => panic!(
                "seed {}: op {i} ({op}) failed with {e} before any fault",
                cfg.seed
            ),
        }
    }
    if hit {
        // Fail-stop: everything afterwards reports the failure.
        let mut req = Request::new();
        req.write(0, vec![1u8; ss as usize]);
        assert!(
            is_failed(&dev.submit(req)),
            "seed {}: submit after failure",
            cfg.seed
        );
        assert!(
            is_failed(&dev.flush()),
            "seed {}: flush after failure",
            cfg.seed
        );
        assert!(
            is_failed(&dev.checkpoint()),
            "seed {}: checkpoint after failure",
            cfg.seed
        );
        let mut buf = vec![0u8; ss as usize];
        assert!(
            is_failed(&dev.read(0, &mut buf)),
            "seed {}: read after failure",
            cfg.seed
        );
        assert!(
            matches!(dev.next_mapped(0), Err(Error::Failed { .. })),
            "seed {}: next_mapped after failure",
            cfg.seed
        );
        // Writing nothing more: the media stays as the failure left it.
        let events = media.event_count();
        let _ = dev.flush();
        assert_eq!(
            media.event_count(),
            events,
            "seed {}: I/O after failure",
            cfg.seed
        );
        assert!(
            dev.close().is_err(),
            "seed {}: close after failure",
            cfg.seed
        );
    }
    (run, hit)
}

fn check_after_fault(run: &Run, what: &str) -> usize {
    let media = &run.media;
    media.clear_faults();
    // The media exactly as left (a restart without power loss) and every
    // crash image of the last two windows.
    let n = media.event_count();
    let mut specs = vec![CrashSpec::Prefix { at: n }];
    let window_start = run
        .flushes
        .iter()
        .rev()
        .nth(1)
        .map_or(run.format_events, |&(e, _)| e.max(run.format_events));
    specs.extend(media.crash_specs(&CrashOptions {
        from: window_start,
        subsets_per_window: 16,
        torn_per_write: 3,
        seed: run.cfg.seed,
        ..CrashOptions::default()
    }));
    for (i, spec) in specs.iter().enumerate() {
        if let Verdict::Violation(why) = check_image(run, spec, i % 5 == 0, i % 7 == 0) {
            panic!(
                "{what}: seed {}: crash image {spec} (allowed k {:?}): {why}",
                run.cfg.seed,
                run.bounds(spec.at())
            );
        }
    }
    specs.len()
}

#[test]
fn media_failures_are_fail_stop_and_lose_nothing_flushed() {
    let mut images = 0;
    let mut hits = 0;
    for seed in 0..40u64 {
        let cfg = Config::for_seed(1000 + seed, 160);
        let (cap, max_req) = probe_geometry(&cfg);
        let ops = generate(&cfg, cap, max_req);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let arm_at = rng.gen_range(0..ops.len() - 20);
        let fault = match seed % 5 {
            0 => SimFault::WriteError {
                skip: rng.gen_range(0..6),
            },
            1 => SimFault::ShortWrite {
                skip: rng.gen_range(0..6),
                sectors: rng.gen_range(1..40),
            },
            2 => SimFault::FlushError,
            3 => SimFault::Dead,
            _ => SimFault::ReadError { skip: 0 },
        };
        let what = format!("{fault:?} armed before op {arm_at}");
        let (run, hit) = run_with_fault(&cfg, &ops, arm_at, fault);
        if !hit {
            // (A read fault can be absorbed by the write buffer; writes and
            // flushes always come.)
            assert!(
                matches!(fault, SimFault::ReadError { .. }),
                "seed {}: {what} never fired",
                cfg.seed
            );
            continue;
        }
        hits += 1;
        images += check_after_fault(&run, &what);
    }
    println!("fail-stop: {hits} faults hit, {images} crash images checked");
    assert!(hits >= 30);
}

#[test]
fn failed_flush_is_never_retried() {
    let cfg = Config::for_seed(8, 0);
    assert_eq!(cfg.ss, 512);
    let media = cfg.media();
    let dev = support::format(&cfg, media.clone());
    let mut r = Request::new();
    r.write(10, vec![3u8; 512 * 4]);
    dev.submit(r).unwrap();
    dev.flush().unwrap();
    let mut r = Request::new();
    r.write(20, vec![4u8; 512]);
    dev.submit(r).unwrap();
    media.inject(SimFault::FlushError);
    match dev.flush() {
        Err(Error::Io { .. }) => {}
        other => panic!("flush with a failing media returned {other:?}"),
    }
    let flushes = media.stats().flushes;
    assert!(matches!(dev.flush(), Err(Error::Failed { .. })));
    assert_eq!(media.stats().flushes, flushes, "the flush was retried");
    // What was flushed survives.
    let back = LogDevice::open(media.durable(), &cfg.open).unwrap();
    let mut buf = vec![0u8; 512 * 4];
    back.read(10, &mut buf).unwrap();
    assert_eq!(buf, vec![3u8; 512 * 4]);
}

// ----------------------------------------------------------------- NoSpace

fn write_req(ss: u32, lba: u64, n: u64, tag: u8) -> Request {
    build(ss, &[support::Seg::W { lba, n, tag }])
}

/// Submits to both; NoSpace must leave the device exactly as it was.
fn submit_both(dev: &LogDevice<SimMedia>, model: &MemDevice, req: Request) -> Result<(), Error> {
    let before_stats = dev.stats();
    let before_space = dev.space();
    match dev.submit(req.clone()) {
        Ok(()) => {
            model.submit(req).unwrap();
            Ok(())
        }
        Err(e @ Error::NoSpace { .. }) => {
            assert_eq!(
                dev.stats().requests,
                before_stats.requests,
                "NoSpace counted"
            );
            assert_eq!(
                dev.space().live_bytes,
                before_space.live_bytes,
                "NoSpace changed live bytes"
            );
            Err(e)
        }
        Err(e) => panic!("unexpected error {e}"),
    }
}

#[test]
fn fill_no_space_trim_continue() {
    with_deadline(120, "fill/trim cycles", || {
        for ss in [512u32, 4096] {
            let mut cfg = Config::for_seed(if ss == 512 { 0 } else { 3 }, 0);
            cfg.segments = 20;
            let media = cfg.media();
            media.set_recording(false);
            let dev = support::format(&cfg, media.clone());
            let model = MemDevice::new(ss, u64::MAX / 2);
            let cap = dev.space().capacity_bytes / u64::from(ss);
            let chunk = 16u64;
            let mut rng = ChaCha8Rng::seed_from_u64(u64::from(ss));
            for round in 0..6u8 {
                // Fill sequentially from a round-specific base until NoSpace.
                let base = u64::from(round) * 1_000_000;
                let mut lba = base;
                let mut tag = round;
                loop {
                    tag = tag.wrapping_add(1);
                    let digest = device_digest(&dev).unwrap();
                    match submit_both(&dev, &model, write_req(ss, lba, chunk, tag)) {
                        Ok(()) => lba += chunk,
                        Err(_) => {
                            assert_eq!(
                                device_digest(&dev).unwrap(),
                                digest,
                                "NoSpace had an effect"
                            );
                            break;
                        }
                    }
                    if rng.gen_bool(0.1) {
                        dev.flush().unwrap();
                    }
                }
                let live = dev.space().live_bytes / u64::from(ss);
                assert!(
                    live + chunk > cap,
                    "ss {ss} round {round}: NoSpace with {live} of {cap} sectors live"
                );
                // A full device still accepts overwrites of mapped data.
                for _ in 0..200 {
                    let runs = atomic_api::conformance::mapped_runs(&dev);
                    let r = &runs[rng.gen_range(0..runs.len())];
                    let n = rng.gen_range(1..=(r.end - r.start).min(8));
                    let at = rng.gen_range(r.start..=r.end - n);
                    submit_both(&dev, &model, write_req(ss, at, n, rng.gen()))
                        .unwrap_or_else(|e| panic!("ss {ss}: overwrite on a full device: {e}"));
                    if rng.gen_bool(0.2) {
                        dev.flush().unwrap();
                    }
                }
                // Trim every other chunk of everything mapped; space returns.
                let runs = atomic_api::conformance::mapped_runs(&dev);
                for r in runs {
                    let mut at = r.start;
                    while at < r.end {
                        let n = chunk.min(r.end - at);
                        if (at / chunk) % 2 == round as u64 % 2 {
                            let mut t = Request::new();
                            t.trim(at, n);
                            submit_both(&dev, &model, t).unwrap();
                        }
                        at += n;
                    }
                }
                dev.flush().unwrap();
                assert!(dev.space().free_bytes > 0);
                dev.verify().unwrap();
            }
            assert_same_content(&dev, &model, "after fill/trim cycles");
            let gc = dev.stats().media_gc_bytes;
            let media = dev.close().unwrap();
            let dev = LogDevice::open(media, &cfg.open).unwrap();
            assert_same_content(&dev, &model, "after fill/trim cycles and reopen");
            println!(
                "ss {ss}: GC moved {} KiB over {} requests",
                gc >> 10,
                model.stats().requests
            );
        }
    });
}

#[test]
fn no_space_multi_segment_request_has_no_effect() {
    let cfg = Config::for_seed(0, 0);
    let dev = support::format(&cfg, cfg.media());
    let ss = cfg.ss;
    let cap = dev.space().capacity_bytes / u64::from(ss);
    // Fill all but 10 sectors.
    let mut lba = 0;
    while lba + 32 <= cap - 10 {
        dev.submit(write_req(ss, lba, 32, 1)).unwrap();
        lba += 32;
    }
    let rest = cap - 10 - lba;
    if rest > 0 {
        dev.submit(write_req(ss, lba, rest, 1)).unwrap();
    }
    dev.flush().unwrap();
    let before = device_digest(&dev).unwrap();
    // Trim 4, overwrite 4, add 20 new: net +16 > 10 free.
    let mut r = Request::new();
    r.trim(0, 4);
    r.write(100, vec![9u8; 4 * ss as usize]);
    r.write(1 << 40, vec![9u8; 20 * ss as usize]);
    assert!(matches!(dev.submit(r), Err(Error::NoSpace { .. })));
    assert_eq!(device_digest(&dev).unwrap(), before);
    // Net +6 fits.
    let mut r = Request::new();
    r.trim(0, 4);
    r.write(1 << 40, vec![9u8; 10 * ss as usize]);
    dev.submit(r).unwrap();
    dev.flush().unwrap();
    dev.verify().unwrap();
}

#[test]
fn random_churn_at_high_fill_never_deadlocks() {
    with_deadline(120, "random churn near full", || {
        for seed in 0..4u64 {
            let mut cfg = Config::for_seed(seed, 0);
            cfg.segments = 16 + seed * 4;
            let media = cfg.media();
            media.set_recording(false);
            let dev = support::format(&cfg, media);
            let ss = cfg.ss;
            let cap = dev.space().capacity_bytes / u64::from(ss);
            let model = MemDevice::new(ss, u64::MAX / 2);
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let window = cap * 99 / 100;
            let mut no_space = 0;
            for i in 0..4000 {
                let n = rng.gen_range(1..=16u64);
                let lba = rng.gen_range(0..window - n);
                let req = if rng.gen_bool(0.05) {
                    let mut t = Request::new();
                    t.trim(lba, n * 4);
                    t
                } else {
                    write_req(ss, lba, n, rng.gen())
                };
                if submit_both(&dev, &model, req).is_err() {
                    no_space += 1;
                }
                if i % 50 == 0 {
                    dev.flush().unwrap();
                }
            }
            dev.verify().unwrap();
            assert_same_content(&dev, &model, "after churn");
            println!(
                "seed {seed}: {no_space} NoSpace of 4000, WA {:.2}",
                dev.stats().write_amplification()
            );
        }
    });
}
