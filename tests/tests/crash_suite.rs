//! CI crash-consistency suite (issue 4): every seq-1 workload, fixed
//! samples of seq-2 and seq-3, and long random runs, each crash image
//! recovered, fsck'd, compared with the oracle and probed for usability
//! (see `atomfs_tests::explore`). Zero violations allowed.
//!
//! The work is split into several test functions so nextest runs them in
//! parallel; each asserts a floor on its crash-image count, and the floors
//! add up to more than 200,000 images. Each prints its counts and also
//! writes them to `target/tmp/atomfs-crash/<test>.txt` (visible even when
//! the test passes and its output is captured).
//!
//! A violation prints the workload, its config and seed, the crash image
//! and the first difference from the nearest allowed oracle state, and a
//! command that replays exactly it (`atomfs-crash --replay ID --spec SPEC`).

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use atomfs_tests::explore::{explore_with, ExploreOptions};
use atomfs_tests::runner::{self, Summary};
use atomfs_tests::workload::{sample, seq1_count, seq2_count, seq3_count, WorkloadId};
use atomic_api::{AtomicDevice, Geometry, Request, Result as DevResult, Space, Stats};

/// Salt of the fixed samples (changing it changes which workloads run).
const SALT: u64 = 4;
const SEQ2_PER_TEST: u64 = 2400;
const SEQ3_SAMPLE: u64 = 1500;
const RANDOM_PER_TEST: u64 = 32;
const RANDOM_LEN: usize = 300;

/// Minimum crash images per test (measured counts are ~15% higher).
const FLOOR_SEQ1: u64 = 2_000;
const FLOOR_SEQ2: u64 = 34_000;
const FLOOR_SEQ3: u64 = 28_000;
const FLOOR_RANDOM: u64 = 24_000;

fn results_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("atomfs-crash");
    std::fs::create_dir_all(&d).expect("create results dir");
    d
}

/// Runs `ids`, prints and records the counts, and asserts no violations
/// and at least `min_images` crash images.
fn suite(name: &str, ids: Vec<WorkloadId>, min_images: u64) -> Summary {
    let s = runner::run(name, &ids, &ExploreOptions::default(), 1, None, None);
    println!("{s}");
    // Past the harness capture, so a passing run still shows it.
    let _ = writeln!(std::io::stderr(), "{s}");
    let _ = std::fs::write(results_dir().join(format!("{name}.txt")), format!("{s}\n"));
    let reports: Vec<String> = s.violations.iter().map(|v| v.to_string()).collect();
    assert_eq!(
        s.violation_count,
        0,
        "{} violations; first ones:\n{}",
        s.violation_count,
        reports.join("\n")
    );
    assert_eq!(s.workloads as usize, ids.len());
    assert!(
        s.images >= min_images,
        "[{name}] only {} crash images (want at least {min_images})",
        s.images
    );
    s
}

/// The per-test floors guarantee the suite's total of 200,000 images.
#[test]
fn crash_floors_add_up_to_200k_images() {
    let total = FLOOR_SEQ1 + 3 * FLOOR_SEQ2 + FLOOR_SEQ3 + 3 * FLOOR_RANDOM;
    assert!(total >= 200_000, "floors add up to only {total}");
}

#[test]
fn crash_seq1_all() {
    let ids = (0..seq1_count()).map(WorkloadId::Seq1).collect();
    suite("seq1_all", ids, FLOOR_SEQ1);
}

fn seq2_part(part: u64) -> Vec<WorkloadId> {
    let all = sample(seq2_count() as u64, 3 * SEQ2_PER_TEST, SALT);
    all[(part * SEQ2_PER_TEST) as usize..((part + 1) * SEQ2_PER_TEST) as usize]
        .iter()
        .map(|&i| WorkloadId::Seq2(i as usize))
        .collect()
}

#[test]
fn crash_seq2_sample_part1() {
    suite("seq2_sample_part1", seq2_part(0), FLOOR_SEQ2);
}

#[test]
fn crash_seq2_sample_part2() {
    suite("seq2_sample_part2", seq2_part(1), FLOOR_SEQ2);
}

#[test]
fn crash_seq2_sample_part3() {
    suite("seq2_sample_part3", seq2_part(2), FLOOR_SEQ2);
}

#[test]
fn crash_seq3_sample() {
    let ids = sample(seq3_count(), SEQ3_SAMPLE, SALT)
        .into_iter()
        .map(WorkloadId::Seq3)
        .collect();
    suite("seq3_sample", ids, FLOOR_SEQ3);
}

fn random_part(part: u64) -> Vec<WorkloadId> {
    (0..RANDOM_PER_TEST)
        .map(|i| WorkloadId::Random {
            seed: part * RANDOM_PER_TEST + i,
            len: RANDOM_LEN,
        })
        .collect()
}

#[test]
fn crash_random_runs_part1() {
    suite("random_runs_part1", random_part(0), FLOOR_RANDOM);
}

#[test]
fn crash_random_runs_part2() {
    suite("random_runs_part2", random_part(1), FLOOR_RANDOM);
}

#[test]
fn crash_random_runs_part3() {
    suite("random_runs_part3", random_part(2), FLOOR_RANDOM);
}

// ----------------------------------------------------------------- mutation tests

/// A device with a planted bug above the block layer, to show the
/// explorer catches file-system-level atomicity and durability bugs.
struct Mutant<D> {
    inner: D,
    kind: MutantKind,
    requests: AtomicU64,
    /// Set once the mutation has had an effect.
    fired: AtomicBool,
}

#[derive(Clone, Copy, Debug)]
enum MutantKind {
    /// Every request of two or more segments is submitted as two requests
    /// (an operation that is not one atomic request).
    SplitRequests,
    /// `flush` returns Ok without flushing (fsync that persists nothing).
    SkipFlush,
    /// Every 5th request of three or more segments loses its last segment.
    DropSegment,
}

impl<D: AtomicDevice> AtomicDevice for Mutant<D> {
    fn geometry(&self) -> Geometry {
        self.inner.geometry()
    }
    fn submit(&self, request: Request) -> DevResult<()> {
        let n = self.requests.fetch_add(1, Ordering::Relaxed);
        let segs = request.segments().len();
        match self.kind {
            MutantKind::SplitRequests if segs >= 2 => {
                self.fired.store(true, Ordering::Relaxed);
                let mut all = request.into_segments();
                let second = all.split_off(segs / 2);
                let (mut a, mut b) = (Request::new(), Request::new());
                for s in all {
                    a.push(s);
                }
                for s in second {
                    b.push(s);
                }
                self.inner.submit(a)?;
                self.inner.submit(b)
            }
            MutantKind::DropSegment if segs >= 3 && n % 5 == 0 => {
                self.fired.store(true, Ordering::Relaxed);
                let mut all = request.into_segments();
                all.pop();
                let mut r = Request::new();
                for s in all {
                    r.push(s);
                }
                self.inner.submit(r)
            }
            _ => self.inner.submit(request),
        }
    }
    fn read(&self, lba: u64, buf: &mut [u8]) -> DevResult<()> {
        self.inner.read(lba, buf)
    }
    fn flush(&self) -> DevResult<()> {
        match self.kind {
            MutantKind::SkipFlush => {
                self.fired.store(true, Ordering::Relaxed);
                Ok(())
            }
            _ => self.inner.flush(),
        }
    }
    fn next_mapped(&self, from: u64) -> DevResult<Option<std::ops::Range<u64>>> {
        self.inner.next_mapped(from)
    }
    fn space(&self) -> Space {
        self.inner.space()
    }
    fn stats(&self) -> Stats {
        self.inner.stats()
    }
}

/// Explores `ids` with the mutant; returns the crash images checked, the
/// violations found on crash images, those found while running (a live
/// divergence from the oracle), and the first report.
fn explore_mutant(kind: MutantKind, ids: &[WorkloadId]) -> (u64, u64, u64, Option<String>) {
    let opts = ExploreOptions::default();
    let (mut images, mut on_images, mut live, mut first) = (0, 0, 0, None);
    for &id in ids {
        let out = explore_with(id, &opts, |d| Mutant {
            inner: d,
            kind,
            requests: AtomicU64::new(0),
            fired: AtomicBool::new(false),
        });
        images += out.images;
        for v in &out.violations {
            if v.spec.is_some() {
                on_images += 1;
            } else {
                live += 1;
            }
            if first.is_none() {
                first = Some(v.to_string());
            }
        }
    }
    (images, on_images, live, first)
}

/// The mutant must be caught; `on_crash_images` requires that crash images
/// (not just the live comparison) catch it.
fn assert_caught(kind: MutantKind, ids: &[WorkloadId], on_crash_images: bool) {
    let (images, on_images, live, first) = explore_mutant(kind, ids);
    println!(
        "mutant {kind:?}: {images} images; violations: {on_images} on crash images, {live} while running"
    );
    if let Some(f) = &first {
        println!("first report:\n{f}");
    }
    assert!(
        on_images + live > 0,
        "mutant {kind:?}: {images} crash images and no violation: the explorer missed a planted bug"
    );
    if on_crash_images {
        assert!(on_images > 0, "mutant {kind:?}: no crash image caught it");
    }
}

fn mutant_workloads() -> Vec<WorkloadId> {
    let mut ids: Vec<WorkloadId> = (0..4)
        .map(|seed| WorkloadId::Random { seed, len: 120 })
        .collect();
    ids.extend(
        sample(seq2_count() as u64, 60, 99)
            .into_iter()
            .map(|i| WorkloadId::Seq2(i as usize)),
    );
    ids
}

#[test]
fn crash_mutant_split_requests_is_caught() {
    assert_caught(MutantKind::SplitRequests, &mutant_workloads(), true);
}

#[test]
fn crash_mutant_skip_flush_is_caught() {
    assert_caught(MutantKind::SkipFlush, &mutant_workloads(), true);
}

#[test]
fn crash_mutant_drop_segment_is_caught() {
    assert_caught(MutantKind::DropSegment, &mutant_workloads(), false);
}
