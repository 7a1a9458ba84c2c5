//! Crash images of real FUSE runs, replayed offline (issue 4, part 3):
//! seeded syscall workloads through the kernel on a daemon whose block
//! layer records every media write and flush; after a clean unmount the
//! trace is replayed into `SimMedia` and every crash image (write
//! boundaries, unflushed subsets, torn writes) is recovered, fsck'd and
//! compared with the oracle. See `atomfs_tests::fuse_replay` and
//! tests/README.md.
//!
//! `ATOMFS_FUSE_REPLAY_SEEDS=3,9` reruns chosen seeds (the workload comes
//! from the seed; the media trace from the run).

use std::time::Instant;

use atomfs_tests::fuse_kill::{self, BaseImage, ImageConfig};
use atomfs_tests::fuse_replay::{self, ReplayConfig, ReplayCounts};

const DAEMON: &str = env!("CARGO_BIN_EXE_atomfs-crash-daemon");

/// Mount options of the workloads, by seed.
const OPTS: [&str; 4] = ["", "sync", "direct_io", "direct_io,sync"];

fn config(seed: u64, len: usize, dir: &std::path::Path) -> ReplayConfig {
    ReplayConfig {
        seed,
        len,
        opts: OPTS[(seed as usize + 3) % OPTS.len()].into(),
        daemon: DAEMON.into(),
        dir: dir.to_path_buf(),
        subsets_per_window: 16,
        torn_per_write: 4,
        max_images: 3000,
        threads: 2,
    }
}

#[test]
fn crash_fuse_replay_prefix() {
    if !fuse_kill::fuse_available("crash_fuse_replay_prefix") {
        return;
    }
    let t0 = Instant::now();
    // SAFETY: umask has no preconditions; files are created 0644/0755 as
    // in the oracle.
    unsafe { libc::umask(0o022) };
    let dir = tempfile::Builder::new()
        .prefix("atomfs-fuse-replay-")
        .tempdir()
        .unwrap();
    let base = BaseImage::build(&dir.path().join("base"), &ImageConfig::default());
    let built = t0.elapsed();
    let seeds: Vec<u64> = match std::env::var("ATOMFS_FUSE_REPLAY_SEEDS") {
        Ok(s) => s.split(',').map(|x| x.trim().parse().unwrap()).collect(),
        Err(_) => (1..=12).collect(),
    };
    let mut total = ReplayCounts::default();
    for &seed in &seeds {
        let cfg = config(seed, 300, dir.path());
        let t = Instant::now();
        let c = fuse_replay::run(&base, &cfg);
        println!(
            "seed {seed:3} (-o '{}'): {} steps, {} persistence points, media {} writes / {} flushes / {} discards, {} crash images listed, {} checked ({} past the last persistence point, {} holding half of a split write), {} violating, {:.1}s",
            cfg.opts,
            c.steps,
            c.persist_points,
            c.media_writes,
            c.media_flushes,
            c.media_discards,
            c.specs,
            c.images,
            c.unpersisted_images,
            c.split_half_images,
            c.violating_images,
            t.elapsed().as_secs_f64()
        );
        total.add(&c);
    }
    for v in &total.violations {
        println!("{v}");
    }
    for n in total.errno_notes.iter().take(10) {
        println!("errno note: {n}");
    }
    let summary = format!(
        "crash_fuse_replay: {} workloads, {} syscall steps, {} persistence points, {} media writes and {} flushes traced, {} crash images listed, {} checked (recovery + blockdev::check + fsck + prefix), {} past the last persistence point, {} holding the first piece of a write the kernel split, {} violating images, {} violations; base image {:.1}s, total {:.1}s",
        total.workloads,
        total.steps,
        total.persist_points,
        total.media_writes,
        total.media_flushes,
        total.specs,
        total.images,
        total.unpersisted_images,
        total.split_half_images,
        total.violating_images,
        total.violations.len(),
        built.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    println!("{summary}");
    if let Ok(target) = std::env::var("CARGO_TARGET_DIR") {
        let d = std::path::Path::new(&target).join("tmp/atomfs-crash");
        let _ = std::fs::create_dir_all(&d);
        let _ = std::fs::write(
            d.join("crash_fuse_replay_prefix.txt"),
            format!("{summary}\n"),
        );
    }
    assert!(
        total.violations.is_empty(),
        "{} violation(s)",
        total.violations.len()
    );
    assert_eq!(total.workloads, seeds.len() as u64);
    assert!(total.images >= seeds.len() as u64 * 100, "{total:?}");
}

/// The checker must notice a wrong oracle: with a bogus path added to
/// every oracle state after the setup, the images after the setup match
/// no allowed state.
#[test]
fn crash_fuse_replay_detects_a_wrong_oracle() {
    if !fuse_kill::fuse_available("crash_fuse_replay_detects_a_wrong_oracle") {
        return;
    }
    // SAFETY: see above.
    unsafe { libc::umask(0o022) };
    let dir = tempfile::Builder::new()
        .prefix("atomfs-fuse-replay-")
        .tempdir()
        .unwrap();
    let base = BaseImage::build(&dir.path().join("base"), &ImageConfig::default());
    let mut cfg = config(6, 20, dir.path());
    cfg.max_images = 200;
    let c = fuse_replay::run_with(&base, &cfg, |plan| {
        // The random workload's setup: 2 directories, 6 files written.
        let setup_len = 2 + 2 * 6;
        let bogus = plan.trees[0][std::path::Path::new(".warm")].clone();
        for t in plan.trees.iter_mut().skip(setup_len + 1) {
            t.insert("bogus".into(), bogus.clone());
        }
    });
    for v in &c.violations {
        println!("{v}");
    }
    assert_eq!(c.violations.len(), 1, "{c:?}");
    let v = &c.violations[0];
    assert!(
        v.contains("equals no allowed oracle state")
            || v.contains("differs from the oracle's final state"),
        "{v}"
    );
}
