//! The atomic write contract of atomfs (DESIGN.md §1).
//!
//! A block device that applies a *multi-segment write request* atomically —
//! several writes and trims at scattered addresses, all or nothing, in
//! submission order — lets a file system drop its journal: every file-system
//! operation becomes one [`Request`].
//!
//! * [`AtomicDevice`]: the trait, with the full contract in its docs.
//! * [`Request`], [`Segment`], [`Geometry`], [`Space`], [`Stats`], [`Error`].
//! * [`MemDevice`]: a small, obviously correct in-memory model with crash
//!   simulation and fault injection.
//! * [`conformance`]: the suite every implementation must pass.

mod device;
mod error;
mod geometry;
mod mem;
mod request;
mod stats;

pub mod conformance;

pub use device::AtomicDevice;
pub use error::{Error, Result};
pub use geometry::{Geometry, MIN_LOGICAL_SECTORS};
pub use mem::{Fault, MemDevice};
pub use request::{check_range, check_read, Request, Segment};
pub use stats::{Space, Stats};
