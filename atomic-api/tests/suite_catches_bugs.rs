//! The conformance suite must fail on devices that break the contract;
//! otherwise passing it would prove nothing.

use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};

use atomic_api::conformance::{checks, Harness};
use atomic_api::{AtomicDevice, Geometry, MemDevice, Request, Result, Segment, Space, Stats};

#[derive(Clone, Copy, Debug)]
enum Bug {
    /// Applies only the first segment of each request.
    DropsLaterSegments,
    /// Ignores trims.
    IgnoresTrims,
    /// Validates nothing.
    SkipsValidation,
    /// Loses everything not flushed at reopen (no clean close).
    ReopenLosesUnflushed,
}

struct Broken {
    inner: MemDevice,
    bug: Bug,
}

impl AtomicDevice for Broken {
    fn geometry(&self) -> Geometry {
        self.inner.geometry()
    }
    fn submit(&self, request: Request) -> Result<()> {
        let request = match self.bug {
            Bug::DropsLaterSegments => {
                let mut r = Request::new();
                if let Some(first) = request.segments().first() {
                    r.push(first.clone());
                }
                request.validate(&self.geometry())?;
                r
            }
            Bug::IgnoresTrims => {
                request.validate(&self.geometry())?;
                let mut r = Request::new();
                for s in request.segments() {
                    if matches!(s, Segment::Write { .. }) {
                        r.push(s.clone());
                    }
                }
                r
            }
            Bug::SkipsValidation => {
                // Applies whatever it can, segment by segment.
                for s in request.into_segments() {
                    let mut r = Request::new();
                    r.push(s);
                    let _ = self.inner.submit(r);
                }
                return Ok(());
            }
            Bug::ReopenLosesUnflushed => request,
        };
        self.inner.submit(request)
    }
    fn read(&self, lba: u64, buf: &mut [u8]) -> Result<()> {
        self.inner.read(lba, buf)
    }
    fn flush(&self) -> Result<()> {
        self.inner.flush()
    }
    fn next_mapped(&self, from: u64) -> Result<Option<Range<u64>>> {
        self.inner.next_mapped(from)
    }
    fn space(&self) -> Space {
        self.inner.space()
    }
    fn stats(&self) -> Stats {
        self.inner.stats()
    }
}

struct BrokenHarness(Bug);

impl Harness for BrokenHarness {
    type Device = Broken;
    fn fresh(&self) -> Broken {
        Broken {
            inner: MemDevice::new(512, 16 << 20),
            bug: self.0,
        }
    }
    fn reopen(&self, device: Broken) -> Broken {
        if !matches!(self.0, Bug::ReopenLosesUnflushed) {
            device.flush().unwrap();
        }
        Broken {
            inner: device.inner.crash(0),
            bug: self.0,
        }
    }
}

#[test]
fn every_planted_bug_fails_some_check() {
    for bug in [
        Bug::DropsLaterSegments,
        Bug::IgnoresTrims,
        Bug::SkipsValidation,
        Bug::ReopenLosesUnflushed,
    ] {
        let harness = BrokenHarness(bug);
        let failed: Vec<&str> = checks::<BrokenHarness>()
            .into_iter()
            .filter(|(_, check)| catch_unwind(AssertUnwindSafe(|| check(&harness))).is_err())
            .map(|(name, _)| name)
            .collect();
        eprintln!("{bug:?} caught by {failed:?}");
        assert!(!failed.is_empty(), "the suite did not notice {bug:?}");
    }
}
