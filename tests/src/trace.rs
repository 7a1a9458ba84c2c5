//! A recording media for a real FUSE daemon, replayed offline into
//! `SimMedia` (issue 4, part 3: "a FUSE mount whose block layer sits on a
//! recording media").
//!
//! [`TraceMedia`] wraps the media the daemon serves (the image's
//! `FileMedia`) and appends every write (with its data), discard and flush
//! that succeeded to a trace file, one `write(2)` per event, in the order
//! they reached the media (one lock covers the media call and the append).
//! [`Trace::read`] parses the file and [`Trace::replay`] plays it onto a
//! `SimMedia` holding the image the daemon started from, which then has the
//! daemon's whole media history and yields every crash image
//! (`SimMedia::crash_specs`, `SimMedia::image`) as if the file system had
//! run on it.
//!
//! Because each event is appended before the media call returns to the
//! block layer, another process that reads the trace file's length learns
//! a lower bound on what reached the media: every event whose record ends
//! within that length happened before the read ([`Trace::events_within`]).
//! The test uses that to tie media events to its system calls, exactly and
//! without a side channel (see `fuse_replay`).
//!
//! Record format (little endian): tag byte (`W`, `D`, `F`), offset u64,
//! length u64, then for `W` the data.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Mutex;

use blockdev::{Media, SimMedia};

/// One recorded media event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TraceEvent {
    Write { offset: u64, data: Vec<u8> },
    Discard { offset: u64, len: u64 },
    Flush,
}

/// A [`Media`] that appends what reaches `inner` to a trace file.
pub struct TraceMedia<M: Media> {
    inner: M,
    trace: Mutex<File>,
}

impl<M: Media> TraceMedia<M> {
    /// Records into `trace` (created or truncated).
    pub fn create(inner: M, trace: &Path) -> io::Result<Self> {
        Ok(TraceMedia {
            inner,
            trace: Mutex::new(File::create(trace)?),
        })
    }

    pub fn into_inner(self) -> M {
        self.inner
    }

    /// Runs `op` on the media and, if it succeeded, appends `record`,
    /// under one lock so the trace order is the media order.
    fn logged(&self, record: &[u8], op: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
        let mut f = self.trace.lock().unwrap_or_else(|e| e.into_inner());
        op()?;
        f.write_all(record)
    }
}

fn header(tag: u8, offset: u64, len: u64, extra: usize) -> Vec<u8> {
    let mut r = Vec::with_capacity(17 + extra);
    r.push(tag);
    r.extend_from_slice(&offset.to_le_bytes());
    r.extend_from_slice(&len.to_le_bytes());
    r
}

impl<M: Media> Media for TraceMedia<M> {
    fn sector_size(&self) -> u32 {
        self.inner.sector_size()
    }
    fn len_bytes(&self) -> u64 {
        self.inner.len_bytes()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut r = header(b'W', offset, data.len() as u64, data.len());
        r.extend_from_slice(data);
        self.logged(&r, || self.inner.write_at(offset, data))
    }
    fn flush(&self) -> io::Result<()> {
        self.logged(&header(b'F', 0, 0, 0), || self.inner.flush())
    }
    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.logged(&header(b'D', offset, len, 0), || {
            self.inner.discard(offset, len)
        })
    }
    fn describe(&self) -> String {
        format!("traced {}", self.inner.describe())
    }
}

/// A parsed trace.
pub struct Trace {
    pub events: Vec<TraceEvent>,
    /// ends[i]: the trace file's length once event i was appended.
    pub ends: Vec<u64>,
}

impl Trace {
    pub fn read(path: &Path) -> Result<Trace, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let (mut events, mut ends) = (Vec::new(), Vec::new());
        let mut at = 0usize;
        let u64_at = |i: usize| u64::from_le_bytes(bytes[i..i + 8].try_into().unwrap());
        while at < bytes.len() {
            if at + 17 > bytes.len() {
                return Err(format!("trace cut inside a record header at byte {at}"));
            }
            let (tag, offset, len) = (bytes[at], u64_at(at + 1), u64_at(at + 9));
            at += 17;
            let ev = match tag {
                b'W' => {
                    let end = at + len as usize;
                    if end > bytes.len() {
                        return Err(format!("trace cut inside write data at byte {at}"));
                    }
                    let data = bytes[at..end].to_vec();
                    at = end;
                    TraceEvent::Write { offset, data }
                }
                b'D' => TraceEvent::Discard { offset, len },
                b'F' => TraceEvent::Flush,
                t => return Err(format!("bad trace record tag {t:#x} at byte {}", at - 17)),
            };
            events.push(ev);
            ends.push(at as u64);
        }
        Ok(Trace { events, ends })
    }

    /// Events wholly in the first `len` bytes of the trace: those that
    /// reached the media before a reader saw the file at that length.
    pub fn events_within(&self, len: u64) -> usize {
        self.ends.partition_point(|&e| e <= len)
    }

    /// A recording `SimMedia` holding `base` (the image before the daemon
    /// opened it) with the trace played onto it, so its event `i` is trace
    /// event `i` (a discard is recorded as `SimMedia` records discards).
    pub fn replay(&self, sector_size: u32, base: &[u8]) -> io::Result<SimMedia> {
        let m = SimMedia::from_bytes(sector_size, base);
        // from_bytes keeps the zeroed media as its history's base; make
        // the base image the state every crash image starts from.
        m.forget_history();
        for ev in &self.events {
            match ev {
                TraceEvent::Write { offset, data } => m.write_at(*offset, data)?,
                TraceEvent::Discard { offset, len } => m.discard(*offset, *len)?,
                TraceEvent::Flush => m.flush()?,
            }
        }
        Ok(m)
    }

    pub fn count(&self, f: impl Fn(&TraceEvent) -> bool) -> usize {
        self.events.iter().filter(|e| f(e)).count()
    }
}
