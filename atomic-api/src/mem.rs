//! `MemDevice`: the reference model of the contract.
//!
//! It is deliberately simple (one map entry per sector, one mutex) so that it
//! is obviously correct; other implementations are checked against it. Like
//! redb's test backend it keeps two states: the *durable* state as of the
//! last successful flush and the *pending* requests since, so
//! [`MemDevice::crash`] can produce every state the contract allows after a
//! crash.

use std::collections::BTreeMap;
use std::io;
use std::ops::Range;
use std::sync::Mutex;

use crate::request::check_read;
use crate::{
    AtomicDevice, Error, Geometry, Request, Result, Segment, Space, Stats, MIN_LOGICAL_SECTORS,
};

/// A failure to inject into the next matching call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The next `submit` fails with `NoSpace` (no effect, device healthy).
    SubmitNoSpace,
    /// The next `submit` fails with `Io` (no effect, device failed).
    SubmitIo,
    /// The next `flush` fails with `Io` (device failed).
    FlushIo,
}

type Sectors = BTreeMap<u64, Box<[u8]>>;

#[derive(Clone, Default)]
struct Inner {
    live: Sectors,
    durable: Sectors,
    pending: Vec<Request>,
    stats: Stats,
    failed: Option<String>,
    fault: Option<Fault>,
}

/// In-memory [`AtomicDevice`] with crash simulation and fault injection.
pub struct MemDevice {
    geometry: Geometry,
    capacity_bytes: u64,
    inner: Mutex<Inner>,
}

impl MemDevice {
    /// A device with `sector_size`-byte sectors holding at most
    /// `capacity_bytes` of live data; 2^60 logical sectors, 1024 segments
    /// and 4 MiB per request.
    pub fn new(sector_size: u32, capacity_bytes: u64) -> Self {
        let geometry = Geometry {
            sector_size,
            logical_sectors: MIN_LOGICAL_SECTORS,
            max_segments: 1024,
            max_request_bytes: 4 << 20,
        };
        Self::with_geometry(geometry, capacity_bytes)
    }

    pub fn with_geometry(geometry: Geometry, capacity_bytes: u64) -> Self {
        assert!(
            geometry.sector_size == 512 || geometry.sector_size == 4096,
            "sector size must be 512 or 4096"
        );
        Self {
            geometry,
            capacity_bytes,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves a consistent map (every
        // mutation is applied after validation), so poisoning is ignored.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes the next matching call fail.
    pub fn inject(&self, fault: Fault) {
        self.lock().fault = Some(fault);
    }

    /// Number of requests submitted since the last successful flush.
    pub fn pending_requests(&self) -> usize {
        self.lock().pending.len()
    }

    /// A new, healthy device holding what a crash now could leave: the
    /// durable state plus the first `keep_pending` pending requests
    /// (`keep_pending <= pending_requests()`). Stats start at zero.
    pub fn crash(&self, keep_pending: usize) -> MemDevice {
        let inner = self.lock();
        assert!(keep_pending <= inner.pending.len());
        let mut sectors = inner.durable.clone();
        for request in &inner.pending[..keep_pending] {
            apply(&self.geometry, &mut sectors, request);
        }
        MemDevice {
            geometry: self.geometry,
            capacity_bytes: self.capacity_bytes,
            inner: Mutex::new(Inner {
                live: sectors.clone(),
                durable: sectors,
                ..Inner::default()
            }),
        }
    }

    /// A copy of the live state (durable and pending alike become durable).
    pub fn snapshot(&self) -> MemDevice {
        self.crash(self.pending_requests())
    }

    /// Every mapped sector and its contents, in order.
    pub fn sectors(&self) -> Vec<(u64, Vec<u8>)> {
        self.lock()
            .live
            .iter()
            .map(|(lba, data)| (*lba, data.to_vec()))
            .collect()
    }

    fn live_bytes(&self, inner: &Inner) -> u64 {
        self.geometry.bytes_of(inner.live.len() as u64)
    }

    fn check_healthy(inner: &Inner) -> Result<()> {
        match &inner.failed {
            Some(cause) => Err(Error::Failed {
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }
}

fn apply(geometry: &Geometry, sectors: &mut Sectors, request: &Request) {
    let size = geometry.sector_size as usize;
    for segment in request.segments() {
        match segment {
            Segment::Write { lba, data } => {
                for (i, chunk) in data.chunks_exact(size).enumerate() {
                    sectors.insert(lba + i as u64, chunk.into());
                }
            }
            Segment::Trim {
                lba,
                sectors: count,
            } => {
                let doomed: Vec<u64> = sectors.range(*lba..lba + count).map(|(k, _)| *k).collect();
                for key in doomed {
                    sectors.remove(&key);
                }
            }
        }
    }
}

/// Net change in mapped sectors if `request` were applied to `sectors`.
fn growth(geometry: &Geometry, sectors: &Sectors, request: &Request) -> i64 {
    let mut delta = 0i64;
    for segment in request.segments() {
        let lba = segment.lba();
        let count = segment.sectors(geometry.sector_size);
        let mapped = sectors.range(lba..lba + count).count() as i64;
        match segment {
            Segment::Write { .. } => delta += count as i64 - mapped,
            Segment::Trim { .. } => delta -= mapped,
        }
    }
    delta
}

impl AtomicDevice for MemDevice {
    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn submit(&self, request: Request) -> Result<()> {
        request.validate(&self.geometry)?;
        let mut inner = self.lock();
        Self::check_healthy(&inner)?;
        let live = self.live_bytes(&inner);
        let needed = growth(&self.geometry, &inner.live, &request);
        let free = self.capacity_bytes.saturating_sub(live);
        let needed_bytes = self.geometry.bytes_of(needed.max(0) as u64);
        match inner.fault {
            Some(Fault::SubmitNoSpace) => {
                inner.fault = None;
                return Err(Error::NoSpace {
                    needed_bytes,
                    free_bytes: free,
                });
            }
            Some(Fault::SubmitIo) => {
                inner.fault = None;
                inner.failed = Some("injected submit failure".into());
                return Err(Error::Io {
                    op: "submit",
                    source: io::Error::other("injected"),
                });
            }
            _ => {}
        }
        if needed_bytes > free {
            return Err(Error::NoSpace {
                needed_bytes,
                free_bytes: free,
            });
        }
        apply(&self.geometry, &mut inner.live, &request);
        inner.stats.requests += 1;
        inner.stats.submitted_bytes += request.write_bytes();
        inner.stats.trimmed_sectors += request
            .segments()
            .iter()
            .filter(|s| matches!(s, Segment::Trim { .. }))
            .map(|s| s.sectors(self.geometry.sector_size))
            .sum::<u64>();
        inner.pending.push(request);
        Ok(())
    }

    fn read(&self, lba: u64, buf: &mut [u8]) -> Result<()> {
        let sectors = check_read(&self.geometry, lba, buf.len())?;
        let inner = self.lock();
        Self::check_healthy(&inner)?;
        buf.fill(0);
        let size = self.geometry.sector_size as usize;
        for (at, data) in inner.live.range(lba..lba + sectors) {
            let offset = (at - lba) as usize * size;
            buf[offset..offset + size].copy_from_slice(data);
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        let mut inner = self.lock();
        Self::check_healthy(&inner)?;
        if inner.fault == Some(Fault::FlushIo) {
            inner.fault = None;
            inner.failed = Some("injected flush failure".into());
            return Err(Error::Io {
                op: "flush",
                source: io::Error::other("injected"),
            });
        }
        let pending = std::mem::take(&mut inner.pending);
        if !pending.is_empty() {
            let mut durable = std::mem::take(&mut inner.durable);
            for request in &pending {
                apply(&self.geometry, &mut durable, request);
                inner.stats.media_payload_bytes += request.write_bytes();
            }
            inner.durable = durable;
            inner.stats.media_flushes += 1;
        }
        inner.stats.flushes += 1;
        Ok(())
    }

    fn next_mapped(&self, from: u64) -> Result<Option<Range<u64>>> {
        let inner = self.lock();
        Self::check_healthy(&inner)?;
        let mut keys = inner.live.range(from..).map(|(k, _)| *k);
        let Some(start) = keys.next() else {
            return Ok(None);
        };
        let mut end = start + 1;
        for key in keys {
            if key != end {
                break;
            }
            end += 1;
        }
        Ok(Some(start..end))
    }

    fn space(&self) -> Space {
        let inner = self.lock();
        let live = self.live_bytes(&inner);
        Space {
            capacity_bytes: self.capacity_bytes,
            free_bytes: self.capacity_bytes.saturating_sub(live),
            live_bytes: live,
        }
    }

    fn stats(&self) -> Stats {
        self.lock().stats
    }
}
