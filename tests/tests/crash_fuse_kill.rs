//! Process-kill crash test through the real kernel (issue 4, part 3):
//! seeded syscall workloads on a FUSE mount, `kill -9` of the daemon at
//! random moments, remount, prefix check against the core oracle, fsck.
//! See `atomfs_tests::fuse_kill` and tests/README.md.
//!
//! `ATOMFS_FUSE_KILL_SEEDS=3,9` reruns chosen seeds (the kill points are
//! drawn from the seed; the exact moment inside a system call is timing).

use std::time::Instant;

use atomfs_tests::fuse_kill::{self, BaseImage, Counts, ImageConfig, RunConfig};

const DAEMON: &str = env!("CARGO_BIN_EXE_atomfs-crash-daemon");

/// Mount options of the runs, by seed.
const OPTS: [&str; 4] = ["", "sync", "direct_io", "direct_io,sync"];

#[test]
fn crash_fuse_kill_prefix() {
    if !fuse_kill::fuse_available("crash_fuse_kill_prefix") {
        return;
    }
    let t0 = Instant::now();
    // SAFETY: umask has no preconditions; files are created 0644/0755 as
    // in the oracle.
    unsafe { libc::umask(0o022) };
    let dir = tempfile::Builder::new()
        .prefix("atomfs-fuse-kill-")
        .tempdir()
        .unwrap();
    let cfg = ImageConfig::default();
    let base = BaseImage::build(&dir.path().join("base"), &cfg);
    let built = t0.elapsed();
    let seeds: Vec<u64> = match std::env::var("ATOMFS_FUSE_KILL_SEEDS") {
        Ok(s) => s.split(',').map(|x| x.trim().parse().unwrap()).collect(),
        Err(_) => (1..=12).collect(),
    };
    let mut total = Counts::default();
    for &seed in &seeds {
        let run = RunConfig {
            seed,
            len: 400,
            kills: 8,
            // The page cache (default) or direct_io, each with and without
            // -o sync (every operation that returned must survive).
            opts: OPTS[(seed as usize + 3) % OPTS.len()].into(),
            daemon: DAEMON.into(),
            dir: dir.path().to_path_buf(),
        };
        let c = fuse_kill::run(&base, &run);
        println!(
            "seed {seed:3} (-o '{}'): {} sessions, {} kills ({} mid-call, {} between the pieces of a split write), {} ops, {} images checked, {} violations",
            run.opts,
            c.sessions,
            c.kills,
            c.kills_mid_call,
            c.split_writes_torn,
            c.ops,
            c.images_checked,
            c.violations.len()
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
        "crash_fuse_kill: {} runs, {} daemon sessions, {} kills ({} during a system call), {} syscall ops, {} images checked (fsck + prefix), {} ops kept beyond the last persistence point, {} crash images with GC records rolled forward, {} checkpoint generations written, {} GC bytes in the final sessions, {} ops left out (symlink targets; mmap under direct_io), {} crash images held the first piece of a write the kernel split in two (page cache mode), {} errno notes, {} violations; base image {:.1}s, total {:.1}s",
        total.runs,
        total.sessions,
        total.kills,
        total.kills_mid_call,
        total.ops,
        total.images_checked,
        total.unpersisted_kept,
        total.images_with_gc,
        total.checkpoint_gens,
        total.gc_bytes_last_sessions,
        total.dropped_ops,
        total.split_writes_torn,
        total.errno_notes.len(),
        total.violations.len(),
        built.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    println!("{summary}");
    if let Ok(target) = std::env::var("CARGO_TARGET_DIR") {
        let d = std::path::Path::new(&target).join("tmp/atomfs-crash");
        let _ = std::fs::create_dir_all(&d);
        let _ = std::fs::write(d.join("crash_fuse_kill_prefix.txt"), format!("{summary}\n"));
    }
    assert!(
        total.violations.is_empty(),
        "{} violation(s)",
        total.violations.len()
    );
    assert_eq!(total.runs, seeds.len() as u64);
    assert!(
        total.kills >= seeds.len() as u64 * 3,
        "too few kills: {total:?}"
    );
    assert!(total.images_checked > total.kills);
}

/// The checker must notice a wrong oracle: with a bogus path added to
/// every oracle state after the setup, the first crash image (mounted
/// `-o sync`, so every returned operation is persisted) matches no allowed
/// state, and the run reports a violation that names the allowed range.
#[test]
fn crash_fuse_kill_detects_a_wrong_oracle() {
    if !fuse_kill::fuse_available("crash_fuse_kill_detects_a_wrong_oracle") {
        return;
    }
    // SAFETY: see above.
    unsafe { libc::umask(0o022) };
    let dir = tempfile::Builder::new()
        .prefix("atomfs-fuse-kill-")
        .tempdir()
        .unwrap();
    let base = BaseImage::build(&dir.path().join("base"), &ImageConfig::default());
    let run = RunConfig {
        seed: 5,
        len: 60,
        kills: 1,
        opts: "sync".into(),
        daemon: DAEMON.into(),
        dir: dir.path().to_path_buf(),
    };
    let c = fuse_kill::run_with(&base, &run, |plan| {
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
    assert!(c.kills <= 1 && c.images_checked <= 1, "{c:?}");
    let v = &c.violations[0];
    assert!(
        v.contains("equals no allowed oracle state")
            || v.contains("differs from the oracle's final state"),
        "{v}"
    );
}
