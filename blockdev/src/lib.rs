//! The atomfs block layer: a log-structured translation layer that provides
//! the [`atomic_api::AtomicDevice`] contract over a raw block device or an
//! image file (DESIGN.md §2).

pub mod media;

mod check;
mod checkpoint;
mod codec;
mod device;
mod extent_map;
mod gc;
mod layout;
mod placement;
pub mod read_cache;
mod record;
mod recovery;
mod segments;
mod state;
mod write_behind;

pub use media::{AlignedBuf, Media, NullMedia};

pub use check::{check, CheckReport, Finding, Severity};
pub use device::{FormatOptions, LogDevice, OpenError, OpenOptions};

pub mod sim;
pub use sim::{CrashOptions, CrashSpec, DiscardMode, SimEvent, SimFault, SimMedia, SimStats};

pub mod file_media;
pub use file_media::{
    create_image, DirectIo, FileMedia, FileMediaError, FileMediaOptions, IoMode, MediaKind,
};
