//! Write-behind: a finished batch record is written by a writer thread
//! while the caller fills the next batch in a second buffer.
//!
//! Only one write is ever in flight, and every other media access of the
//! device (the next record, a flush, a checkpoint, GC, a discard, close, a
//! read of a sector the record covers) first waits for it (`State::settle`),
//! so the media sees exactly the same sequence of writes and flushes as
//! without write-behind: crash images and recovery are unchanged. What
//! changes is when a write error is seen: by the next call that waits, which
//! then fails the device (fail-stop). Nothing is acknowledged as durable
//! before `flush`, which waits for the write and then flushes the media.
//!
//! Memory: the record's buffer travels to the thread and comes back as the
//! spare; with the batch buffer that makes at most two.

use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::media::{AlignedBuf, Media};

/// One piece of a record: `n` sectors written at media sector `phys` from
/// sector `v` of the record.
#[derive(Clone, Copy, Debug)]
pub struct RecordPiece {
    pub phys: u64,
    pub v: u64,
    pub n: u64,
}

/// The writer side of a `LogDevice` with write-behind on.
pub struct WriteBehind {
    /// The device's media, shared with the writer thread.
    media: Arc<dyn Media>,
    inflight: Option<InFlight>,
    /// The buffer of the last finished write, for the next swap.
    spare: Option<AlignedBuf>,
}

/// The record being written: its media sectors (for reads that must wait)
/// and the thread, which hands the buffer back with the outcome.
struct InFlight {
    pieces: Vec<RecordPiece>,
    handle: Option<JoinHandle<(AlignedBuf, io::Result<()>)>>,
}

impl Drop for InFlight {
    /// A device dropped without `close` still never leaves a write running
    /// behind it (a new open of the same media must see it finished).
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl WriteBehind {
    pub fn new(media: Arc<dyn Media>) -> Self {
        Self {
            media,
            inflight: None,
            spare: None,
        }
    }

    /// True if `m` is the media this writer writes to (debug checks).
    pub fn is_media(&self, m: &dyn Media) -> bool {
        std::ptr::addr_eq(Arc::as_ptr(&self.media), m as *const dyn Media)
    }

    /// Whether a write is in flight.
    pub fn busy(&self) -> bool {
        self.inflight.is_some()
    }

    /// Whether the write in flight covers any of media sectors
    /// `phys..phys + n`.
    pub fn overlaps(&self, phys: u64, n: u64) -> bool {
        self.inflight.as_ref().is_some_and(|w| {
            w.pieces
                .iter()
                .any(|p| p.phys < phys + n && phys < p.phys + p.n)
        })
    }

    /// A buffer of `capacity` bytes to continue the batch in: the spare if
    /// there is one. Called only with no write in flight, so the batch
    /// buffer plus this one are the only two.
    pub fn take_spare(&mut self, capacity: usize) -> AlignedBuf {
        debug_assert!(!self.busy(), "a spare buffer while a write is in flight");
        match self.spare.take() {
            Some(b) if b.capacity() >= capacity => b,
            _ => AlignedBuf::with_capacity(0, capacity),
        }
    }

    /// Starts writing the record that begins at byte `start` of `buf`, in
    /// `pieces` of `ss`-byte sectors. No write may be in flight.
    pub fn start(
        &mut self,
        buf: AlignedBuf,
        start: usize,
        pieces: Vec<RecordPiece>,
        ss: u64,
    ) -> io::Result<()> {
        assert!(!self.busy(), "two write-behind writes in flight");
        let media = Arc::clone(&self.media);
        let work = pieces.clone();
        let handle = std::thread::Builder::new()
            .name("atomfs-write-behind".into())
            .spawn(move || {
                let mut r = Ok(());
                for p in &work {
                    let from = start + (p.v * ss) as usize;
                    r = media.write_at(p.phys * ss, &buf[from..from + (p.n * ss) as usize]);
                    if r.is_err() {
                        break;
                    }
                }
                (buf, r)
            })?;
        self.inflight = Some(InFlight {
            pieces,
            handle: Some(handle),
        });
        Ok(())
    }

    /// Waits for the write in flight, if any, and returns its outcome. Its
    /// buffer becomes the spare.
    pub fn wait(&mut self) -> io::Result<()> {
        let Some(mut w) = self.inflight.take() else {
            return Ok(());
        };
        let handle = w.handle.take().expect("an in-flight write has a thread");
        match handle.join() {
            Ok((buf, r)) => {
                self.spare = Some(buf);
                r
            }
            Err(_) => Err(io::Error::other("write-behind thread panicked")),
        }
    }
}
