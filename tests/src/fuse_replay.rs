//! Crash images of real FUSE runs, replayed offline (issue 4, part 3).
//!
//! A seeded syscall workload (the same [`Plan`] and executor as
//! [`fuse_kill`]) runs through the real kernel on `atomfs-crash-daemon
//! --trace`, whose block layer sits on a recording media
//! ([`trace::TraceMedia`] over the image's `FileMedia`). After a clean
//! unmount the trace is played onto a `SimMedia` holding the base image
//! ([`trace::Trace::replay`]; its final contents must equal the image
//! file's), and every crash image `SimMedia` derives from that history —
//! each write boundary, subsets of the writes since the last flush, torn
//! writes — is recovered, checked by `blockdev::check` and
//! `atomfs::fsck::check`, and its `dump_tree` compared with the oracle.
//! This sees exactly the requests the kernel sent, so whatever the FUSE
//! path splits or reorders is in the images.
//!
//! # Tying media events to system calls (exact, no side channel)
//!
//! The recording media appends each event to the trace file before the
//! media call returns to the block layer. The test reads the trace file's
//! length (`stat`) at two moments of each step:
//!
//! * **before the step's system call starts** (`step_start`): every media
//!   event of this step or a later one is appended after that read, so
//!   its index is at least the number of events complete within that
//!   length. A crash after `at` events may thus contain step i only if
//!   `step_start[i] <= at`: *kmax* = the number of such steps;
//! * **after a persistence point returned** (fsync/fdatasync/fsyncdir; with
//!   `-o sync` after every step): the flush that made the step durable
//!   returned to the core before the FUSE reply, so its event is among the
//!   events complete within that length, `P`. A crash image whose position
//!   is at least `P` contains that flush (a prefix or torn write at `at`
//!   holds events `0..at`; a subset at `at` holds everything up to the
//!   last flush before `at`): *kmin* = the steps covered by the last such
//!   persistence point.
//!
//! Both are sound whatever else runs concurrently (a late event only
//! widens the range at the top, never the bottom), and tight: a test with
//! a single caller issues nothing between its syscall and its `stat`.
//!
//! The tree must equal the oracle after k steps, kmin ≤ k ≤ kmax, or —
//! in page-cache mounts — the oracle's state after the first FUSE WRITE of
//! a write the kernel splits in two ([`fuse_kill::kernel_split`]), for a
//! started step in that range.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use atomfs::fsck::FsckOptions;
use atomfs::inspect::{dump_tree, Tree};
use atomfs::{Fs, MountOptions};
use blockdev::{CrashOptions, CrashSpec, LogDevice, OpenOptions, SimMedia};

use crate::explore::{self, tree_diff};
use crate::fuse_kill::{self, BaseImage, DaemonMount, Plan};
use crate::syscalls::Root;
use crate::trace::{Trace, TraceEvent};

/// One replayed workload's settings.
#[derive(Clone, Debug)]
pub struct ReplayConfig {
    pub seed: u64,
    /// Steps of the random workload (its setup comes on top).
    pub len: usize,
    /// Mount options (e.g. "sync", "direct_io").
    pub opts: String,
    pub daemon: PathBuf,
    pub dir: PathBuf,
    pub subsets_per_window: usize,
    pub torn_per_write: usize,
    /// Most crash images checked; more are thinned evenly.
    pub max_images: usize,
    pub threads: usize,
}

/// Counts of one or more workloads.
#[derive(Debug, Default, Clone)]
pub struct ReplayCounts {
    pub workloads: u64,
    pub steps: u64,
    pub dropped_ops: u64,
    pub persist_points: u64,
    pub media_writes: u64,
    pub media_flushes: u64,
    pub media_discards: u64,
    /// Crash images `SimMedia` listed, and those checked.
    pub specs: u64,
    pub images: u64,
    /// Images equal to a state after the last persistence point.
    pub unpersisted_images: u64,
    /// Images holding the first piece of a write the kernel split.
    pub split_half_images: u64,
    /// Crash images that broke the contract (each workload reports its
    /// first in `violations`).
    pub violating_images: u64,
    pub errno_notes: Vec<String>,
    pub violations: Vec<String>,
}

impl ReplayCounts {
    pub fn add(&mut self, o: &ReplayCounts) {
        self.workloads += o.workloads;
        self.steps += o.steps;
        self.dropped_ops += o.dropped_ops;
        self.persist_points += o.persist_points;
        self.media_writes += o.media_writes;
        self.media_flushes += o.media_flushes;
        self.media_discards += o.media_discards;
        self.specs += o.specs;
        self.images += o.images;
        self.unpersisted_images += o.unpersisted_images;
        self.split_half_images += o.split_half_images;
        self.violating_images += o.violating_images;
        self.errno_notes.extend(o.errno_notes.iter().cloned());
        self.violations.extend(o.violations.iter().cloned());
    }
}

/// Trace lengths observed by the test (see the module docs).
struct Marks {
    /// Trace bytes when step i started.
    step_start: Vec<u64>,
    /// (trace bytes after a persistence point returned, steps it covers).
    persists: Vec<(u64, usize)>,
}

fn trace_len(path: &Path) -> Result<u64, String> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| format!("stat the trace: {e}"))
}

/// Runs the plan on a traced daemon and unmounts it cleanly.
fn record(
    plan: &Plan,
    cfg: &ReplayConfig,
    image: &Path,
    mnt: &Path,
    trace: &Path,
    counts: &mut ReplayCounts,
) -> Result<Marks, String> {
    let sync_mount = cfg.opts.split(',').any(|o| o == "sync");
    let m = DaemonMount::start_with(
        &cfg.daemon,
        image,
        mnt,
        &cfg.opts,
        &[OsStr::new("--trace"), trace.as_os_str()],
    )?;
    let mut marks = Marks {
        step_start: Vec::with_capacity(plan.steps.len()),
        persists: Vec::new(),
    };
    {
        let root = Root::open(mnt).map_err(|e| format!("open the mount: {e}"))?;
        for (i, step) in plan.steps.iter().enumerate() {
            marks.step_start.push(trace_len(trace)?);
            let r = root.apply(&step.op);
            let want = plan.results[i].map_err(|e| e.0);
            match (r, want) {
                (Ok(()), Ok(())) => {}
                (Err(a), Err(b)) if a == b => {}
                (Err(a), Err(b)) => counts.errno_notes.push(format!(
                    "seed {} step {i} ({}): kernel errno {a}, core errno {b}",
                    plan.seed, step.op
                )),
                (got, want) => {
                    return Err(format!(
                    "step {i} ({}) returned {got:?} through the kernel but {want:?} on the oracle",
                    step.op
                ))
                }
            }
            let persisted = matches!(root.persist(&step.op, step.persist), Ok(true));
            if persisted || sync_mount {
                counts.persist_points += u64::from(persisted);
                marks.persists.push((trace_len(trace)?, i + 1));
            }
        }
    }
    m.unmount()?;
    Ok(marks)
}

/// What a crash image matched.
enum Match {
    State(usize),
    Half,
}

/// Recovers one crash image read-only and finds its oracle state.
fn check_one(
    sim: &SimMedia,
    spec: &CrashSpec,
    plan: &Plan,
    (kmin, kmax): (usize, usize),
) -> Result<Match, String> {
    let image = sim.image(spec);
    let report = blockdev::check(&image);
    if !report.is_clean() {
        let errs: Vec<&str> = report.errors().map(|f| f.message.as_str()).collect();
        return Err(format!("blockdev::check found errors: {errs:?}"));
    }
    let ro = OpenOptions {
        read_only: true,
        ..OpenOptions::default()
    };
    let dev = LogDevice::open(image, &ro).map_err(|e| format!("LogDevice::open: {e}"))?;
    let fsck = atomfs::fsck::check(&dev, &FsckOptions::default());
    let errs: Vec<&str> = fsck.errors().map(|f| f.message.as_str()).collect();
    if !errs.is_empty() {
        return Err(format!("fsck found errors: {}", errs.join("; ")));
    }
    let fs = Fs::mount(
        dev,
        &MountOptions {
            read_only: true,
            ..explore::mount_opts()
        },
    )
    .map_err(|e| format!("read-only mount: {e}"))?;
    let tree: Tree = dump_tree(&fs).map_err(|e| format!("dump_tree: {e}"))?;
    if let Some(k) = (kmin..=kmax).rev().find(|&k| plan.trees[k] == tree) {
        return Ok(Match::State(k));
    }
    if (kmin..kmax).any(|j| plan.split[j].as_ref().is_some_and(|(h, _)| *h == tree)) {
        return Ok(Match::Half);
    }
    let (best, (cnt, first)) = (kmin..=kmax)
        .rev()
        .map(|k| (k, tree_diff(&tree, &plan.trees[k])))
        .min_by_key(|(_, (cnt, _))| *cnt)
        .expect("non-empty range");
    let elsewhere = plan.trees.iter().position(|t| *t == tree);
    Err(format!(
        "the recovered tree equals no allowed oracle state{}\n nearest allowed state k={best} differs on {cnt} path(s); first: {first}\n steps around: {}",
        match elsewhere {
            Some(j) => format!(" (it equals state k={j}, outside the allowed range)"),
            None => " (nor any other state of the workload)".into(),
        },
        (kmin.saturating_sub(2)..(kmax + 1).min(plan.steps.len()))
            .map(|j| format!(
                "\n   step {j} (state {j} -> {}): {} then {}",
                j + 1,
                plan.steps[j].op,
                plan.steps[j].persist
            ))
            .collect::<String>()
    ))
}

/// Runs one workload through the kernel and checks its crash images.
pub fn run(base: &BaseImage, cfg: &ReplayConfig) -> ReplayCounts {
    run_with(base, cfg, |_| {})
}

/// [`run`] with the oracle's plan altered first (self-test of the
/// checker: a wrong oracle must be reported).
pub fn run_with(
    base: &BaseImage,
    cfg: &ReplayConfig,
    tamper: impl FnOnce(&mut Plan),
) -> ReplayCounts {
    let mut counts = ReplayCounts {
        workloads: 1,
        ..ReplayCounts::default()
    };
    let page_cache = !cfg.opts.split(',').any(|o| o == "direct_io");
    let mut plan = Plan::build(cfg.seed, cfg.len, &base.oracle, page_cache);
    tamper(&mut plan);
    counts.dropped_ops = plan.dropped as u64;
    counts.steps = plan.steps.len() as u64;
    let image = cfg.dir.join(format!("replay-image-{}", cfg.seed));
    let mnt = cfg.dir.join(format!("replay-mnt-{}", cfg.seed));
    let trace = cfg.dir.join(format!("replay-trace-{}", cfg.seed));
    std::fs::copy(&base.path, &image).expect("copy the base image");
    std::fs::create_dir_all(&mnt).expect("mount point");
    let r = run_inner(base, cfg, &plan, &image, &mnt, &trace, &mut counts);
    if let Err(why) = r {
        counts.violations.push(format!(
            "FUSE REPLAY VIOLATION: seed {} (workload rand:{}:{} + setup, {} steps, -o '{}')\n  {}\n  rerun: ATOMFS_FUSE_REPLAY_SEEDS={} cargo nextest run -p atomfs-tests --test crash_fuse_replay",
            cfg.seed,
            cfg.seed,
            cfg.len,
            plan.steps.len(),
            cfg.opts,
            why.replace('\n', "\n  "),
            cfg.seed
        ));
    }
    let _ = std::fs::remove_file(&image);
    let _ = std::fs::remove_file(&trace);
    let _ = std::fs::remove_dir(&mnt);
    counts
}

fn run_inner(
    base: &BaseImage,
    cfg: &ReplayConfig,
    plan: &Plan,
    image: &Path,
    mnt: &Path,
    trace_path: &Path,
    counts: &mut ReplayCounts,
) -> Result<(), String> {
    let n = plan.steps.len();
    let marks = record(plan, cfg, image, mnt, trace_path, counts)?;
    let fin = fuse_kill::check_image(image).map_err(|e| format!("after the clean unmount: {e}"))?;
    if fin.tree != plan.trees[n] {
        return Err(format!(
            "after the clean unmount the image differs from the oracle's final state: {}",
            tree_diff(&fin.tree, &plan.trees[n]).1
        ));
    }

    // Rebuild the daemon's media history on a SimMedia.
    let trace = Trace::read(trace_path)?;
    counts.media_writes = trace.count(|e| matches!(e, TraceEvent::Write { .. })) as u64;
    counts.media_flushes = trace.count(|e| matches!(e, TraceEvent::Flush)) as u64;
    counts.media_discards = trace.count(|e| matches!(e, TraceEvent::Discard { .. })) as u64;
    let base_bytes = std::fs::read(&base.path).map_err(|e| format!("read the base: {e}"))?;
    let sim = trace
        .replay(4096, &base_bytes)
        .map_err(|e| format!("replaying the trace: {e}"))?;
    if sim.event_count() != trace.events.len() {
        return Err(format!(
            "SimMedia recorded {} events for {} traced ones",
            sim.event_count(),
            trace.events.len()
        ));
    }
    let on_disk = std::fs::read(image).map_err(|e| format!("read the image: {e}"))?;
    if sim.contents() != on_disk {
        return Err("the replayed trace does not reproduce the image file".into());
    }
    let step_start: Vec<usize> = marks
        .step_start
        .iter()
        .map(|&l| trace.events_within(l))
        .collect();
    let persists: Vec<(usize, usize)> = marks
        .persists
        .iter()
        .map(|&(l, k)| (trace.events_within(l), k))
        .collect();
    // As explore::Recording::bounds.
    let bounds = |at: usize| {
        let kmax = step_start.partition_point(|&e| e <= at);
        let i = persists.partition_point(|&(e, _)| e <= at);
        let kmin = if i == 0 { 0 } else { persists[i - 1].1 };
        (kmin, kmax.max(kmin))
    };

    let mut specs = sim.crash_specs(&CrashOptions {
        prefixes: true,
        subsets_per_window: cfg.subsets_per_window,
        torn_per_write: cfg.torn_per_write,
        from: 0,
        seed: cfg.seed,
    });
    counts.specs = specs.len() as u64;
    if specs.len() > cfg.max_images {
        let total = specs.len();
        specs = (0..cfg.max_images)
            .map(|i| specs[i * total / cfg.max_images].clone())
            .collect();
    }
    counts.images = specs.len() as u64;

    let results: Mutex<Vec<(usize, Result<Match, String>)>> = Mutex::new(Vec::new());
    let threads = cfg.threads.max(1);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (sim, specs, results, bounds) = (&sim, &specs, &results, &bounds);
            s.spawn(move || {
                for (i, spec) in specs.iter().enumerate().skip(t).step_by(threads) {
                    let b = bounds(spec.at());
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        check_one(sim, spec, plan, b)
                    }))
                    .unwrap_or_else(|_| Err("panic while checking the image".into()));
                    results.lock().unwrap().push((i, r));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|(i, _)| *i);
    let mut first_bad = None;
    for (i, r) in results {
        let (kmin, _) = bounds(specs[i].at());
        match r {
            Ok(Match::State(k)) => counts.unpersisted_images += u64::from(k > kmin),
            Ok(Match::Half) => {
                counts.split_half_images += 1;
                counts.unpersisted_images += 1;
            }
            Err(why) => {
                counts.violating_images += 1;
                first_bad.get_or_insert((i, why));
            }
        }
    }
    if let Some((i, why)) = first_bad {
        let (kmin, kmax) = bounds(specs[i].at());
        return Err(format!(
            "crash image {} (of {} media events: {} writes, {} flushes): allowed oracle states k = {kmin}..={kmax}\n{why}",
            specs[i],
            trace.events.len(),
            counts.media_writes,
            counts.media_flushes
        ));
    }
    Ok(())
}
