//! The workloads, run as ordinary syscalls through a mounted file system.
//! Each counts its own application bytes: the bytes of file data it asked
//! the file system to write (names and metadata count as zero).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde::Serialize;

use crate::sys::{self, ctx, DiskStat, Result};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// One workload and its parameters.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Workload {
    /// Per file: create, write `size`, fsync the file, fsync the directory.
    CreateFsync { files: u64, size: u64 },
    /// Append `size` + fsync to one file, `appends` times.
    AppendFsync { appends: u64, size: u64 },
    /// Random aligned `size` overwrite + fsync in a `file_size` file.
    OverwriteFsync {
        file_size: u64,
        writes: u64,
        size: u64,
    },
    /// Write a `size` temp file, fsync, rename over the target, fsync dir.
    RenameReplace { saves: u64, size: u64 },
    /// Per iteration: mkdir, rename, unlink, each + fsync of the parent.
    MetadataFsync { iterations: u64 },
    /// `files` files of `min..=max` bytes in `dirs` directories, one sync.
    SmallFiles {
        files: u64,
        dirs: u64,
        min: u64,
        max: u64,
    },
    /// Write `total` in `chunk` writes + fsync; then read it back cold.
    Seq { total: u64, chunk: u64 },
    /// `files` empty files in one directory (setup), remount, drop caches;
    /// then `stat` each by path.
    StatFiles { files: u64 },
    /// A directory of `existing` empty files (setup), remount; then create
    /// `files` more empty files in it, one sync(2) at the end.
    BigdirCreate { existing: u64, files: u64 },
    /// Copy up to `max_bytes` of the tree at `source`, then sync.
    TreeCopy { source: PathBuf, max_bytes: u64 },
    /// Fill `fill_pct`% of capacity with `file_size` files, then random
    /// `size` overwrites with fsync every `batch` until `overwrite_factor` ×
    /// capacity is written. Figures are for the second half (steady state).
    Aged {
        fill_pct: u32,
        file_size: u64,
        size: u64,
        batch: u64,
        overwrite_factor: f64,
    },
}

/// Which workloads are selected by default, and their names.
pub const NAMES: [&str; 11] = [
    "create_fsync",
    "append_fsync",
    "overwrite_fsync",
    "rename_replace",
    "metadata_fsync",
    "small_files",
    "seq",
    "stat_files",
    "bigdir_create",
    "tree_copy",
    "aged",
];

/// What a workload did in its measured phase.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Outcome {
    /// Operations (files created, writes, renames, ...).
    pub ops: u64,
    /// Bytes of file data written by the application.
    pub app_bytes: u64,
    /// For `aged`: the application bytes and device counters at the
    /// midpoint, so that the second half (steady state) can be reported.
    pub midpoint: Option<(u64, DiskStat)>,
    /// For `aged`: the overwrite phase was stopped by `--aged-max-secs`
    /// before it had written `overwrite_factor` × capacity.
    pub time_capped: bool,
}

/// What a workload left behind in its setup phase.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Setup {
    /// Bytes written by the setup (not measured).
    pub bytes: u64,
    /// Capacity reported by statfs when the setup ran.
    pub capacity: u64,
    /// Files made by the setup (for `aged`: name and size; for
    /// `stat_files` and `bigdir_create`: the empty files, size 0).
    #[serde(skip)]
    pub files: Vec<(PathBuf, u64)>,
}

/// Per-run context given to a workload.
pub struct Ctx<'a> {
    pub mnt: &'a Path,
    pub seed: u64,
    /// Size of the device: caps the capacity a file system reports (a
    /// thin-provisioned one could report more than the media holds).
    pub device_size: u64,
    /// Reads the device counters (for midpoint samples).
    pub sample: &'a dyn Fn() -> Result<DiskStat>,
    /// For `aged`: stop the overwrite phase at this time even if it has not
    /// written `overwrite_factor` × capacity yet (`--aged-max-secs`).
    pub deadline: Option<std::time::Instant>,
}

/// Incompressible, non-repeating data for writes.
struct Data {
    rng: StdRng,
    buf: Vec<u8>,
    stamp: u64,
}

impl Data {
    fn new(seed: u64, len: usize) -> Data {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut buf = vec![0u8; len];
        rng.fill_bytes(&mut buf);
        Data { rng, buf, stamp: 0 }
    }

    /// `len` bytes, different from every earlier call's (a counter is
    /// stamped into each 512-byte sector so no two sectors are equal).
    fn next(&mut self, len: usize) -> &[u8] {
        if len > self.buf.len() {
            self.buf.resize(len, 0);
            self.rng.fill_bytes(&mut self.buf);
        }
        for s in self.buf[..len].chunks_mut(512) {
            self.stamp += 1;
            let n = s.len().min(8);
            s[..n].copy_from_slice(&self.stamp.to_le_bytes()[..n]);
        }
        &self.buf[..len]
    }
}

/// The directory `stat_files` and `bigdir_create` fill.
const BIG_DIR: &str = "big";

/// Name of the `i`th file the setup of `stat_files` / `bigdir_create` makes.
fn setup_name(i: u64) -> String {
    format!("f{i:06}")
}

/// Name of the `i`th file `bigdir_create` adds in its measured phase
/// (never one of the setup's names).
fn added_name(i: u64) -> String {
    format!("n{i:06}")
}

fn fsync_dir(dir: &Path) -> Result<()> {
    let d = ctx(File::open(dir), || format!("open dir {}", dir.display()))?;
    ctx(d.sync_all(), || format!("fsync dir {}", dir.display()))
}

fn write_file(path: &Path, data: &[u8]) -> Result<File> {
    let mut f = ctx(File::create(path), || format!("create {}", path.display()))?;
    ctx(f.write_all(data), || format!("write {}", path.display()))?;
    Ok(f)
}

/// A source tree loaded into memory (so that reading it does not count in
/// the time of writing it).
enum TreeEntry {
    Dir(PathBuf),
    File(PathBuf, Vec<u8>),
    Symlink(PathBuf, PathBuf),
}

fn load_tree(source: &Path, max_bytes: u64) -> Result<Vec<TreeEntry>> {
    let mut out = Vec::new();
    let mut total = 0u64;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = source.join(&rel);
        let mut names: Vec<_> = ctx(fs::read_dir(&abs), || format!("read {}", abs.display()))?
            .filter_map(|e| e.ok())
            .collect();
        names.sort_by_key(|e| e.file_name());
        if !rel.as_os_str().is_empty() {
            out.push(TreeEntry::Dir(rel.clone()));
        }
        let mut subdirs = Vec::new();
        for e in names {
            let r = rel.join(e.file_name());
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                subdirs.push(r);
            } else if ft.is_symlink() {
                if let Ok(t) = fs::read_link(e.path()) {
                    out.push(TreeEntry::Symlink(r, t));
                }
            } else if ft.is_file() {
                let Ok(data) = fs::read(e.path()) else {
                    continue;
                };
                if total + data.len() as u64 > max_bytes {
                    return Ok(out);
                }
                total += data.len() as u64;
                out.push(TreeEntry::File(r, data));
            }
        }
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(out)
}

/// The default source tree for `tree_copy`: the Rust toolchain's library
/// sources if installed, else the local cargo registry sources.
pub fn default_tree_source() -> Option<PathBuf> {
    let sysroot = std::process::Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let mut cands = Vec::new();
    if let Some(s) = sysroot {
        cands.push(s.join("lib/rustlib/src"));
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    if let Some(c) = cargo_home {
        cands.push(c.join("registry/src"));
    }
    cands.into_iter().find(|p| p.is_dir())
}

impl Workload {
    /// The name used in tables (`aged50` for aged at 50%).
    pub fn name(&self) -> String {
        match self {
            Workload::CreateFsync { .. } => "create_fsync".into(),
            Workload::AppendFsync { .. } => "append_fsync".into(),
            Workload::OverwriteFsync { .. } => "overwrite_fsync".into(),
            Workload::RenameReplace { .. } => "rename_replace".into(),
            Workload::MetadataFsync { .. } => "metadata_fsync".into(),
            Workload::SmallFiles { .. } => "small_files".into(),
            Workload::Seq { .. } => "seq".into(),
            Workload::StatFiles { .. } => "stat_files".into(),
            Workload::BigdirCreate { .. } => "bigdir_create".into(),
            Workload::TreeCopy { .. } => "tree_copy".into(),
            Workload::Aged { fill_pct, .. } => format!("aged{fill_pct}"),
        }
    }

    /// The parameters in one line.
    pub fn describe(&self) -> String {
        let h = crate::report::human;
        match self {
            Workload::CreateFsync { files, size } => {
                format!(
                    "{files} × (create, write {}, fsync file, fsync dir)",
                    h(*size)
                )
            }
            Workload::AppendFsync { appends, size } => {
                format!("{appends} × (append {} + fsync) to one file", h(*size))
            }
            Workload::OverwriteFsync {
                file_size,
                writes,
                size,
            } => format!(
                "{writes} × (random aligned {} overwrite + fsync) in a {} file",
                h(*size),
                h(*file_size)
            ),
            Workload::RenameReplace { saves, size } => format!(
                "{saves} × (write {} temp, fsync, rename over target, fsync dir)",
                h(*size)
            ),
            Workload::MetadataFsync { iterations } => format!(
                "{iterations} × (mkdir, rename, unlink; each + fsync parent); files pre-created"
            ),
            Workload::SmallFiles {
                files,
                dirs,
                min,
                max,
            } => format!(
                "{files} files of {}–{} (uniform) in {dirs} dirs, one sync(2) at the end",
                h(*min),
                h(*max)
            ),
            Workload::Seq { total, chunk } => format!(
                "write {} in {} writes + fsync; then remount, drop caches, read it back",
                h(*total),
                h(*chunk)
            ),
            Workload::StatFiles { files } => format!(
                "{files} empty files in one directory, remount, drop caches; then stat(2) each \
                 by path"
            ),
            Workload::BigdirCreate { existing, files } => format!(
                "a directory of {existing} empty files, remount; then create {files} more empty \
                 files in it, one sync(2) at the end"
            ),
            Workload::TreeCopy { source, max_bytes } => format!(
                "copy ≤ {} of {} (files, dirs, symlinks), then sync(2)",
                h(*max_bytes),
                source.display()
            ),
            Workload::Aged {
                fill_pct,
                file_size,
                size,
                batch,
                overwrite_factor,
            } => format!(
                "fill {fill_pct}% of capacity with {} files, remount, random {} overwrites \
                 with fsync every {batch} until {overwrite_factor}× capacity; figures for the \
                 second half (steady state)",
                h(*file_size),
                h(*size)
            ),
        }
    }

    /// Unmeasured preparation. The runner remounts after it if it wrote
    /// anything (`Setup::bytes > 0` or files made).
    pub fn setup(&self, c: &Ctx) -> Result<Setup> {
        let mnt = c.mnt;
        let mut s = Setup {
            capacity: sys::statfs(mnt)?.0.min(c.device_size),
            ..Setup::default()
        };
        let mut data = Data::new(c.seed ^ 0x5e7, MIB as usize);
        match self {
            Workload::OverwriteFsync { file_size, .. } => {
                let p = mnt.join("big");
                let mut f = ctx(File::create(&p), || format!("create {}", p.display()))?;
                let mut left = *file_size;
                while left > 0 {
                    let n = left.min(MIB);
                    ctx(f.write_all(data.next(n as usize)), || "write big".into())?;
                    left -= n;
                }
                ctx(f.sync_all(), || "fsync big".into())?;
                s.bytes = *file_size;
                s.files.push((p, *file_size));
            }
            Workload::StatFiles { files: n } | Workload::BigdirCreate { existing: n, .. } => {
                let dir = mnt.join(BIG_DIR);
                ctx(fs::create_dir(&dir), || format!("mkdir {}", dir.display()))?;
                for i in 0..*n {
                    let p = dir.join(setup_name(i));
                    ctx(File::create(&p), || format!("create {}", p.display()))?;
                    s.files.push((p, 0));
                }
            }
            Workload::RenameReplace { size, .. } => {
                let p = mnt.join("config");
                ctx(
                    write_file(&p, data.next(*size as usize))?.sync_all(),
                    || "fsync".into(),
                )?;
                s.bytes = *size;
                s.files.push((p, *size));
            }
            Workload::MetadataFsync { iterations } => {
                for i in 0..*iterations {
                    let p = mnt.join(format!("f{i}"));
                    ctx(File::create(&p), || format!("create {}", p.display()))?;
                    s.files.push((p, 0));
                }
                fsync_dir(mnt)?;
            }
            Workload::Aged {
                fill_pct,
                file_size,
                ..
            } => {
                let target = s.capacity * *fill_pct as u64 / 100;
                let dir = mnt.join("aged");
                ctx(fs::create_dir(&dir), || "mkdir aged".into())?;
                let mut i = 0;
                'fill: while s.bytes + MIB <= target {
                    let p = dir.join(format!("f{i:05}"));
                    i += 1;
                    let mut f = ctx(File::create(&p), || format!("create {}", p.display()))?;
                    let want = (*file_size).min(target - s.bytes) / MIB * MIB;
                    let mut done = 0;
                    while done < want {
                        if let Err(e) = f.write_all(data.next(MIB as usize)) {
                            if e.raw_os_error() == Some(libc::ENOSPC) {
                                eprintln!(
                                    "note: aged fill stopped by ENOSPC at {}",
                                    crate::report::human(s.bytes + done)
                                );
                                let _ = f.set_len(done);
                                let _ = f.sync_all();
                                if done > 0 {
                                    s.files.push((p, done));
                                }
                                s.bytes += done;
                                break 'fill;
                            }
                            return Err(format!("write {}: {e}", p.display()));
                        }
                        done += MIB;
                    }
                    ctx(f.sync_all(), || format!("fsync {}", p.display()))?;
                    s.files.push((p, done));
                    s.bytes += done;
                }
                fsync_dir(&dir)?;
            }
            _ => {}
        }
        Ok(s)
    }

    /// The measured phase.
    pub fn run(&self, c: &Ctx, setup: &Setup) -> Result<Outcome> {
        let mnt = c.mnt;
        let mut rng = StdRng::seed_from_u64(c.seed);
        let mut data = Data::new(c.seed, MIB as usize);
        let mut o = Outcome::default();
        match self {
            Workload::CreateFsync { files, size } => {
                let dir = mnt;
                for i in 0..*files {
                    let p = dir.join(format!("c{i}"));
                    let f = write_file(&p, data.next(*size as usize))?;
                    ctx(f.sync_all(), || format!("fsync {}", p.display()))?;
                    fsync_dir(dir)?;
                    o.ops += 1;
                    o.app_bytes += size;
                }
            }
            Workload::AppendFsync { appends, size } => {
                let p = mnt.join("log");
                let mut f = ctx(
                    OpenOptions::new().create(true).append(true).open(&p),
                    || format!("open {}", p.display()),
                )?;
                for _ in 0..*appends {
                    ctx(f.write_all(data.next(*size as usize)), || "append".into())?;
                    ctx(f.sync_all(), || "fsync log".into())?;
                    o.ops += 1;
                    o.app_bytes += size;
                }
            }
            Workload::OverwriteFsync {
                file_size,
                writes,
                size,
            } => {
                let p = mnt.join("big");
                let f = ctx(OpenOptions::new().write(true).open(&p), || {
                    format!("open {}", p.display())
                })?;
                let slots = file_size / size;
                for _ in 0..*writes {
                    let off = rng.gen_range(0..slots) * size;
                    ctx(f.write_all_at(data.next(*size as usize), off), || {
                        "pwrite big".into()
                    })?;
                    ctx(f.sync_all(), || "fsync big".into())?;
                    o.ops += 1;
                    o.app_bytes += size;
                }
            }
            Workload::RenameReplace { saves, size } => {
                let tmp = mnt.join("config.tmp");
                let target = mnt.join("config");
                for _ in 0..*saves {
                    let f = write_file(&tmp, data.next(*size as usize))?;
                    ctx(f.sync_all(), || "fsync config.tmp".into())?;
                    drop(f);
                    ctx(fs::rename(&tmp, &target), || {
                        "rename config.tmp config".into()
                    })?;
                    fsync_dir(mnt)?;
                    o.ops += 1;
                    o.app_bytes += size;
                }
            }
            Workload::MetadataFsync { iterations } => {
                for i in 0..*iterations {
                    let d = mnt.join(format!("d{i}"));
                    ctx(fs::create_dir(&d), || format!("mkdir {}", d.display()))?;
                    fsync_dir(mnt)?;
                    let (from, to) = (mnt.join(format!("f{i}")), mnt.join(format!("g{i}")));
                    ctx(fs::rename(&from, &to), || {
                        format!("rename {}", from.display())
                    })?;
                    fsync_dir(mnt)?;
                    ctx(fs::remove_file(&to), || format!("unlink {}", to.display()))?;
                    fsync_dir(mnt)?;
                    o.ops += 3;
                }
            }
            Workload::SmallFiles {
                files,
                dirs,
                min,
                max,
            } => {
                for d in 0..*dirs {
                    let p = mnt.join(format!("d{d:03}"));
                    ctx(fs::create_dir(&p), || format!("mkdir {}", p.display()))?;
                }
                for i in 0..*files {
                    let len = rng.gen_range(*min..=*max);
                    let p = mnt.join(format!("d{:03}/f{i}", i % dirs));
                    write_file(&p, data.next(len as usize))?;
                    o.ops += 1;
                    o.app_bytes += len;
                }
                sys::sync_all();
            }
            Workload::Seq { total, chunk } => {
                let p = mnt.join("seq");
                let mut f = ctx(File::create(&p), || format!("create {}", p.display()))?;
                let mut left = *total;
                while left > 0 {
                    let n = left.min(*chunk);
                    ctx(f.write_all(data.next(n as usize)), || "write seq".into())?;
                    left -= n;
                    o.ops += 1;
                    o.app_bytes += n;
                }
                ctx(f.sync_all(), || "fsync seq".into())?;
            }
            Workload::StatFiles { .. } => {
                for (p, _) in &setup.files {
                    ctx(fs::metadata(p), || format!("stat {}", p.display()))?;
                    o.ops += 1;
                }
            }
            Workload::BigdirCreate { files, .. } => {
                let dir = mnt.join(BIG_DIR);
                for i in 0..*files {
                    let p = dir.join(added_name(i));
                    ctx(File::create(&p), || format!("create {}", p.display()))?;
                    o.ops += 1;
                }
                sys::sync_all();
            }
            Workload::TreeCopy { source, max_bytes } => {
                let tree = load_tree(source, *max_bytes)?;
                let root = mnt.join("tree");
                ctx(fs::create_dir(&root), || "mkdir tree".into())?;
                for e in &tree {
                    match e {
                        TreeEntry::Dir(r) => ctx(fs::create_dir(root.join(r)), || {
                            format!("mkdir {}", r.display())
                        })?,
                        TreeEntry::File(r, d) => {
                            write_file(&root.join(r), d)?;
                            o.app_bytes += d.len() as u64;
                        }
                        TreeEntry::Symlink(r, t) => {
                            ctx(std::os::unix::fs::symlink(t, root.join(r)), || {
                                format!("symlink {}", r.display())
                            })?
                        }
                    }
                    o.ops += 1;
                }
                sys::sync_all();
            }
            Workload::Aged {
                size,
                batch,
                overwrite_factor,
                ..
            } => {
                let human = crate::report::human;
                let files: Vec<(File, u64)> = setup
                    .files
                    .iter()
                    .filter(|(_, len)| *len >= *size)
                    .map(|(p, len)| {
                        ctx(OpenOptions::new().write(true).open(p), || {
                            format!("open {}", p.display())
                        })
                        .map(|f| (f, len / size))
                    })
                    .collect::<Result<_>>()?;
                let slots: u64 = files.iter().map(|(_, n)| n).sum();
                if slots == 0 {
                    return Err("aged: the fill left no file to overwrite".into());
                }
                // Pick a slot uniformly over all files' blocks.
                let mut starts = Vec::with_capacity(files.len());
                let mut acc = 0;
                for (_, n) in &files {
                    starts.push(acc);
                    acc += n;
                }
                let total = (setup.capacity as f64 * overwrite_factor) as u64 / size * size;
                // Device counters every 1/16 of the phase (at batch
                // boundaries), so that the second half can be cut out even
                // if the time cap stops the phase early.
                let step = (total / 16 / (size * batch)).max(1) * (size * batch);
                let mut samples: Vec<(u64, DiskStat)> = Vec::new();
                let mut dirty = vec![false; files.len()];
                while o.app_bytes < total {
                    if c.deadline.is_some_and(|d| std::time::Instant::now() >= d) {
                        o.time_capped = true;
                        break;
                    }
                    for _ in 0..*batch {
                        let slot = rng.gen_range(0..slots);
                        let fi = starts.partition_point(|&s| s <= slot) - 1;
                        let off = (slot - starts[fi]) * size;
                        let done = o.app_bytes;
                        ctx(
                            files[fi].0.write_all_at(data.next(*size as usize), off),
                            || {
                                format!(
                                    "pwrite after {} of {} overwritten",
                                    human(done),
                                    human(total)
                                )
                            },
                        )?;
                        dirty[fi] = true;
                        o.ops += 1;
                        o.app_bytes += size;
                    }
                    for (fi, d) in dirty.iter_mut().enumerate() {
                        if std::mem::take(d) {
                            let done = o.app_bytes;
                            ctx(files[fi].0.sync_all(), || {
                                format!(
                                    "fsync after {} of {} overwritten",
                                    human(done),
                                    human(total)
                                )
                            })?;
                        }
                    }
                    if o.app_bytes % step == 0 {
                        samples.push((o.app_bytes, (c.sample)()?));
                    }
                }
                // The sample nearest to half of what was written.
                let half = o.app_bytes / 2;
                o.midpoint = samples
                    .into_iter()
                    .filter(|(a, _)| *a > 0 && *a < o.app_bytes)
                    .min_by_key(|(a, _)| a.abs_diff(half));
            }
        }
        Ok(o)
    }

    /// Drop the page, dentry and inode caches after the remount that follows
    /// the setup, so that the measured phase starts cold (`stat_files`).
    pub fn cold_cache(&self) -> bool {
        matches!(self, Workload::StatFiles { .. })
    }

    /// For `seq`: the file to read back cold after a remount.
    pub fn read_back(&self) -> Option<&'static str> {
        matches!(self, Workload::Seq { .. }).then_some("seq")
    }
}

/// Reads a file sequentially in 1 MiB reads; returns the bytes read.
pub fn read_file(path: &Path) -> Result<u64> {
    let mut f = ctx(File::open(path), || format!("open {}", path.display()))?;
    let mut buf = vec![0u8; MIB as usize];
    let mut n = 0u64;
    loop {
        let r = ctx(f.read(&mut buf), || format!("read {}", path.display()))?;
        if r == 0 {
            return Ok(n);
        }
        n += r as u64;
    }
}

/// Workload sizes: `quick` for CI and the demo, else the sizes.
#[derive(Clone, Debug, Serialize)]
pub struct Sizes {
    pub quick: bool,
    /// Size of each loop device (image file).
    pub device: u64,
    /// Size of the loop devices for `aged`.
    pub aged_device: u64,
}

/// The workloads for `names` (workload names or `aged`, which expands to
/// every fill level), sized for `quick` or full mode.
pub fn build(names: &[String], quick: bool, tree_source: Option<PathBuf>) -> Result<Vec<Workload>> {
    let mut out = Vec::new();
    let n = |full: u64, q: u64| if quick { q } else { full };
    for name in names {
        match name.as_str() {
            "create_fsync" => out.push(Workload::CreateFsync {
                files: n(5000, 300),
                size: 4 * KIB,
            }),
            "append_fsync" => out.push(Workload::AppendFsync {
                appends: n(10000, 500),
                size: 4 * KIB,
            }),
            "overwrite_fsync" => out.push(Workload::OverwriteFsync {
                file_size: 64 * MIB,
                writes: n(10000, 500),
                size: 4 * KIB,
            }),
            "rename_replace" => out.push(Workload::RenameReplace {
                saves: n(5000, 300),
                size: 2 * KIB,
            }),
            "metadata_fsync" => out.push(Workload::MetadataFsync {
                iterations: n(2000, 100),
            }),
            "small_files" => out.push(Workload::SmallFiles {
                files: n(10000, 1000),
                dirs: n(100, 10),
                min: 100,
                max: 16 * KIB,
            }),
            "seq" => out.push(Workload::Seq {
                total: n(1024 * MIB, 64 * MIB),
                chunk: MIB,
            }),
            "stat_files" => out.push(Workload::StatFiles {
                files: n(100_000, 5000),
            }),
            "bigdir_create" => out.push(Workload::BigdirCreate {
                existing: n(100_000, 5000),
                files: n(10_000, 1000),
            }),
            "tree_copy" => match &tree_source {
                Some(src) => out.push(Workload::TreeCopy {
                    source: src.clone(),
                    max_bytes: n(256 * MIB, 16 * MIB),
                }),
                None => eprintln!(
                    "skipping tree_copy: no source tree (no rust-src component, no cargo registry \
                     sources; pass --tree-source DIR)"
                ),
            },
            "aged" | "aged50" | "aged70" | "aged90" => {
                let levels: &[u32] = match name.as_str() {
                    "aged50" => &[50],
                    "aged70" => &[70],
                    "aged90" => &[90],
                    _ if quick => &[50],
                    _ => &[50, 70, 90],
                };
                for &fill_pct in levels {
                    out.push(Workload::Aged {
                        fill_pct,
                        file_size: n(16 * MIB, 4 * MIB),
                        size: 4 * KIB,
                        batch: 64,
                        overwrite_factor: if quick { 0.125 } else { 2.0 },
                    });
                }
            }
            other => {
                return Err(format!(
                    "unknown workload {other:?} (known: {}, aged50, aged70, aged90)",
                    NAMES.join(", ")
                ))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_stat_and_bigdir_sizes() {
        let names = vec!["stat_files".to_string(), "bigdir_create".to_string()];
        let full = build(&names, false, None).unwrap();
        assert!(matches!(full[0], Workload::StatFiles { files: 100_000 }));
        assert!(matches!(
            full[1],
            Workload::BigdirCreate {
                existing: 100_000,
                files: 10_000
            }
        ));
        let quick = build(&names, true, None).unwrap();
        assert!(matches!(quick[0], Workload::StatFiles { files: 5000 }));
        assert!(matches!(
            quick[1],
            Workload::BigdirCreate {
                existing: 5000,
                files: 1000
            }
        ));
        assert_eq!(full[0].name(), "stat_files");
        assert_eq!(full[1].name(), "bigdir_create");
        assert!(full[0].cold_cache());
        assert!(!full[1].cold_cache());
    }

    #[test]
    fn every_name_builds() {
        for n in NAMES {
            if n == "tree_copy" {
                continue; // needs a source tree
            }
            let w = build(&[n.to_string()], true, None).unwrap();
            assert!(!w.is_empty(), "{n}");
            assert!(w[0].name().starts_with(n), "{n}");
        }
    }

    #[test]
    fn added_names_never_collide_with_setup_names() {
        assert_ne!(setup_name(7), added_name(7));
        assert_eq!(setup_name(99_999).len(), added_name(99_999).len());
        assert!(setup_name(0).starts_with('f') && added_name(0).starts_with('n'));
    }
}
