//! atomfs-bench: write amplification and speed of atomfs against ext4, xfs
//! and btrfs, each on a fresh loop device of the same size, bytes written
//! counted by the kernel at the loop device (`/sys/block/loopN/stat`).
//!
//! For every (workload, file system) pair: create an image file, attach a
//! loop device, make the file system, mount it, run the workload's setup
//! (unmeasured; followed by a remount when it wrote anything), read the
//! device counters, run the measured phase as ordinary syscalls through the
//! mount, unmount (for atomfs: wait until the daemon has exited, since
//! `sync(2)` does not reach a FUSE server), read the counters again. The
//! measured time includes that unmount, which is where a file system makes
//! durable whatever the workload left in memory.
//!
//! Loop devices use `--direct-io=on` by default: the counter is the same
//! either way (it counts requests the loop device receives), but with
//! buffered loop I/O the host page cache absorbs writes between flushes and
//! serves "cold" reads from memory, which flatters whichever file system
//! flushes least. See `README.md` in this crate for the measurement.

pub mod fstype;
pub mod report;
pub mod sys;
pub mod workload;

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

pub use fstype::{AtomfsBins, FsDriver, FsKind};
use sys::{DiskStat, ImageFile, LoopDev, Result};
pub use workload::Workload;

const MIB: u64 = 1024 * 1024;

/// What to run.
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    pub quick: bool,
    pub fs: Vec<FsKind>,
    /// Workload names (see [`workload::NAMES`]; `aged` expands to levels).
    pub workloads: Vec<String>,
    /// Directory for images and mount points (a real disk, not tmpfs).
    pub work_dir: PathBuf,
    /// Directory holding `atomfs`, `mkfs.atomfs` and `fsck.atomfs`.
    pub atomfs_bin_dir: PathBuf,
    /// Size of each loop device.
    pub device_size: u64,
    /// Size of each loop device for the `aged` workloads.
    pub aged_device_size: u64,
    pub direct_io: bool,
    /// Time cap of each `aged` overwrite phase (`--aged-max-secs`); the
    /// second half of what was written is reported.
    pub aged_max_secs: Option<f64>,
    pub seed: u64,
    pub tree_source: Option<PathBuf>,
}

impl Config {
    /// Defaults for quick or full mode.
    pub fn new(quick: bool) -> Config {
        Config {
            quick,
            fs: FsKind::ALL.to_vec(),
            workloads: workload::NAMES.iter().map(|s| s.to_string()).collect(),
            work_dir: PathBuf::from("/var/tmp/atomfs-bench"),
            atomfs_bin_dir: default_bin_dir(),
            // mkfs.xfs refuses file systems under 300 MiB.
            device_size: if quick { 512 * MIB } else { 4096 * MIB },
            aged_device_size: if quick { 512 * MIB } else { 1024 * MIB },
            direct_io: true,
            aged_max_secs: None,
            seed: 42,
            tree_source: workload::default_tree_source(),
        }
    }
}

/// The directory of the running executable, walking out of `deps/` (where
/// cargo puts test executables) so that it is the cargo target directory.
pub fn default_bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    dir
}

/// Device-side figures of a measured phase.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Measured {
    pub ops: u64,
    pub app_bytes: u64,
    pub device: DiskStat,
    /// Time of the workload's syscalls.
    pub workload_secs: f64,
    /// Time of the unmount that followed (and the atomfs daemon's exit).
    pub unmount_secs: f64,
}

impl Measured {
    pub fn wa(&self) -> Option<f64> {
        (self.app_bytes > 0).then(|| self.device.write_bytes as f64 / self.app_bytes as f64)
    }
    pub fn secs(&self) -> f64 {
        self.workload_secs + self.unmount_secs
    }
}

/// The cold read of `seq`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReadBack {
    pub bytes: u64,
    pub secs: f64,
    pub device_read_bytes: u64,
    pub device_write_bytes: u64,
}

/// One (workload, file system) result.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub workload: String,
    pub fs: FsKind,
    pub params: Workload,
    /// `ok`, `error`.
    pub status: String,
    pub error: Option<String>,
    pub device_size: u64,
    pub sector_size: u64,
    /// Capacity reported by statfs after mkfs.
    pub capacity: u64,
    pub setup_bytes: u64,
    pub mkfs_secs: f64,
    /// The figures the tables use: for `aged`, the second half of the
    /// overwrite phase (steady state); else the whole measured phase.
    pub result: Measured,
    /// For `aged`: the whole overwrite phase.
    pub whole: Option<Measured>,
    /// For `aged`: stopped by `--aged-max-secs` before `overwrite_factor`
    /// × capacity was written.
    pub time_capped: bool,
    pub read_back: Option<ReadBack>,
    /// atomfs only: the daemon's counters for the measured mount (the JSON
    /// of its `-o stats_file=`), if it wrote them.
    pub atomfs_stats: Option<serde_json::Value>,
}

/// A whole run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub config: Config,
    pub kernel: String,
    pub started_unix: u64,
    /// File systems that could not be tested, and workloads not run on
    /// one (fusefloor's aged), each with the reason.
    pub skipped: Vec<(FsKind, String)>,
    pub rows: Vec<Row>,
}

impl Report {
    pub fn row(&self, workload: &str, fs: FsKind) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.workload == workload && r.fs == fs)
    }
}

/// Why the bench cannot run at all here, if it cannot.
pub fn precheck() -> Option<String> {
    if !sys::is_root() {
        return Some("not root (loop devices and mounts need root)".into());
    }
    if sys::which("losetup").is_none() {
        return Some("losetup not found (Debian package mount)".into());
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("no /dev/loop-control (loop module missing?)".into());
    }
    None
}

/// Runs everything in `cfg`, printing progress to stderr. A failing row is
/// recorded as an error and the run goes on.
pub fn run(cfg: &Config) -> Result<Report> {
    if let Some(why) = precheck() {
        return Err(why);
    }
    sys::ctx(std::fs::create_dir_all(&cfg.work_dir), || {
        format!("mkdir {}", cfg.work_dir.display())
    })?;
    // Mount points are compared with /proc/self/mountinfo: make them absolute.
    let mut cfg = cfg.clone();
    cfg.work_dir = sys::ctx(cfg.work_dir.canonicalize(), || {
        format!("resolve {}", cfg.work_dir.display())
    })?;
    let cfg = &cfg;
    let _lock = sys::WorkDirLock::take(&cfg.work_dir)?;
    sys::cleanup_stale(&cfg.work_dir);
    let workloads = workload::build(&cfg.workloads, cfg.quick, cfg.tree_source.clone())?;
    let mut report = Report {
        config: cfg.clone(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        started_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        skipped: Vec::new(),
        rows: Vec::new(),
    };
    let bins = AtomfsBins::in_dir(&cfg.atomfs_bin_dir);
    let mut drivers = Vec::new();
    for &kind in &cfg.fs {
        let d = FsDriver::new(kind, bins.clone());
        match d.unavailable() {
            Some(why) => {
                eprintln!("skipping {kind}: {why}");
                report.skipped.push((kind, why));
            }
            None => drivers.push(d),
        }
    }
    for w in &workloads {
        eprintln!("== {}: {}", w.name(), w.describe());
        for d in &mut drivers {
            // Not a failure: the pair means nothing (fusefloor on aged).
            if let Some(why) = d.kind.refuses(&w.name()) {
                eprintln!("   {:<7} skipped: {why}", d.kind.name());
                report.skipped.push((d.kind, why));
                continue;
            }
            let t = Instant::now();
            let row = run_one(cfg, d, w);
            match &row.error {
                // Stores nothing: its device bytes mean nothing.
                None if d.kind.is_floor() => eprintln!(
                    "   {:<7} {} ops in {:.2}s (total {:.1}s)",
                    d.kind.name(),
                    row.result.ops,
                    row.result.secs(),
                    t.elapsed().as_secs_f64()
                ),
                None => eprintln!(
                    "   {:<7} app {:>10} device {:>10} WA {:>6} in {:.2}s (total {:.1}s)",
                    d.kind.name(),
                    report::human(row.result.app_bytes),
                    report::human(row.result.device.write_bytes),
                    report::fmt_wa(row.result.wa()),
                    row.result.secs(),
                    t.elapsed().as_secs_f64()
                ),
                Some(e) => eprintln!("   {:<7} ERROR {e}", d.kind.name()),
            }
            report.rows.push(row);
        }
    }
    Ok(report)
}

/// Runs one workload on one file system; errors are recorded in the row.
pub fn run_one(cfg: &Config, d: &mut FsDriver, w: &Workload) -> Row {
    let device_size = match w {
        Workload::Aged { .. } => cfg.aged_device_size,
        _ => cfg.device_size,
    };
    let mut row = Row {
        workload: w.name(),
        fs: d.kind,
        params: w.clone(),
        status: "ok".into(),
        error: None,
        device_size,
        sector_size: 0,
        capacity: 0,
        setup_bytes: 0,
        mkfs_secs: 0.0,
        result: Measured::default(),
        whole: None,
        time_capped: false,
        read_back: None,
        atomfs_stats: None,
    };
    if let Err(e) = run_one_inner(cfg, d, w, &mut row) {
        row.status = "error".into();
        row.error = Some(e);
    }
    row
}

fn run_one_inner(cfg: &Config, d: &mut FsDriver, w: &Workload, row: &mut Row) -> Result<()> {
    if let Some(why) = d.kind.refuses(&w.name()) {
        return Err(why);
    }
    let tag = format!("{}-{}", d.kind, w.name());
    let img = ImageFile::create(cfg.work_dir.join(format!("{tag}.img")), row.device_size)?;
    let lo = LoopDev::attach(&img.path, cfg.direct_io)?;
    row.sector_size = lo.logical_block_size();
    let t = Instant::now();
    d.mkfs(&lo.dev)?;
    row.mkfs_secs = t.elapsed().as_secs_f64();
    let mnt = cfg.work_dir.join(format!("mnt-{}", d.kind));
    let log = cfg.work_dir.join(format!("{tag}.log"));
    let mut mount_no = 0;
    let mut stats_path = || {
        mount_no += 1;
        let p = cfg.work_dir.join(format!("{tag}.stats{mount_no}.json"));
        let _ = std::fs::remove_file(&p);
        p
    };
    let sample = || lo.stat();
    let c = workload::Ctx {
        mnt: &mnt,
        seed: cfg.seed,
        device_size: row.device_size,
        sample: &sample,
        deadline: None,
    };

    let mut measured_stats = stats_path();
    let mut m = d.mount(&lo, &mnt, &log, &measured_stats)?;
    let setup = w.setup(&c)?;
    row.capacity = setup.capacity;
    row.setup_bytes = setup.bytes;
    if setup.bytes > 0 || !setup.files.is_empty() {
        d.unmount(&mut m, &lo)?;
        measured_stats = stats_path();
        m = d.mount(&lo, &mnt, &log, &measured_stats)?;
    }
    if w.cold_cache() {
        sys::drop_caches()?;
    }

    let before = lo.stat()?;
    let t0 = Instant::now();
    let c = workload::Ctx {
        deadline: cfg
            .aged_max_secs
            .map(|s| t0 + std::time::Duration::from_secs_f64(s)),
        ..c
    };
    let out = w.run(&c, &setup)?;
    row.time_capped = out.time_capped;
    let t1 = Instant::now();
    d.unmount(&mut m, &lo)?;
    let t2 = Instant::now();
    let after = lo.stat()?;

    let whole = Measured {
        ops: out.ops,
        app_bytes: out.app_bytes,
        device: after.since(&before),
        workload_secs: (t1 - t0).as_secs_f64(),
        unmount_secs: (t2 - t1).as_secs_f64(),
    };
    row.result = whole.clone();
    if let Some((mid_app, mid_stat)) = out.midpoint {
        // Steady state: the second half; its time is prorated by bytes.
        let frac = (out.app_bytes - mid_app) as f64 / out.app_bytes.max(1) as f64;
        row.result = Measured {
            ops: out.ops - out.ops * mid_app / out.app_bytes.max(1),
            app_bytes: out.app_bytes - mid_app,
            device: after.since(&mid_stat),
            workload_secs: whole.workload_secs * frac,
            unmount_secs: whole.unmount_secs,
        };
        row.whole = Some(whole);
    }
    if d.kind == FsKind::Atomfs {
        row.atomfs_stats = std::fs::read_to_string(&measured_stats)
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok());
    }

    if let Some(file) = w.read_back() {
        let mut m2 = d.mount(&lo, &mnt, &log, &stats_path())?;
        sys::drop_caches()?;
        let before = lo.stat()?;
        let t = Instant::now();
        let bytes = workload::read_file(&mnt.join(file))?;
        let secs = t.elapsed().as_secs_f64();
        d.unmount(&mut m2, &lo)?;
        let after = lo.stat()?;
        let dd = after.since(&before);
        row.read_back = Some(ReadBack {
            bytes,
            secs,
            device_read_bytes: dd.read_bytes,
            device_write_bytes: dd.write_bytes,
        });
    }
    drop(m);
    lo.detach()?;
    drop(img);
    for n in 1..=mount_no {
        let _ = std::fs::remove_file(cfg.work_dir.join(format!("{tag}.stats{n}.json")));
    }
    let _ = std::fs::remove_file(&log);
    Ok(())
}
