//! The CI check of issue 5: the quick comparison, asserting from device
//! byte counts only that atomfs writes fewer bytes than ext4 on the
//! fsync-heavy workloads.
//!
//! Needs root (loop devices, mounts) and the atomfs binaries (`atomfs`,
//! `mkfs.atomfs`) in the cargo target directory (or `ATOMFS_BIN_DIR`).
//! Without them it prints why it skipped and passes, unless
//! `ATOMFS_BENCH_REQUIRED=1`, which turns a skip into a failure.

use std::path::PathBuf;

use atomfs_bench::{default_bin_dir, precheck, report, AtomfsBins, Config, FsKind};

const WORKLOADS: [&str; 4] = [
    "create_fsync",
    "append_fsync",
    "rename_replace",
    "metadata_fsync",
];

fn skip(why: &str) {
    let required = std::env::var("ATOMFS_BENCH_REQUIRED").is_ok_and(|v| v == "1");
    assert!(!required, "quick_compare cannot run: {why}");
    // Printed on both streams so that it shows whatever the runner captures.
    println!("SKIPPED quick_compare: {why}");
    eprintln!("SKIPPED quick_compare: {why}");
}

/// Where the atomfs binaries are: `ATOMFS_BIN_DIR` if set; else this test's
/// own profile directory (`target/debug` when the whole workspace was
/// built, as `cargo nextest run --workspace` does), else the other profile
/// of the same target dir (`cargo nextest run -p atomfs-bench` builds no
/// atomfs binary, but a `cargo build --release` may have).
fn bin_dir() -> Result<PathBuf, String> {
    if let Some(d) = std::env::var_os("ATOMFS_BIN_DIR") {
        let d = PathBuf::from(d);
        return match AtomfsBins::in_dir(&d).missing() {
            None => Ok(d),
            Some(why) => Err(format!("ATOMFS_BIN_DIR: {why}")),
        };
    }
    let own = default_bin_dir();
    let mut cands = vec![own.clone()];
    if let Some(target) = own.parent() {
        cands.extend(["debug", "release"].map(|p| target.join(p)));
    }
    let mut first_why = None;
    for d in cands {
        match AtomfsBins::in_dir(&d).missing() {
            None => return Ok(d),
            Some(why) => {
                first_why.get_or_insert(why);
            }
        }
    }
    Err(first_why.unwrap_or_default()
        + " (build them: cargo build -p atomfs -p mkfs-atomfs, or set ATOMFS_BIN_DIR)")
}

#[test]
fn atomfs_writes_fewer_device_bytes_than_ext4() {
    if let Some(why) = precheck() {
        return skip(&why);
    }
    let mut cfg = Config::new(true);
    cfg.atomfs_bin_dir = match bin_dir() {
        Ok(d) => d,
        Err(why) => return skip(&format!("atomfs binaries not built: {why}")),
    };
    println!("atomfs binaries from {}", cfg.atomfs_bin_dir.display());
    cfg.fs = vec![FsKind::Atomfs, FsKind::Ext4];
    cfg.workloads = WORKLOADS.iter().map(|s| s.to_string()).collect();
    // Not the CLI's default work dir, so a manual run can go on meanwhile.
    cfg.work_dir = PathBuf::from("/var/tmp/atomfs-bench-ci");

    let r = atomfs_bench::run(&cfg).expect("bench run");
    println!("{}", report::markdown(&r));
    if let Some((k, why)) = r.skipped.first() {
        panic!("{k} skipped: {why}");
    }
    let mut failures = Vec::new();
    for w in WORKLOADS {
        let get = |k: FsKind| {
            let row = r.row(w, k).unwrap_or_else(|| panic!("no {w} row for {k}"));
            if let Some(e) = &row.error {
                panic!("{w} on {k} failed: {e}");
            }
            row.result.device.write_bytes
        };
        let (a, e) = (get(FsKind::Atomfs), get(FsKind::Ext4));
        println!("{w}: atomfs {a} B, ext4 {e} B");
        if a >= e {
            failures.push(format!("{w}: atomfs wrote {a} B, ext4 {e} B"));
        }
    }
    assert!(
        failures.is_empty(),
        "atomfs did not write less: {failures:?}"
    );
}
