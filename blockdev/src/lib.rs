//! The atomfs block layer: a log-structured translation layer that provides
//! the [`atomic_api::AtomicDevice`] contract over a raw block device or an
//! image file (DESIGN.md §2).

pub mod media;

pub use media::{AlignedBuf, Media};
