//! File-system checks for fsck.atomfs and the crash explorer (being written).
//!
//! Contract the other crates code against:
//! `atomfs::fsck::check(&device, &FsckOptions::default()) -> FsckReport`,
//! `report.errors()` iterates the findings that are errors (empty = clean).

use atomic_api::AtomicDevice;

pub mod probe;

/// How a check runs.
#[derive(Clone, Debug, Default)]
pub struct FsckOptions {
    /// Fix what can be fixed, as one atomic request.
    pub repair: bool,
}

/// One problem found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsFinding {
    /// True for an inconsistency; false for a note (e.g. an orphan that mount reclaims).
    pub is_error: bool,
    pub message: String,
}

/// What a check found.
#[derive(Clone, Debug, Default)]
pub struct FsckReport {
    pub findings: Vec<FsFinding>,
}

impl FsckReport {
    /// The findings that are errors.
    pub fn errors(&self) -> impl Iterator<Item = &FsFinding> {
        self.findings.iter().filter(|f| f.is_error)
    }
}

/// Checks the file system on `device` (placeholder until the fsck work lands).
pub fn check<D: AtomicDevice + ?Sized>(_device: &D, _opts: &FsckOptions) -> FsckReport {
    FsckReport::default()
}
