//! Workloads: ACE-style bounded sequences (seq-1, seq-2, seq-3) over the
//! ACE file set and seeded long random runs, each a setup prefix plus a
//! list of steps (operation + persistence point).
//!
//! Every workload has a short textual id (`seq1:17`, `seq2:4242`,
//! `seq3:912345`, `rand:7:300`) from which it is rebuilt exactly, so a
//! violation is replayed from its id alone. The enumeration order is part
//! of the id's meaning: changing [`catalogue`] renumbers seq workloads.
//!
//! Core-level stand-ins for operations that only exist above the core:
//! * **O_DIRECT write**: a write whose offset and length are multiples of
//!   4096 (so whole sectors at both 512- and 4096-byte sector sizes); the
//!   core has no page cache, so this is exactly what reaches it.
//! * **mmap write**: stores into a shared mapping reach the file system as
//!   a write of whole pages inside the current size (a mapping cannot
//!   extend a file), made durable by `msync(MS_SYNC)`, which at the core
//!   is the same device flush as `fsync`. So [`WriteKind::Mmap`] writes
//!   whole 4 KiB pages clipped to the file size, and its persistence point
//!   is drawn like any other's.

use std::collections::BTreeMap;
use std::fmt;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The ACE file set: two directories and six files.
pub const DIRS: [&str; 2] = ["A", "B"];
pub const FILES: [&str; 6] = ["foo", "bar", "A/foo", "A/bar", "B/foo", "B/bar"];
/// Names that only workloads create (new directories).
pub const NEW_DIRS: [&str; 3] = ["C", "A/C", "B/C"];
/// Size of a file the setup creates (unaligned at both sector sizes, so
/// truncates and overwrites cross partial sectors).
pub const SETUP_FILE_SIZE: u64 = 8500;
/// Length of the xattr `user.a` the setup gives every file it creates.
pub const SETUP_XATTR_LEN: u32 = 16;

/// How a write is issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WriteKind {
    /// At the end of the file (`O_APPEND`); `off` is ignored.
    Append,
    /// At `off` (an overwrite, extending or not).
    Plain,
    /// O_DIRECT-style: `off` and `len` are multiples of 4096.
    Direct,
    /// mmap-style: whole 4 KiB pages, clipped to the current size.
    Mmap,
}

/// `fallocate` modes exercised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Falloc {
    /// Mode 0: may extend the size.
    Alloc,
    /// `FALLOC_FL_KEEP_SIZE`.
    KeepSize,
    /// `FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE`.
    Punch,
}

/// One file-system operation, by path relative to the root.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Creat(String),
    Mkdir(String),
    Write {
        path: String,
        kind: WriteKind,
        off: u64,
        len: u64,
        tag: u8,
    },
    Link {
        src: String,
        dst: String,
    },
    Unlink(String),
    Rmdir(String),
    /// `over`: the setup makes sure `dst` exists (rename over a target).
    Rename {
        src: String,
        dst: String,
        over: bool,
    },
    Symlink {
        target: String,
        path: String,
    },
    SetXattr {
        path: String,
        name: char,
        len: u32,
    },
    RemoveXattr {
        path: String,
        name: char,
    },
    Truncate {
        path: String,
        size: u64,
    },
    Fallocate {
        path: String,
        mode: Falloc,
        off: u64,
        len: u64,
    },
}

/// What a setup must create for a path an operation needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    File,
    Dir,
}

pub fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(p, _)| p)
}

impl Op {
    /// Paths that must exist before the operation for it to do something,
    /// and what they must be.
    pub fn needs(&self) -> Vec<(&str, Need)> {
        match self {
            Op::Creat(p) | Op::Mkdir(p) => vec![(parent(p), Need::Dir)],
            Op::Symlink { path, .. } => vec![(parent(path), Need::Dir)],
            Op::Write { path, .. }
            | Op::Truncate { path, .. }
            | Op::Fallocate { path, .. }
            | Op::Unlink(path) => vec![(path, Need::File)],
            Op::SetXattr { path, .. } | Op::RemoveXattr { path, .. } => {
                let need = if DIRS.contains(&path.as_str()) || NEW_DIRS.contains(&path.as_str()) {
                    Need::Dir
                } else {
                    Need::File
                };
                vec![(path, need)]
            }
            Op::Rmdir(p) => vec![(p, Need::Dir)],
            Op::Link { src, dst } => vec![(src, Need::File), (parent(dst), Need::Dir)],
            Op::Rename { src, dst, over } => {
                let need = if DIRS.contains(&src.as_str()) || NEW_DIRS.contains(&src.as_str()) {
                    Need::Dir
                } else {
                    Need::File
                };
                let mut v = vec![(src.as_str(), need), (parent(dst), Need::Dir)];
                if *over {
                    v.push((dst, need));
                }
                v
            }
        }
    }

    /// The path a "fsync(file)" after this operation syncs: what the
    /// operation created or changed (the new name of a rename or link, the
    /// parent of a removed name).
    pub fn subject(&self) -> &str {
        match self {
            Op::Creat(p) | Op::Mkdir(p) => p,
            Op::Write { path, .. }
            | Op::Truncate { path, .. }
            | Op::Fallocate { path, .. }
            | Op::SetXattr { path, .. }
            | Op::RemoveXattr { path, .. }
            | Op::Symlink { path, .. } => path,
            Op::Unlink(p) | Op::Rmdir(p) => parent(p),
            Op::Link { dst, .. } | Op::Rename { dst, .. } => dst,
        }
    }

    /// Updates a path-existence model as if the operation succeeded (used
    /// to decide what the setup must create and by the random generator).
    fn apply(&self, names: &mut BTreeMap<String, Need>) {
        match self {
            Op::Creat(p) => {
                names.entry(p.clone()).or_insert(Need::File);
            }
            Op::Symlink { path, .. } => {
                names.entry(path.clone()).or_insert(Need::File);
            }
            Op::Mkdir(p) => {
                names.entry(p.clone()).or_insert(Need::Dir);
            }
            Op::Link { dst, .. } => {
                names.entry(dst.clone()).or_insert(Need::File);
            }
            Op::Unlink(p) | Op::Rmdir(p) => {
                names.remove(p);
            }
            Op::Rename { src, dst, .. } => {
                if src == dst || dst.starts_with(&format!("{src}/")) {
                    return;
                }
                let moved: Vec<(String, Need)> = names
                    .iter()
                    .filter(|(k, _)| *k == src || k.starts_with(&format!("{src}/")))
                    .map(|(k, v)| (k.clone(), *v))
                    .collect();
                if moved.is_empty() {
                    return;
                }
                names.retain(|k, _| !(k == dst || k.starts_with(&format!("{dst}/"))));
                for (k, v) in moved {
                    names.remove(&k);
                    names.insert(format!("{dst}{}", &k[src.len()..]), v);
                }
            }
            _ => {}
        }
    }
}

impl fmt::Display for WriteKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WriteKind::Append => "append",
            WriteKind::Plain => "write",
            WriteKind::Direct => "dwrite",
            WriteKind::Mmap => "mwrite",
        })
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Creat(p) => write!(f, "creat {p}"),
            Op::Mkdir(p) => write!(f, "mkdir {p}"),
            Op::Write {
                path,
                kind: WriteKind::Append,
                len,
                tag,
                ..
            } => write!(f, "append {path} +{len} #{tag}"),
            Op::Write {
                path,
                kind,
                off,
                len,
                tag,
            } => write!(f, "{kind} {path} {off}+{len} #{tag}"),
            Op::Link { src, dst } => write!(f, "link {src} {dst}"),
            Op::Unlink(p) => write!(f, "unlink {p}"),
            Op::Rmdir(p) => write!(f, "rmdir {p}"),
            Op::Rename { src, dst, over } => {
                write!(
                    f,
                    "rename {src} {dst}{}",
                    if *over { " (over)" } else { "" }
                )
            }
            Op::Symlink { target, path } => write!(f, "symlink {path} -> {target}"),
            Op::SetXattr { path, name, len } => write!(f, "setxattr {path} user.{name} {len}B"),
            Op::RemoveXattr { path, name } => write!(f, "removexattr {path} user.{name}"),
            Op::Truncate { path, size } => write!(f, "truncate {path} {size}"),
            Op::Fallocate {
                path,
                mode,
                off,
                len,
            } => {
                let m = match mode {
                    Falloc::Alloc => "0",
                    Falloc::KeepSize => "KEEP_SIZE",
                    Falloc::Punch => "PUNCH_HOLE|KEEP_SIZE",
                };
                write!(f, "fallocate {path} {m} {off}+{len}")
            }
        }
    }
}

/// The persistence point after an operation. At the core level every one
/// of them is a device flush when it succeeds; they differ in which inode
/// they name, so a persistence point on a path that no longer exists fails
/// with ENOENT and persists nothing (as the syscall would).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Persist {
    None,
    /// fsync of the operation's subject.
    FsyncFile,
    /// fsync of the subject's parent directory.
    FsyncParent,
    /// fdatasync of the subject.
    Fdatasync,
    /// sync(2): the core's `sync`.
    Sync,
}

pub const PERSISTS: [Persist; 5] = [
    Persist::None,
    Persist::FsyncFile,
    Persist::FsyncParent,
    Persist::Fdatasync,
    Persist::Sync,
];

impl fmt::Display for Persist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Persist::None => "-",
            Persist::FsyncFile => "fsync",
            Persist::FsyncParent => "fsync(parent)",
            Persist::Fdatasync => "fdatasync",
            Persist::Sync => "sync",
        })
    }
}

/// An operation and the persistence point after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub op: Op,
    pub persist: Persist,
}

/// Which workload (rebuilds it exactly; see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WorkloadId {
    Seq1(usize),
    Seq2(usize),
    Seq3(u64),
    Random { seed: u64, len: usize },
}

impl fmt::Display for WorkloadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkloadId::Seq1(i) => write!(f, "seq1:{i}"),
            WorkloadId::Seq2(i) => write!(f, "seq2:{i}"),
            WorkloadId::Seq3(i) => write!(f, "seq3:{i}"),
            WorkloadId::Random { seed, len } => write!(f, "rand:{seed}:{len}"),
        }
    }
}

impl std::str::FromStr for WorkloadId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            || format!("bad workload id {s:?} (want seq1:N, seq2:N, seq3:N or rand:SEED:LEN)");
        let parts: Vec<&str> = s.split(':').collect();
        let num = |x: &str| x.parse::<u64>().map_err(|_| bad());
        match parts.as_slice() {
            ["seq1", i] => Ok(WorkloadId::Seq1(num(i)? as usize)),
            ["seq2", i] => Ok(WorkloadId::Seq2(num(i)? as usize)),
            ["seq3", i] => Ok(WorkloadId::Seq3(num(i)?)),
            ["rand", seed, len] => Ok(WorkloadId::Random {
                seed: num(seed)?,
                len: num(len)? as usize,
            }),
            _ => Err(bad()),
        }
    }
}

/// A workload: the setup (run and synced before any crash point) and the
/// steps whose every crash image is explored.
#[derive(Clone, Debug)]
pub struct Workload {
    pub id: WorkloadId,
    pub setup: Vec<Op>,
    pub steps: Vec<Step>,
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "workload {} ({} steps)", self.id, self.steps.len())?;
        writeln!(f, "  setup (synced, not crashed):")?;
        for op in &self.setup {
            writeln!(f, "    {op}")?;
        }
        for (i, s) in self.steps.iter().enumerate() {
            writeln!(
                f,
                "  {:3}: {:<44} then {}",
                i + 1,
                s.op.to_string(),
                s.persist
            )?;
        }
        Ok(())
    }
}

fn s(x: &str) -> String {
    x.to_string()
}

/// The bounded ACE-style operation space (50 operations) the seq-N
/// workloads draw from. Data operations target `foo` and `A/bar` (one in
/// the root, one in a subdirectory) so the seq-2 space stays exhaustive;
/// namespace operations cover the whole file set.
pub fn catalogue() -> Vec<Op> {
    let mut v = Vec::new();
    for f in FILES {
        v.push(Op::Creat(s(f)));
    }
    v.push(Op::Mkdir(s("A/C")));
    v.push(Op::Mkdir(s("C")));
    for (i, f) in ["foo", "A/bar"].into_iter().enumerate() {
        let tag = 0x10 + i as u8 * 8;
        let w = |kind, off, len, t: u8| Op::Write {
            path: s(f),
            kind,
            off,
            len,
            tag: tag + t,
        };
        v.push(w(WriteKind::Append, 0, 3000, 1));
        // Unaligned overwrite inside the file.
        v.push(w(WriteKind::Plain, 1000, 3000, 2));
        // Overwrite that crosses the old end of file.
        v.push(w(WriteKind::Plain, 7000, 6000, 3));
        v.push(w(WriteKind::Direct, 4096, 8192, 4));
        v.push(w(WriteKind::Mmap, 4096, 4096, 5));
    }
    v.push(Op::Link {
        src: s("foo"),
        dst: s("bar"),
    });
    v.push(Op::Link {
        src: s("foo"),
        dst: s("A/bar"),
    });
    v.push(Op::Link {
        src: s("A/foo"),
        dst: s("B/foo"),
    });
    v.push(Op::Link {
        src: s("B/bar"),
        dst: s("bar"),
    });
    v.push(Op::Unlink(s("foo")));
    v.push(Op::Unlink(s("A/foo")));
    v.push(Op::Rmdir(s("A/C")));
    for (src, dst, over) in [
        ("foo", "bar", false),
        ("foo", "bar", true),
        ("foo", "A/foo", false),
        ("A/foo", "B/bar", true),
        ("A/bar", "bar", false),
        ("A", "C", false),
        ("A", "B/C", false),
        ("B", "A/C", true),
    ] {
        v.push(Op::Rename {
            src: s(src),
            dst: s(dst),
            over,
        });
    }
    v.push(Op::Symlink {
        target: s("foo"),
        path: s("A/bar"),
    });
    v.push(Op::Symlink {
        target: s("A/foo"),
        path: s("bar"),
    });
    // Too long to live inline in the inode sector at either sector size.
    v.push(Op::Symlink {
        target: "A/".repeat(300) + "foo",
        path: s("B/foo"),
    });
    v.push(Op::SetXattr {
        path: s("foo"),
        name: 'b',
        len: 16,
    });
    v.push(Op::SetXattr {
        path: s("foo"),
        name: 'a',
        len: 2000,
    });
    v.push(Op::SetXattr {
        path: s("A"),
        name: 'b',
        len: 32,
    });
    v.push(Op::RemoveXattr {
        path: s("foo"),
        name: 'a',
    });
    v.push(Op::RemoveXattr {
        path: s("A/foo"),
        name: 'a',
    });
    for size in [4096, 1000, 0, 16384, 20000] {
        v.push(Op::Truncate {
            path: s("foo"),
            size,
        });
    }
    for (mode, off, len) in [
        (Falloc::Alloc, 8192, 8192),
        (Falloc::KeepSize, 8000, 16384),
        (Falloc::Punch, 1000, 5000),
        (Falloc::Punch, 4096, 4096),
    ] {
        v.push(Op::Fallocate {
            path: s("foo"),
            mode,
            off,
            len,
        });
    }
    v
}

/// Number of (operation, persistence point) pairs: the seq-1 count.
pub fn seq1_count() -> usize {
    catalogue().len() * PERSISTS.len()
}

pub fn seq2_count() -> usize {
    seq1_count() * seq1_count()
}

pub fn seq3_count() -> u64 {
    (seq1_count() as u64).pow(3)
}

/// The setup for `steps`, ACE style: the directories `A` and `B`, plus
/// every path an operation needs that no earlier step created or removed
/// (with its parents). Files get `SETUP_FILE_SIZE` bytes of data and the
/// xattr `user.a`, so overwrites, truncates, punches and removexattr act
/// on real content.
pub fn setup_for(steps: &[Step]) -> Vec<Op> {
    let mut setup: Vec<Op> = DIRS.iter().map(|d| Op::Mkdir(s(d))).collect();
    let mut names: BTreeMap<String, Need> = DIRS.iter().map(|d| (s(d), Need::Dir)).collect();
    names.insert(String::new(), Need::Dir);
    let mut touched: Vec<String> = Vec::new();
    let is_touched = |touched: &[String], p: &str| {
        touched
            .iter()
            .any(|t| t == p || p.starts_with(&format!("{t}/")) || t.starts_with(&format!("{p}/")))
    };
    for step in steps {
        for (path, need) in step.op.needs() {
            if names.contains_key(path) || is_touched(&touched, path) {
                continue;
            }
            // Parents first.
            let mut chain = vec![path];
            let mut p = parent(path);
            while !p.is_empty() && !names.contains_key(p) {
                chain.push(p);
                p = parent(p);
            }
            for (i, q) in chain.iter().rev().enumerate() {
                let is_last = i == chain.len() - 1;
                if is_last && need == Need::File {
                    setup.push(Op::Creat(s(q)));
                    setup.push(Op::Write {
                        path: s(q),
                        kind: WriteKind::Plain,
                        off: 0,
                        len: SETUP_FILE_SIZE,
                        tag: 0xA0 + setup.len() as u8,
                    });
                    setup.push(Op::SetXattr {
                        path: s(q),
                        name: 'a',
                        len: SETUP_XATTR_LEN,
                    });
                    names.insert(s(q), Need::File);
                } else {
                    setup.push(Op::Mkdir(s(q)));
                    names.insert(s(q), Need::Dir);
                }
            }
        }
        match &step.op {
            Op::Creat(p) | Op::Mkdir(p) | Op::Unlink(p) | Op::Rmdir(p) => touched.push(p.clone()),
            Op::Symlink { path, .. } => touched.push(path.clone()),
            Op::Link { dst, .. } => touched.push(dst.clone()),
            Op::Rename { src, dst, .. } => {
                touched.push(src.clone());
                touched.push(dst.clone());
            }
            _ => {}
        }
        step.op.apply(&mut names);
    }
    setup
}

fn seq(id: WorkloadId, indices: &[usize]) -> Workload {
    let cat = catalogue();
    let steps: Vec<Step> = indices
        .iter()
        .map(|&i| Step {
            op: cat[i / PERSISTS.len()].clone(),
            persist: PERSISTS[i % PERSISTS.len()],
        })
        .collect();
    Workload {
        id,
        setup: setup_for(&steps),
        steps,
    }
}

/// Rebuilds the workload `id` names. Panics on an index out of range.
pub fn build(id: WorkloadId) -> Workload {
    let n1 = seq1_count();
    match id {
        WorkloadId::Seq1(i) => {
            assert!(i < n1, "seq1 index {i} out of range (0..{n1})");
            seq(id, &[i])
        }
        WorkloadId::Seq2(i) => {
            assert!(i < n1 * n1, "seq2 index {i} out of range (0..{})", n1 * n1);
            seq(id, &[i / n1, i % n1])
        }
        WorkloadId::Seq3(i) => {
            let n = n1 as u64;
            assert!(i < n * n * n, "seq3 index {i} out of range");
            seq(
                id,
                &[
                    (i / (n * n)) as usize,
                    ((i / n) % n) as usize,
                    (i % n) as usize,
                ],
            )
        }
        WorkloadId::Random { seed, len } => random(id, seed, len),
    }
}

/// A fixed, evenly spread sample of `count` indices out of `total`
/// (a multiplicative stride coprime with `total`, so no index repeats).
pub fn sample(total: u64, count: u64, salt: u64) -> Vec<u64> {
    let count = count.min(total);
    let mut stride = (total as f64 * 0.618_033_988_7) as u64 | 1;
    while gcd(stride, total) != 1 {
        stride += 2;
    }
    (0..count).map(|i| (salt + i * stride) % total).collect()
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Paths the random generator uses: the ACE set plus new directories.
const ALL_PATHS: [&str; 11] = [
    "A", "B", "C", "A/C", "B/C", "foo", "bar", "A/foo", "A/bar", "B/foo", "B/bar",
];

/// A long seeded random run: `len` steps over the file set with random
/// offsets and sizes, biased (by a small existence model) toward
/// operations that succeed; about one step in six has a persistence point.
fn random(id: WorkloadId, seed: u64, len: usize) -> Workload {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xACE0_0000);
    let mut names: BTreeMap<String, Need> = BTreeMap::new();
    names.insert(String::new(), Need::Dir);
    // The setup: the whole ACE set.
    let mut setup = Vec::new();
    for d in DIRS {
        setup.push(Op::Mkdir(s(d)));
        names.insert(s(d), Need::Dir);
    }
    for (i, f) in FILES.iter().enumerate() {
        setup.push(Op::Creat(s(f)));
        setup.push(Op::Write {
            path: s(f),
            kind: WriteKind::Plain,
            off: 0,
            len: 1000 + 1500 * i as u64,
            tag: 0x50 + i as u8,
        });
        names.insert(s(f), Need::File);
    }
    let pick = |rng: &mut ChaCha8Rng, names: &BTreeMap<String, Need>, want: Option<Need>| {
        let pool: Vec<&str> = ALL_PATHS
            .iter()
            .copied()
            .filter(|p| want.is_none_or(|w| names.get(*p) == Some(&w)))
            .collect();
        // Mostly an existing path of the wanted kind; sometimes any path
        // (errors are part of the workload too).
        if pool.is_empty() || rng.gen_bool(0.08) {
            s(ALL_PATHS[rng.gen_range(0..ALL_PATHS.len())])
        } else {
            s(pool[rng.gen_range(0..pool.len())])
        }
    };
    let fresh = |rng: &mut ChaCha8Rng, names: &BTreeMap<String, Need>| {
        let pool: Vec<&str> = ALL_PATHS
            .iter()
            .copied()
            .filter(|p| !names.contains_key(*p) && names.get(parent(p)) == Some(&Need::Dir))
            .collect();
        if pool.is_empty() {
            s(ALL_PATHS[rng.gen_range(0..ALL_PATHS.len())])
        } else {
            s(pool[rng.gen_range(0..pool.len())])
        }
    };
    let mut steps = Vec::with_capacity(len);
    while steps.len() < len {
        let file = Some(Need::File);
        let op = match rng.gen_range(0..100) {
            0..=7 => Op::Creat(fresh(&mut rng, &names)),
            8..=10 => Op::Mkdir(fresh(&mut rng, &names)),
            11..=38 => {
                let kind = [
                    WriteKind::Append,
                    WriteKind::Plain,
                    WriteKind::Plain,
                    WriteKind::Direct,
                    WriteKind::Mmap,
                ][rng.gen_range(0..5)];
                let (off, len) = match kind {
                    WriteKind::Direct | WriteKind::Mmap => (
                        rng.gen_range(0..8u64) * 4096,
                        rng.gen_range(1..=4u64) * 4096,
                    ),
                    _ => (rng.gen_range(0..36_000u64), rng.gen_range(1..=12_000u64)),
                };
                Op::Write {
                    path: pick(&mut rng, &names, file),
                    kind,
                    off,
                    len,
                    tag: rng.gen(),
                }
            }
            39..=43 => Op::Link {
                src: pick(&mut rng, &names, file),
                dst: fresh(&mut rng, &names),
            },
            44..=49 => Op::Unlink(pick(&mut rng, &names, file)),
            50..=51 => Op::Rmdir(pick(&mut rng, &names, Some(Need::Dir))),
            52..=60 => {
                let src = pick(&mut rng, &names, None);
                let dst = if rng.gen_bool(0.5) {
                    pick(&mut rng, &names, names.get(&src).copied())
                } else {
                    fresh(&mut rng, &names)
                };
                Op::Rename {
                    src,
                    dst,
                    over: false,
                }
            }
            61..=64 => Op::Symlink {
                target: if rng.gen_bool(0.2) {
                    "x/".repeat(rng.gen_range(100..600))
                } else {
                    s(ALL_PATHS[rng.gen_range(0..ALL_PATHS.len())])
                },
                path: fresh(&mut rng, &names),
            },
            65..=71 => Op::SetXattr {
                path: pick(&mut rng, &names, None),
                name: ['a', 'b', 'c'][rng.gen_range(0..3)],
                len: if rng.gen_bool(0.7) {
                    rng.gen_range(1..64)
                } else {
                    rng.gen_range(64..3000)
                },
            },
            72..=75 => Op::RemoveXattr {
                path: pick(&mut rng, &names, None),
                name: ['a', 'b', 'c'][rng.gen_range(0..3)],
            },
            76..=86 => Op::Truncate {
                path: pick(&mut rng, &names, file),
                size: if rng.gen_bool(0.3) {
                    rng.gen_range(0..10u64) * 4096
                } else {
                    rng.gen_range(0..48_000u64)
                },
            },
            _ => Op::Fallocate {
                path: pick(&mut rng, &names, file),
                mode: [Falloc::Alloc, Falloc::KeepSize, Falloc::Punch][rng.gen_range(0..3)],
                off: rng.gen_range(0..40_000u64),
                len: rng.gen_range(1..16_000u64),
            },
        };
        let persist = if rng.gen_bool(0.17) {
            PERSISTS[rng.gen_range(1..PERSISTS.len())]
        } else {
            Persist::None
        };
        op.apply(&mut names);
        steps.push(Step { op, persist });
    }
    Workload { id, setup, steps }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_build_deterministically() {
        for id in [
            WorkloadId::Seq1(3),
            WorkloadId::Seq2(777),
            WorkloadId::Seq3(123_456),
            WorkloadId::Random { seed: 9, len: 50 },
        ] {
            let text = id.to_string();
            assert_eq!(text.parse::<WorkloadId>().unwrap(), id);
            assert_eq!(build(id).to_string(), build(id).to_string());
        }
        assert_eq!(catalogue().len(), 50);
    }

    #[test]
    fn setup_creates_what_ops_need_but_not_what_they_create() {
        let w = build(WorkloadId::Seq1(0)); // creat foo
        assert!(!w.setup.contains(&Op::Creat(s("foo"))), "{w}");
        let steps = vec![
            Step {
                op: Op::Creat(s("A/foo")),
                persist: Persist::None,
            },
            Step {
                op: Op::Unlink(s("A/foo")),
                persist: Persist::None,
            },
            Step {
                op: Op::Rename {
                    src: s("foo"),
                    dst: s("B/bar"),
                    over: true,
                },
                persist: Persist::None,
            },
        ];
        let setup = setup_for(&steps);
        assert!(!setup.contains(&Op::Creat(s("A/foo"))));
        assert!(setup.contains(&Op::Creat(s("foo"))));
        assert!(setup.contains(&Op::Creat(s("B/bar"))));
    }

    #[test]
    fn sample_has_no_repeats() {
        let v = sample(seq2_count() as u64, 5000, 11);
        let set: std::collections::HashSet<_> = v.iter().collect();
        assert_eq!(set.len(), v.len());
    }
}
