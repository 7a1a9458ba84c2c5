//! The FUSE floor through the bench: the five workloads it is meant for, in
//! quick mode, each must produce a row without error, and the seq
//! read-back must return the whole file (the state survives the remounts).
//!
//! Needs root (loop devices, mounts) and /dev/fuse. Without them it prints
//! `SKIPPED fuse_floor: <reason>` and passes, unless `CI=true` (or
//! `ATOMFS_BENCH_REQUIRED=1`), where a skip is a failure.

use std::path::{Path, PathBuf};

use atomfs_bench::{precheck, report, Config, FsKind};

const WORKLOADS: [&str; 5] = [
    "create_fsync",
    "small_files",
    "seq",
    "stat_files",
    "bigdir_create",
];

fn skip(why: &str) {
    let required = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
        || std::env::var("ATOMFS_BENCH_REQUIRED").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "fuse_floor cannot run ({why}) but CI requires it"
    );
    // Printed on both streams so that it shows whatever the runner captures.
    println!("SKIPPED fuse_floor: {why}");
    eprintln!("SKIPPED fuse_floor: {why}");
}

#[test]
fn fuse_floor_runs_the_speed_workloads() {
    if let Some(why) = precheck() {
        return skip(&why);
    }
    if !Path::new("/dev/fuse").exists() {
        return skip("no /dev/fuse");
    }
    let mut cfg = Config::new(true);
    // Cargo builds the package's binaries for its integration tests.
    let floor = PathBuf::from(env!("CARGO_BIN_EXE_fuse-floor"));
    cfg.atomfs_bin_dir = floor.parent().expect("bin dir").to_path_buf();
    cfg.fs = vec![FsKind::FuseFloor];
    cfg.workloads = WORKLOADS.iter().map(|s| s.to_string()).collect();
    // Its own work dir, so other bench tests can run meanwhile.
    cfg.work_dir = PathBuf::from("/var/tmp/atomfs-bench-floor");

    let r = atomfs_bench::run(&cfg).expect("bench run");
    let md = report::markdown(&r);
    println!("{md}");
    assert!(r.skipped.is_empty(), "skipped: {:?}", r.skipped);
    for w in WORKLOADS {
        let row = r
            .row(w, FsKind::FuseFloor)
            .unwrap_or_else(|| panic!("no {w} row"));
        assert_eq!(row.error, None, "{w}");
        assert!(row.result.ops > 0, "{w}: no ops");
    }
    let seq = r.row("seq", FsKind::FuseFloor).expect("seq row");
    let rb = seq.read_back.as_ref().expect("seq read back");
    assert_eq!(rb.bytes, seq.result.app_bytes, "read back all of it");
    assert!(rb.bytes > 0);
    // One row per workload (the speed table, not the device-bytes table),
    // and one in the read-back table.
    for w in WORKLOADS {
        let rows = md
            .lines()
            .filter(|l| l.starts_with(&format!("| {w} | fusefloor |")))
            .count();
        assert_eq!(rows, 1, "{w}: {md}");
    }
    assert!(md.contains("\n| fusefloor | "), "{md}");
    let _ = std::fs::remove_dir_all(&cfg.work_dir);
}

#[test]
fn fusefloor_is_selectable_but_not_default() {
    assert_eq!("fusefloor".parse::<FsKind>(), Ok(FsKind::FuseFloor));
    assert!(!Config::new(true).fs.contains(&FsKind::FuseFloor));
    assert!(FsKind::FuseFloor.refuses("aged50").is_some());
    assert!(FsKind::FuseFloor.refuses("seq").is_none());
    assert!(FsKind::Atomfs.refuses("aged50").is_none());
}
