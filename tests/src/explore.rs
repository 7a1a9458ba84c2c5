//! The crash explorer: plays a workload on the core over a `LogDevice` on
//! `SimMedia`, then recovers, mounts and checks every crash image the
//! media recorded.
//!
//! For each image ([`CrashSpec`]: a prefix of the write stream, a subset of
//! the writes since the last flush, or a torn write):
//! 1. `blockdev::check` is clean and `LogDevice::open` recovers;
//! 2. `atomfs::fsck::check` finds no errors, and the fs mounts;
//! 3. `dump_tree` equals the oracle — the same workload on a `MemDevice`,
//!    captured after every step — for some k with
//!    `last completed persistence point <= k <= last step started`;
//! 4. (on every `probe_every`-th image) the recovered fs is usable: in
//!    every directory a file is created, written, renamed and deleted and
//!    a directory made and removed; the tree is then unchanged and fsck is
//!    still clean; on every `remount_every`-th image it is also synced,
//!    recovered again and compared.
//!
//! Which steps a crash point may include: a step's request can sit in the
//! group-commit buffer and reach the media only at a later write, so the
//! upper bound is every step that *started* at or before the crash point
//! (its media writes come after its start). The lower bound is every step
//! before the last persistence point whose flush *returned* at or before
//! the crash point. The harness ends each workload with a `sync` (as an
//! unmount would), so the writes of buffered, never-persisted steps are
//! crashed too.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use atomfs::fsck::FsckOptions;
use atomfs::inspect::{dump_tree, Node, Tree};
use atomfs::{Clock, Ctx, Errno, FileKind, Fs, MkfsOptions, MountOptions, Timespec};
use atomic_api::{AtomicDevice, MemDevice};
use blockdev::{
    CrashOptions, CrashSpec, DiscardMode, FormatOptions, LogDevice, OpenOptions, SimMedia,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::exec;
use crate::workload::{self, Op, Workload, WorkloadId, WriteKind};

/// A clock that advances one second per reading (deterministic runs;
/// `dump_tree` leaves timestamps out anyway).
#[derive(Default)]
pub struct StepClock(AtomicI64);

impl Clock for StepClock {
    fn now(&self) -> Timespec {
        Timespec::new(1_700_000_000 + self.0.fetch_add(1, Ordering::Relaxed), 0)
    }
}

pub fn mount_opts() -> MountOptions {
    MountOptions {
        clock: Some(Arc::new(StepClock::default())),
        dir_cache_bytes: Some(1 << 20),
        ..MountOptions::default()
    }
}

pub fn mkfs_opts() -> MkfsOptions {
    MkfsOptions {
        root_mode: Some(0o755),
        uuid: Some([7; 16]),
        time: Some(Timespec::new(1_700_000_000, 0)),
        ..MkfsOptions::default()
    }
}

/// Geometry and knobs of one run, derived from the workload id, so the
/// suite covers both sector sizes, several buffer and checkpoint sizes and
/// discard behaviours, and a replay from the id gets the same ones.
#[derive(Clone, Debug)]
pub struct Config {
    /// Long (random) or short (seq) workloads, and the profile index.
    pub long: bool,
    pub profile: u64,
    pub seed: u64,
    pub ss: u32,
    pub segments: u64,
    pub format: FormatOptions,
    pub open: OpenOptions,
    pub discard: DiscardMode,
    /// Bytes the warm-up writes and overwrites in a scratch file so that
    /// segments hold garbage and GC runs inside the steps (see [`warm_up`]).
    pub warm_bytes: u64,
}

/// Device profiles per kind of workload. The warmed-up device of a
/// profile is built once per process and every workload of that profile
/// starts from a copy of it (see [`Base`]), which keeps short workloads
/// cheap; 24 profiles still cover both sector sizes, all segment, buffer
/// and checkpoint sizes and discard modes.
pub const PROFILES: u64 = 24;

fn id_seed(id: &WorkloadId) -> u64 {
    let text = id.to_string();
    u64::from(crc32c::crc32c(text.as_bytes()))
}

impl Config {
    /// The config of the workload `id`: that of its profile.
    pub fn for_workload(id: &WorkloadId) -> Self {
        let long = matches!(id, WorkloadId::Random { .. });
        Self::for_profile(long, id_seed(id) % PROFILES)
    }

    /// Profile `index` of short (seq) or long (random) workloads.
    pub fn for_profile(long: bool, index: u64) -> Self {
        let seed = index.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ if long { 0x1000 } else { 0 };
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let ss = if rng.gen_ratio(1, 4) { 4096 } else { 512 };
        // Small segments make GC run often inside short workloads; the
        // media stays around 1-2 MiB so images are cheap.
        let segment_size_bytes: u64 = if ss == 512 {
            [16 << 10, 32 << 10, 64 << 10][rng.gen_range(0..3)]
        } else {
            [32 << 10, 64 << 10, 128 << 10][rng.gen_range(0..3)]
        };
        let media_target: u64 = if long { 2 << 20 } else { 1 << 20 };
        let segments = (media_target / segment_size_bytes).max(14) + rng.gen_range(0..4);
        let ckpt = [4u64 << 10, 16 << 10, 64 << 10][rng.gen_range(0..3)];
        let mut format = FormatOptions {
            segment_size_bytes,
            overprovision_percent: rng.gen_range(10..=25),
            max_request_bytes: [
                None,
                Some(64 * u64::from(ss)),
                Some((128 << 10).max(64 * u64::from(ss))),
            ][rng.gen_range(0..3)],
            buffer_bytes: [None, Some(u64::from(ss)), Some(4 << 10), Some(16 << 10)]
                [rng.gen_range(0..4)],
            checkpoint_interval_bytes: Some(ckpt),
            uuid: Some([seed as u8; 16]),
            ..FormatOptions::default()
        };
        let mut open = OpenOptions {
            checkpoint_interval_bytes: Some(ckpt),
            ..OpenOptions::default()
        };
        let discard = match rng.gen_range(0..3) {
            0 => DiscardMode::Zero,
            1 => DiscardMode::Keep,
            _ => DiscardMode::Random(seed),
        };
        // Mostly past the point where GC runs in the steady state.
        let media_bytes = segments * segment_size_bytes;
        let warm_bytes = (media_bytes as f64 * rng.gen_range(0.3..2.0)) as u64;
        // Drawn last, so the earlier draws (and so the profiles) stay as
        // they were. A cleaning round of one victim per checkpoint in two
        // profiles of three keeps GC and checkpoints inside short
        // workloads; the rest run the default batching.
        let gc_batch_segments = [Some(0), Some(0), None][rng.gen_range(0..3)];
        format.gc_batch_segments = gc_batch_segments;
        open.gc_batch_segments = gc_batch_segments;
        Config {
            long,
            profile: index,
            seed,
            ss,
            segments,
            format,
            open,
            discard,
            warm_bytes,
        }
    }

    pub fn media(&self) -> SimMedia {
        let m = SimMedia::new(
            self.ss,
            16384 + self.segments * self.format.segment_size_bytes,
        );
        m.set_discard_mode(self.discard);
        m
    }
}

/// How thoroughly to explore.
#[derive(Clone, Debug)]
pub struct ExploreOptions {
    pub subsets_per_window: usize,
    pub torn_per_write: usize,
    /// Usability probe on every Nth image (1 = all, 0 = never).
    pub probe_every: usize,
    /// Sync, second recovery and compare on every Nth image (0 = never).
    pub remount_every: usize,
    /// Check only this image.
    pub only: Option<CrashSpec>,
    /// Stop at the first violation of a workload.
    pub stop_at_first: bool,
}

impl Default for ExploreOptions {
    fn default() -> Self {
        Self {
            subsets_per_window: 16,
            torn_per_write: 4,
            probe_every: 1,
            remount_every: 7,
            only: None,
            stop_at_first: true,
        }
    }
}

/// What a workload did on the device under test.
pub struct Recording {
    pub cfg: Config,
    pub media: SimMedia,
    /// First media event after the (synced) setup.
    pub from: usize,
    /// Media event count when step i started.
    pub step_start: Vec<usize>,
    /// (event count when a persistence point's flush returned, steps done).
    pub persists: Vec<(usize, usize)>,
    /// trees[k]: the oracle's tree after k steps (trees[0]: after setup).
    pub trees: Vec<Tree>,
    /// Results of the steps (identical on the oracle and the device).
    pub results: Vec<Result<(), Errno>>,
    /// GC and checkpoint bytes written during the steps.
    pub gc_bytes: u64,
    pub checkpoint_bytes: u64,
}

impl Recording {
    /// Allowed k for a crash after `at` media events.
    pub fn bounds(&self, at: usize) -> (usize, usize) {
        let kmax = self.step_start.partition_point(|&e| e <= at);
        let i = self.persists.partition_point(|&(e, _)| e <= at);
        let kmin = if i == 0 { 0 } else { self.persists[i - 1].1 };
        (kmin, kmax.max(kmin))
    }
}

/// A violation of the crash contract (or a harness-detected divergence).
#[derive(Clone, Debug)]
pub struct Violation {
    pub id: WorkloadId,
    /// The crash image; None for a live divergence from the oracle.
    pub spec: Option<CrashSpec>,
    pub bounds: (usize, usize),
    pub why: String,
}

impl Violation {
    /// One command that replays exactly this violation.
    pub fn replay_command(&self) -> String {
        let spec = self
            .spec
            .as_ref()
            .map_or(String::new(), |s| format!(" --spec '{s}'"));
        format!(
            "cargo run --profile test -p atomfs-tests --bin atomfs-crash -- --replay '{}'{spec}",
            self.id
        )
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cfg = Config::for_workload(&self.id);
        writeln!(f, "CRASH-CONSISTENCY VIOLATION in workload {}", self.id)?;
        write!(f, "{}", workload::build(self.id))?;
        writeln!(f, "  config (seed {:#x}): {:?}", cfg.seed, cfg)?;
        match &self.spec {
            Some(s) => writeln!(
                f,
                "  crash image: {s}; allowed oracle states k = {}..={}",
                self.bounds.0, self.bounds.1
            )?,
            None => writeln!(f, "  while running the workload (no crash)")?,
        }
        for line in self.why.lines() {
            writeln!(f, "  {line}")?;
        }
        writeln!(f, "  replay: {}", self.replay_command())
    }
}

fn node_summary(n: &Node) -> String {
    let mut s = format!(
        "{:?} perm {:o} uid {} gid {} nlink {} size {} digest {:08x}",
        n.kind, n.perm, n.uid, n.gid, n.nlink, n.size, n.digest
    );
    if !n.target.is_empty() {
        s += &format!(" -> {} bytes", n.target.len());
    }
    for (k, v) in &n.xattrs {
        s += &format!(
            " {}={}B/{:08x}",
            k.to_string_lossy(),
            v.len(),
            crc32c::crc32c(v)
        );
    }
    s
}

/// Number of paths on which two trees differ, and the first difference.
pub fn tree_diff(got: &Tree, want: &Tree) -> (usize, String) {
    let mut count = 0;
    let mut first = String::new();
    let mut note = |line: String| {
        if count == 0 {
            first = line;
        }
        count += 1;
    };
    for (p, n) in got {
        match want.get(p) {
            None => note(format!(
                "/{} exists ({}) but the oracle has no such path",
                p.display(),
                node_summary(n)
            )),
            Some(w) if w != n => note(format!(
                "/{}: recovered {}\n    oracle    {}",
                p.display(),
                node_summary(n),
                node_summary(w)
            )),
            _ => {}
        }
    }
    for (p, w) in want {
        if !got.contains_key(p) {
            note(format!(
                "/{} is missing (oracle: {})",
                p.display(),
                node_summary(w)
            ));
        }
    }
    (count, first)
}

/// Runs `w` on the oracle: the tree after the setup and after every step,
/// and every step's result.
fn oracle(w: &Workload, dev: MemDevice, topped: &[Op]) -> (Vec<Tree>, Vec<Result<(), Errno>>) {
    let fs = Fs::mount(dev, &mount_opts()).expect("oracle mount");
    for op in topped {
        exec::apply(&fs, op).unwrap_or_else(|e| panic!("oracle top-up {op}: {e}"));
    }
    for op in &w.setup {
        exec::apply(&fs, op).unwrap_or_else(|e| panic!("oracle setup {op}: {e}"));
    }
    fs.sync().unwrap();
    let mut trees = vec![dump_tree(&fs).expect("oracle dump")];
    let mut results = Vec::new();
    for step in &w.steps {
        results.push(exec::apply(&fs, &step.op));
        fs.sync().unwrap();
        trees.push(dump_tree(&fs).expect("oracle dump"));
    }
    (trees, results)
}

/// Writes and rewrites a scratch file `/.warm` (`warm_bytes` in all, in
/// 16 KiB chunks over a window of a quarter of the device's capacity, each
/// chunk followed by one long-lived sector while those stay under an
/// eighth of it). This leaves the log full of garbage mixed with live
/// sectors, so GC is in its steady state and copies live data during the
/// steps; the device stays well below full so the steps never see ENOSPC.
/// (A scratch file that is deleted afterwards would not do: segments that
/// die whole are freed without GC.) The oracle writes the same file.
pub fn warm_up<D: AtomicDevice>(fs: &Fs<D>, bytes: u64, capacity: u64) -> Result<(), Errno> {
    if bytes == 0 {
        return Ok(());
    }
    exec::apply(fs, &Op::Creat(".warm".into()))?;
    let chunk = 16u64 << 10;
    let window = (capacity / 4 / chunk).max(1) * chunk;
    let cold_max = capacity / 8 / 512;
    let mut done = 0;
    let mut i = 0u64;
    while done < bytes {
        exec::apply(
            fs,
            &Op::Write {
                path: ".warm".into(),
                kind: WriteKind::Plain,
                off: (i * chunk) % window,
                len: chunk,
                tag: i as u8,
            },
        )?;
        if i < cold_max {
            exec::apply(
                fs,
                &Op::Write {
                    path: ".warm".into(),
                    kind: WriteKind::Plain,
                    off: window + i * 512,
                    len: 512,
                    tag: i as u8,
                },
            )?;
        }
        done += chunk;
        i += 1;
        if i % 4 == 0 {
            fs.sync()?;
        }
    }
    Ok(())
}

/// Brings a freshly opened copy of the warmed-up device back to GC's
/// steady state: opening writes a checkpoint, which releases the segments
/// GC had quarantined, so the first few segments the steps need would come
/// free. Rewrites warm-up chunks until GC runs (at most 48), then a few
/// small writes chosen by `salt` so workloads of one profile start at
/// different points of a segment. Returns the operations, for the oracle.
fn top_up<D: AtomicDevice>(fs: &Fs<D>, capacity: u64, salt: u64) -> Result<Vec<Op>, Errno> {
    let chunk = 16u64 << 10;
    let window = (capacity / 4 / chunk).max(1) * chunk;
    let gc0 = fs.device().stats().media_gc_bytes;
    let mut ops = Vec::new();
    let mut run = |op: Op| -> Result<(), Errno> {
        exec::apply(fs, &op)?;
        ops.push(op);
        Ok(())
    };
    for i in 0..48u64 {
        if fs.device().stats().media_gc_bytes > gc0 {
            break;
        }
        run(Op::Write {
            path: ".warm".into(),
            kind: WriteKind::Plain,
            off: (i * chunk) % window,
            len: chunk,
            tag: 0xC0 ^ i as u8,
        })?;
        if i % 4 == 3 {
            fs.sync()?;
        }
    }
    for j in 0..salt % 7 {
        run(Op::Write {
            path: ".warm".into(),
            kind: WriteKind::Plain,
            off: (salt >> 8) % window + j * 2048,
            len: 2048,
            tag: 0xE0 ^ j as u8,
        })?;
    }
    Ok(ops)
}

/// The warmed-up starting point of every workload of one profile: the
/// device after mkfs, [`warm_up`] and a sync, and the oracle's device in
/// the same state. Built once per process and profile; workloads start
/// from copies (copy-on-write media pages), and the device under test is
/// opened by recovery like any remounted file system.
pub struct Base {
    pub media: SimMedia,
    pub oracle: MemDevice,
    /// The device's capacity (sizes the warm-up file).
    pub capacity: u64,
}

impl Base {
    pub fn get(cfg: &Config) -> Arc<Base> {
        type Cache = Mutex<HashMap<(bool, u64), Arc<Base>>>;
        static CACHE: OnceLock<Cache> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        let key = (cfg.long, cfg.profile);
        if let Some(b) = cache.lock().unwrap().get(&key) {
            return b.clone();
        }
        let b = Arc::new(Base::build(cfg));
        cache.lock().unwrap().entry(key).or_insert(b).clone()
    }

    fn build(cfg: &Config) -> Base {
        let media = cfg.media();
        let dev = LogDevice::format(media.clone(), &cfg.format)
            .unwrap_or_else(|e| panic!("profile {}: format: {e} ({cfg:?})", cfg.profile));
        let capacity = dev.space().capacity_bytes;
        let geometry = dev.geometry();
        Fs::mkfs(&dev, &mkfs_opts()).expect("mkfs");
        let fs = Fs::mount(dev, &mount_opts()).expect("mount");
        warm_up(&fs, cfg.warm_bytes, capacity)
            .unwrap_or_else(|e| panic!("profile {}: warm-up: {e} ({cfg:?})", cfg.profile));
        drop(fs.unmount().expect("unmount"));
        let oracle = MemDevice::with_geometry(geometry, 1 << 40);
        Fs::mkfs(&oracle, &mkfs_opts()).expect("oracle mkfs");
        let fs = Fs::mount(oracle, &mount_opts()).expect("oracle mount");
        warm_up(&fs, cfg.warm_bytes, capacity).expect("oracle warm-up");
        let oracle = fs.unmount().expect("oracle unmount");
        Base {
            media: media.snapshot(),
            oracle,
            capacity,
        }
    }
}

/// Plays `w` on a fresh `LogDevice` over `SimMedia` (wrapped by `wrap`,
/// for mutation tests) and on the oracle. A live divergence from the
/// oracle is returned as a violation.
pub fn record_with<W: AtomicDevice>(
    w: &Workload,
    wrap: impl FnOnce(LogDevice<SimMedia>) -> W,
) -> Result<Recording, Violation> {
    let cfg = Config::for_workload(&w.id);
    let base = Base::get(&cfg);
    let media = base.media.snapshot();
    media.set_discard_mode(cfg.discard);
    let dev = LogDevice::open(media.clone(), &cfg.open)
        .unwrap_or_else(|e| panic!("{}: open the warmed-up device: {e} ({cfg:?})", w.id));
    let dev = wrap(dev);
    let fs = Fs::mount(dev, &mount_opts()).unwrap_or_else(|e| panic!("{}: mount: {e}", w.id));
    let diverge = |why: String| Violation {
        id: w.id,
        spec: None,
        bounds: (0, 0),
        why,
    };
    let topped = top_up(&fs, base.capacity, id_seed(&w.id))
        .map_err(|e| diverge(format!("top-up of the warm-up file failed: {e}")))?;
    let (trees, results) = oracle(w, base.oracle.snapshot(), &topped);
    for op in &w.setup {
        exec::apply(&fs, op).map_err(|e| diverge(format!("setup {op} failed: {e}")))?;
    }
    fs.sync()
        .map_err(|e| diverge(format!("sync after setup: {e}")))?;
    let tree0 = dump_tree(&fs).map_err(|e| diverge(format!("dump after setup: {e}")))?;
    if tree0 != trees[0] {
        return Err(diverge(format!(
            "after setup the device's tree differs from the oracle's: {}",
            tree_diff(&tree0, &trees[0]).1
        )));
    }
    let before = fs.device().stats();
    let from = media.event_count();
    let mut rec = Recording {
        cfg,
        media,
        from,
        step_start: Vec::with_capacity(w.steps.len()),
        persists: Vec::new(),
        trees,
        results,
        gc_bytes: 0,
        checkpoint_bytes: 0,
    };
    for (i, step) in w.steps.iter().enumerate() {
        rec.step_start.push(rec.media.event_count());
        let r = exec::apply(&fs, &step.op);
        if r != rec.results[i] {
            return Err(diverge(format!(
                "step {} ({}) returned {:?} on the device but {:?} on the oracle",
                i + 1,
                step.op,
                r,
                rec.results[i]
            )));
        }
        match exec::persist(&fs, &step.op, step.persist) {
            Ok(true) => rec.persists.push((rec.media.event_count(), i + 1)),
            // The path of the persistence point does not resolve: open(2)
            // would fail, nothing is persisted.
            Ok(false) | Err(Errno::ENOENT | Errno::ENOTDIR) => {}
            Err(e) => return Err(diverge(format!("step {} persistence point: {e}", i + 1))),
        }
    }
    fs.sync().map_err(|e| diverge(format!("final sync: {e}")))?;
    rec.persists.push((rec.media.event_count(), w.steps.len()));
    let after = fs.device().stats();
    rec.gc_bytes = after.media_gc_bytes - before.media_gc_bytes;
    rec.checkpoint_bytes = after.media_checkpoint_bytes - before.media_checkpoint_bytes;
    let live = dump_tree(&fs).map_err(|e| diverge(format!("dump at the end: {e}")))?;
    if &live != rec.trees.last().unwrap() {
        return Err(diverge(format!(
            "at the end the live tree differs from the oracle: {}",
            tree_diff(&live, rec.trees.last().unwrap()).1
        )));
    }
    Ok(rec)
}

pub fn record(w: &Workload) -> Result<Recording, Violation> {
    record_with(w, |d| d)
}

fn fsck_errors<D: AtomicDevice>(dev: &D) -> Option<String> {
    let report = atomfs::fsck::check(dev, &FsckOptions::default());
    let errs: Vec<&str> = report.errors().map(|f| f.message.as_str()).collect();
    (!errs.is_empty()).then(|| errs.join("; "))
}

/// In every directory: create, write, rename and delete a file, make and
/// remove a directory; then the tree must be unchanged and fsck clean.
fn probe<D: AtomicDevice>(fs: &Fs<D>, tree: &Tree) -> Result<(), String> {
    let ctx = Ctx::root();
    let os = std::ffi::OsStr::new;
    for (path, node) in tree {
        if node.kind != FileKind::Directory {
            continue;
        }
        let p = path.to_string_lossy();
        let dir = exec::resolve(fs, &p).map_err(|e| format!("probe: lookup /{p}: {e}"))?;
        let step =
            |what: &str, r: Result<(), Errno>| r.map_err(|e| format!("probe in /{p}: {what}: {e}"));
        let a = fs.mknod(&ctx, dir, os("zz.probe"), libc::S_IFREG | 0o644, 0);
        step("create", a.as_ref().map(drop).map_err(|e| *e))?;
        let ino = a.unwrap().ino;
        step(
            "write",
            fs.write(&ctx, ino, 0, &exec::data(0x77, 0, 5000), false)
                .map(drop),
        )?;
        step(
            "rename",
            fs.rename(&ctx, dir, os("zz.probe"), dir, os("zz.probe2"), 0),
        )?;
        step("mkdir", fs.mkdir(&ctx, dir, os("zz.dir"), 0o700).map(drop))?;
        step("rmdir", fs.rmdir(&ctx, dir, os("zz.dir")))?;
        step("unlink", fs.unlink(&ctx, dir, os("zz.probe2")))?;
    }
    let after = dump_tree(fs).map_err(|e| format!("probe: dump: {e}"))?;
    if &after != tree {
        return Err(format!(
            "after the probe (create/write/rename/delete in every directory) the tree changed: {}",
            tree_diff(&after, tree).1
        ));
    }
    if let Some(e) = fsck_errors(fs.device()) {
        return Err(format!("fsck after the probe: {e}"));
    }
    Ok(())
}

/// Checks one crash image; Ok(k) is the oracle state it equals.
pub fn check_image(
    rec: &Recording,
    spec: &CrashSpec,
    probe_it: bool,
    remount: bool,
) -> Result<usize, String> {
    let image = rec.media.image(spec);
    let (kmin, kmax) = rec.bounds(spec.at());
    let report = blockdev::check(&image);
    if !report.is_clean() {
        let errs: Vec<String> = report.errors().map(|f| f.message.clone()).collect();
        return Err(format!("blockdev::check found errors: {errs:?}"));
    }
    let dev = LogDevice::open(image, &rec.cfg.open).map_err(|e| format!("LogDevice::open: {e}"))?;
    if let Some(e) = fsck_errors(&dev) {
        return Err(format!("fsck found errors: {e}"));
    }
    let fs = Fs::mount(dev, &mount_opts()).map_err(|e| format!("mount: {e}"))?;
    let tree = dump_tree(&fs).map_err(|e| format!("dump_tree: {e}"))?;
    let Some(k) = (kmin..=kmax).rev().find(|&k| rec.trees[k] == tree) else {
        let (best, (n, first)) = (kmin..=kmax)
            .rev()
            .map(|k| (k, tree_diff(&tree, &rec.trees[k])))
            .min_by_key(|(_, (n, _))| *n)
            .expect("non-empty range");
        let elsewhere = rec.trees.iter().position(|t| *t == tree);
        return Err(format!(
            "the recovered tree equals no allowed oracle state{}\nnearest allowed state k={best} differs on {n} path(s); first: {first}",
            match elsewhere {
                Some(k) => format!(" (it equals state k={k}, outside the allowed range)"),
                None => " (nor any other state of the workload)".into(),
            }
        ));
    };
    if probe_it {
        probe(&fs, &tree)?;
    }
    if remount {
        fs.sync().map_err(|e| format!("sync after recovery: {e}"))?;
        let again = fs.device().media().durable();
        drop(fs);
        let dev = LogDevice::open(again, &rec.cfg.open).map_err(|e| format!("second open: {e}"))?;
        let fs = Fs::mount(dev, &mount_opts()).map_err(|e| format!("second mount: {e}"))?;
        let t2 = dump_tree(&fs).map_err(|e| format!("second dump: {e}"))?;
        if t2 != tree {
            return Err(format!(
                "after sync and a second recovery the tree changed: {}",
                tree_diff(&t2, &tree).1
            ));
        }
    }
    Ok(k)
}

/// The result of exploring one workload.
#[derive(Debug, Default)]
pub struct Outcome {
    pub images: u64,
    pub violations: Vec<Violation>,
    pub gc: bool,
    pub checkpoint: bool,
}

pub fn crash_options(rec: &Recording, opts: &ExploreOptions) -> CrashOptions {
    CrashOptions {
        prefixes: true,
        subsets_per_window: opts.subsets_per_window,
        torn_per_write: opts.torn_per_write,
        from: rec.from,
        seed: rec.cfg.seed,
    }
}

/// Explores every crash image of a recorded run.
pub fn explore_recording(id: WorkloadId, rec: &Recording, opts: &ExploreOptions) -> Outcome {
    let specs = match &opts.only {
        Some(s) => vec![s.clone()],
        None => rec.media.crash_specs(&crash_options(rec, opts)),
    };
    let mut out = Outcome {
        gc: rec.gc_bytes > 0,
        checkpoint: rec.checkpoint_bytes > 0,
        ..Outcome::default()
    };
    for (i, spec) in specs.iter().enumerate() {
        out.images += 1;
        let probe_it = opts.probe_every > 0 && i % opts.probe_every == 0;
        let remount = opts.remount_every > 0 && i % opts.remount_every == 0;
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            check_image(rec, spec, probe_it, remount)
        }))
        .unwrap_or_else(|p| {
            Err(format!(
                "panic while checking the image: {}",
                panic_text(&p)
            ))
        });
        if let Err(why) = r {
            out.violations.push(Violation {
                id,
                spec: Some(spec.clone()),
                bounds: rec.bounds(spec.at()),
                why,
            });
            if opts.stop_at_first {
                break;
            }
        }
    }
    out
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(non-string panic)".into())
}

/// Records and explores the workload `id`.
pub fn explore(id: WorkloadId, opts: &ExploreOptions) -> Outcome {
    explore_with(id, opts, |d| d)
}

/// [`explore`] with the device under test wrapped (mutation tests).
pub fn explore_with<W: AtomicDevice>(
    id: WorkloadId,
    opts: &ExploreOptions,
    wrap: impl FnOnce(LogDevice<SimMedia>) -> W,
) -> Outcome {
    let w = workload::build(id);
    let rec = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| record_with(&w, wrap)))
        .unwrap_or_else(|p| {
            Err(Violation {
                id,
                spec: None,
                bounds: (0, 0),
                why: format!("panic while running the workload: {}", panic_text(&p)),
            })
        });
    match rec {
        Ok(rec) => explore_recording(id, &rec, opts),
        Err(v) => Outcome {
            images: 0,
            violations: vec![v],
            ..Outcome::default()
        },
    }
}
