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
//!
//! Only full batches go behind (a write started from `submit`); `flush` and
//! `checkpoint` write their batch themselves, since they wait for it anyway.

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

/// The writer side of a `LogDevice` with write-behind on: one long-lived
/// writer thread (started at the first write), fed one record at a time.
/// (A thread per record cost a thread start per record, about a
/// millisecond each on a loaded machine.)
pub struct WriteBehind {
    /// The device's media, shared with the writer thread.
    media: Arc<dyn Media>,
    writer: Option<Writer>,
    /// Media sectors of the record in flight (reads of them must wait).
    inflight: Option<Vec<RecordPiece>>,
    /// The buffer of the last finished write, for the next swap.
    spare: Option<AlignedBuf>,
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
        let (jobs, job_rx) = mpsc::sync_channel::<Job>(1);
        let (done_tx, done) = mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("atomfs-write-behind".into())
            .spawn(move || {
                while let Ok(job) = job_rx.recv() {
                    let r = write(&*media, &job);
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
        self.inflight.as_ref().is_some_and(|pieces| {
            pieces
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
        self.inflight = Some(pieces);
        Ok(())
    }

    /// Waits for the write in flight, if any, and returns its outcome. Its
    /// buffer becomes the spare.
    pub fn wait(&mut self) -> io::Result<()> {
        if self.inflight.take().is_none() {
            return Ok(());
        }
        let writer = self
            .writer
            .as_ref()
            .expect("a write in flight has a writer");
        match writer.done.recv() {
            Ok((buf, r)) => {
                self.spare = Some(buf);
                r
            }
            Err(_) => Err(io::Error::other("write-behind thread panicked")),
        }
    }
}
