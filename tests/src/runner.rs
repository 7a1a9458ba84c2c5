//! Runs many workloads (on a few threads) and sums up what was checked.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::explore::{explore, ExploreOptions, Violation};
use crate::workload::WorkloadId;

/// Totals of a run.
#[derive(Debug, Default)]
pub struct Summary {
    pub name: String,
    pub workloads: u64,
    pub images: u64,
    /// Workloads in which GC / a checkpoint wrote during the steps.
    pub gc_workloads: u64,
    pub checkpoint_workloads: u64,
    pub violation_count: u64,
    /// The first few violations, in full.
    pub violations: Vec<Violation>,
    pub elapsed: Duration,
    /// True when a time limit stopped the run early.
    pub truncated: bool,
}

/// Full reports kept per run (the count covers all).
const KEEP: usize = 5;

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "atomfs crash explorer [{}]: {} workloads, {} crash images, {} violations; GC ran in {} and checkpoints in {} workloads; {:.1} s{}",
            self.name,
            self.workloads,
            self.images,
            self.violation_count,
            self.gc_workloads,
            self.checkpoint_workloads,
            self.elapsed.as_secs_f64(),
            if self.truncated { " (stopped by the time limit)" } else { "" }
        )
    }
}

/// Explores `ids` on `threads` threads, stopping new workloads after
/// `time_limit`. `progress` prints a line every so many workloads.
pub fn run(
    name: &str,
    ids: &[WorkloadId],
    opts: &ExploreOptions,
    threads: usize,
    time_limit: Option<Duration>,
    progress: Option<usize>,
) -> Summary {
    let start = Instant::now();
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let total = Mutex::new(Summary {
        name: name.to_string(),
        ..Summary::default()
    });
    std::thread::scope(|s| {
        for _ in 0..threads.max(1).min(ids.len().max(1)) {
            s.spawn(|| loop {
                if time_limit.is_some_and(|t| start.elapsed() > t) {
                    stop.store(true, Ordering::Relaxed);
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&id) = ids.get(i) else { break };
                let out = explore(id, opts);
                let mut t = total.lock().unwrap();
                t.workloads += 1;
                t.images += out.images;
                t.gc_workloads += u64::from(out.gc);
                t.checkpoint_workloads += u64::from(out.checkpoint);
                t.violation_count += out.violations.len() as u64;
                for v in out.violations {
                    eprintln!("{v}");
                    if t.violations.len() < KEEP {
                        t.violations.push(v);
                    }
                }
                if progress.is_some_and(|p| t.workloads % p as u64 == 0) {
                    eprintln!(
                        "  [{name}] {}/{} workloads, {} images, {} violations, {:.0} s",
                        t.workloads,
                        ids.len(),
                        t.images,
                        t.violation_count,
                        start.elapsed().as_secs_f64()
                    );
                }
            });
        }
    });
    let mut t = total.into_inner().unwrap();
    t.elapsed = start.elapsed();
    t.truncated = stop.load(Ordering::Relaxed) && (t.workloads as usize) < ids.len();
    t
}
