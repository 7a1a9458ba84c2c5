//! File-system checks for fsck.atomfs and the crash explorer.
//!
//! Contract the other crates code against:
//! `atomfs::fsck::check(&device, &FsckOptions::default()) -> FsckReport`,
//! `report.errors()` iterates the findings that are errors (empty = clean).
//!
//! The checks read the device through the [`AtomicDevice`] contract only
//! (`read` and `next_mapped`), so they run the same on a `MemDevice`, a
//! `LogDevice` over `SimMedia`, or a real image. The block layer itself is
//! checked separately by `blockdev::check` (the fsck binary runs both).
//!
//! Repairs (`repair` = `-y`, `preen` = `-p`) are collected while checking
//! and written as ONE atomic request followed by a flush, so a crash during
//! fsck leaves either the old or the fully repaired file system. What is
//! checked and how each problem is repaired is listed in `fsck/README.md`.

use atomic_api::AtomicDevice;

mod checker;
mod plan;
pub mod probe;

/// How a check runs.
#[derive(Clone, Debug, Default)]
pub struct FsckOptions {
    /// Fix everything that can be fixed (`-y`), as one atomic request.
    pub repair: bool,
    /// Fix only the problems whose repair cannot lose data (`-p`): counts,
    /// stale records, leaked ranges, a damaged superblock copy, orphans.
    /// Problems that need judgment (damaged inodes or buckets, bad entries,
    /// unreachable inodes) are left and reported as uncorrected.
    pub preen: bool,
}

/// The kinds of findings (stable names, used in `--json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Problem {
    /// A superblock copy is damaged, or the two copies differ.
    SuperblockCopy,
    /// Both superblock copies are unusable, or the superblock describes
    /// something this build cannot check (version, features, layout).
    Superblock,
    /// An inode sector does not decode (magic, checksum, number, lengths) or
    /// has an unknown file type.
    InodeDamaged,
    /// The root directory is missing, damaged or not a directory.
    Root,
    /// A decodable inode with a field out of range (nanoseconds, reserved
    /// bits, rdev, parent of a non-directory, size of a special file).
    InodeField,
    /// A symlink whose target is missing, too long or holds a NUL byte.
    Symlink,
    /// `data_sectors` (st_blocks) does not match the mapped sectors.
    BlockCount,
    /// Data mapped at or past the end of file, or in a region part that
    /// must be empty.
    DataBeyondEof,
    /// The bytes of the last sector past the end of file are not zero.
    TailNotZero,
    /// The xattr blob (inline or external) does not decode.
    Xattr,
    /// A directory bucket sector does not decode.
    BucketDamaged,
    /// A bucket with stray bytes, or empty without the overflow flag (should
    /// have been trimmed).
    BucketField,
    /// An entry with an invalid name (`/`, NUL, `.`, `..`).
    EntryName,
    /// An entry pointing at an invalid or free inode number.
    EntryTarget,
    /// An entry whose type code differs from its inode's type.
    EntryType,
    /// Two entries with the same name in one directory.
    EntryDuplicate,
    /// An entry a lookup cannot reach from its home bucket.
    EntryMisplaced,
    /// A directory with more than one name (hard link to a directory).
    DirHardLink,
    /// A directory's `..` differs from the directory holding its entry.
    DirParent,
    /// A directory's size differs from its number of entries.
    DirSize,
    /// nlink differs from the references counted.
    LinkCount,
    /// A linked inode that no path from the root reaches.
    Unreachable,
    /// An inode with no links, no entry and no orphan record.
    LeakedInode,
    /// An open-but-unlinked inode (legal: mount reclaims it). Info.
    Orphan,
    /// A damaged orphan record, or one for a free or linked inode.
    OrphanRecord,
    /// Mapped sectors that belong to nothing (region 0 gaps, regions of
    /// free inodes, past the last region).
    Leaked,
    /// Reading the device failed.
    Io,
}

impl Problem {
    /// Stable snake_case name.
    pub fn name(self) -> &'static str {
        use Problem::*;
        match self {
            SuperblockCopy => "superblock_copy",
            Superblock => "superblock",
            InodeDamaged => "inode_damaged",
            Root => "root",
            InodeField => "inode_field",
            Symlink => "symlink",
            BlockCount => "block_count",
            DataBeyondEof => "data_beyond_eof",
            TailNotZero => "tail_not_zero",
            Xattr => "xattr",
            BucketDamaged => "bucket_damaged",
            BucketField => "bucket_field",
            EntryName => "entry_name",
            EntryTarget => "entry_target",
            EntryType => "entry_type",
            EntryDuplicate => "entry_duplicate",
            EntryMisplaced => "entry_misplaced",
            DirHardLink => "dir_hard_link",
            DirParent => "dir_parent",
            DirSize => "dir_size",
            LinkCount => "link_count",
            Unreachable => "unreachable",
            LeakedInode => "leaked_inode",
            Orphan => "orphan",
            OrphanRecord => "orphan_record",
            Leaked => "leaked",
            Io => "io",
        }
    }

    /// True when the repair cannot lose data, so `-p` may apply it.
    pub fn safe(self) -> bool {
        use Problem::*;
        matches!(
            self,
            SuperblockCopy
                | InodeField
                | BlockCount
                | DataBeyondEof
                | TailNotZero
                | BucketField
                | EntryType
                | EntryMisplaced
                | DirParent
                | DirSize
                | LinkCount
                | Orphan
                | OrphanRecord
                | Leaked
        )
    }

    /// True when leaving it unrepaired makes reference counts unreliable
    /// (so count repairs are not applied).
    fn structural(self) -> bool {
        use Problem::*;
        matches!(
            self,
            InodeDamaged
                | Root
                | BucketDamaged
                | EntryName
                | EntryTarget
                | EntryDuplicate
                | DirHardLink
                | Symlink
                | Superblock
                | Io
        )
    }
}

/// One problem found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsFinding {
    /// True for an inconsistency; false for a note (e.g. an orphan that mount reclaims).
    pub is_error: bool,
    pub message: String,
    pub kind: Problem,
    /// The repair was written (part of the one repair request, which succeeded).
    pub repaired: bool,
}

/// Counts of what the check walked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsckStats {
    pub inodes: u64,
    pub directories: u64,
    pub regular_files: u64,
    pub symlinks: u64,
    pub entries: u64,
    pub buckets: u64,
    pub orphans: u64,
    pub mapped_sectors: u64,
}

/// What a check found.
#[derive(Clone, Debug, Default)]
pub struct FsckReport {
    pub findings: Vec<FsFinding>,
    /// The device holds no atomfs superblock at all (not a damaged one):
    /// an operational error for the binary (exit 8), not a corruption.
    pub not_atomfs: bool,
    /// The check stopped early (unreadable device, unusable superblock).
    pub aborted: bool,
    pub stats: FsckStats,
    /// Segments and bytes of the repair request that was submitted.
    pub repair_segments: usize,
    pub repair_bytes: u64,
    /// Why the repair request could not be written (nothing was changed).
    pub repair_error: Option<String>,
}

impl FsckReport {
    /// The findings that are errors.
    pub fn errors(&self) -> impl Iterator<Item = &FsFinding> {
        self.findings.iter().filter(|f| f.is_error)
    }

    /// Errors whose repair was not written.
    pub fn unrepaired(&self) -> impl Iterator<Item = &FsFinding> {
        self.errors().filter(|f| !f.repaired)
    }

    /// True when no finding is an error.
    pub fn is_clean(&self) -> bool {
        self.errors().next().is_none()
    }

    /// True when some finding of `kind` exists.
    pub fn has(&self, kind: Problem) -> bool {
        self.findings.iter().any(|f| f.kind == kind)
    }
}

/// Checks the file system on `device`; with `repair` or `preen` set, also
/// writes the repairs as one request and flushes. Never panics on damaged
/// input; read errors end the check with a [`Problem::Io`] finding.
pub fn check<D: AtomicDevice + ?Sized>(device: &D, opts: &FsckOptions) -> FsckReport {
    checker::Checker::new(device, opts).run()
}
