//! Write-behind (a batch record written on a writer thread while the caller
//! fills the next batch): the threaded path on a real image file and on a
//! media that makes every write slow, so that it is really in flight while
//! the device goes on, and with failing writes.
//!
//! (Odd seeds of the crash explorer and of the fault tests also run with
//! write-behind on; see `support::Config::for_seed`.)

mod support;

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atomic_api::conformance::{assert_same_content, pattern};
use atomic_api::{AtomicDevice, Error, MemDevice, Request};
use blockdev::{
    CrashOptions, FileMedia, FileMediaOptions, FormatOptions, LogDevice, Media, OpenOptions,
    SimFault, SimMedia,
};
use support::{check_image, generate, probe_geometry, run_on, Config, Verdict};

/// A `SimMedia` whose writes take `delay`, and which records any media
/// call that overlaps a write in progress where the device must not let it:
/// another write, a flush, a discard, or a read of the sectors being
/// written.
#[derive(Clone)]
struct SlowMedia {
    inner: SimMedia,
    delay: Duration,
    /// The byte range being written, if a write is in progress.
    writing: Arc<Mutex<Option<(u64, u64)>>>,
    /// Writes that found another media call in progress (or vice versa).
    violations: Arc<Mutex<Vec<String>>>,
    /// Calls that arrived while a write was in progress and were allowed
    /// (reads elsewhere): evidence that writes really ran behind.
    overlapped_reads: Arc<AtomicU64>,
    /// Writes issued from a thread other than the creating one.
    off_thread_writes: Arc<AtomicU64>,
    owner: std::thread::ThreadId,
}

impl SlowMedia {
    fn new(inner: SimMedia, delay: Duration) -> Self {
        Self {
            inner,
            delay,
            writing: Arc::default(),
            violations: Arc::default(),
            overlapped_reads: Arc::default(),
            off_thread_writes: Arc::default(),
            owner: std::thread::current().id(),
        }
    }

    fn busy(&self, what: &str) {
        if let Some((at, len)) = *self.writing.lock().unwrap() {
            self.violations
                .lock()
                .unwrap()
                .push(format!("{what} while writing {at}+{len}"));
        }
    }
}

impl Media for SlowMedia {
    fn sector_size(&self) -> u32 {
        self.inner.sector_size()
    }
    fn len_bytes(&self) -> u64 {
        self.inner.len_bytes()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        if let Some((at, len)) = *self.writing.lock().unwrap() {
            if offset < at + len && at < offset + buf.len() as u64 {
                self.violations.lock().unwrap().push(format!(
                    "read {offset}+{} while writing {at}+{len}",
                    buf.len()
                ));
            } else {
                self.overlapped_reads.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.inner.read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.busy(&format!("write {offset}+{}", data.len()));
        if std::thread::current().id() != self.owner {
            self.off_thread_writes.fetch_add(1, Ordering::Relaxed);
        }
        *self.writing.lock().unwrap() = Some((offset, data.len() as u64));
        std::thread::sleep(self.delay);
        let r = self.inner.write_at(offset, data);
        *self.writing.lock().unwrap() = None;
        r
    }
    fn flush(&self) -> io::Result<()> {
        self.busy("flush");
        self.inner.flush()
    }
    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        self.busy(&format!("discard {offset}+{len}"));
        self.inner.discard(offset, len)
    }
    fn describe(&self) -> String {
        "slow-sim".into()
    }
}

#[test]
fn on_by_default_for_file_media_only() {
    let sim = LogDevice::format(
        SimMedia::new(512, 16384 + 16 * (64 << 10)),
        &FormatOptions {
            segment_size_bytes: 64 << 10,
            ..FormatOptions::default()
        },
    )
    .unwrap();
    assert!(!sim.write_behind(), "SimMedia must stay synchronous");
    let dir = tempfile::tempdir_in("/var/tmp").unwrap_or_else(|_| tempfile::tempdir().unwrap());
    let path = dir.path().join("wb.img");
    blockdev::create_image(&path, 8 << 20, false).unwrap();
    let options = FileMediaOptions {
        image_sector_size: Some(512),
        ..FileMediaOptions::default()
    };
    let media = FileMedia::open_with(&path, &options).unwrap();
    let dev = LogDevice::format(
        media,
        &FormatOptions {
            segment_size_bytes: 64 << 10,
            ..FormatOptions::default()
        },
    )
    .unwrap();
    assert!(dev.write_behind());
    dev.close().unwrap();
    let media = FileMedia::open_with(&path, &options).unwrap();
    let ro = LogDevice::open(
        media,
        &OpenOptions {
            read_only: true,
            ..OpenOptions::default()
        },
    )
    .unwrap();
    assert!(!ro.write_behind(), "a read-only device never writes");
}

/// Random overwrites on an image file with small batches (many records go
/// behind), each read back at once (read-your-writes while the previous
/// record is in flight), then close, reopen and compare.
#[test]
fn image_file_read_your_writes_and_reopen() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap_or_else(|_| tempfile::tempdir().unwrap());
    let path = dir.path().join("wb.img");
    blockdev::create_image(&path, 32 << 20, false).unwrap();
    let options = FileMediaOptions {
        image_sector_size: Some(512),
        ..FileMediaOptions::default()
    };
    let format = FormatOptions {
        segment_size_bytes: 256 << 10,
        buffer_bytes: Some(64 << 10),
        checkpoint_interval_bytes: Some(2 << 20),
        ..FormatOptions::default()
    };
    let dev = LogDevice::format(FileMedia::open_with(&path, &options).unwrap(), &format).unwrap();
    assert!(dev.write_behind());
    let model = MemDevice::new(512, u64::MAX / 2);
    let mut x = 12345u64;
    let mut buf = Vec::new();
    for i in 0..3000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let lba = x % 8192;
        let n = 1 + (x >> 20) % 16;
        let data = pattern(512, lba, n, (i % 251) as u8);
        for d in [&dev as &dyn AtomicDevice, &model] {
            let mut r = Request::new();
            r.write(lba, data.clone());
            d.submit(r).unwrap();
        }
        buf.resize(data.len(), 0);
        dev.read(lba, &mut buf).unwrap();
        assert_eq!(buf, data, "request {i}: read back at once");
        if i % 400 == 399 {
            dev.flush().unwrap();
        }
    }
    assert_same_content(&dev, &model, "live");
    dev.verify().unwrap();
    dev.close().unwrap();
    let dev = LogDevice::open(
        FileMedia::open_with(&path, &options).unwrap(),
        &OpenOptions::default(),
    )
    .unwrap();
    assert_same_content(&dev, &model, "after reopen");
}

/// The generated streams of the crash explorer (GC, checkpoints, trims,
/// multi-segment requests) over a media whose writes take a while: no other
/// media call may overlap a write in progress, except reads elsewhere; the
/// live device matches the model; crash images recover within bounds.
#[test]
fn slow_writes_never_overlap_other_media_calls() {
    let mut off_thread = 0;
    let mut images = 0;
    for seed in [1u64, 5, 9, 13] {
        let cfg = Config::for_seed(seed, 250);
        assert_eq!(cfg.format.write_behind, Some(true));
        let (cap, max_req) = probe_geometry(&cfg);
        let ops = generate(&cfg, cap, max_req);
        let slow = Mutex::new(None);
        let run = run_on(&cfg, &ops, true, |m| {
            let s = SlowMedia::new(m, Duration::from_micros(300));
            *slow.lock().unwrap() = Some(s.clone());
            s
        });
        let slow = slow.into_inner().unwrap().unwrap();
        let v = slow.violations.lock().unwrap();
        assert!(v.is_empty(), "seed {seed}: {:?}", &v[..v.len().min(5)]);
        off_thread += slow.off_thread_writes.load(Ordering::Relaxed);
        let specs = run.media.crash_specs(&CrashOptions {
            prefixes: true,
            subsets_per_window: 4,
            torn_per_write: 1,
            from: run.format_events,
            seed,
        });
        for (i, spec) in specs.iter().enumerate().step_by(3) {
            if let Verdict::Violation(why) = check_image(&run, spec, i % 5 == 0, false) {
                panic!("seed {seed}: crash image {spec}: {why}");
            }
            images += 1;
        }
    }
    println!("slow write-behind: {off_thread} writes on the writer thread, {images} images");
    assert!(off_thread > 50, "records did not go behind");
}

/// 32 segments of 64 KiB with 16 KiB batches and write-behind on, over a
/// `SimMedia` (returned, for faults and durable images) whose writes take
/// `write_delay`.
fn slow_device(write_delay: Duration) -> (SimMedia, LogDevice<SlowMedia>) {
    let sim = SimMedia::new(512, 16384 + 32 * (64 << 10));
    let dev = LogDevice::format(
        SlowMedia::new(sim.clone(), write_delay),
        &FormatOptions {
            segment_size_bytes: 64 << 10,
            buffer_bytes: Some(16 << 10),
            write_behind: Some(true),
            uuid: Some([7; 16]),
            ..FormatOptions::default()
        },
    )
    .unwrap();
    (sim, dev)
}

/// A media write that fails on the writer thread: the call that issued it
/// has already returned, so the next call reports it (Io), every later one
/// reports `Failed`, no media call follows, and what was flushed before
/// survives.
#[test]
fn failed_write_behind_is_fail_stop() {
    let (sim, dev) = slow_device(Duration::from_millis(2));
    let write = |lba: u64, tag: u8| {
        let mut r = Request::new();
        r.write(lba, pattern(512, lba, 16, tag));
        dev.submit(r)
    };
    for i in 0..8 {
        write(i * 16, 1).unwrap();
    }
    dev.flush().unwrap();
    // Arm: the next media write fails. The batch-full submit hands its
    // record to the writer thread and returns Ok.
    sim.inject(SimFault::WriteError { skip: 0 });
    let mut first_err = None;
    for i in 0..8 {
        if let Err(e) = write(1000 + i * 16, 2) {
            first_err = Some(e);
            break;
        }
    }
    let first_err = match first_err {
        Some(e) => e,
        None => dev.flush().unwrap_err(),
    };
    assert!(matches!(first_err, Error::Io { .. }), "{first_err:?}");
    let events = sim.event_count();
    assert!(matches!(write(5000, 3), Err(Error::Failed { .. })));
    assert!(matches!(dev.flush(), Err(Error::Failed { .. })));
    assert!(matches!(dev.checkpoint(), Err(Error::Failed { .. })));
    let mut buf = vec![0u8; 512];
    assert!(matches!(dev.read(0, &mut buf), Err(Error::Failed { .. })));
    assert_eq!(sim.event_count(), events, "media I/O after the failure");
    assert!(dev.close().is_err());
    sim.clear_faults();
    let back = LogDevice::open(sim.durable(), &OpenOptions::default()).unwrap();
    let mut buf = vec![0u8; 16 * 512];
    for i in 0..8 {
        back.read(i * 16, &mut buf).unwrap();
        assert_eq!(buf, pattern(512, i * 16, 16, 1), "flushed data lost");
    }
}

/// Flush returns only once the record in flight is written and flushed:
/// the durable image holds everything acknowledged by it.
#[test]
fn flush_waits_for_the_write_in_flight() {
    let (sim, dev) = slow_device(Duration::from_millis(3));
    for round in 0..5u8 {
        for i in 0..10u64 {
            let mut r = Request::new();
            r.write(i * 8, pattern(512, i * 8, 8, round));
            dev.submit(r).unwrap();
        }
        dev.flush().unwrap();
        let back = LogDevice::open(
            sim.durable(),
            &OpenOptions {
                read_only: true,
                ..OpenOptions::default()
            },
        )
        .unwrap();
        let mut buf = vec![0u8; 80 * 512];
        back.read(0, &mut buf).unwrap();
        assert_eq!(buf, pattern(512, 0, 80, round), "round {round}");
    }
    dev.close().unwrap();
}
