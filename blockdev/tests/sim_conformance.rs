//! The conformance suite of the contract (`atomic_api::conformance`) on
//! `LogDevice` over `SimMedia`, the media the crash explorer and the fault
//! tests use, with 512-byte and 4 KiB sectors and every discard mode (what
//! a freed segment reads as must never matter).

use atomic_api::conformance::Harness;
use blockdev::{DiscardMode, FormatOptions, LogDevice, OpenOptions, SimMedia};

struct SimHarness {
    ss: u32,
    discard: DiscardMode,
}

fn tiny() -> FormatOptions {
    // Small segments and frequent checkpoints: GC, checkpoints and segment
    // reuse all happen inside the suite's random-load check.
    FormatOptions {
        segment_size_bytes: 64 << 10,
        checkpoint_interval_bytes: Some(256 << 10),
        ..FormatOptions::default()
    }
}

impl Harness for SimHarness {
    type Device = LogDevice<SimMedia>;

    fn fresh(&self) -> Self::Device {
        let media = SimMedia::new(self.ss, if self.ss == 512 { 4 << 20 } else { 16 << 20 });
        media.set_discard_mode(self.discard);
        LogDevice::format(media, &tiny()).expect("format")
    }

    fn reopen(&self, device: Self::Device) -> Self::Device {
        device.verify().expect("consistent before close");
        let media = device.close().expect("close");
        let dev = LogDevice::open(
            media,
            &OpenOptions {
                checkpoint_interval_bytes: Some(256 << 10),
                ..OpenOptions::default()
            },
        )
        .expect("open");
        dev.verify().expect("consistent after open");
        dev
    }
}

atomic_api::conformance_tests!(SimHarness {
    ss: 512,
    discard: DiscardMode::Zero,
});

#[test]
fn conformance_4k_sectors_stale_discard() {
    // Freed segments keep their old bytes: stale records must never count.
    atomic_api::conformance::run_all(&SimHarness {
        ss: 4096,
        discard: DiscardMode::Keep,
    });
}

#[test]
fn conformance_512_random_discard() {
    atomic_api::conformance::run_all(&SimHarness {
        ss: 512,
        discard: DiscardMode::Random(7),
    });
}
