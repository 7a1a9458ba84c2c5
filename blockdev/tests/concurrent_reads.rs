//! Reads go to the media after `LogDevice` lets its state lock go, so that
//! file reads run in parallel. What they resolved must stay on the media
//! until they are done: the only release of a segment (a checkpoint) waits
//! for reads in flight.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use atomic_api::{AtomicDevice, Request};
use blockdev::{DiscardMode, FormatOptions, LogDevice, Media, SimMedia};

/// A `SimMedia` whose data reads (more than one sector) can be held at a
/// gate, or slowed down, between the call and the moment it copies the
/// data out: the state a read sees is the media's at the end of the delay.
#[derive(Clone)]
struct HeldReads {
    inner: SimMedia,
    gate: Arc<(Mutex<Gate>, Condvar)>,
    delay: Duration,
    reads: Arc<AtomicU64>,
    flushes: Arc<AtomicU64>,
    discards: Arc<AtomicU64>,
}

#[derive(Default)]
struct Gate {
    armed: bool,
    entered: bool,
}

impl HeldReads {
    fn new(inner: SimMedia, delay: Duration) -> Self {
        Self {
            inner,
            gate: Arc::default(),
            delay,
            reads: Arc::default(),
            flushes: Arc::default(),
            discards: Arc::default(),
        }
    }

    fn arm(&self) {
        self.gate.0.lock().unwrap().armed = true;
    }

    fn wait_entered(&self) {
        let (lock, cv) = &*self.gate;
        let _g = cv.wait_while(lock.lock().unwrap(), |g| !g.entered).unwrap();
    }

    fn open(&self) {
        let (lock, cv) = &*self.gate;
        lock.lock().unwrap().armed = false;
        cv.notify_all();
    }
}

impl Media for HeldReads {
    fn sector_size(&self) -> u32 {
        self.inner.sector_size()
    }
    fn len_bytes(&self) -> u64 {
        self.inner.len_bytes()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if buf.len() > self.sector_size() as usize {
            self.reads.fetch_add(1, Ordering::Relaxed);
            let (lock, cv) = &*self.gate;
            let mut g = lock.lock().unwrap();
            if g.armed {
                g.entered = true;
                cv.notify_all();
                let _g = cv.wait_while(g, |g| g.armed).unwrap();
            } else {
                drop(g);
            }
            std::thread::sleep(self.delay);
        }
        self.inner.read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.inner.write_at(offset, data)
    }
    fn flush(&self) -> io::Result<()> {
        self.flushes.fetch_add(1, Ordering::SeqCst);
        self.inner.flush()
    }
    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.discards.fetch_add(1, Ordering::SeqCst);
        self.inner.discard(offset, len)
    }
    fn describe(&self) -> String {
        "held-reads".into()
    }
}

const SS: u32 = 512;

/// Every sector says which lba and version it holds, so a read can tell a
/// right sector from zeros or another lba's data.
fn sector(lba: u64, version: u64) -> Vec<u8> {
    let mut s = vec![0u8; SS as usize];
    let mut x = lba.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ version.wrapping_mul(31) ^ 1;
    for (i, w) in s.chunks_exact_mut(8).enumerate() {
        let v = match i {
            0 => lba,
            1 => version,
            _ => {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            }
        };
        w.copy_from_slice(&v.to_le_bytes());
    }
    s
}

fn check_sector(lba: u64, got: &[u8]) -> Result<(), String> {
    let version = u64::from_le_bytes(got[8..16].try_into().unwrap());
    if got == sector(lba, version).as_slice() {
        Ok(())
    } else {
        let head = u64::from_le_bytes(got[..8].try_into().unwrap());
        Err(format!(
            "lba {lba}: read a sector that is no version of it (starts with {head})"
        ))
    }
}

fn write_range(dev: &impl AtomicDevice, lba: u64, n: u64, version: u64) {
    let mut data = Vec::with_capacity((n * u64::from(SS)) as usize);
    for l in lba..lba + n {
        data.extend_from_slice(&sector(l, version));
    }
    let mut req = Request::new();
    req.write(lba, data);
    dev.submit(req).unwrap();
}

/// The scheduler state of thread `tid` of this process (`R`, `S`, `D`...),
/// from `/proc/self/task/TID/stat`.
fn thread_state(tid: i32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"))
        .unwrap_or_else(|e| panic!("thread {tid}: {e}"));
    // "tid (comm) S ...": the comm may hold spaces and parentheses.
    let after = &stat[stat.rfind(')').expect("comm in stat") + 1..];
    after.trim_start().chars().next().expect("state in stat")
}

/// Deterministic, without a timing window: the checkpoint runs while a read
/// is held at the media, and the test waits until the checkpoint thread has
/// flushed the checkpoint and then either finished or gone to sleep. Past
/// its flushes a checkpoint has nothing to sleep on but the readers guard
/// (the held read owns no lock it needs), so asleep means it is waiting
/// for the read, and finished means it released segments under it.
#[test]
fn a_checkpoint_waits_for_reads_in_flight() {
    let media = HeldReads::new(SimMedia::new(SS, 4 << 20), Duration::ZERO);
    let opts = FormatOptions {
        segment_size_bytes: 64 << 10,
        write_behind: Some(false),
        ..FormatOptions::default()
    };
    let dev = LogDevice::format(media.clone(), &opts).unwrap();
    write_range(&dev, 0, 16, 1);
    dev.flush().unwrap();
    dev.checkpoint().unwrap();
    media.arm();
    let tid = std::sync::atomic::AtomicI32::new(0);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut buf = vec![0u8; 16 * SS as usize];
            dev.read(0, &mut buf).unwrap();
            buf
        });
        media.wait_entered();
        let flushes_before = media.flushes.load(Ordering::SeqCst);
        let discards_before = media.discards.load(Ordering::SeqCst);
        let ckpt = s.spawn(|| {
            // SAFETY: gettid has no preconditions.
            tid.store(unsafe { libc::gettid() }, Ordering::SeqCst);
            write_range(&dev, 100, 4, 1);
            dev.checkpoint().unwrap();
        });
        let mut polls = 0u32;
        let asleep = loop {
            if ckpt.is_finished() {
                break false;
            }
            let t = tid.load(Ordering::SeqCst);
            if t != 0
                && media.flushes.load(Ordering::SeqCst) >= flushes_before + 2
                && thread_state(t) == 'S'
            {
                break true;
            }
            polls += 1;
            assert!(
                polls < 60_000,
                "the checkpoint neither finished nor waited within a minute"
            );
            std::thread::sleep(Duration::from_millis(1));
        };
        let discarded = media.discards.load(Ordering::SeqCst) - discards_before;
        media.open();
        let buf = reader.join().unwrap();
        ckpt.join().unwrap();
        assert!(
            asleep,
            "the checkpoint finished while a read was still reading the media"
        );
        assert_eq!(discarded, 0, "segments were discarded under a read");
        assert!(
            media.discards.load(Ordering::SeqCst) > discards_before,
            "the checkpoint released nothing: the test proves nothing"
        );
        for (i, got) in buf.chunks_exact(SS as usize).enumerate() {
            check_sector(i as u64, got).unwrap();
        }
    });
}

/// Readers on two threads against a writer that keeps the cleaner and
/// checkpoints busy on a tiny device whose discards zero: every read,
/// slowed down so that segments are cleaned, released and discarded while
/// it is in flight, must still return a valid version of every sector.
#[test]
fn reads_racing_cleaning_and_checkpoints_see_written_data() {
    let sim = SimMedia::new(SS, 2 << 20);
    sim.set_discard_mode(DiscardMode::Zero);
    let media = HeldReads::new(sim, Duration::from_micros(300));
    let opts = FormatOptions {
        segment_size_bytes: 64 << 10,
        overprovision_percent: 30,
        checkpoint_interval_bytes: Some(128 << 10),
        gc_batch_segments: Some(0),
        write_behind: Some(false),
        ..FormatOptions::default()
    };
    let dev = LogDevice::format(media.clone(), &opts).unwrap();
    let space = dev.space();
    let lbas = space.capacity_bytes / u64::from(SS) * 6 / 10;
    let mut lba = 0;
    while lba < lbas {
        let n = 64.min(lbas - lba);
        write_range(&dev, lba, n, 0);
        lba += n;
    }
    dev.flush().unwrap();
    let before = dev.stats();
    let done = std::sync::atomic::AtomicBool::new(false);
    let errors = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let (dev, done, errors) = (&dev, &done, &errors);
            s.spawn(move || {
                let mut x = 0x1234_5678 + t;
                while !done.load(Ordering::Relaxed) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let n = 2 + x % 31;
                    let at = (x >> 8) % (lbas - n);
                    let mut buf = vec![0u8; (n * u64::from(SS)) as usize];
                    dev.read(at, &mut buf).unwrap();
                    for (i, got) in buf.chunks_exact(SS as usize).enumerate() {
                        if let Err(e) = check_sector(at + i as u64, got) {
                            errors.lock().unwrap().push(e);
                        }
                    }
                }
            });
        }
        let mut x = 99u64;
        for version in 1..=3000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let n = 1 + x % 8;
            write_range(&dev, (x >> 8) % (lbas - n), n, version);
            if version % 16 == 0 {
                dev.flush().unwrap();
            }
        }
        done.store(true, Ordering::Relaxed);
    });
    let errors = errors.into_inner().unwrap();
    assert!(
        errors.is_empty(),
        "{} bad sectors, first: {}",
        errors.len(),
        errors[0]
    );
    let d = dev.stats() - before;
    assert!(
        d.media_gc_bytes > 0,
        "the writer never made the cleaner run"
    );
    assert!(
        media.reads.load(Ordering::Relaxed) > 100,
        "too few reads raced the cleaner"
    );
    dev.verify().unwrap();
}
