//! The `AtomicDevice` trait: the contract between the file system and the
//! block layer (DESIGN.md §1).

use std::ops::Range;
use std::sync::Arc;

use crate::{Geometry, Request, Result, Space, Stats};

/// A block device that applies multi-segment write requests atomically.
///
/// # The contract
///
/// * **Validation.** [`submit`](Self::submit) first checks the request with
///   [`Request::validate`]: a misaligned, out-of-range, overlapping or
///   oversized request is rejected with `Misaligned`, `OutOfRange`,
///   `Overlap` or `TooLarge` before it has any effect.
/// * **Atomicity.** After any crash, either every segment of a request is
///   visible or none is. No sector is ever torn.
/// * **Prefix order.** After any crash the device holds exactly the result of
///   applying requests `1..=k` in submission order, for some `k`, and `k`
///   covers every request whose `submit` returned before the last
///   [`flush`](Self::flush) that returned `Ok`.
/// * **Read-your-writes.** [`read`](Self::read) returns the newest submitted
///   data, durable or not. Trimmed and never-written sectors read as zeros and
///   occupy no media.
/// * **Space.** A request that would not fit fails with `NoSpace` and no
///   effect. [`space`](Self::space) reports capacity, free and live bytes.
///   Overwriting mapped sectors needs no new space; trimming frees space.
/// * **Enumeration.** [`next_mapped`](Self::next_mapped) walks the written
///   sectors of a sparse logical space, like `SEEK_DATA`/`SEEK_HOLE`.
/// * **Failure (fail-stop).** When the media fails (I/O error, short write,
///   failed flush) the call that saw it returns `Io`, the device accepts no
///   more writes, and every later call returns `Failed`. A failed flush is
///   never retried: the data it covered may be gone from the media's cache.
///   Nothing acknowledged by an earlier successful `flush` is lost.
/// * **Concurrency.** Methods take `&self` and implementations are
///   `Send + Sync`. Requests submitted from several threads are ordered by
///   the order in which their `submit` calls return.
/// * **Accounting.** [`stats`](Self::stats) counts requests, flushes and media
///   bytes by purpose; write amplification is read off it.
pub trait AtomicDevice: Send + Sync {
    /// Sector size, logical space and request limits.
    fn geometry(&self) -> Geometry;

    /// Applies `request` atomically, after everything submitted before it.
    ///
    /// When this returns `Ok` the request is visible to reads; it is durable
    /// after the next successful `flush`.
    fn submit(&self, request: Request) -> Result<()>;

    /// Reads whole sectors starting at `lba` into `buf` (whose length must be
    /// a whole number of sectors). Unmapped sectors read as zeros.
    fn read(&self, lba: u64, buf: &mut [u8]) -> Result<()>;

    /// Makes every request submitted so far durable. A flush with nothing
    /// pending does no media I/O.
    fn flush(&self) -> Result<()>;

    /// The first maximal run of mapped sectors at or after `from`: returns
    /// `start..end` where `start >= from` is the first mapped sector at or
    /// after `from` and `end` is the first unmapped sector after `start`;
    /// `None` when nothing at or after `from` is mapped.
    fn next_mapped(&self, from: u64) -> Result<Option<Range<u64>>>;

    /// Capacity, free and live bytes.
    fn space(&self) -> Space;

    /// Counters since the device was opened.
    fn stats(&self) -> Stats;
}

macro_rules! forward_atomic_device {
    ($($wrapper:ty),*) => {$(
        impl<D: AtomicDevice + ?Sized> AtomicDevice for $wrapper {
            fn geometry(&self) -> Geometry { (**self).geometry() }
            fn submit(&self, request: Request) -> Result<()> { (**self).submit(request) }
            fn read(&self, lba: u64, buf: &mut [u8]) -> Result<()> { (**self).read(lba, buf) }
            fn flush(&self) -> Result<()> { (**self).flush() }
            fn next_mapped(&self, from: u64) -> Result<Option<Range<u64>>> { (**self).next_mapped(from) }
            fn space(&self) -> Space { (**self).space() }
            fn stats(&self) -> Stats { (**self).stats() }
        }
    )*};
}

forward_atomic_device!(Arc<D>, Box<D>, &D);
