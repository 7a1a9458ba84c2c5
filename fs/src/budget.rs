//! Byte budgets per operation (issue 3), shared by the MemDevice tests here
//! and later LogDevice tests.
//!
//! The budgets are media bytes for "operation + fsync" with 512-byte
//! sectors on the real block layer, which writes one 512-byte header sector
//! per flush plus the distinct data sectors of the batch. On a device that
//! does not count media bytes (MemDevice) tests assert the number of
//! distinct sectors written by the operation's requests is at most
//! `budget / 512 - 1`.

use std::collections::BTreeSet;

use atomic_api::{Request, Segment};

/// One budgeted operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    pub name: &'static str,
    /// Media bytes allowed for the operation plus one fsync.
    pub bytes: u64,
}

/// Header bytes the block layer writes per flush (one 512-byte sector).
pub const HEADER_BYTES: u64 = 512;

pub const CREATE_EMPTY: Budget = Budget {
    name: "create empty file + fsync",
    bytes: 2048,
};
pub const CREATE_WRITE_4K: Budget = Budget {
    name: "create + write 4 KiB + fsync",
    bytes: 6144,
};
pub const APPEND_4K: Budget = Budget {
    name: "append 4 KiB + fsync",
    bytes: 5120,
};
pub const APPEND_100B: Budget = Budget {
    name: "append 100 B + fsync",
    bytes: 1536,
};
pub const RENAME_SAME_DIR: Budget = Budget {
    name: "rename within a directory + fsync",
    bytes: 2560,
};
pub const UNLINK: Budget = Budget {
    name: "unlink + fsync",
    bytes: 1536,
};
pub const RMDIR: Budget = Budget {
    name: "rmdir + fsync",
    bytes: 1536,
};
pub const MKDIR: Budget = Budget {
    name: "mkdir + fsync",
    bytes: 2048,
};

/// Every budget, for table-driven tests.
pub const ALL: [Budget; 8] = [
    CREATE_EMPTY,
    CREATE_WRITE_4K,
    APPEND_4K,
    APPEND_100B,
    RENAME_SAME_DIR,
    UNLINK,
    RMDIR,
    MKDIR,
];

impl Budget {
    /// Most distinct data sectors of `sector_size` bytes the operation may
    /// write (the budget less one header sector).
    pub fn max_sectors(&self, sector_size: u32) -> u64 {
        (self.bytes - HEADER_BYTES) / u64::from(sector_size)
    }
}

/// Distinct sectors written by `requests` (a sector written twice counts
/// once, as group commit coalesces it); trims write nothing.
pub fn distinct_sectors_written<'a>(
    requests: impl IntoIterator<Item = &'a Request>,
    sector_size: u32,
) -> u64 {
    let mut sectors = BTreeSet::new();
    for request in requests {
        for segment in request.segments() {
            if let Segment::Write { lba, data } = segment {
                let n = data.len() as u64 / u64::from(sector_size);
                sectors.extend(*lba..lba + n);
            }
        }
    }
    sectors.len() as u64
}

/// A device wrapper that records every accepted request and counts reads,
/// so tests can count requests, the distinct sectors they write and the
/// reads an operation needs, on any `AtomicDevice`.
pub struct Recorder<D> {
    inner: D,
    log: std::sync::Mutex<Vec<Request>>,
    /// Read calls that reached the device.
    reads: std::sync::atomic::AtomicU64,
}

impl<D: atomic_api::AtomicDevice> Recorder<D> {
    pub fn new(inner: D) -> Self {
        Recorder {
            inner,
            log: std::sync::Mutex::new(Vec::new()),
            reads: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Read calls that reached the device so far (the core's caches
    /// answer the others).
    pub fn reads(&self) -> u64 {
        self.reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The wrapped device.
    pub fn inner(&self) -> &D {
        &self.inner
    }

    /// Takes the requests recorded since the last call.
    pub fn take(&self) -> Vec<Request> {
        std::mem::take(&mut *self.log.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl<D: atomic_api::AtomicDevice> atomic_api::AtomicDevice for Recorder<D> {
    fn geometry(&self) -> atomic_api::Geometry {
        self.inner.geometry()
    }
    fn submit(&self, request: Request) -> atomic_api::Result<()> {
        let copy = request.clone();
        self.inner.submit(request)?;
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(copy);
        Ok(())
    }
    fn read(&self, lba: u64, buf: &mut [u8]) -> atomic_api::Result<()> {
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.read(lba, buf)
    }
    fn flush(&self) -> atomic_api::Result<()> {
        self.inner.flush()
    }
    fn next_mapped(&self, from: u64) -> atomic_api::Result<Option<std::ops::Range<u64>>> {
        self.inner.next_mapped(from)
    }
    fn space(&self) -> atomic_api::Space {
        self.inner.space()
    }
    fn stats(&self) -> atomic_api::Stats {
        self.inner.stats()
    }
}
