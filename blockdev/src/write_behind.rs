//! Write-behind: a finished batch record is written by a writer thread
//! while the caller fills the next batch in another buffer.
//!
//! The writer thread writes the records it is given one at a time, in the
//! order given, and every other media access of the device (a record
//! written by the caller itself, a flush, a checkpoint, GC, a discard,
//! close, a read of a sector a queued record covers) first waits for all of
//! them (`State::settle`), so the media sees exactly the same sequence of
//! writes and flushes as without write-behind: crash images and recovery
//! are unchanged. Up to [`MAX_IN_FLIGHT`] records may be queued or being
//! written, so that the writer has the next one ready when it finishes one
//! (handing over one at a time left the media idle for two thread wake-ups
//! per record). What changes is when a write error is seen: by the next
//! call that waits, which then fails the device (fail-stop); the writer
//! writes nothing after a failed write. Nothing is acknowledged as durable
//! before `flush`, which waits for the writes and then flushes the media.
//!
//! Memory: a record's buffer travels to the thread and comes back as a
//! spare; with the batch buffer that makes at most `MAX_IN_FLIGHT + 1`.
//!
//! Only full batches go behind (a write started from `submit`); `flush` and
//! `checkpoint` write their batch themselves, since they wait for it anyway.

use std::collections::VecDeque;
use std::io;
use std::sync::{mpsc, Arc};
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

/// Records queued for or being written by the writer thread, at most.
pub const MAX_IN_FLIGHT: usize = 2;

/// The writer side of a `LogDevice` with write-behind on: one long-lived
/// writer thread (started at the first write), fed records in order.
/// (A thread per record cost a thread start per record, about a
/// millisecond each on a loaded machine.)
pub struct WriteBehind {
    /// The device's media, shared with the writer thread.
    media: Arc<dyn Media>,
    writer: Option<Writer>,
    /// Media sectors of each record queued or being written, oldest first
    /// (reads of them must wait).
    inflight: VecDeque<Vec<RecordPiece>>,
    /// Buffers of finished writes, for the next swaps.
    spares: Vec<AlignedBuf>,
}

/// A record to write: `pieces` of `ss`-byte sectors of `buf` from byte
/// `start`.
struct Job {
    buf: AlignedBuf,
    start: usize,
    pieces: Vec<RecordPiece>,
    ss: u64,
}

/// The writer thread and its two channels: records in, buffers (with the
/// outcome of their write) back.
struct Writer {
    jobs: Option<mpsc::SyncSender<Job>>,
    done: mpsc::Receiver<(AlignedBuf, io::Result<()>)>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    fn spawn(media: Arc<dyn Media>) -> io::Result<Self> {
        let (jobs, job_rx) = mpsc::sync_channel::<Job>(MAX_IN_FLIGHT);
        let (done_tx, done) = mpsc::sync_channel(MAX_IN_FLIGHT);
        let thread = std::thread::Builder::new()
            .name("atomfs-write-behind".into())
            .spawn(move || {
                // After a failed write the records behind it are not
                // written: the device is failing, and a record after a hole
                // in the log is never replayed anyway.
                let mut failed = false;
                while let Ok(job) = job_rx.recv() {
                    let r = if failed {
                        Err(io::Error::other(
                            "not written after an earlier failed write",
                        ))
                    } else {
                        write(&*media, &job)
                    };
                    failed |= r.is_err();
                    if done_tx.send((job.buf, r)).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Self {
            jobs: Some(jobs),
            done,
            thread: Some(thread),
        })
    }
}

fn write(media: &dyn Media, job: &Job) -> io::Result<()> {
    for p in &job.pieces {
        let from = job.start + (p.v * job.ss) as usize;
        media.write_at(
            p.phys * job.ss,
            &job.buf[from..from + (p.n * job.ss) as usize],
        )?;
    }
    Ok(())
}

impl Drop for Writer {
    /// A device dropped without `close` still never leaves a write running
    /// behind it (a new open of the same media must see it finished): the
    /// thread finishes the job it has, sees the channel closed and exits.
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl WriteBehind {
    pub fn new(media: Arc<dyn Media>) -> Self {
        Self {
            media,
            writer: None,
            inflight: VecDeque::new(),
            spares: Vec::new(),
        }
    }

    /// True if `m` is the media this writer writes to (debug checks).
    pub fn is_media(&self, m: &dyn Media) -> bool {
        std::ptr::addr_eq(Arc::as_ptr(&self.media), m as *const dyn Media)
    }

    /// Whether a write is queued or in progress.
    pub fn busy(&self) -> bool {
        !self.inflight.is_empty()
    }

    /// Whether another record must wait for the oldest one first.
    pub fn full(&self) -> bool {
        self.inflight.len() >= MAX_IN_FLIGHT
    }

    /// Whether a queued or running write covers any of media sectors
    /// `phys..phys + n`.
    pub fn overlaps(&self, phys: u64, n: u64) -> bool {
        self.inflight
            .iter()
            .flatten()
            .any(|p| p.phys < phys + n && phys < p.phys + p.n)
    }

    /// A buffer of `capacity` bytes to continue the batch in: a spare if
    /// there is one.
    pub fn take_spare(&mut self, capacity: usize) -> AlignedBuf {
        debug_assert!(!self.full(), "a spare buffer with the queue full");
        match self.spares.pop() {
            Some(b) if b.capacity() >= capacity => b,
            _ => AlignedBuf::with_capacity(0, capacity),
        }
    }

    /// Queues the record that begins at byte `start` of `buf`, in `pieces`
    /// of `ss`-byte sectors, behind those already queued. The queue must
    /// not be full.
    pub fn start(
        &mut self,
        buf: AlignedBuf,
        start: usize,
        pieces: Vec<RecordPiece>,
        ss: u64,
    ) -> io::Result<()> {
        assert!(
            !self.full(),
            "more than {MAX_IN_FLIGHT} write-behind writes"
        );
        if self.writer.is_none() {
            self.writer = Some(Writer::spawn(Arc::clone(&self.media))?);
        }
        let jobs = self
            .writer
            .as_ref()
            .and_then(|w| w.jobs.as_ref())
            .expect("a started writer has a job channel");
        let job = Job {
            buf,
            start,
            pieces: pieces.clone(),
            ss,
        };
        jobs.send(job)
            .map_err(|_| io::Error::other("write-behind thread is gone"))?;
        self.inflight.push_back(pieces);
        Ok(())
    }

    /// Waits for the oldest queued write, if any, and returns its outcome.
    /// Its buffer becomes a spare.
    pub fn wait_oldest(&mut self) -> io::Result<()> {
        if self.inflight.pop_front().is_none() {
            return Ok(());
        }
        let writer = self
            .writer
            .as_ref()
            .expect("a write in flight has a writer");
        match writer.done.recv() {
            Ok((buf, r)) => {
                self.spares.push(buf);
                r
            }
            Err(_) => Err(io::Error::other("write-behind thread panicked")),
        }
    }

    /// Waits for every queued write; the first failure is the outcome.
    pub fn wait(&mut self) -> io::Result<()> {
        let mut outcome = Ok(());
        while self.busy() {
            let r = self.wait_oldest();
            if outcome.is_ok() {
                outcome = r;
            }
        }
        outcome
    }
}
