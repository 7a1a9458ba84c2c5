//! Group commit across threads: `LogDevice::flush` flushes the media
//! without its lock, and a flush whose requests a flush in progress covers
//! waits for that one. Each flush must still make every request submitted
//! before it durable.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::Duration;

use atomic_api::conformance::pattern;
use atomic_api::{AtomicDevice, Request};
use blockdev::{FormatOptions, LogDevice, Media, OpenOptions, SimMedia};

/// A `SimMedia` whose flush takes `delay`, like a disk's cache flush, and
/// can be held at a gate until the test opens it.
#[derive(Clone)]
struct SlowFlush {
    inner: SimMedia,
    delay: Duration,
    flushes: Arc<AtomicU64>,
    /// (held, entered): while `held`, a flush waits; `entered` says one
    /// is waiting.
    gate: Arc<(Mutex<(bool, bool)>, Condvar)>,
}

impl SlowFlush {
    fn new(delay: Duration) -> SlowFlush {
        SlowFlush {
            inner: SimMedia::new(SS, 16 << 20),
            delay,
            flushes: Arc::default(),
            gate: Arc::default(),
        }
    }
}

impl Media for SlowFlush {
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
        self.inner.write_at(offset, data)
    }
    fn flush(&self) -> io::Result<()> {
        {
            let (lock, cv) = &*self.gate;
            let mut g = lock.lock().unwrap();
            g.1 = true;
            cv.notify_all();
            let _g = cv.wait_while(g, |g| g.0).unwrap();
        }
        std::thread::sleep(self.delay);
        self.inner.flush()?;
        self.flushes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.inner.discard(offset, len)
    }
    fn describe(&self) -> String {
        "slow-flush".into()
    }
}

const SS: u32 = 512;
const THREADS: u64 = 8;
const ROUNDS: u64 = 12;

/// A small device on `media`, every write made by the caller (no
/// write-behind thread), so flushes reach the media in call order.
fn format(media: &SlowFlush) -> LogDevice<SlowFlush> {
    LogDevice::format(
        media.clone(),
        &FormatOptions {
            segment_size_bytes: 256 << 10,
            write_behind: Some(false),
            ..FormatOptions::default()
        },
    )
    .unwrap()
}

#[test]
fn flushes_from_many_threads_share_media_flushes_and_each_is_durable() {
    let media = SlowFlush::new(Duration::from_millis(3));
    let dev = format(&media);
    let before = media.flushes.load(Ordering::Relaxed);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (dev, media) = (&dev, &media);
            s.spawn(move || {
                let lba = t * 1000;
                for round in 1..=ROUNDS {
                    let tag = (t * ROUNDS + round) as u8;
                    let mut r = Request::new();
                    r.write(lba, pattern(SS as usize, lba, 8, tag));
                    dev.submit(r).unwrap();
                    dev.flush().unwrap();
                    // What a crash now would leave holds this request.
                    let back = LogDevice::open(
                        media.inner.durable(),
                        &OpenOptions {
                            read_only: true,
                            ..OpenOptions::default()
                        },
                    )
                    .unwrap();
                    let mut buf = vec![0u8; 8 * SS as usize];
                    back.read(lba, &mut buf).unwrap();
                    assert!(
                        buf == pattern(SS as usize, lba, 8, tag),
                        "thread {t} round {round}: flush returned before its write was durable"
                    );
                }
            });
        }
    });
    let flush_calls = THREADS * ROUNDS;
    let media_flushes = media.flushes.load(Ordering::Relaxed) - before;
    println!("group commit: {flush_calls} flush calls from {THREADS} threads, {media_flushes} media flushes of 3 ms");
    assert!(
        media_flushes < flush_calls * 3 / 4,
        "{media_flushes} media flushes for {flush_calls} flush calls: no group commit"
    );
    assert_eq!(dev.stats().flushes, flush_calls);
}

/// Submits and reads go on while a flush is at the media: with the flush
/// held there, a submit and a read of what it wrote complete.
#[test]
fn submits_do_not_wait_for_a_media_flush() {
    let media = SlowFlush::new(Duration::ZERO);
    let dev = format(&media);
    let mut r = Request::new();
    r.write(0, pattern(SS as usize, 0, 8, 1));
    dev.submit(r).unwrap();
    let (lock, cv) = &*media.gate;
    lock.lock().unwrap().0 = true;
    std::thread::scope(|s| {
        let flusher = s.spawn(|| dev.flush().unwrap());
        drop(cv.wait_while(lock.lock().unwrap(), |g| !g.1).unwrap());
        let (done_tx, done) = mpsc::channel();
        let dev = &dev;
        s.spawn(move || {
            let mut r = Request::new();
            r.write(100, pattern(SS as usize, 100, 8, 2));
            dev.submit(r).unwrap();
            let mut buf = vec![0u8; 8 * SS as usize];
            dev.read(100, &mut buf).unwrap();
            done_tx.send(buf).unwrap();
        });
        // Generous: it takes microseconds unless it waits for the flush.
        let got = done.recv_timeout(Duration::from_secs(10));
        lock.lock().unwrap().0 = false;
        cv.notify_all();
        flusher.join().unwrap();
        let buf = got.expect("the submit waited for the media flush");
        assert_eq!(buf, pattern(SS as usize, 100, 8, 2));
    });
}
