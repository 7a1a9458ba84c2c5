//! `atomfs-crash`: long crash-consistency explorations and replays.
//!
//! ```text
//! atomfs-crash --long                       # all seq-2, sampled seq-3, random runs
//! atomfs-crash --seq1 --seq2 500 --random 20 --random-len 300
//! atomfs-crash --replay 'seq2:4242' [--spec 'torn@57[0,3]'] [--show]
//! ```
//! Exit status 1 when a violation was found.

use std::time::Duration;

use atomfs_tests::explore::{self, ExploreOptions};
use atomfs_tests::runner::{self, Summary};
use atomfs_tests::workload::{self, sample, WorkloadId};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "atomfs-crash", about = "atomfs file-system crash explorer")]
struct Args {
    /// All seq-1 workloads.
    #[arg(long)]
    seq1: bool,
    /// A fixed sample of N seq-2 workloads (0 = none; see --long for all).
    #[arg(long, default_value_t = 0)]
    seq2: u64,
    /// A sample of N seq-3 workloads.
    #[arg(long, default_value_t = 0)]
    seq3: u64,
    /// N random runs (seeds from --seed).
    #[arg(long, default_value_t = 0)]
    random: u64,
    /// Steps per random run.
    #[arg(long, default_value_t = 300)]
    random_len: usize,
    /// First random seed, and the salt of the seq-2/seq-3 samples.
    #[arg(long, default_value_t = 1000)]
    seed: u64,
    /// Long mode: every seq-1 and seq-2 workload, --seq3 (default 20000)
    /// sampled seq-3 and --random (default 50) random runs.
    #[arg(long)]
    long: bool,
    /// Replay one workload by id (seq1:N, seq2:N, seq3:N, rand:SEED:LEN).
    #[arg(long)]
    replay: Option<String>,
    /// With --replay: check only this crash image (as printed, e.g. torn@57[0,3]).
    #[arg(long)]
    spec: Option<String>,
    /// With --replay: print the workload and recording details.
    #[arg(long)]
    show: bool,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Stop starting workloads after this many seconds.
    #[arg(long)]
    time_limit: Option<u64>,
    /// Subsets per unflushed window and torn variants per write.
    #[arg(long, default_value_t = 16)]
    subsets: usize,
    #[arg(long, default_value_t = 4)]
    torn: usize,
    /// Usability probe on every Nth image.
    #[arg(long, default_value_t = 1)]
    probe_every: usize,
}

fn main() {
    let args = Args::parse();
    let mut opts = ExploreOptions {
        subsets_per_window: args.subsets,
        torn_per_write: args.torn,
        probe_every: args.probe_every,
        ..ExploreOptions::default()
    };
    if let Some(id) = &args.replay {
        let id: WorkloadId = id.parse().unwrap_or_else(|e: String| die(&e));
        if let Some(spec) = &args.spec {
            opts.only = Some(spec.parse().unwrap_or_else(|e: String| die(&e)));
        }
        opts.stop_at_first = false;
        replay(id, &opts, args.show);
        return;
    }
    let mut sets: Vec<(String, Vec<WorkloadId>)> = Vec::new();
    let n1 = workload::seq1_count();
    if args.seq1 || args.long {
        sets.push(("seq1".into(), (0..n1).map(WorkloadId::Seq1).collect()));
    }
    if args.long {
        let all = workload::seq2_count();
        sets.push((
            "seq2 (all)".into(),
            (0..all).map(WorkloadId::Seq2).collect(),
        ));
    } else if args.seq2 > 0 {
        let ids = sample(workload::seq2_count() as u64, args.seq2, args.seed);
        sets.push((
            format!("seq2 sample of {}", ids.len()),
            ids.into_iter()
                .map(|i| WorkloadId::Seq2(i as usize))
                .collect(),
        ));
    }
    let seq3 = if args.long && args.seq3 == 0 {
        20_000
    } else {
        args.seq3
    };
    if seq3 > 0 {
        let ids = sample(workload::seq3_count(), seq3, args.seed);
        sets.push((
            format!("seq3 sample of {}", ids.len()),
            ids.into_iter().map(WorkloadId::Seq3).collect(),
        ));
    }
    let random = if args.long && args.random == 0 {
        50
    } else {
        args.random
    };
    if random > 0 {
        sets.push((
            format!("random {random} x {} steps", args.random_len),
            (args.seed..args.seed + random)
                .map(|seed| WorkloadId::Random {
                    seed,
                    len: args.random_len,
                })
                .collect(),
        ));
    }
    if sets.is_empty() {
        die("nothing to run: give --seq1, --seq2 N, --seq3 N, --random N, --long or --replay ID");
    }
    let start = std::time::Instant::now();
    let mut summaries: Vec<Summary> = Vec::new();
    for (name, ids) in &sets {
        let limit = args
            .time_limit
            .map(|t| Duration::from_secs(t).saturating_sub(start.elapsed()));
        if limit.is_some_and(|l| l.is_zero()) {
            println!("[{name}] skipped: time limit reached");
            continue;
        }
        println!("[{name}] {} workloads ...", ids.len());
        let s = runner::run(name, ids, &opts, args.threads, limit, Some(1000));
        println!("{s}");
        for v in &s.violations {
            println!("{v}");
        }
        summaries.push(s);
    }
    let images: u64 = summaries.iter().map(|s| s.images).sum();
    let workloads: u64 = summaries.iter().map(|s| s.workloads).sum();
    let violations: u64 = summaries.iter().map(|s| s.violation_count).sum();
    println!(
        "TOTAL: {workloads} workloads, {images} crash images, {violations} violations, {:.1} s",
        start.elapsed().as_secs_f64()
    );
    if violations > 0 {
        std::process::exit(1);
    }
}

fn replay(id: WorkloadId, opts: &ExploreOptions, show: bool) {
    let w = workload::build(id);
    println!("{w}");
    println!("config: {:?}", explore::Config::for_workload(&id));
    match explore::record(&w) {
        Err(v) => {
            println!("{v}");
            std::process::exit(1);
        }
        Ok(rec) => {
            if show {
                println!(
                    "events {} (crash points from {}); step starts {:?}; persistence points (event, steps) {:?}; results {:?}; GC {} B, checkpoint {} B during the steps",
                    rec.media.event_count(),
                    rec.from,
                    rec.step_start,
                    rec.persists,
                    rec.results,
                    rec.gc_bytes,
                    rec.checkpoint_bytes
                );
                for (i, e) in rec.media.events().iter().enumerate().skip(rec.from) {
                    println!("  event {i}: {e}");
                }
            }
            let out = explore::explore_recording(id, &rec, opts);
            for v in &out.violations {
                println!("{v}");
            }
            println!(
                "replay {id}: {} crash images, {} violations",
                out.images,
                out.violations.len()
            );
            if !out.violations.is_empty() {
                std::process::exit(1);
            }
        }
    }
}

fn die(msg: &str) -> ! {
    eprintln!("atomfs-crash: {msg}");
    std::process::exit(2);
}
