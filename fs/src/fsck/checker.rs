//! The checker: one pass over the map, the inode table, every directory and
//! the orphan table, building an in-memory model of the file system that
//! repairs modify; at the end the modified inodes and buckets and the trims
//! become one request (see [`super::plan`]).
//!
//! Order matters: structure first (superblock, inodes, buckets, entries),
//! then what is derived from it (reachability, link counts, sizes). When a
//! structural problem is left unrepaired (`-n`, or `-p` meeting something
//! unsafe), the derived counts are still reported but not "fixed", because
//! they would be computed from an incomplete picture.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;

use atomic_api::AtomicDevice;

use super::plan::Plan;
use super::{FsFinding, FsckOptions, FsckReport, Problem};
use crate::core::types::{Clock, FileKind, SystemClock};
use crate::format::codec::{get_u16, get_u32, is_zero};
use crate::format::dirent::{BucketError, FLAG_OVERFLOW};
use crate::format::inode::INLINE_OFFSET;
use crate::format::superblock::{INCOMPAT_KNOWN, RO_COMPAT_KNOWN};
use crate::format::xattr::{
    decode_blob, decode_external, encode_blob, external_sectors, XATTR_VALUE_MAX,
};
use crate::format::{
    home_bucket, orphan, Bucket, Entry, Inode, InodeError, Layout, Superblock, SuperblockError,
    LABEL_MAX, MAX_FILE_SIZE, ROOT_INO, VERSION,
};

/// Sectors read per device call when walking tables.
const READ_CHUNK: u64 = 256;
/// Longest symlink target.
const SYMLINK_MAX: u64 = 4095;

/// The check cannot go on (the reason is already a finding).
struct Abort;

type Step = Result<(), Abort>;

/// A live inode and what the check learned about it.
struct Node {
    inode: Inode,
    kind: FileKind,
    dirty: bool,
    /// Mapped ranges of its region, relative to the region start.
    ranges: Vec<Range<u64>>,
    /// Entries naming it.
    refs: u32,
    /// Directories: entries in it, and how many of them are directories.
    entries: u64,
    subdirs: u32,
    /// Directories: the entry that names it (bucket lba, name).
    entry_at: Option<(u64, Vec<u8>)>,
    /// Directories: the directory holding that entry.
    entry_parent: Option<u64>,
    reached: bool,
}

/// A bucket sector of a live directory.
struct Slot {
    dir: u64,
    idx: u64,
    /// `None`: damaged and left alone.
    bucket: Option<Bucket>,
    /// Mapped on the device now.
    mapped: bool,
    dirty: bool,
}

impl Slot {
    /// Mapped once the repairs are written.
    fn mapped_after(&self) -> bool {
        match (&self.bucket, self.dirty) {
            (Some(b), true) => !b.is_trimmable(),
            _ => self.mapped,
        }
    }
}

/// One entry, where it is.
#[derive(Clone)]
struct EntryRef {
    lba: u64,
    dir: u64,
    idx: u64,
    slot: u16,
    ino: u64,
    dtype: u8,
    name: Vec<u8>,
}

pub(crate) struct Checker<'a, D: AtomicDevice + ?Sized> {
    dev: &'a D,
    opts: FsckOptions,
    report: FsckReport,
    /// Findings whose repair is in the plan.
    pending: Vec<usize>,
    plan: Plan,
    l: Layout,
    ss: u32,
    /// False once a structural problem is left unrepaired.
    structure_ok: bool,
    /// Unknown read-only-compatible features: check, never write.
    no_writes: bool,
    /// Inode numbers whose slot is mapped (ranges of numbers).
    slot_ranges: Vec<Range<u64>>,
    orphan_ranges: Vec<Range<u64>>,
    regions: BTreeMap<u64, Vec<Range<u64>>>,
    nodes: BTreeMap<u64, Node>,
    /// Mapped inode slots that do not decode and are left alone.
    damaged: BTreeSet<u64>,
    /// Inodes the repair frees (inode, region and orphan record trimmed).
    freed: BTreeSet<u64>,
    /// Valid orphan records.
    orphan_records: BTreeSet<u64>,
    buckets: BTreeMap<u64, Slot>,
    lost_found: Option<u64>,
}

fn describe_inode_error(e: InodeError) -> String {
    match e {
        InodeError::Free => "all zeros".into(),
        InodeError::BadMagic => "bad magic".into(),
        InodeError::BadChecksum => "checksum mismatch".into(),
        InodeError::WrongIno(n) => format!("sector belongs to inode {n}"),
        InodeError::BadLength => "inline lengths overflow the sector".into(),
    }
}

fn describe_bucket_error(e: BucketError) -> String {
    match e {
        BucketError::BadMagic => "bad magic".into(),
        BucketError::BadChecksum => "checksum mismatch".into(),
        BucketError::WrongDir(d) => format!("sector belongs to directory {d}"),
        BucketError::BadEntry => "malformed entry".into(),
    }
}

fn kind_name(k: FileKind) -> &'static str {
    match k {
        FileKind::RegularFile => "file",
        FileKind::Directory => "directory",
        FileKind::Symlink => "symlink",
        FileKind::CharDevice => "character device",
        FileKind::BlockDevice => "block device",
        FileKind::NamedPipe => "fifo",
        FileKind::Socket => "socket",
    }
}

/// Mapped sectors of `ranges` inside `lo..hi`.
fn count_in(ranges: &[Range<u64>], lo: u64, hi: u64) -> u64 {
    ranges
        .iter()
        .map(|r| r.end.min(hi).saturating_sub(r.start.max(lo)))
        .sum()
}

fn show(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

impl<'a, D: AtomicDevice + ?Sized> Checker<'a, D> {
    pub fn new(dev: &'a D, opts: &FsckOptions) -> Self {
        let ss = dev.geometry().sector_size;
        Checker {
            dev,
            opts: opts.clone(),
            report: FsckReport::default(),
            pending: Vec::new(),
            plan: Plan::default(),
            // Replaced by the superblock's layout before any use.
            l: Layout {
                sector_size: ss,
                region_sectors: 0,
                inode_base: 0,
                orphan_base: 0,
                max_ino: 0,
                dir_hash_bits: 0,
            },
            ss,
            structure_ok: true,
            no_writes: false,
            slot_ranges: Vec::new(),
            orphan_ranges: Vec::new(),
            regions: BTreeMap::new(),
            nodes: BTreeMap::new(),
            damaged: BTreeSet::new(),
            freed: BTreeSet::new(),
            orphan_records: BTreeSet::new(),
            buckets: BTreeMap::new(),
            lost_found: None,
        }
    }

    pub fn run(mut self) -> FsckReport {
        if self.run_inner().is_err() {
            self.report.aborted = true;
        } else if !self.plan.is_empty() {
            self.apply();
        }
        self.report
    }

    fn run_inner(&mut self) -> Step {
        self.superblock()?;
        self.scan_map()?;
        self.inodes()?;
        self.regions()?;
        self.directories()?;
        self.entries();
        self.read_orphans()?;
        self.reachability();
        self.counts();
        self.stage();
        Ok(())
    }

    // ------------------------------------------------------------ findings

    fn may_fix(&self, kind: Problem) -> bool {
        if self.no_writes {
            return false;
        }
        let gated = matches!(
            kind,
            Problem::LinkCount
                | Problem::DirSize
                | Problem::DirParent
                | Problem::Unreachable
                | Problem::LeakedInode
                | Problem::Orphan
        );
        if gated && !self.structure_ok {
            return false;
        }
        self.opts.repair || (self.opts.preen && kind.safe())
    }

    /// Records an error; returns true when the caller must stage its repair.
    fn problem(&mut self, kind: Problem, message: String) -> bool {
        let fix = self.may_fix(kind);
        self.push(kind, true, message, fix);
        if !fix && kind.structural() {
            self.structure_ok = false;
        }
        fix
    }

    /// Records a note (not an error); returns true when it is to be acted on.
    fn note(&mut self, kind: Problem, message: String) -> bool {
        let act = self.may_fix(kind);
        self.push(kind, false, message, act);
        act
    }

    fn push(&mut self, kind: Problem, is_error: bool, message: String, pending: bool) {
        if pending {
            self.pending.push(self.report.findings.len());
        }
        self.report.findings.push(FsFinding {
            is_error,
            message,
            kind,
            repaired: false,
        });
    }

    /// The repair of finding `i` could not be staged after all.
    fn unpend(&mut self, i: usize) {
        self.pending.retain(|&p| p != i);
        self.report.findings[i].message += " (cannot be repaired)";
    }

    fn read(&mut self, lba: u64, sectors: u64) -> Result<Vec<u8>, Abort> {
        let mut buf = vec![0u8; (sectors * u64::from(self.ss)) as usize];
        match self.dev.read(lba, &mut buf) {
            Ok(()) => Ok(buf),
            Err(e) => {
                self.push(
                    Problem::Io,
                    true,
                    format!("reading sectors {lba}..{}: {e}", lba + sectors),
                    false,
                );
                Err(Abort)
            }
        }
    }

    /// Reads `range` in chunks, calling `f(lba, sector)` for each sector.
    fn for_each_sector(
        &mut self,
        range: Range<u64>,
        mut f: impl FnMut(&mut Self, u64, &[u8]),
    ) -> Step {
        let ss = self.ss as usize;
        let mut at = range.start;
        while at < range.end {
            let n = (range.end - at).min(READ_CHUNK);
            let buf = self.read(at, n)?;
            for (i, sector) in buf.chunks(ss).enumerate() {
                f(self, at + i as u64, sector);
            }
            at += n;
        }
        Ok(())
    }

    // ---------------------------------------------------------- superblock

    fn superblock(&mut self) -> Step {
        let geo = self.dev.geometry();
        let ss = self.ss as usize;
        let buf = self.read(0, 2)?;
        let (a, b) = buf.split_at(ss);
        let (da, db) = (Superblock::decode(a), Superblock::decode(b));
        let why = |e: &SuperblockError| match e {
            SuperblockError::BadMagic => "no magic",
            SuperblockError::BadChecksum => "checksum mismatch",
        };
        let (sb, good) = match (&da, &db) {
            (Err(SuperblockError::BadMagic), Err(SuperblockError::BadMagic)) => {
                self.report.not_atomfs = true;
                self.problem(
                    Problem::Superblock,
                    "no atomfs file system: neither sector 0 nor sector 1 has the \"ATOMFSSB\" magic"
                        .into(),
                );
                return Err(Abort);
            }
            (Err(ea), Err(eb)) => {
                let msg = format!(
                    "both superblock copies are damaged (sector 0: {}, sector 1: {})",
                    why(ea),
                    why(eb)
                );
                self.problem(Problem::Superblock, msg);
                return Err(Abort);
            }
            (Ok(sb), Err(e)) => {
                let msg = format!(
                    "backup superblock (sector 1) is damaged ({}); the primary is intact",
                    why(e)
                );
                if self.problem(Problem::SuperblockCopy, msg) {
                    self.plan.write(1, a.to_vec());
                }
                (sb.clone(), a.to_vec())
            }
            (Err(e), Ok(sb)) => {
                let msg = format!(
                    "primary superblock (sector 0) is damaged ({}); the backup is intact",
                    why(e)
                );
                if self.problem(Problem::SuperblockCopy, msg) {
                    self.plan.write(0, b.to_vec());
                }
                (sb.clone(), b.to_vec())
            }
            (Ok(sa), Ok(_)) => {
                if a != b
                    && self.problem(
                        Problem::SuperblockCopy,
                        "the two superblock copies differ; the primary is used".into(),
                    )
                {
                    self.plan.write(1, a.to_vec());
                }
                (sa.clone(), a.to_vec())
            }
        };
        let fatal = |me: &mut Self, msg: String| {
            me.problem(Problem::Superblock, msg);
            Err(Abort)
        };
        if sb.version != VERSION {
            return fatal(
                self,
                format!(
                    "format version {} is not supported (this fsck checks version {VERSION})",
                    sb.version
                ),
            );
        }
        if sb.incompat & !INCOMPAT_KNOWN != 0 {
            return fatal(
                self,
                format!(
                    "unknown incompatible features {:#x}: cannot check",
                    sb.incompat & !INCOMPAT_KNOWN
                ),
            );
        }
        if sb.ro_compat & !RO_COMPAT_KNOWN != 0 {
            self.no_writes = true;
            self.note(
                Problem::Superblock,
                format!(
                    "unknown read-only-compatible features {:#x}: checking without repairs",
                    sb.ro_compat & !RO_COMPAT_KNOWN
                ),
            );
        }
        if sb.layout.sector_size != geo.sector_size {
            return fatal(
                self,
                format!(
                    "superblock sector size {} differs from the device's {}",
                    sb.layout.sector_size, geo.sector_size
                ),
            );
        }
        if let Err(e) = sb.layout.validate(geo.logical_sectors) {
            return fatal(self, format!("superblock layout is invalid: {e}"));
        }
        if sb.root_ino != ROOT_INO {
            return fatal(self, format!("superblock names root inode {}", sb.root_ino));
        }
        let label_len = get_u32(&good, 116) as usize;
        let mut bad = Vec::new();
        if label_len > LABEL_MAX {
            bad.push(format!("label length {label_len}"));
        }
        if get_u32(&good, 76) != 0 {
            bad.push("reserved bytes 76..80 are not zero".to_string());
        }
        let label_end = 120 + label_len.min(LABEL_MAX);
        if !is_zero(&good[label_end..184]) || !is_zero(&good[184..ss - 4]) {
            bad.push("bytes past the label are not zero".to_string());
        }
        if !bad.is_empty() {
            // Sealed with a valid checksum, so written like this: report, do
            // not guess a fix (the superblock is never rewritten).
            self.push(
                Problem::Superblock,
                true,
                format!("superblock fields: {}", bad.join(", ")),
                false,
            );
        }
        self.l = sb.layout;
        Ok(())
    }

    // ----------------------------------------------------------------- map

    fn leak(&mut self, start: u64, end: u64, what: &str) {
        let msg = format!(
            "sectors {start}..{end} ({} sectors) are mapped but belong to nothing ({what})",
            end - start
        );
        if self.problem(Problem::Leaked, msg) {
            self.plan.trim(start, end - start);
        }
    }

    /// Walks every mapped range once (`next_mapped`) and sorts it into
    /// inode slots, orphan slots, inode regions and leaks.
    fn scan_map(&mut self) -> Step {
        let l = self.l;
        let rs = l.region_sectors;
        let mut at = 0u64;
        let mut leaks: Vec<(u64, u64, &'static str)> = Vec::new();
        loop {
            let r = match self.dev.next_mapped(at) {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => {
                    self.push(
                        Problem::Io,
                        true,
                        format!("walking the map at sector {at}: {e}"),
                        false,
                    );
                    return Err(Abort);
                }
            };
            if r.end <= r.start || r.start < at {
                self.push(
                    Problem::Io,
                    true,
                    format!(
                        "the device's map walk went backwards ({}..{} after {at})",
                        r.start, r.end
                    ),
                    false,
                );
                return Err(Abort);
            }
            self.report.stats.mapped_sectors += r.end - r.start;
            let mut s = r.start;
            while s < r.end {
                let region = s / rs;
                let e = r.end.min((region + 1).saturating_mul(rs));
                if region == 0 {
                    let ib = l.inode_base;
                    let ob = l.orphan_base;
                    let n = l.max_ino + 1;
                    let parts: [(u64, u64, u8, &'static str); 6] = [
                        (0, 2, 0, ""),
                        (2, ib, 1, "between the superblocks and the inode table"),
                        (ib, ib + n, 2, ""),
                        (ib + n, ob, 1, "past the inode table"),
                        (ob, ob + n, 3, ""),
                        (ob + n, rs, 1, "past the orphan table"),
                    ];
                    for (ps, pe, what, desc) in parts {
                        let (a, b) = (s.max(ps), e.min(pe));
                        if a >= b {
                            continue;
                        }
                        match what {
                            1 => leaks.push((a, b, desc)),
                            2 => self.slot_ranges.push(a - ib..b - ib),
                            3 => self.orphan_ranges.push(a - ob..b - ob),
                            _ => {}
                        }
                    }
                } else if region <= l.max_ino {
                    let base = region * rs;
                    self.regions
                        .entry(region)
                        .or_default()
                        .push(s - base..e - base);
                } else {
                    leaks.push((s, e, "past the last inode region"));
                }
                s = e;
            }
            at = r.end;
        }
        for (a, b, what) in leaks {
            self.leak(a, b, what);
        }
        Ok(())
    }

    // -------------------------------------------------------------- inodes

    fn free_inode(&mut self, ino: u64) {
        let l = self.l;
        self.nodes.remove(&ino);
        self.damaged.remove(&ino);
        self.freed.insert(ino);
        self.plan.trim(l.inode_lba(ino), 1);
        self.plan.trim(l.region(ino), l.region_sectors);
        self.plan.trim(l.orphan_lba(ino), 1);
        let (lo, hi) = (l.region(ino), l.region(ino) + l.region_sectors);
        let lbas: Vec<u64> = self.buckets.range(lo..hi).map(|(k, _)| *k).collect();
        for lba in lbas {
            self.buckets.remove(&lba);
        }
    }

    fn now() -> crate::core::types::Timespec {
        SystemClock.now()
    }

    /// A fresh root directory (its entries are found in its region as usual).
    fn rebuild_root(&mut self) {
        let now = Self::now();
        let inode = Inode {
            ino: ROOT_INO,
            generation: 1,
            mode: libc::S_IFDIR | 0o755,
            nlink: 2,
            atime: now,
            mtime: now,
            ctime: now,
            btime: now,
            parent: ROOT_INO,
            ..Inode::default()
        };
        self.damaged.remove(&ROOT_INO);
        self.nodes
            .insert(ROOT_INO, Self::node(inode, FileKind::Directory, true));
    }

    fn node(inode: Inode, kind: FileKind, dirty: bool) -> Node {
        Node {
            inode,
            kind,
            dirty,
            ranges: Vec::new(),
            refs: 0,
            entries: 0,
            subdirs: 0,
            entry_at: None,
            entry_parent: None,
            reached: false,
        }
    }

    fn damaged_inode(&mut self, ino: u64, why: String) {
        if ino == ROOT_INO {
            let msg = format!("root directory inode is damaged ({why}); rebuilt from its buckets");
            if self.problem(Problem::Root, msg) {
                self.rebuild_root();
            } else {
                self.damaged.insert(ino);
            }
            return;
        }
        if self.problem(Problem::InodeDamaged, format!("inode {ino}: {why}")) {
            self.free_inode(ino);
        } else {
            self.damaged.insert(ino);
        }
    }

    fn inodes(&mut self) -> Step {
        let ranges = std::mem::take(&mut self.slot_ranges);
        let l = self.l;
        for r in &ranges {
            self.for_each_sector(l.inode_lba(r.start)..l.inode_lba(r.end), |me, lba, sec| {
                let ino = lba - l.inode_base;
                me.inode_sector(ino, sec);
            })?;
        }
        self.slot_ranges = ranges;
        let msg = match self.nodes.get(&ROOT_INO) {
            Some(n) if n.kind != FileKind::Directory => Some(format!(
                "the root inode is a {}, not a directory; a new root replaces it",
                kind_name(n.kind)
            )),
            None if !self.damaged.contains(&ROOT_INO) => {
                Some("the root directory inode is missing".to_string())
            }
            _ => None,
        };
        if let Some(msg) = msg {
            if self.problem(Problem::Root, msg) {
                self.rebuild_root();
            }
        }
        Ok(())
    }

    fn inode_sector(&mut self, ino: u64, sec: &[u8]) {
        let l = self.l;
        if ino == 0 {
            let msg = "inode slot 0 is in use (inode 0 is never used)".to_string();
            if self.problem(Problem::Leaked, msg) {
                self.plan.trim(l.inode_lba(0), 1);
            }
            return;
        }
        let inode = match Inode::decode(sec, ino) {
            Ok(inode) => inode,
            Err(InodeError::Free) => {
                let msg = format!("inode slot {ino} is mapped but holds zeros");
                if self.problem(Problem::Leaked, msg) {
                    self.plan.trim(l.inode_lba(ino), 1);
                }
                return;
            }
            Err(e) => return self.damaged_inode(ino, describe_inode_error(e)),
        };
        let Some(kind) = FileKind::from_mode(inode.mode) else {
            return self.damaged_inode(
                ino,
                format!("unknown file type {:#o}", inode.mode & libc::S_IFMT),
            );
        };
        self.report.stats.inodes += 1;
        match kind {
            FileKind::Directory => self.report.stats.directories += 1,
            FileKind::RegularFile => self.report.stats.regular_files += 1,
            FileKind::Symlink => self.report.stats.symlinks += 1,
            _ => {}
        }
        let mut fixed = inode.clone();
        let mut bad = Vec::new();
        let ss = sec.len();
        if get_u32(sec, 100) & !3 != 0 {
            bad.push("unknown layout flags".to_string());
        }
        if get_u16(sec, 122) != 0 {
            bad.push("reserved bytes 122..124 are not zero".to_string());
        }
        if !is_zero(&sec[INLINE_OFFSET + inode.inline_used()..ss - 4]) {
            bad.push("stray bytes after the inline area".to_string());
        }
        for t in [
            &mut fixed.atime,
            &mut fixed.mtime,
            &mut fixed.ctime,
            &mut fixed.btime,
        ] {
            if t.nsec >= 1_000_000_000 {
                t.nsec = 0;
                if !bad.iter().any(|b: &String| b.starts_with("nanoseconds")) {
                    bad.push("nanoseconds >= 10^9".to_string());
                }
            }
        }
        if inode.flags != 0 {
            fixed.flags = 0;
            bad.push(format!("reserved flags {:#x}", inode.flags));
        }
        let is_dev = matches!(kind, FileKind::CharDevice | FileKind::BlockDevice);
        if inode.rdev != 0 && !is_dev {
            fixed.rdev = 0;
            bad.push("device number on a non-device".to_string());
        }
        if kind != FileKind::Directory && inode.parent != 0 {
            fixed.parent = 0;
            bad.push(format!("parent {} on a non-directory", inode.parent));
        }
        if kind != FileKind::Symlink && inode.inline_target.is_some() {
            fixed.inline_target = None;
            bad.push("inline symlink target on a non-symlink".to_string());
        }
        if !matches!(
            kind,
            FileKind::RegularFile | FileKind::Symlink | FileKind::Directory
        ) && inode.size != 0
        {
            fixed.size = 0;
            bad.push(format!("size {} on a special file", inode.size));
        }
        if kind == FileKind::RegularFile && inode.size > MAX_FILE_SIZE {
            fixed.size = MAX_FILE_SIZE;
            bad.push(format!("size {} beyond the maximum", inode.size));
        }
        let mut dirty = false;
        if !bad.is_empty() {
            let msg = format!("inode {ino}: {}", bad.join(", "));
            dirty = self.problem(Problem::InodeField, msg);
        }
        let inode = if dirty { fixed } else { inode };
        self.nodes.insert(ino, Self::node(inode, kind, dirty));
    }

    // ------------------------------------------------------------- regions

    /// Data past EOF, block counts, tails, symlink targets, xattrs, and the
    /// regions of free inodes.
    fn regions(&mut self) -> Step {
        let regions = std::mem::take(&mut self.regions);
        for (ino, ranges) in regions {
            if self.freed.contains(&ino) || self.damaged.contains(&ino) {
                continue;
            }
            match self.nodes.get_mut(&ino) {
                Some(n) => n.ranges = ranges,
                None => {
                    let count: u64 = ranges.iter().map(|r| r.end - r.start).sum();
                    let msg =
                        format!("region of free inode {ino} has {count} mapped sectors (leaked)");
                    if self.problem(Problem::Leaked, msg) {
                        self.plan.trim(self.l.region(ino), self.l.region_sectors);
                    }
                }
            }
        }
        let inos: Vec<u64> = self.nodes.keys().copied().collect();
        for ino in inos {
            self.check_region(ino)?;
            if self.nodes.contains_key(&ino) {
                self.check_xattrs(ino)?;
            }
        }
        Ok(())
    }

    fn check_region(&mut self, ino: u64) -> Step {
        let l = self.l;
        let ss = u64::from(self.ss);
        let data_end = MAX_FILE_SIZE / ss;
        let node = &self.nodes[&ino];
        let (kind, size) = (node.kind, node.inode.size);
        let inline_target = node.inode.inline_target.is_some();
        let allowed = match kind {
            FileKind::RegularFile => l.sectors_for(size),
            FileKind::Symlink if !inline_target => l.sectors_for(size.min(SYMLINK_MAX)),
            FileKind::Directory => l.buckets(),
            _ => 0,
        };
        let ranges = node.ranges.clone();
        let beyond = count_in(&ranges, allowed, data_end);
        if beyond > 0 {
            let what = match kind {
                FileKind::RegularFile => format!("past the end of file (size {size})"),
                FileKind::Directory => "past the hash table".to_string(),
                _ => format!("in the data area of a {}", kind_name(kind)),
            };
            let msg = format!("inode {ino}: {beyond} sectors mapped {what}");
            if self.problem(Problem::DataBeyondEof, msg) {
                self.plan.trim(l.region(ino) + allowed, data_end - allowed);
            }
        }
        if kind == FileKind::Symlink && !self.check_symlink(ino, &ranges)? {
            return Ok(());
        }
        if matches!(kind, FileKind::RegularFile | FileKind::Symlink) && size % ss != 0 {
            let last = size / ss;
            if !inline_target && count_in(&ranges, last, last + 1) == 1 && last < allowed {
                let mut sec = self.read(l.region(ino) + last, 1)?;
                let from = (size % ss) as usize;
                if !is_zero(&sec[from..]) {
                    let msg = format!(
                        "inode {ino}: bytes past the end of file in its last sector are not zero"
                    );
                    if self.problem(Problem::TailNotZero, msg) {
                        sec[from..].fill(0);
                        self.plan.write(l.region(ino) + last, sec);
                    }
                }
            }
        }
        if kind != FileKind::Directory {
            let expect = count_in(&ranges, 0, allowed);
            let have = self.nodes[&ino].inode.data_sectors;
            if have != expect {
                let msg = format!("inode {ino}: block count {have}, {expect} sectors are mapped");
                if self.problem(Problem::BlockCount, msg) {
                    let n = self.nodes.get_mut(&ino).expect("live");
                    n.inode.data_sectors = expect;
                    n.dirty = true;
                }
            }
        }
        Ok(())
    }

    /// Returns false when the symlink was freed.
    fn check_symlink(&mut self, ino: u64, ranges: &[Range<u64>]) -> Result<bool, Abort> {
        let l = self.l;
        let inode = self.nodes[&ino].inode.clone();
        let size = inode.size;
        let why = if size == 0 || size > SYMLINK_MAX {
            Some(format!("target length {size}"))
        } else if let Some(t) = &inode.inline_target {
            if t.len() as u64 != size {
                Some(format!("inline target of {} bytes, size {size}", t.len()))
            } else if t.contains(&0) {
                Some("target holds a NUL byte".to_string())
            } else {
                None
            }
        } else {
            let n = l.sectors_for(size);
            if count_in(ranges, 0, n) != n {
                Some("target sectors are missing".to_string())
            } else {
                let data = self.read(l.region(ino), n)?;
                data[..size as usize]
                    .contains(&0)
                    .then(|| "target holds a NUL byte".to_string())
            }
        };
        match why {
            Some(why) => {
                if self.problem(Problem::Symlink, format!("symlink {ino}: {why}")) {
                    self.free_inode(ino);
                    return Ok(false);
                }
                Ok(true)
            }
            None => Ok(true),
        }
    }

    fn check_xattrs(&mut self, ino: u64) -> Step {
        let l = self.l;
        let ss = self.ss;
        let data_end = MAX_FILE_SIZE / u64::from(ss);
        let inode = self.nodes[&ino].inode.clone();
        let ranges = self.nodes[&ino].ranges.clone();
        let len = inode.xattr_len as usize;
        let mut ext_sectors = 0;
        let why = if inode.xattr_external {
            ext_sectors = external_sectors(len, ss);
            if len == 0 || ext_sectors > l.xattr_sectors() {
                ext_sectors = 0;
                Some(format!("external xattr blob of {len} bytes"))
            } else {
                let buf = self.read(l.xattr_lba(ino), ext_sectors)?;
                match decode_external(&buf, len, ino, ss) {
                    None => Some("external xattr sector checksum mismatch".to_string()),
                    Some(blob) => blob_problem(&blob),
                }
            }
        } else {
            blob_problem(&inode.xattr_inline)
        };
        let stray = count_in(&ranges, data_end + ext_sectors, l.region_sectors);
        if let Some(why) = why {
            if self.problem(Problem::Xattr, format!("inode {ino}: {why}")) {
                let n = self.nodes.get_mut(&ino).expect("live");
                n.inode.xattr_len = 0;
                n.inode.xattr_inline.clear();
                n.inode.xattr_external = false;
                n.dirty = true;
                self.plan.trim(l.xattr_lba(ino), l.xattr_sectors());
                return Ok(());
            }
        }
        if stray > 0 {
            let msg = format!("inode {ino}: {stray} stray sectors mapped in the xattr area");
            if self.problem(Problem::Leaked, msg) {
                self.plan.trim(
                    l.xattr_lba(ino) + ext_sectors,
                    l.xattr_sectors() - ext_sectors,
                );
            }
        }
        Ok(())
    }

    // --------------------------------------------------------- directories

    fn directories(&mut self) -> Step {
        let l = self.l;
        let dirs: Vec<(u64, Vec<Range<u64>>)> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.kind == FileKind::Directory)
            .map(|(ino, n)| (*ino, n.ranges.clone()))
            .collect();
        for (dir, ranges) in dirs {
            let base = l.region(dir);
            for r in ranges {
                let (a, b) = (r.start, r.end.min(l.buckets()));
                if a >= b {
                    continue;
                }
                self.for_each_sector(base + a..base + b, |me, lba, sec| {
                    me.bucket_sector(dir, lba - base, lba, sec);
                })?;
            }
        }
        Ok(())
    }

    fn bucket_sector(&mut self, dir: u64, idx: u64, lba: u64, sec: &[u8]) {
        self.report.stats.buckets += 1;
        let mut slot = Slot {
            dir,
            idx,
            bucket: None,
            mapped: true,
            dirty: false,
        };
        match Bucket::decode(sec, dir) {
            Ok(bucket) => {
                let mut bad = Vec::new();
                let used = bucket.used();
                if !is_zero(&sec[used.min(sec.len() - 4)..sec.len() - 4]) {
                    bad.push("stray bytes after the entries");
                }
                if get_u16(sec, 6) & !FLAG_OVERFLOW != 0 {
                    bad.push("unknown flags");
                }
                if bucket.is_trimmable() {
                    bad.push("empty without the overflow flag (should be unmapped)");
                }
                if !bad.is_empty() {
                    let msg = format!("directory {dir} bucket {idx}: {}", bad.join(", "));
                    slot.dirty = self.problem(Problem::BucketField, msg);
                }
                slot.bucket = Some(bucket);
            }
            Err(e) => {
                let msg = format!(
                    "directory {dir} bucket {idx}: {}; its entries are lost",
                    describe_bucket_error(e)
                );
                if self.problem(Problem::BucketDamaged, msg) {
                    slot.bucket = Some(Bucket::default());
                    slot.dirty = true;
                }
            }
        }
        self.buckets.insert(lba, slot);
    }

    fn remove_entry(&mut self, lba: u64, name: &[u8]) {
        if let Some(slot) = self.buckets.get_mut(&lba) {
            if let Some(b) = &mut slot.bucket {
                b.entries.retain(|e| e.name != name);
                slot.dirty = true;
            }
        }
    }

    /// Inserts like the file system does (first bucket from home with room,
    /// setting OVERFLOW on the full ones passed); false if a damaged bucket
    /// is in the way.
    fn insert_entry(&mut self, dir: u64, name: &[u8], ino: u64, dtype: u8) -> bool {
        let l = self.l;
        let n = l.buckets();
        let mut idx = home_bucket(name, l.dir_hash_bits);
        let limit = self.buckets.len() as u64 + 2;
        for _ in 0..limit {
            let lba = l.bucket_lba(dir, idx);
            let slot = self.buckets.entry(lba).or_insert(Slot {
                dir,
                idx,
                bucket: Some(Bucket::default()),
                mapped: false,
                dirty: false,
            });
            let Some(b) = &mut slot.bucket else {
                return false;
            };
            if b.fits(name.len(), l.sector_size) {
                let s = b.free_slot().expect("fits checked a free slot");
                b.insert(Entry {
                    ino,
                    slot: s,
                    dtype,
                    name: name.to_vec(),
                });
                slot.dirty = true;
                return true;
            }
            if !b.overflow {
                b.overflow = true;
                slot.dirty = true;
            }
            idx = (idx + 1) % n;
        }
        false
    }

    /// True when a lookup of `name` (home bucket `home`) reaches bucket `idx`:
    /// every bucket from home up to it is mapped and has OVERFLOW.
    fn reachable(&self, dir: u64, home: u64, idx: u64) -> bool {
        let l = self.l;
        let n = l.buckets();
        let mut at = home;
        while at != idx {
            match self.buckets.get(&l.bucket_lba(dir, at)) {
                Some(Slot {
                    bucket: Some(b), ..
                }) if b.overflow => {}
                Some(Slot { bucket: None, .. }) => return true, // unknown: do not judge
                _ => return false,
            }
            at = (at + 1) % n;
        }
        true
    }

    fn all_entries(&self) -> Vec<EntryRef> {
        let mut out = Vec::new();
        for (lba, slot) in &self.buckets {
            if let Some(b) = &slot.bucket {
                for e in &b.entries {
                    out.push(EntryRef {
                        lba: *lba,
                        dir: slot.dir,
                        idx: slot.idx,
                        slot: e.slot,
                        ino: e.ino,
                        dtype: e.dtype,
                        name: e.name.clone(),
                    });
                }
            }
        }
        out
    }

    fn entries(&mut self) {
        let l = self.l;
        let nb = l.buckets();
        let mut keep: Vec<EntryRef> = Vec::new();
        for e in self.all_entries() {
            self.report.stats.entries += 1;
            let at = format!("directory {} entry '{}'", e.dir, show(&e.name));
            if (e.name.contains(&b'/') || e.name.contains(&0) || e.name == b"." || e.name == b"..")
                && self.problem(Problem::EntryName, format!("{at}: invalid name"))
            {
                self.remove_entry(e.lba, &e.name);
                continue;
            }
            if e.ino == 0 || e.ino > l.max_ino || e.ino == ROOT_INO {
                let msg = format!("{at}: points at invalid inode number {}", e.ino);
                if self.problem(Problem::EntryTarget, msg) {
                    self.remove_entry(e.lba, &e.name);
                }
                continue;
            }
            if self.damaged.contains(&e.ino) {
                continue; // already reported; counts are unreliable
            }
            if !self.nodes.contains_key(&e.ino) {
                let msg = if self.freed.contains(&e.ino) {
                    format!("{at}: points at inode {} which is being cleared", e.ino)
                } else {
                    format!("{at}: points at free inode {}", e.ino)
                };
                if self.problem(Problem::EntryTarget, msg) {
                    self.remove_entry(e.lba, &e.name);
                }
                continue;
            }
            keep.push(e);
        }
        // Duplicate names: keep the one a lookup finds first.
        let mut by_name: HashMap<(u64, Vec<u8>), Vec<EntryRef>> = HashMap::new();
        for e in keep {
            by_name.entry((e.dir, e.name.clone())).or_default().push(e);
        }
        let mut keep: Vec<EntryRef> = Vec::new();
        let mut groups: Vec<Vec<EntryRef>> = by_name.into_values().collect();
        groups.sort_by_key(|g| (g[0].dir, g[0].idx, g[0].slot));
        for mut group in groups {
            let home = home_bucket(&group[0].name, l.dir_hash_bits);
            group.sort_by_key(|e| ((e.idx + nb - home) % nb, e.slot));
            let mut it = group.into_iter();
            keep.push(it.next().expect("non-empty group"));
            for dup in it {
                let msg = format!(
                    "directory {} has the name '{}' twice (bucket {} slot {} is the extra one)",
                    dup.dir,
                    show(&dup.name),
                    dup.idx,
                    dup.slot
                );
                if self.problem(Problem::EntryDuplicate, msg) {
                    // Both carry the same name: drop only the extra slot.
                    if let Some(slot) = self.buckets.get_mut(&dup.lba) {
                        if let Some(b) = &mut slot.bucket {
                            b.entries.retain(|x| x.slot != dup.slot);
                            slot.dirty = true;
                        }
                    }
                } else {
                    keep.push(dup);
                }
            }
        }
        // Directories have exactly one name.
        let mut dir_names: BTreeMap<u64, Vec<EntryRef>> = BTreeMap::new();
        let mut rest = Vec::new();
        for e in keep {
            if self.nodes[&e.ino].kind == FileKind::Directory {
                dir_names.entry(e.ino).or_default().push(e);
            } else {
                rest.push(e);
            }
        }
        for (ino, mut names) in dir_names {
            let parent = self.nodes[&ino].inode.parent;
            if let Some(p) = names.iter().position(|e| e.dir == parent) {
                names.swap(0, p);
            }
            let mut it = names.into_iter();
            rest.push(it.next().expect("non-empty"));
            for extra in it {
                let msg = format!(
                    "directory {ino} has a second name '{}' in directory {}",
                    show(&extra.name),
                    extra.dir
                );
                if self.problem(Problem::DirHardLink, msg) {
                    self.remove_entry(extra.lba, &extra.name);
                } else {
                    rest.push(extra);
                }
            }
        }
        rest.sort_by_key(|e| (e.dir, e.idx, e.slot));
        // Types and placement.
        let mut moved = Vec::new();
        for e in &rest {
            let kind = self.nodes[&e.ino].kind;
            if e.dtype != kind.dtype() {
                let msg = format!(
                    "directory {} entry '{}': type {} but inode {} is a {}",
                    e.dir,
                    show(&e.name),
                    e.dtype,
                    e.ino,
                    kind_name(kind)
                );
                if self.problem(Problem::EntryType, msg) {
                    if let Some(Slot {
                        bucket: Some(b),
                        dirty,
                        ..
                    }) = self.buckets.get_mut(&e.lba)
                    {
                        if let Some(x) = b.entries.iter_mut().find(|x| x.name == e.name) {
                            x.dtype = kind.dtype();
                            *dirty = true;
                        }
                    }
                }
            }
            let home = home_bucket(&e.name, l.dir_hash_bits);
            if !self.reachable(e.dir, home, e.idx) {
                let msg = format!(
                    "directory {} entry '{}' is in bucket {} but lookups from its home bucket {home} never reach it",
                    e.dir,
                    show(&e.name),
                    e.idx
                );
                if self.problem(Problem::EntryMisplaced, msg) {
                    moved.push((e.clone(), self.report.findings.len() - 1));
                }
            }
        }
        for (e, finding) in moved {
            self.remove_entry(e.lba, &e.name);
            let dtype = self.nodes[&e.ino].kind.dtype();
            if !self.insert_entry(e.dir, &e.name, e.ino, dtype) {
                // Put it back where it was; it stays misplaced.
                self.insert_entry_at(e.lba, e.clone());
                self.unpend(finding);
            }
        }
        // Count references on the repaired model.
        for e in self.all_entries() {
            let Some(kind) = self.nodes.get(&e.ino).map(|n| n.kind) else {
                continue;
            };
            if let Some(d) = self.nodes.get_mut(&e.dir) {
                d.entries += 1;
                if kind == FileKind::Directory {
                    d.subdirs += 1;
                }
            }
            let t = self.nodes.get_mut(&e.ino).expect("checked");
            t.refs += 1;
            if kind == FileKind::Directory && t.entry_at.is_none() {
                t.entry_at = Some((e.lba, e.name.clone()));
                t.entry_parent = Some(e.dir);
            }
        }
    }

    fn insert_entry_at(&mut self, lba: u64, e: EntryRef) {
        if let Some(Slot {
            bucket: Some(b), ..
        }) = self.buckets.get_mut(&lba)
        {
            b.insert(Entry {
                ino: e.ino,
                slot: e.slot,
                dtype: e.dtype,
                name: e.name,
            });
        }
    }

    // ------------------------------------------------------------- orphans

    fn read_orphans(&mut self) -> Step {
        let l = self.l;
        let ranges = self.orphan_ranges.clone();
        for r in ranges {
            self.for_each_sector(
                l.orphan_lba(r.start)..l.orphan_lba(r.end),
                |me, lba, sec| {
                    let n = lba - l.orphan_base;
                    let valid = orphan::decode(sec) == Some(n) && n != 0 && n != ROOT_INO;
                    if !valid {
                        let msg =
                            format!("orphan record {n} is damaged or misplaced (mount ignores it)");
                        if me.problem(Problem::OrphanRecord, msg) {
                            me.plan.trim(lba, 1);
                        }
                    } else if me.nodes.contains_key(&n) {
                        me.orphan_records.insert(n);
                    } else if !me.freed.contains(&n) && !me.damaged.contains(&n) {
                        let msg = format!("orphan record for free inode {n}");
                        if me.problem(Problem::OrphanRecord, msg) {
                            me.plan.trim(lba, 1);
                        }
                    }
                },
            )?;
        }
        Ok(())
    }

    /// True for an inode legally kept by an orphan record: no links, no
    /// entries, a valid record.
    fn is_orphan(&self, ino: u64, n: &Node) -> bool {
        // A directory that still has entries is not a plain orphan: freeing
        // it would drop its children's names, so it is reported (and
        // reattached) as unreachable instead.
        n.inode.nlink == 0 && n.refs == 0 && n.entries == 0 && self.orphan_records.contains(&ino)
    }

    // -------------------------------------------------------- reachability

    fn mark_reached(&mut self, from: u64) {
        let l = self.l;
        let mut stack = vec![from];
        if let Some(n) = self.nodes.get_mut(&from) {
            n.reached = true;
        }
        while let Some(dir) = stack.pop() {
            let (lo, hi) = (l.region(dir), l.region(dir) + l.buckets());
            let children: Vec<u64> = self
                .buckets
                .range(lo..hi)
                .filter_map(|(_, s)| s.bucket.as_ref())
                .flat_map(|b| b.entries.iter().map(|e| e.ino))
                .collect();
            for c in children {
                let Some(n) = self.nodes.get_mut(&c) else {
                    continue;
                };
                if n.reached {
                    continue;
                }
                if n.kind == FileKind::Directory {
                    if n.entry_parent == Some(dir) {
                        n.reached = true;
                        stack.push(c);
                    }
                } else {
                    n.reached = true;
                }
            }
        }
    }

    /// /lost+found, created on first use (a free inode number whose slot and
    /// region are unmapped).
    fn lost_found(&mut self) -> Option<u64> {
        if let Some(lf) = self.lost_found {
            return Some(lf);
        }
        let l = self.l;
        let (lo, hi) = (l.region(ROOT_INO), l.region(ROOT_INO) + l.buckets());
        let existing = self
            .buckets
            .range(lo..hi)
            .filter_map(|(_, s)| s.bucket.as_ref())
            .flat_map(|b| b.entries.iter())
            .find(|e| e.name == b"lost+found")
            .map(|e| e.ino);
        if let Some(ino) = existing {
            let is_dir = self
                .nodes
                .get(&ino)
                .is_some_and(|n| n.kind == FileKind::Directory && n.reached);
            if !is_dir {
                return None;
            }
            self.lost_found = Some(ino);
            return Some(ino);
        }
        let mapped: BTreeSet<u64> = self
            .slot_ranges
            .iter()
            .flat_map(|r| r.clone())
            .take(10_000_000)
            .collect();
        let ino = (2..=l.max_ino).find(|i| {
            !self.nodes.contains_key(i)
                && !self.damaged.contains(i)
                && !self.freed.contains(i)
                && !mapped.contains(i)
                && self
                    .buckets
                    .range(l.region(*i)..l.region(*i + 1))
                    .next()
                    .is_none()
        })?;
        if !self.insert_entry(ROOT_INO, b"lost+found", ino, libc::DT_DIR) {
            return None;
        }
        let now = Self::now();
        let inode = Inode {
            ino,
            generation: 1,
            mode: libc::S_IFDIR | 0o700,
            nlink: 2,
            atime: now,
            mtime: now,
            ctime: now,
            btime: now,
            parent: ROOT_INO,
            ..Inode::default()
        };
        let mut node = Self::node(inode, FileKind::Directory, true);
        node.reached = true;
        node.refs = 1;
        node.entry_parent = Some(ROOT_INO);
        self.nodes.insert(ino, node);
        // Anything left in its region (a leak being trimmed) must go.
        self.plan.trim(l.region(ino), l.region_sectors);
        self.plan.trim(l.orphan_lba(ino), 1);
        let root = self.nodes.get_mut(&ROOT_INO).expect("root exists");
        root.entries += 1;
        root.subdirs += 1;
        self.lost_found = Some(ino);
        Some(ino)
    }

    /// Links `ino` into /lost+found as `#ino`; false if impossible.
    fn reattach(&mut self, ino: u64) -> bool {
        let Some(lf) = self.lost_found() else {
            return false;
        };
        let kind = self.nodes[&ino].kind;
        let name = format!("#{ino}").into_bytes();
        if !self.insert_entry(lf, &name, ino, kind.dtype()) {
            return false;
        }
        let lba = self.find_entry(lf, &name).unwrap_or(0);
        let lfn = self.nodes.get_mut(&lf).expect("lost+found exists");
        lfn.entries += 1;
        if kind == FileKind::Directory {
            lfn.subdirs += 1;
        }
        let n = self.nodes.get_mut(&ino).expect("live");
        n.refs += 1;
        if kind == FileKind::Directory {
            n.entry_parent = Some(lf);
            n.entry_at = Some((lba, name));
        }
        if n.inode.nlink == 0 {
            n.inode.nlink = 1;
            n.dirty = true;
        }
        true
    }

    fn find_entry(&self, dir: u64, name: &[u8]) -> Option<u64> {
        let l = self.l;
        let (lo, hi) = (l.region(dir), l.region(dir) + l.buckets());
        self.buckets
            .range(lo..hi)
            .find(|(_, s)| s.bucket.as_ref().is_some_and(|b| b.find(name).is_some()))
            .map(|(lba, _)| *lba)
    }

    fn reachability(&mut self) {
        if !self.nodes.contains_key(&ROOT_INO) {
            return; // damaged root left alone: everything would be "unreachable"
        }
        self.mark_reached(ROOT_INO);
        loop {
            let unreached: Vec<u64> = self
                .nodes
                .iter()
                .filter(|(_, n)| !n.reached)
                .filter(|(ino, n)| {
                    // Legal orphans and link-less empty inodes are judged in `counts`.
                    !(n.refs == 0
                        && n.inode.nlink == 0
                        && (n.entries == 0 || self.is_orphan(**ino, n)))
                })
                .map(|(ino, _)| *ino)
                .collect();
            if unreached.is_empty() {
                break;
            }
            let mut roots: Vec<(u64, bool)> = unreached
                .iter()
                .filter(|i| self.nodes[i].refs == 0)
                .map(|i| (*i, false))
                .collect();
            if roots.is_empty() {
                // Only cycles are left: break the smallest one open.
                match unreached
                    .iter()
                    .find(|i| self.nodes[i].kind == FileKind::Directory)
                {
                    Some(i) => roots.push((*i, true)),
                    None => break,
                }
            }
            for (ino, cycle) in roots {
                if self.nodes[&ino].reached {
                    continue;
                }
                let n = &self.nodes[&ino];
                let what = kind_name(n.kind);
                let msg = if cycle {
                    format!("directory {ino} is in a cycle of directories not reachable from the root; it goes to /lost+found")
                } else {
                    format!(
                        "{what} {ino} (nlink {}) is not reachable from the root; it goes to /lost+found",
                        n.inode.nlink
                    )
                };
                if self.problem(Problem::Unreachable, msg) {
                    let finding = self.report.findings.len() - 1;
                    if cycle {
                        if let Some((lba, name)) = self.nodes[&ino].entry_at.clone() {
                            let holder = self.buckets.get(&lba).map(|s| s.dir);
                            self.remove_entry(lba, &name);
                            if let Some(h) = holder.and_then(|h| self.nodes.get_mut(&h)) {
                                h.entries -= 1;
                                h.subdirs -= 1;
                            }
                            let n = self.nodes.get_mut(&ino).expect("live");
                            n.refs -= 1;
                            n.entry_at = None;
                            n.entry_parent = None;
                        }
                    }
                    if !self.reattach(ino) {
                        self.unpend(finding);
                    }
                }
                self.mark_reached(ino);
            }
        }
    }

    // -------------------------------------------------------------- counts

    fn counts(&mut self) {
        let l = self.l;
        let inos: Vec<u64> = self.nodes.keys().copied().collect();
        for ino in inos {
            let n = &self.nodes[&ino];
            if self.is_orphan(ino, n) {
                self.report.stats.orphans += 1;
                let msg = format!(
                    "{} {ino} is open-but-unlinked (orphan record); mount reclaims it",
                    kind_name(n.kind)
                );
                if self.note(Problem::Orphan, msg) {
                    self.free_inode(ino);
                }
                continue;
            }
            if n.inode.nlink == 0 && n.refs == 0 && n.entries == 0 {
                let msg = format!(
                    "{} {ino} has no links, no entries and no orphan record (leaked)",
                    kind_name(n.kind)
                );
                if self.problem(Problem::LeakedInode, msg) {
                    self.free_inode(ino);
                }
                continue;
            }
            let n = &self.nodes[&ino];
            let mut fix = n.inode.clone();
            if n.kind == FileKind::Directory {
                let expect_nlink = 2 + n.subdirs;
                if n.inode.nlink != expect_nlink && (n.refs > 0 || ino == ROOT_INO) {
                    let msg = format!(
                        "directory {ino}: nlink {}, it has {} subdirectories (expected {expect_nlink})",
                        n.inode.nlink, n.subdirs
                    );
                    fix.nlink = expect_nlink;
                    self.stage_fix(ino, Problem::LinkCount, msg, &fix);
                }
                let n = &self.nodes[&ino];
                if n.inode.size != n.entries {
                    let msg = format!(
                        "directory {ino}: size {}, it has {} entries",
                        n.inode.size, n.entries
                    );
                    fix.size = n.entries;
                    self.stage_fix(ino, Problem::DirSize, msg, &fix);
                }
                let n = &self.nodes[&ino];
                let parent = if ino == ROOT_INO {
                    Some(ROOT_INO)
                } else {
                    n.entry_parent
                };
                if let Some(p) = parent {
                    if n.inode.parent != p {
                        let msg = format!(
                            "directory {ino}: '..' is {}, its entry is in directory {p}",
                            n.inode.parent
                        );
                        fix.parent = p;
                        self.stage_fix(ino, Problem::DirParent, msg, &fix);
                    }
                }
                let (lo, hi) = (l.region(ino), l.region(ino) + l.buckets());
                let mapped = self
                    .buckets
                    .range(lo..hi)
                    .filter(|(_, s)| s.mapped_after())
                    .count() as u64;
                let n = &self.nodes[&ino];
                if n.inode.data_sectors != mapped {
                    let msg = format!(
                        "directory {ino}: block count {}, {mapped} buckets are mapped",
                        n.inode.data_sectors
                    );
                    fix.data_sectors = mapped;
                    self.stage_fix(ino, Problem::BlockCount, msg, &fix);
                }
            } else if n.inode.nlink != n.refs {
                let msg = format!(
                    "{} {ino}: nlink {}, {} entries name it",
                    kind_name(n.kind),
                    n.inode.nlink,
                    n.refs
                );
                fix.nlink = n.refs;
                self.stage_fix(ino, Problem::LinkCount, msg, &fix);
            }
            // A linked inode must not keep an orphan record: mount would free it.
            let n = &self.nodes[&ino];
            if self.orphan_records.contains(&ino) && (n.inode.nlink > 0 || n.refs > 0) {
                let msg =
                    format!("orphan record for inode {ino}, which is linked: mount would free it");
                if self.problem(Problem::OrphanRecord, msg) {
                    self.plan.trim(l.orphan_lba(ino), 1);
                    self.orphan_records.remove(&ino);
                }
            }
        }
    }

    /// Reports `kind` and, when fixing, makes `fixed` the inode's new value
    /// (only the field of this finding differs from what is staged).
    fn stage_fix(&mut self, ino: u64, kind: Problem, msg: String, fixed: &Inode) {
        if self.problem(kind, msg) {
            let n = self.nodes.get_mut(&ino).expect("live");
            match kind {
                Problem::LinkCount => n.inode.nlink = fixed.nlink,
                Problem::DirSize => n.inode.size = fixed.size,
                Problem::DirParent => n.inode.parent = fixed.parent,
                Problem::BlockCount => n.inode.data_sectors = fixed.data_sectors,
                _ => unreachable!("not an inode count"),
            }
            n.dirty = true;
        }
    }

    // --------------------------------------------------------------- apply

    fn stage(&mut self) {
        let l = self.l;
        let ss = self.ss;
        for (ino, n) in &self.nodes {
            if n.dirty {
                self.plan.write(l.inode_lba(*ino), n.inode.encode(ss));
            }
        }
        for (lba, s) in &self.buckets {
            if !s.dirty || self.freed.contains(&s.dir) {
                continue;
            }
            let Some(b) = &s.bucket else { continue };
            if b.is_trimmable() {
                self.plan.unwrite(*lba);
                if s.mapped {
                    self.plan.trim(*lba, 1);
                }
            } else {
                self.plan.write(*lba, b.encode(s.dir, ss));
            }
        }
    }

    fn apply(&mut self) {
        let req = std::mem::take(&mut self.plan).into_request();
        self.report.repair_segments = req.segments().len();
        self.report.repair_bytes = req.write_bytes();
        let geo = self.dev.geometry();
        if let Err(e) = req.validate(&geo) {
            self.report.repair_error = Some(format!(
                "the repairs do not fit one request ({e}); nothing was written"
            ));
            return;
        }
        match self.dev.submit(req).and_then(|()| self.dev.flush()) {
            Ok(()) => {
                for &i in &self.pending {
                    self.report.findings[i].repaired = true;
                }
            }
            Err(e) => {
                self.report.repair_error = Some(format!("writing the repairs failed: {e}"));
            }
        }
    }
}

/// Why an xattr blob is malformed, if it is.
fn blob_problem(blob: &[u8]) -> Option<String> {
    match decode_blob(blob) {
        None => Some("malformed xattr blob".to_string()),
        Some(map) if encode_blob(&map) != blob => {
            Some("xattr blob not sorted or has duplicate names".to_string())
        }
        Some(map) if map.values().any(|v| v.len() > XATTR_VALUE_MAX) => {
            Some("xattr value longer than 64 KiB".to_string())
        }
        Some(_) => None,
    }
}
