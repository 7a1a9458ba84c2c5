//! The typed errors of the contract.

use std::io;

/// Everything that can go wrong with a request, a read or a flush.
///
/// The first four variants are *validation* errors: the request was
/// rejected before it had any effect and the device is unchanged and still
/// healthy. `NoSpace` likewise has no effect. `Io` is returned by the call
/// that hit a media failure; from then on the device is failed and every
/// later call returns `Failed` (fail-stop: a failed flush is never retried,
/// because the media may have dropped the data it was asked to persist).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A segment is empty or not a whole number of sectors, or a read buffer
    /// is not a whole number of sectors.
    #[error("segment {index}: {detail}")]
    Misaligned { index: usize, detail: String },
    /// A segment or read reaches past the logical address space.
    #[error("segment {index}: sectors {lba}..{lba}+{sectors} are outside the logical space")]
    OutOfRange {
        index: usize,
        lba: u64,
        sectors: u64,
    },
    /// Two segments of one request touch the same sector.
    #[error("segments {first} and {second} overlap")]
    Overlap { first: usize, second: usize },
    /// The request has more segments or more write bytes than the geometry allows.
    #[error("request too large: {detail}")]
    TooLarge { detail: String },
    /// The request would not fit on the media; nothing was changed.
    #[error("no space: the request needs {needed_bytes} bytes, {free_bytes} are free")]
    NoSpace { needed_bytes: u64, free_bytes: u64 },
    /// The device was opened read-only.
    #[error("the device is read-only")]
    ReadOnly,
    /// The media failed during this call; the device is now failed.
    #[error("media I/O error during {op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// An earlier media failure stopped the device; nothing more is accepted.
    #[error("the device failed earlier and accepts nothing more: {cause}")]
    Failed { cause: String },
    /// The media holds damaged or foreign data.
    #[error("corrupt media: {detail}")]
    Corrupt { detail: String },
}

impl Error {
    /// True for errors that left the device unchanged and usable.
    pub fn is_rejection(&self) -> bool {
        matches!(
            self,
            Error::Misaligned { .. }
                | Error::OutOfRange { .. }
                | Error::Overlap { .. }
                | Error::TooLarge { .. }
                | Error::NoSpace { .. }
                | Error::ReadOnly
        )
    }

    /// The closest errno, for file systems that report errors to POSIX callers.
    pub fn errno(&self) -> i32 {
        match self {
            Error::NoSpace { .. } => 28,                             // ENOSPC
            Error::ReadOnly => 30,                                   // EROFS
            Error::Misaligned { .. } | Error::Overlap { .. } => 22,  // EINVAL
            Error::OutOfRange { .. } | Error::TooLarge { .. } => 27, // EFBIG
            Error::Io { .. } | Error::Failed { .. } | Error::Corrupt { .. } => 5, // EIO
        }
    }
}

/// Result alias used across atomfs crates.
pub type Result<T, E = Error> = std::result::Result<T, E>;
