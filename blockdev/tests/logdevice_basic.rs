//! LogDevice basics: conformance, format/open round trips, crash recovery,
//! GC under a tiny geometry, NoSpace, bad media, the flush byte budget, map
//! memory and fail-stop. Uses a tiny private in-memory media.

use std::alloc::{GlobalAlloc, Layout as AllocLayout, System};
use std::cell::Cell;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use atomic_api::conformance::{assert_same_content, pattern, Harness};
use atomic_api::{AtomicDevice, Error, MemDevice, Request};
use blockdev::{check, FormatOptions, LogDevice, Media, OpenError, OpenOptions};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

// ----------------------------------------------------------- allocation counter

/// Counts the bytes allocated by the current thread (tests run in
/// parallel, so a global counter would mix them up).
struct Counting;

thread_local! {
    static ALLOCATED: Cell<isize> = const { Cell::new(0) };
}

fn allocated() -> isize {
    ALLOCATED.with(|a| a.get())
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: AllocLayout) -> *mut u8 {
        let _ = ALLOCATED.try_with(|a| a.set(a.get() + layout.size() as isize));
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: AllocLayout) -> *mut u8 {
        let _ = ALLOCATED.try_with(|a| a.set(a.get() + layout.size() as isize));
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: AllocLayout) {
        let _ = ALLOCATED.try_with(|a| a.set(a.get() - layout.size() as isize));
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: AllocLayout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATED.try_with(|a| a.set(a.get() + new_size as isize - layout.size() as isize));
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

// ----------------------------------------------------------- test media

/// In-memory media. Keeps every write since the last flush so tests can
/// build crash images; can fail on demand.
#[derive(Clone)]
struct TestMedia {
    inner: Arc<Inner>,
}

struct Inner {
    ss: u32,
    data: Mutex<Vec<u8>>,
    /// Contents as of the last flush.
    durable: Mutex<Vec<u8>>,
    /// Writes since the last flush, in order.
    log: Mutex<Vec<(u64, Vec<u8>)>>,
    writes: AtomicU64,
    /// Keep `durable` and `log` for crash images (costly on big media).
    track: AtomicBool,
    fail_writes: AtomicBool,
    fail_flush: AtomicBool,
}

impl TestMedia {
    fn new(ss: u32, bytes: usize) -> Self {
        Self::from_bytes(ss, vec![0u8; bytes])
    }

    fn from_bytes(ss: u32, bytes: Vec<u8>) -> Self {
        TestMedia {
            inner: Arc::new(Inner {
                ss,
                durable: Mutex::new(bytes.clone()),
                data: Mutex::new(bytes),
                log: Mutex::new(Vec::new()),
                writes: AtomicU64::new(0),
                track: AtomicBool::new(true),
                fail_writes: AtomicBool::new(false),
                fail_flush: AtomicBool::new(false),
            }),
        }
    }

    /// A copy of everything written (what a clean process exit leaves).
    fn image(&self) -> TestMedia {
        Self::from_bytes(self.inner.ss, self.inner.data.lock().unwrap().clone())
    }

    /// The durable contents plus the first `k` writes since the last flush.
    fn crash_image(&self, k: usize) -> TestMedia {
        let mut bytes = self.inner.durable.lock().unwrap().clone();
        for (at, data) in self.inner.log.lock().unwrap().iter().take(k) {
            bytes[*at as usize..*at as usize + data.len()].copy_from_slice(data);
        }
        Self::from_bytes(self.inner.ss, bytes)
    }

    /// A big media without crash tracking.
    fn big(bytes: usize) -> Self {
        let m = Self::new(512, bytes);
        m.inner.track.store(false, Ordering::Relaxed);
        m
    }

    fn pending_writes(&self) -> usize {
        self.inner.log.lock().unwrap().len()
    }

    fn bytes(&self) -> Vec<u8> {
        self.inner.data.lock().unwrap().clone()
    }
}

impl Media for TestMedia {
    fn sector_size(&self) -> u32 {
        self.inner.ss
    }
    fn len_bytes(&self) -> u64 {
        self.inner.data.lock().unwrap().len() as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let d = self.inner.data.lock().unwrap();
        let end = offset as usize + buf.len();
        if end > d.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past end",
            ));
        }
        buf.copy_from_slice(&d[offset as usize..end]);
        Ok(())
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        if self.inner.fail_writes.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected write error"));
        }
        assert_eq!(offset % u64::from(self.inner.ss), 0, "unaligned write");
        assert_eq!(
            data.len() % self.inner.ss as usize,
            0,
            "partial-sector write"
        );
        let mut d = self.inner.data.lock().unwrap();
        let end = offset as usize + data.len();
        if end > d.len() {
            return Err(io::Error::other("write past end"));
        }
        d[offset as usize..end].copy_from_slice(data);
        if self.inner.track.load(Ordering::Relaxed) {
            self.inner.log.lock().unwrap().push((offset, data.to_vec()));
        }
        self.inner.writes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        if self.inner.fail_flush.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected flush error"));
        }
        if self.inner.track.load(Ordering::Relaxed) {
            let d = self.inner.data.lock().unwrap();
            *self.inner.durable.lock().unwrap() = d.clone();
            self.inner.log.lock().unwrap().clear();
        }
        Ok(())
    }
    fn discard(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }
    fn describe(&self) -> String {
        "test-media".into()
    }
}

fn tiny_options() -> FormatOptions {
    FormatOptions {
        segment_size_bytes: 64 << 10,
        checkpoint_interval_bytes: Some(256 << 10),
        ..FormatOptions::default()
    }
}

fn mib_segments() -> FormatOptions {
    FormatOptions {
        segment_size_bytes: 1 << 20,
        ..FormatOptions::default()
    }
}

fn tiny_open() -> OpenOptions {
    OpenOptions {
        checkpoint_interval_bytes: Some(256 << 10),
        ..OpenOptions::default()
    }
}

// ----------------------------------------------------------- conformance

struct LogHarness {
    ss: u32,
}

impl Harness for LogHarness {
    type Device = LogDevice<TestMedia>;

    fn fresh(&self) -> Self::Device {
        let media = TestMedia::new(self.ss, if self.ss == 512 { 4 << 20 } else { 16 << 20 });
        LogDevice::format(media, &tiny_options()).expect("format")
    }

    fn reopen(&self, device: Self::Device) -> Self::Device {
        device.verify().expect("consistent before close");
        let media = device.close().expect("close");
        let dev = LogDevice::open(media, &tiny_open()).expect("open");
        dev.verify().expect("consistent after open");
        dev
    }
}

atomic_api::conformance_tests!(LogHarness { ss: 512 });

#[test]
fn conformance_on_4k_sectors() {
    atomic_api::conformance::run_all(&LogHarness { ss: 4096 });
}

// ----------------------------------------------------------- helpers

fn write(dev: &impl AtomicDevice, lba: u64, sectors: u64, tag: u8) {
    let ss = dev.geometry().sector_size as usize;
    let mut r = Request::new();
    r.write(lba, pattern(ss, lba, sectors, tag));
    dev.submit(r).unwrap();
}

fn random_request(rng: &mut ChaCha8Rng, ss: usize, window: u64) -> Request {
    let mut req = Request::new();
    let mut taken: Vec<(u64, u64)> = Vec::new();
    for _ in 0..rng.gen_range(1..=3) {
        let n = rng.gen_range(1..=64u64);
        let lba = rng.gen_range(0..window - n);
        if taken.iter().any(|&(a, b)| a < lba + n && lba < b) {
            continue;
        }
        taken.push((lba, lba + n));
        if rng.gen_bool(0.15) {
            req.trim(lba, n);
        } else {
            req.write(lba, pattern(ss, lba, n, rng.gen()));
        }
    }
    req
}

// ----------------------------------------------------------- tests

#[test]
fn format_open_round_trip_and_read_only() {
    let media = TestMedia::new(512, 2 << 20);
    let dev = LogDevice::format(media, &tiny_options()).unwrap();
    write(&dev, 5, 3, 1);
    write(&dev, 1 << 50, 1, 2);
    dev.flush().unwrap();
    let media = dev.close().unwrap();
    let writes = media.inner.writes.load(Ordering::SeqCst);
    let ro = LogDevice::open(
        media.clone(),
        &OpenOptions {
            read_only: true,
            ..OpenOptions::default()
        },
    )
    .unwrap();
    let mut buf = vec![0u8; 3 * 512];
    ro.read(5, &mut buf).unwrap();
    assert_eq!(buf, pattern(512, 5, 3, 1));
    assert!(matches!(ro.submit(Request::new()), Err(Error::ReadOnly)));
    assert!(matches!(ro.flush(), Err(Error::ReadOnly)));
    drop(ro.close().unwrap());
    assert_eq!(
        media.inner.writes.load(Ordering::SeqCst),
        writes,
        "read-only open wrote"
    );
    let report = check(&media);
    assert!(report.is_clean(), "{:?}", report.findings);
    assert_eq!(report.mapped_sectors, 4);
}

/// A read-write open followed by reads only leaves nothing for close to
/// write: open's checkpoint already describes the device. Any write, even
/// one that is never flushed, makes close write a checkpoint.
#[test]
fn close_after_reads_only_writes_nothing() {
    let media = TestMedia::new(512, 2 << 20);
    let dev = LogDevice::format(media, &tiny_options()).unwrap();
    write(&dev, 5, 3, 1);
    let media = dev.close().unwrap();
    let dev = LogDevice::open(media.clone(), &tiny_open()).unwrap();
    let after_open = media.inner.writes.load(Ordering::SeqCst);
    let mut buf = vec![0u8; 3 * 512];
    dev.read(5, &mut buf).unwrap();
    dev.flush().unwrap();
    drop(dev.close().unwrap());
    assert_eq!(
        media.inner.writes.load(Ordering::SeqCst),
        after_open,
        "close after reads only wrote"
    );
    let dev = LogDevice::open(media.clone(), &tiny_open()).unwrap();
    dev.read(5, &mut buf).unwrap();
    assert_eq!(buf, pattern(512, 5, 3, 1));
    write(&dev, 9, 1, 2);
    let after_write = media.inner.writes.load(Ordering::SeqCst);
    drop(dev.close().unwrap());
    assert!(media.inner.writes.load(Ordering::SeqCst) > after_write);
    let dev = LogDevice::open(media, &tiny_open()).unwrap();
    dev.read(9, &mut buf[..512]).unwrap();
    assert_eq!(&buf[..512], &pattern(512, 9, 1, 2)[..]);
}

#[test]
fn crash_keeps_flushed_data_and_a_prefix() {
    // Run random requests; at random points take crash images: the durable
    // state plus any prefix of the writes since the last flush. Recovery
    // must give the model state after some request k >= last flushed.
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let media = TestMedia::new(512, 3 << 20);
    let dev = LogDevice::format(media.clone(), &tiny_options()).unwrap();
    let g = dev.geometry();
    let model = MemDevice::with_geometry(g, dev.space().capacity_bytes);
    // Snapshots of the model after every request since the last flush.
    let mut states: Vec<MemDevice> = vec![model.snapshot()];
    let mut images = 0;
    for step in 0..600 {
        let mut req = random_request(&mut rng, 512, 2000);
        if model.space().live_bytes + req.write_bytes() > dev.space().capacity_bytes / 2 {
            req = Request::new();
            req.trim(0, 2000);
        }
        model.submit(req.clone()).unwrap();
        dev.submit(req).unwrap();
        states.push(model.snapshot());
        if rng.gen_bool(0.2) {
            dev.flush().unwrap();
            model.flush().unwrap();
            states = vec![model.snapshot()];
        }
        if step % 7 == 0 {
            let pending = media.pending_writes();
            for k in [0, pending / 2, pending] {
                let crashed = LogDevice::open(media.crash_image(k), &tiny_open())
                    .unwrap_or_else(|e| panic!("step {step}: open of crash image {k}: {e}"));
                crashed.verify().unwrap();
                let ok = states.iter().any(|s| same_content(&crashed, s));
                assert!(
                    ok,
                    "step {step}: crash image {k}/{pending} is no allowed prefix"
                );
                images += 1;
            }
        }
    }
    assert!(images > 100);
}

fn same_content(a: &impl AtomicDevice, b: &impl AtomicDevice) -> bool {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert_same_content(a, b, "x")
    }))
    .is_ok()
}

#[test]
fn gc_under_tiny_geometry_matches_model() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    // 24 segments of 64 KiB.
    let media = TestMedia::new(512, (16 << 10) + 24 * (64 << 10));
    let mut dev = LogDevice::format(media, &tiny_options()).unwrap();
    let g = dev.geometry();
    let cap = dev.space().capacity_bytes;
    let model = MemDevice::with_geometry(g, cap);
    let window = cap / 512 * 7 / 10;
    let mut written = 0u64;
    let mut gc_bytes = 0u64;
    for step in 0..4000u64 {
        let n = rng.gen_range(1..=32u64);
        let lba = rng.gen_range(0..window - n);
        let mut req = Request::new();
        if rng.gen_bool(0.05) {
            req.trim(lba, n);
        } else {
            req.write(lba, pattern(512, lba, n, rng.gen()));
            written += n * 512;
        }
        let a = model.submit(req.clone());
        let b = dev.submit(req);
        assert_eq!(a.is_ok(), b.is_ok(), "step {step}: {b:?} vs {a:?}");
        if rng.gen_bool(0.1) {
            dev.flush().unwrap();
            model.flush().unwrap();
        }
        if step % 1000 == 999 {
            dev.verify().unwrap();
            assert_same_content(&dev, &model, &format!("step {step}"));
            gc_bytes += dev.stats().media_gc_bytes;
            let media = dev.close().unwrap();
            dev = LogDevice::open(media, &tiny_open()).unwrap();
            dev.verify().unwrap();
            assert_same_content(&dev, &model, &format!("step {step} after reopen"));
        }
    }
    assert!(gc_bytes > 0, "GC never ran");
    assert!(
        written > 4 * 24 * (64 << 10),
        "workload too small to force GC"
    );
    let report = check(dev.media());
    assert!(report.is_clean(), "{:?}", report.findings);
}

#[test]
fn gc_crash_images_recover() {
    // Overwrite heavily on a tiny device and reopen crash images (every
    // prefix of the unflushed writes) from time to time.
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let media = TestMedia::new(512, (16 << 10) + 20 * (64 << 10));
    let dev = LogDevice::format(media.clone(), &tiny_options()).unwrap();
    let g = dev.geometry();
    let cap = dev.space().capacity_bytes;
    let model = MemDevice::with_geometry(g, cap);
    let window = cap / 512 * 8 / 10;
    let mut states = vec![model.snapshot()];
    for step in 0..1500u64 {
        let n = rng.gen_range(1..=24u64);
        let lba = rng.gen_range(0..window - n);
        let mut req = Request::new();
        req.write(lba, pattern(512, lba, n, rng.gen()));
        model.submit(req.clone()).unwrap();
        dev.submit(req).unwrap();
        states.push(model.snapshot());
        if rng.gen_bool(0.15) {
            dev.flush().unwrap();
            model.flush().unwrap();
            states = vec![model.snapshot()];
        }
        if step % 50 == 49 {
            let pending = media.pending_writes();
            for k in 0..=pending {
                let crashed = LogDevice::open(media.crash_image(k), &tiny_open())
                    .unwrap_or_else(|e| panic!("step {step}: crash image {k}: {e}"));
                crashed.verify().unwrap();
                assert!(
                    states.iter().any(|s| same_content(&crashed, s)),
                    "step {step}: crash image {k}/{pending} is no allowed prefix"
                );
            }
        }
    }
    assert!(dev.stats().media_gc_bytes > 0);
}

#[test]
fn no_space_then_trim_then_continue() {
    let media = TestMedia::new(512, (16 << 10) + 20 * (64 << 10));
    let dev = LogDevice::format(media, &tiny_options()).unwrap();
    let cap = dev.space().capacity_bytes / 512;
    let chunk = 64;
    let mut lba = 0;
    while lba + chunk <= cap {
        write(&dev, lba, chunk, 1);
        lba += chunk;
    }
    let mut r = Request::new();
    r.write(1 << 30, vec![1u8; 512 * (cap - lba + 1) as usize]);
    assert!(matches!(dev.submit(r), Err(Error::NoSpace { .. })));
    // Overwrite everything a few times at 100% of what fits.
    for round in 0..3u8 {
        let mut at = 0;
        while at + chunk <= lba {
            write(&dev, at, chunk, 10 + round);
            at += chunk;
        }
        dev.flush().unwrap();
    }
    let mut r = Request::new();
    r.trim(0, lba / 2);
    dev.submit(r).unwrap();
    write(&dev, 1 << 30, chunk, 3);
    dev.flush().unwrap();
    dev.verify().unwrap();
    let media = dev.close().unwrap();
    let dev = LogDevice::open(media, &tiny_open()).unwrap();
    let mut buf = vec![0u8; 512 * chunk as usize];
    dev.read(lba - chunk, &mut buf).unwrap();
    assert_eq!(buf, pattern(512, lba - chunk, chunk, 12));
}

#[test]
fn open_rejects_bad_media() {
    let zeros = TestMedia::new(512, 2 << 20);
    assert!(matches!(
        LogDevice::open(zeros.clone(), &OpenOptions::default()),
        Err(OpenError::NotAtomfs { .. })
    ));
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let garbage: Vec<u8> = (0..2 << 20).map(|_| rng.gen()).collect();
    let e = LogDevice::open(TestMedia::from_bytes(512, garbage), &OpenOptions::default()).err();
    assert!(matches!(e, Some(OpenError::NotAtomfs { .. })), "{e:?}");
    // An ext4-like image: superblock magic 0xEF53 at byte 1080.
    let mut ext = vec![0u8; 2 << 20];
    ext[1080] = 0x53;
    ext[1081] = 0xEF;
    assert!(matches!(
        LogDevice::open(TestMedia::from_bytes(512, ext), &OpenOptions::default()),
        Err(OpenError::NotAtomfs { .. })
    ));
    // A good image, truncated.
    let dev = LogDevice::format(TestMedia::new(512, 2 << 20), &tiny_options()).unwrap();
    let bytes = dev.close().unwrap().bytes();
    let e = LogDevice::open(
        TestMedia::from_bytes(512, bytes[..1 << 20].to_vec()),
        &OpenOptions::default(),
    )
    .err();
    assert!(matches!(e, Some(OpenError::TooSmall { .. })), "{e:?}");
    // Both superblocks damaged.
    let mut bad = bytes.clone();
    bad[100] ^= 0xff;
    bad[4096 + 100] ^= 0xff;
    let e = LogDevice::open(TestMedia::from_bytes(512, bad), &OpenOptions::default()).err();
    assert!(matches!(e, Some(OpenError::Corrupt { .. })), "{e:?}");
    // One superblock damaged: opens, check warns.
    let mut one = bytes.clone();
    one[100] ^= 0xff;
    let m = TestMedia::from_bytes(512, one);
    let r = check(&m);
    assert!(
        r.is_clean()
            && r.findings
                .iter()
                .any(|f| f.severity == blockdev::Severity::Warning)
    );
    LogDevice::open(m, &OpenOptions::default()).unwrap();
    // Both checkpoint slots destroyed.
    let mut noslot = bytes.clone();
    noslot[8192..16384].fill(0);
    let e = LogDevice::open(TestMedia::from_bytes(512, noslot), &OpenOptions::default()).err();
    assert!(matches!(e, Some(OpenError::Corrupt { .. })), "{e:?}");
    // Wrong sector size.
    let e = LogDevice::open(TestMedia::from_bytes(4096, bytes), &OpenOptions::default()).err();
    assert!(matches!(e, Some(OpenError::Corrupt { .. })), "{e:?}");
}

#[test]
fn flush_writes_exactly_k_plus_one_sectors() {
    let media = TestMedia::big(64 << 20);
    let dev = LogDevice::format(media, &FormatOptions::default()).unwrap();
    // Like an fs create + fsync: inode, dir entry, parent inode: 3 sectors
    // in 3 segments, with one sector overwritten in the same batch.
    let region = 1u64 << 31;
    for (k, segments) in [(3u64, 3u64), (1, 1), (30, 30), (64, 8)] {
        let before = dev.stats();
        for i in 0..segments {
            let per = k / segments;
            write(&dev, region * (i + 1), per, 1);
        }
        // Overwrite the first sector again: still written once.
        write(&dev, region, 1, 2);
        dev.flush().unwrap();
        let d = dev.stats() - before;
        assert_eq!(d.media_bytes(), (k + 1) * 512, "k={k}: {d:?}");
        assert_eq!(d.media_header_bytes, 512);
        assert_eq!(d.media_payload_bytes, k * 512);
        assert_eq!(d.media_flushes, 1);
    }
    // Trim-only batch: one header sector.
    let before = dev.stats();
    let mut r = Request::new();
    r.trim(region, 1);
    dev.submit(r).unwrap();
    dev.flush().unwrap();
    assert_eq!((dev.stats() - before).media_bytes(), 512);
    // Idle flush: nothing.
    let before = dev.stats();
    dev.flush().unwrap();
    assert_eq!((dev.stats() - before).media_bytes(), 0);
}

#[test]
fn large_requests_span_segments_without_padding() {
    let media = TestMedia::big(48 << 20);
    let dev = LogDevice::format(media, &mib_segments()).unwrap();
    let mb = 1u64 << 20;
    for i in 0..20u64 {
        write(&dev, i * mb / 512, mb / 512, i as u8);
    }
    dev.flush().unwrap();
    let s = dev.stats();
    assert_eq!(s.media_padding_bytes, 0);
    assert!(s.media_header_bytes <= 20 * 512, "{s:?}");
    // One extent per record, plus one where a record crosses into a
    // non-adjacent segment.
    assert!(
        dev.extent_count() <= 40,
        "sequential data in {} extents",
        dev.extent_count()
    );
    let media = dev.close().unwrap();
    let dev = LogDevice::open(media, &OpenOptions::default()).unwrap();
    let mut buf = vec![0u8; mb as usize];
    dev.read(7 * mb / 512, &mut buf).unwrap();
    assert_eq!(buf, pattern(512, 7 * mb / 512, mb / 512, 7));
}

#[test]
fn buffer_is_bounded_without_flush() {
    let media = TestMedia::big(48 << 20);
    let dev = LogDevice::format(media, &mib_segments()).unwrap();
    let before = allocated();
    let data = vec![7u8; 1 << 20];
    for i in 0..24u64 {
        let mut r = Request::new();
        r.write(i * 2048, data.clone());
        dev.submit(r).unwrap();
    }
    let grown = allocated() - before;
    assert!(grown < 8 << 20, "24 MiB unflushed grew memory by {grown}");
    assert!(
        dev.stats().media_payload_bytes >= 16 << 20,
        "batch not written out"
    );
}

#[test]
fn map_memory_per_extent() {
    let media = TestMedia::big(64 << 20);
    let dev = LogDevice::format(media, &FormatOptions::default()).unwrap();
    let n = 20_000u64;
    // Warm up the batch buffer, then measure.
    write(&dev, 0, 1, 1);
    dev.flush().unwrap();
    let before = allocated();
    for i in 1..=n {
        // Every other sector: no merging.
        let mut r = Request::new();
        r.write(i * 2, vec![1u8; 512]);
        dev.submit(r).unwrap();
        if i % 1000 == 0 {
            dev.flush().unwrap();
        }
    }
    dev.flush().unwrap();
    let per = (allocated() - before) as f64 / n as f64;
    assert!(dev.extent_count() as u64 > n);
    assert!(per <= 64.0, "{per} bytes per extent");
}

#[test]
fn media_errors_fail_stop() {
    let media = TestMedia::new(512, 2 << 20);
    let dev = LogDevice::format(media.clone(), &tiny_options()).unwrap();
    write(&dev, 1, 2, 1);
    dev.flush().unwrap();
    write(&dev, 10, 2, 2);
    media.inner.fail_flush.store(true, Ordering::SeqCst);
    assert!(matches!(dev.flush(), Err(Error::Io { .. })));
    media.inner.fail_flush.store(false, Ordering::SeqCst);
    assert!(matches!(dev.flush(), Err(Error::Failed { .. })));
    assert!(matches!(
        dev.submit(Request::new()),
        Err(Error::Failed { .. })
    ));
    let mut b = vec![0u8; 512];
    assert!(matches!(dev.read(1, &mut b), Err(Error::Failed { .. })));
    drop(dev);
    // The flushed write survives.
    let dev = LogDevice::open(media.crash_image(0), &tiny_open()).unwrap();
    let mut b = vec![0u8; 1024];
    dev.read(1, &mut b).unwrap();
    assert_eq!(b, pattern(512, 1, 2, 1));
}

#[test]
fn write_error_fails_stop() {
    let media = TestMedia::new(512, 2 << 20);
    let dev = LogDevice::format(media.clone(), &tiny_options()).unwrap();
    write(&dev, 1, 2, 1);
    media.inner.fail_writes.store(true, Ordering::SeqCst);
    assert!(matches!(dev.flush(), Err(Error::Io { .. })));
    media.inner.fail_writes.store(false, Ordering::SeqCst);
    assert!(matches!(dev.flush(), Err(Error::Failed { .. })));
    assert!(dev.close().is_err());
}

#[test]
fn crash_without_close_reopens() {
    let media = TestMedia::new(512, 2 << 20);
    let dev = LogDevice::format(media.clone(), &tiny_options()).unwrap();
    write(&dev, 3, 4, 1);
    dev.flush().unwrap();
    write(&dev, 3, 1, 9);
    drop(dev);
    // Everything written reached the media (no volatile cache): the batch
    // was never written, so the unflushed request is gone.
    let dev = LogDevice::open(media.image(), &tiny_open()).unwrap();
    let mut b = vec![0u8; 4 * 512];
    dev.read(3, &mut b).unwrap();
    assert_eq!(b, pattern(512, 3, 4, 1));
    // Reopen twice more: epochs advance, data stays.
    let m = dev.close().unwrap();
    let dev = LogDevice::open(m, &tiny_open()).unwrap();
    dev.read(3, &mut b).unwrap();
    assert_eq!(b, pattern(512, 3, 4, 1));
}

#[test]
fn log_device_is_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<LogDevice<TestMedia>>();
}

/// Rough speed check (run with `--release -- --ignored`): 4 KiB requests
/// with a flush every 1000 on in-memory media.
#[test]
#[ignore]
fn speed_4k_requests() {
    let media = TestMedia::big(512 << 20);
    let dev = LogDevice::format(media, &FormatOptions::default()).unwrap();
    let data = vec![5u8; 4096];
    let n = 200_000u64;
    let t = std::time::Instant::now();
    for i in 0..n {
        let mut r = Request::new();
        r.write((i % 50_000) * 8, data.clone());
        dev.submit(r).unwrap();
        if i % 1000 == 999 {
            dev.flush().unwrap();
        }
    }
    let secs = t.elapsed().as_secs_f64();
    eprintln!("{:.0} requests/s, {:?}", n as f64 / secs, dev.stats());
}
