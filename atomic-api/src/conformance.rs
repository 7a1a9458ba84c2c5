//! The conformance suite: every [`AtomicDevice`] implementation must pass it.
//!
//! Implement [`Harness`] for your device (how to make a fresh one and how to
//! close and reopen it), then generate one `#[test]` per property with
//! [`conformance_tests!`](crate::conformance_tests):
//!
//! ```ignore
//! struct MyHarness;
//! impl atomic_api::conformance::Harness for MyHarness { /* ... */ }
//! atomic_api::conformance_tests!(MyHarness);
//! ```
//!
//! Each check panics with a message naming the property on failure. Device-
//! specific behaviour that cannot be expressed through the trait alone
//! (crash images, fault injection) is tested by each implementation.

use std::ops::Range;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{AtomicDevice, Error, MemDevice, Request, Segment, MIN_LOGICAL_SECTORS};

/// How the suite makes and reopens devices.
pub trait Harness {
    type Device: AtomicDevice;

    /// A freshly formatted, empty device. Its capacity should be small (a
    /// few MiB) so the space checks run quickly.
    fn fresh(&self) -> Self::Device;

    /// Closes `device` cleanly (what an unmount does) and opens it again.
    fn reopen(&self, device: Self::Device) -> Self::Device;
}

/// Runs every check, in order.
pub fn run_all<H: Harness>(harness: &H) {
    for (name, check) in checks::<H>() {
        eprintln!("conformance: {name}");
        check(harness);
    }
}

type Check<H> = fn(&H);

/// Every check with its name.
pub fn checks<H: Harness>() -> Vec<(&'static str, Check<H>)> {
    vec![
        ("geometry_is_sane", geometry_is_sane::<H>),
        ("fresh_device_is_empty", fresh_device_is_empty::<H>),
        ("read_your_writes", read_your_writes::<H>),
        (
            "trim_reads_zeros_and_frees_space",
            trim_reads_zeros_and_frees_space::<H>,
        ),
        (
            "invalid_requests_have_no_effect",
            invalid_requests_have_no_effect::<H>,
        ),
        ("limits_are_inclusive", limits_are_inclusive::<H>),
        ("bad_reads_are_rejected", bad_reads_are_rejected::<H>),
        (
            "next_mapped_walks_sparse_space",
            next_mapped_walks_sparse_space::<H>,
        ),
        ("idle_flush_writes_nothing", idle_flush_writes_nothing::<H>),
        ("stats_count_requests", stats_count_requests::<H>),
        ("no_space_has_no_effect", no_space_has_no_effect::<H>),
        ("data_survives_reopen", data_survives_reopen::<H>),
        ("concurrent_submitters", concurrent_submitters::<H>),
        (
            "matches_model_under_random_load",
            matches_model_under_random_load::<H>,
        ),
    ]
}

/// Generates one `#[test]` per conformance check for `$harness` (an
/// expression evaluating to a [`Harness`]).
#[macro_export]
macro_rules! conformance_tests {
    ($harness:expr) => {
        $crate::conformance_tests!(@each $harness;
            geometry_is_sane, fresh_device_is_empty, read_your_writes,
            trim_reads_zeros_and_frees_space, invalid_requests_have_no_effect,
            limits_are_inclusive, bad_reads_are_rejected,
            next_mapped_walks_sparse_space, idle_flush_writes_nothing,
            stats_count_requests, no_space_has_no_effect, data_survives_reopen,
            concurrent_submitters, matches_model_under_random_load);
    };
    (@each $harness:expr; $($check:ident),*) => {$(
        #[test]
        fn $check() {
            $crate::conformance::$check(&$harness);
        }
    )*};
}

// ---------------------------------------------------------------- helpers

fn sector(dev: &impl AtomicDevice) -> usize {
    dev.geometry().sector_size as usize
}

/// `sectors` sectors whose every byte encodes (tag, sector index), so a
/// misplaced or stale sector is recognisable.
pub fn pattern(sector_size: usize, lba: u64, sectors: u64, tag: u8) -> Vec<u8> {
    let mut data = vec![0u8; sector_size * sectors as usize];
    for (i, chunk) in data.chunks_exact_mut(sector_size).enumerate() {
        let stamp = (lba + i as u64).to_le_bytes();
        for (j, byte) in chunk.iter_mut().enumerate() {
            *byte = stamp[j % 8] ^ tag ^ (j as u8).wrapping_mul(31);
        }
    }
    data
}

fn write(dev: &impl AtomicDevice, lba: u64, sectors: u64, tag: u8) -> Vec<u8> {
    let data = pattern(sector(dev), lba, sectors, tag);
    let mut req = Request::new();
    req.write(lba, data.clone());
    dev.submit(req)
        .unwrap_or_else(|e| panic!("write of {sectors} sectors at {lba} failed: {e}"));
    data
}

fn read(dev: &impl AtomicDevice, lba: u64, sectors: u64) -> Vec<u8> {
    let mut buf = vec![0xAAu8; sector(dev) * sectors as usize];
    dev.read(lba, &mut buf)
        .unwrap_or_else(|e| panic!("read of {sectors} sectors at {lba} failed: {e}"));
    buf
}

/// Every mapped run of `dev`, walked with `next_mapped`.
pub fn mapped_runs(dev: &impl AtomicDevice) -> Vec<Range<u64>> {
    let mut runs = Vec::new();
    let mut from = 0;
    // Bounded: each iteration advances `from` past a non-empty run.
    while let Some(run) = dev.next_mapped(from).expect("next_mapped") {
        assert!(
            run.start >= from,
            "next_mapped({from}) returned {run:?}, before `from`"
        );
        assert!(
            run.start < run.end,
            "next_mapped({from}) returned an empty run {run:?}"
        );
        if let Some(last) = runs.last() {
            let last: &Range<u64> = last;
            assert!(
                run.start > last.end,
                "runs {last:?} and {run:?} are adjacent: next_mapped must return maximal runs"
            );
        }
        from = run.end;
        runs.push(run);
        if from >= dev.geometry().logical_sectors {
            break;
        }
    }
    runs
}

/// Asserts that two devices have the same mapped runs and the same bytes.
pub fn assert_same_content(
    actual: &impl AtomicDevice,
    expected: &impl AtomicDevice,
    context: &str,
) {
    let actual_runs = mapped_runs(actual);
    let expected_runs = mapped_runs(expected);
    assert_eq!(actual_runs, expected_runs, "{context}: mapped runs differ");
    for run in actual_runs {
        // Compare in bounded chunks so huge runs do not need huge buffers.
        let mut lba = run.start;
        while lba < run.end {
            let n = (run.end - lba).min(256);
            assert!(
                read(actual, lba, n) == read(expected, lba, n),
                "{context}: contents differ in sectors {lba}..{}",
                lba + n
            );
            lba += n;
        }
    }
    assert_eq!(
        actual.space().live_bytes,
        expected.space().live_bytes,
        "{context}: live bytes differ"
    );
}

/// Recognises the expected error of a rejected request.
type ErrorKind = fn(&Error) -> bool;

fn assert_rejected(dev: &impl AtomicDevice, req: Request, what: &str, ok: ErrorKind) {
    let before = dev.stats();
    let runs = mapped_runs(dev);
    match dev.submit(req) {
        Err(e) if ok(&e) => assert!(e.is_rejection(), "{what}: {e} should be a rejection"),
        Err(e) => panic!("{what}: rejected with the wrong error: {e}"),
        Ok(()) => panic!("{what}: was accepted"),
    }
    assert_eq!(
        dev.stats().requests,
        before.requests,
        "{what}: counted as a request"
    );
    assert_eq!(mapped_runs(dev), runs, "{what}: changed the mapping");
}

// ----------------------------------------------------------------- checks

pub fn geometry_is_sane<H: Harness>(h: &H) {
    let dev = h.fresh();
    let g = dev.geometry();
    assert!(
        g.sector_size == 512 || g.sector_size == 4096,
        "sector size {}",
        g.sector_size
    );
    assert!(
        g.logical_sectors >= MIN_LOGICAL_SECTORS,
        "logical space too small: {}",
        g.logical_sectors
    );
    assert!(g.max_segments >= 16, "max_segments {} < 16", g.max_segments);
    assert!(
        g.max_request_bytes >= 64 * u64::from(g.sector_size),
        "max_request_bytes {} < 64 sectors",
        g.max_request_bytes
    );
    assert_eq!(
        g.max_request_bytes % u64::from(g.sector_size),
        0,
        "max_request_bytes not whole sectors"
    );
    let space = dev.space();
    assert!(space.capacity_bytes > 0, "capacity is zero");
    assert_eq!(space.live_bytes, 0, "fresh device has live data");
    assert_eq!(
        space.free_bytes, space.capacity_bytes,
        "fresh device is not all free"
    );
}

pub fn fresh_device_is_empty<H: Harness>(h: &H) {
    let dev = h.fresh();
    assert_eq!(
        dev.next_mapped(0).unwrap(),
        None,
        "fresh device maps something"
    );
    let n = 8;
    assert!(
        read(&dev, 0, n).iter().all(|b| *b == 0),
        "fresh device does not read zeros"
    );
    let far = dev.geometry().logical_sectors - n;
    assert!(
        read(&dev, far, n).iter().all(|b| *b == 0),
        "end of logical space does not read zeros"
    );
}

pub fn read_your_writes<H: Harness>(h: &H) {
    let dev = h.fresh();
    let size = sector(&dev);
    let a = write(&dev, 10, 4, 1);
    assert_eq!(read(&dev, 10, 4), a, "read after write");
    // A read spanning unmapped, mapped, unmapped sectors.
    let mut expected = vec![0u8; size * 2];
    expected.extend_from_slice(&a);
    expected.extend(vec![0u8; size * 2]);
    assert_eq!(read(&dev, 8, 8), expected, "read across a hole");
    // Partial overwrite of the middle.
    let b = write(&dev, 11, 2, 2);
    let got = read(&dev, 10, 4);
    assert_eq!(&got[..size], &a[..size]);
    assert_eq!(&got[size..3 * size], &b[..]);
    assert_eq!(&got[3 * size..], &a[3 * size..]);
    // A multi-segment request with scattered writes and a trim.
    let far = 1u64 << 50;
    let mut req = Request::new();
    let c = pattern(size, far, 3, 3);
    let d = pattern(size, 5000, 1, 4);
    req.write(far, c.clone()).trim(12, 1).write(5000, d.clone());
    dev.submit(req).unwrap();
    assert_eq!(read(&dev, far, 3), c);
    assert_eq!(read(&dev, 5000, 1), d);
    assert!(
        read(&dev, 12, 1).iter().all(|b| *b == 0),
        "trimmed sector not zero"
    );
    dev.flush().unwrap();
    assert_eq!(read(&dev, far, 3), c, "read after flush");
    assert_eq!(&read(&dev, 11, 1)[..], &b[..size], "read after flush");
}

pub fn trim_reads_zeros_and_frees_space<H: Harness>(h: &H) {
    let dev = h.fresh();
    let ss = dev.geometry().sector_size as u64;
    write(&dev, 100, 32, 1);
    assert_eq!(dev.space().live_bytes, 32 * ss);
    let mut req = Request::new();
    req.trim(108, 8);
    dev.submit(req).unwrap();
    assert_eq!(dev.space().live_bytes, 24 * ss, "trim did not free space");
    assert!(
        read(&dev, 108, 8).iter().all(|b| *b == 0),
        "trimmed sectors not zero"
    );
    assert_eq!(mapped_runs(&dev), vec![100..108, 116..132]);
    // Trimming unmapped space, and a huge range, are both fine and cheap.
    let mut req = Request::new();
    req.trim(1 << 40, 1 << 31).trim(0, 100);
    dev.submit(req).unwrap();
    assert_eq!(dev.space().live_bytes, 24 * ss);
    let mut req = Request::new();
    req.trim(0, 1 << 31);
    dev.submit(req).unwrap();
    assert_eq!(dev.space().live_bytes, 0);
    assert_eq!(dev.next_mapped(0).unwrap(), None);
    let s = dev.space();
    assert_eq!(
        s.free_bytes, s.capacity_bytes,
        "space not all free after trimming everything"
    );
    dev.flush().unwrap();
    let dev = h.reopen(dev);
    assert_eq!(dev.next_mapped(0).unwrap(), None, "trim not persistent");
}

pub fn invalid_requests_have_no_effect<H: Harness>(h: &H) {
    let dev = h.fresh();
    let g = dev.geometry();
    let size = g.sector_size as usize;
    write(&dev, 0, 4, 9);
    let cases: Vec<(&str, Request, ErrorKind)> = vec![
        (
            "half-sector write",
            req_of(vec![Segment::Write {
                lba: 50,
                data: vec![1; size / 2],
            }]),
            |e| matches!(e, Error::Misaligned { .. }),
        ),
        (
            "sector-and-a-half write",
            req_of(vec![Segment::Write {
                lba: 50,
                data: vec![1; size + size / 2],
            }]),
            |e| matches!(e, Error::Misaligned { .. }),
        ),
        (
            "empty write",
            req_of(vec![Segment::Write {
                lba: 50,
                data: vec![],
            }]),
            |e| matches!(e, Error::Misaligned { .. }),
        ),
        (
            "zero trim",
            req_of(vec![Segment::Trim {
                lba: 50,
                sectors: 0,
            }]),
            |e| matches!(e, Error::Misaligned { .. }),
        ),
        (
            "write past the end",
            req_of(vec![Segment::Write {
                lba: g.logical_sectors,
                data: vec![1; size],
            }]),
            |e| matches!(e, Error::OutOfRange { .. }),
        ),
        (
            "write straddling the end",
            req_of(vec![Segment::Write {
                lba: g.logical_sectors - 1,
                data: vec![1; 2 * size],
            }]),
            |e| matches!(e, Error::OutOfRange { .. }),
        ),
        (
            "trim overflowing u64",
            req_of(vec![Segment::Trim {
                lba: u64::MAX - 1,
                sectors: 4,
            }]),
            |e| matches!(e, Error::OutOfRange { .. }),
        ),
        (
            "overlapping writes",
            req_of(vec![
                Segment::Write {
                    lba: 60,
                    data: vec![1; 4 * size],
                },
                Segment::Write {
                    lba: 63,
                    data: vec![2; size],
                },
            ]),
            |e| matches!(e, Error::Overlap { .. }),
        ),
        (
            "write overlapping a trim",
            req_of(vec![
                Segment::Write {
                    lba: 70,
                    data: vec![1; size],
                },
                Segment::Trim {
                    lba: 0,
                    sectors: 71,
                },
            ]),
            |e| matches!(e, Error::Overlap { .. }),
        ),
        (
            "too many segments",
            req_of(
                (0..=u64::from(g.max_segments))
                    .map(|i| Segment::Trim {
                        lba: 2 * i,
                        sectors: 1,
                    })
                    .collect(),
            ),
            |e| matches!(e, Error::TooLarge { .. }),
        ),
        (
            "too many bytes",
            req_of(vec![Segment::Write {
                lba: 1000,
                data: vec![1; g.max_request_bytes as usize + size],
            }]),
            |e| matches!(e, Error::TooLarge { .. }),
        ),
    ];
    for (what, req, ok) in cases {
        // A valid segment in the same request must not be applied either.
        let mut req = req;
        req.write(2000, vec![7u8; size]);
        assert_rejected(&dev, req, what, ok);
    }
    assert!(
        read(&dev, 2000, 1).iter().all(|b| *b == 0),
        "part of a rejected request applied"
    );
    // The device is still healthy.
    write(&dev, 3000, 1, 5);
    dev.flush().unwrap();
}

fn req_of(segments: Vec<Segment>) -> Request {
    let mut req = Request::new();
    for s in segments {
        req.push(s);
    }
    req
}

pub fn limits_are_inclusive<H: Harness>(h: &H) {
    let dev = h.fresh();
    let g = dev.geometry();
    // Exactly max_segments segments.
    let mut req = Request::new();
    for i in 0..u64::from(g.max_segments) {
        req.trim(10 * i, 1);
    }
    dev.submit(req)
        .expect("a request with exactly max_segments segments");
    // Exactly max_request_bytes of data (or half the capacity, on a device
    // too small to hold one maximal request).
    let limit = g.max_request_bytes.min(dev.space().capacity_bytes / 2);
    let sectors = limit / u64::from(g.sector_size);
    let data = pattern(g.sector_size as usize, 0, sectors, 3);
    let mut req = Request::new();
    req.write(1 << 20, data.clone());
    dev.submit(req)
        .expect("a request of exactly max_request_bytes");
    assert_eq!(read(&dev, 1 << 20, sectors), data);
    // The last sector of the logical space.
    write(&dev, g.logical_sectors - 1, 1, 4);
    assert_eq!(
        dev.next_mapped(g.logical_sectors - 2).unwrap(),
        Some(g.logical_sectors - 1..g.logical_sectors)
    );
    dev.flush().unwrap();
    let dev = h.reopen(dev);
    assert_eq!(
        read(&dev, 1 << 20, sectors),
        data,
        "max-size request lost by reopen"
    );
}

pub fn bad_reads_are_rejected<H: Harness>(h: &H) {
    let dev = h.fresh();
    let g = dev.geometry();
    let size = g.sector_size as usize;
    let mut buf = vec![0u8; size + 1];
    assert!(
        matches!(dev.read(0, &mut buf), Err(Error::Misaligned { .. })),
        "misaligned read"
    );
    let mut buf = vec![0u8; 2 * size];
    assert!(
        matches!(
            dev.read(g.logical_sectors - 1, &mut buf),
            Err(Error::OutOfRange { .. })
        ),
        "read past the end"
    );
    let mut empty = [];
    dev.read(0, &mut empty).expect("an empty read is valid");
}

pub fn next_mapped_walks_sparse_space<H: Harness>(h: &H) {
    let dev = h.fresh();
    let g = dev.geometry();
    // Two requests writing adjacent ranges form one run.
    write(&dev, 100, 4, 1);
    write(&dev, 104, 4, 2);
    write(&dev, 96, 4, 3);
    let far = 1u64 << 45;
    write(&dev, far, 10, 4);
    write(&dev, g.logical_sectors - 3, 2, 5);
    assert_eq!(
        mapped_runs(&dev),
        vec![
            96..108,
            far..far + 10,
            g.logical_sectors - 3..g.logical_sectors - 1
        ]
    );
    assert_eq!(dev.next_mapped(0).unwrap(), Some(96..108));
    assert_eq!(
        dev.next_mapped(101).unwrap(),
        Some(101..108),
        "from inside a run"
    );
    assert_eq!(dev.next_mapped(108).unwrap(), Some(far..far + 10));
    assert_eq!(dev.next_mapped(g.logical_sectors - 1).unwrap(), None);
    // A trim splits a run; a write fills it again.
    let mut req = Request::new();
    req.trim(102, 2);
    dev.submit(req).unwrap();
    assert_eq!(dev.next_mapped(0).unwrap(), Some(96..102));
    assert_eq!(dev.next_mapped(102).unwrap(), Some(104..108));
    dev.flush().unwrap();
    let dev = h.reopen(dev);
    assert_eq!(dev.next_mapped(0).unwrap(), Some(96..102), "after reopen");
    write(&dev, 102, 2, 6);
    assert_eq!(dev.next_mapped(0).unwrap(), Some(96..108), "refilled hole");
}

pub fn idle_flush_writes_nothing<H: Harness>(h: &H) {
    let dev = h.fresh();
    dev.flush().unwrap();
    let before = dev.stats();
    dev.flush().unwrap();
    dev.flush().unwrap();
    let delta = dev.stats() - before;
    assert_eq!(
        delta.media_bytes(),
        0,
        "an idle flush wrote {} bytes",
        delta.media_bytes()
    );
    assert_eq!(delta.media_flushes, 0, "an idle flush flushed the media");
    assert_eq!(delta.flushes, 2);
    write(&dev, 5, 1, 1);
    dev.flush().unwrap();
    let before = dev.stats();
    dev.flush().unwrap();
    let delta = dev.stats() - before;
    assert_eq!(
        delta.media_bytes(),
        0,
        "a flush after a flush wrote {} bytes",
        delta.media_bytes()
    );
}

pub fn stats_count_requests<H: Harness>(h: &H) {
    let dev = h.fresh();
    let ss = u64::from(dev.geometry().sector_size);
    let before = dev.stats();
    write(&dev, 0, 2, 1);
    write(&dev, 0, 2, 2);
    let mut req = Request::new();
    req.trim(0, 1).write(10, vec![0u8; ss as usize * 3]);
    dev.submit(req).unwrap();
    dev.flush().unwrap();
    let delta = dev.stats() - before;
    assert_eq!(delta.requests, 3);
    assert_eq!(delta.flushes, 1);
    assert_eq!(delta.submitted_bytes, 7 * ss);
    assert_eq!(delta.trimmed_sectors, 1);
    assert!(
        delta.media_payload_bytes > 0,
        "flushed data not counted as payload"
    );
    assert!(
        delta.media_flushes >= 1,
        "a flush with pending data did not flush the media"
    );
    assert!(delta.media_bytes() >= delta.media_payload_bytes);
}

pub fn no_space_has_no_effect<H: Harness>(h: &H) {
    let dev = h.fresh();
    let g = dev.geometry();
    let ss = u64::from(g.sector_size);
    let space = dev.space();
    assert_eq!(space.free_bytes % ss, 0, "free bytes not whole sectors");
    // Fill the device exactly, in max-size requests.
    let chunk = (g.max_request_bytes / ss).min(1024);
    let mut lba = 0;
    let mut left = space.free_bytes / ss;
    let mut rounds = 0u64;
    while left > 0 {
        let n = left.min(chunk);
        write(&dev, lba, n, 1);
        lba += n;
        left -= n;
        rounds += 1;
        if rounds % 16 == 0 {
            dev.flush().unwrap();
        }
    }
    dev.flush().unwrap();
    let full = dev.space();
    assert_eq!(
        full.free_bytes, 0,
        "device not full after writing its free space"
    );
    assert_eq!(full.live_bytes, full.capacity_bytes);
    // A request that needs one more sector fails and changes nothing.
    let mut req = Request::new();
    req.write(0, vec![9u8; ss as usize])
        .write(lba + 5, vec![9u8; ss as usize]);
    match dev.submit(req) {
        Err(Error::NoSpace { .. }) => {}
        other => panic!("expected NoSpace on a full device, got {other:?}"),
    }
    assert_eq!(
        read(&dev, 0, 1),
        pattern(ss as usize, 0, 1, 1),
        "NoSpace request partly applied"
    );
    assert_eq!(dev.space(), full, "NoSpace changed the space");
    // Overwriting mapped data needs no new space, even when full; repeat it
    // so a log-structured device has to clean to keep going.
    for round in 0..4u8 {
        let mut lba = 0;
        while lba + chunk <= full.live_bytes / ss {
            write(&dev, lba, chunk, 10 + round);
            lba += chunk;
        }
        dev.flush()
            .unwrap_or_else(|e| panic!("flush while overwriting a full device: {e}"));
    }
    // A request that trims as much as it writes fits.
    let mut req = Request::new();
    req.trim(0, 4).write(lba + 10, vec![3u8; 4 * ss as usize]);
    dev.submit(req)
        .expect("trim + write of the same size on a full device");
    // Trim half, then new writes fit again.
    let mut req = Request::new();
    req.trim(0, full.live_bytes / ss / 2);
    dev.submit(req).unwrap();
    write(&dev, 1 << 30, chunk.min(full.live_bytes / ss / 4), 7);
    dev.flush().unwrap();
    let dev = h.reopen(dev);
    let s = dev.space();
    assert_eq!(
        s.free_bytes + s.live_bytes,
        s.capacity_bytes,
        "space does not add up after reopen"
    );
}

pub fn data_survives_reopen<H: Harness>(h: &H) {
    let dev = h.fresh();
    let model = MemDevice::with_geometry(dev.geometry(), dev.space().capacity_bytes);
    for (i, lba) in [0u64, 7, 1 << 33, 99, 100, 101].iter().enumerate() {
        let data = write(&dev, *lba, 3, i as u8);
        let mut req = Request::new();
        req.write(*lba, data);
        model.submit(req).unwrap();
    }
    dev.flush().unwrap();
    // Submitted but not flushed: a clean close must keep it.
    let data = write(&dev, 500, 2, 77);
    let mut req = Request::new();
    req.write(500, data);
    model.submit(req).unwrap();
    let dev = h.reopen(dev);
    assert_same_content(&dev, &model, "after a clean reopen");
    let dev = h.reopen(dev);
    assert_same_content(&dev, &model, "after a second reopen");
}

pub fn concurrent_submitters<H: Harness>(h: &H) {
    let dev = h.fresh();
    let threads = 4u64;
    let per_thread = 100u64;
    std::thread::scope(|scope| {
        for t in 0..threads {
            let dev = &dev;
            scope.spawn(move || {
                for i in 0..per_thread {
                    let lba = (t << 32) + i * 4;
                    let mut req = Request::new();
                    req.write(lba, pattern(sector(dev), lba, 2, t as u8))
                        .write(lba + (1 << 20), pattern(sector(dev), lba, 1, t as u8));
                    dev.submit(req).expect("concurrent submit");
                    if i % 25 == 0 {
                        dev.flush().expect("concurrent flush");
                    }
                }
            });
        }
    });
    let dev = h.reopen(dev);
    for t in 0..threads {
        for i in 0..per_thread {
            let lba = (t << 32) + i * 4;
            assert_eq!(
                read(&dev, lba, 2),
                pattern(sector(&dev), lba, 2, t as u8),
                "thread {t} request {i}"
            );
        }
    }
    let expected = threads * per_thread * 3 * u64::from(dev.geometry().sector_size);
    assert_eq!(dev.space().live_bytes, expected);
}

/// Random requests against `MemDevice` as a model; compares reads after every
/// request and everything at checkpoints and after reopen.
pub fn matches_model_under_random_load<H: Harness>(h: &H) {
    let seed: u64 = std::env::var("ATOMFS_CONFORMANCE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut dev = h.fresh();
    let g = dev.geometry();
    let size = g.sector_size as usize;
    let capacity = dev.space().capacity_bytes;
    let model = MemDevice::with_geometry(g, capacity);
    // Keep live data under half the capacity so space never runs out; the
    // window is sized to that.
    let window = (capacity / g.sector_size as u64 / 2).clamp(64, 1 << 14);
    let far_base = 1u64 << 40;
    let steps = 1500;
    for step in 0..steps {
        let mut req = Request::new();
        let mut taken: Vec<Range<u64>> = Vec::new();
        for _ in 0..rng.gen_range(1..=4) {
            let n = rng.gen_range(1..=16u64).min(window);
            let base = if rng.gen_bool(0.1) { far_base } else { 0 };
            let lba = base + rng.gen_range(0..window - n + 1);
            if taken.iter().any(|r| r.start < lba + n && lba < r.end) {
                continue;
            }
            taken.push(lba..lba + n);
            if rng.gen_bool(0.2) {
                req.trim(lba, n);
            } else {
                req.write(lba, pattern(size, lba, n, rng.gen()));
            }
        }
        let within_budget = model.space().live_bytes + req.write_bytes() <= capacity / 2;
        if !within_budget {
            // Trim a random chunk instead, to keep the fill bounded.
            let lba = rng.gen_range(0..window);
            req = Request::new();
            req.trim(lba, window - lba).trim(far_base, window);
        }
        let expect = model.submit(req.clone());
        let actual = dev.submit(req);
        assert_eq!(
            actual.is_ok(),
            expect.is_ok(),
            "step {step} (seed {seed}): {actual:?} vs model {expect:?}"
        );
        if rng.gen_bool(0.1) {
            dev.flush().unwrap();
            model.flush().unwrap();
        }
        // Spot-check a random window.
        let lba = rng.gen_range(0..window);
        let n = (window - lba).min(32);
        assert!(
            read(&dev, lba, n) == read(&model, lba, n),
            "step {step} (seed {seed}): read {lba}+{n} differs from the model"
        );
        if step % 500 == 499 {
            assert_same_content(&dev, &model, &format!("step {step} (seed {seed})"));
            dev = h.reopen(dev);
            assert_same_content(
                &dev,
                &model,
                &format!("step {step} after reopen (seed {seed})"),
            );
        }
    }
}
