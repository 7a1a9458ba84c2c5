//! `MemDevice` passes the conformance suite, and its crash model behaves.

use atomic_api::conformance::Harness;
use atomic_api::{AtomicDevice, Fault, MemDevice, Request};

struct MemHarness;

impl Harness for MemHarness {
    type Device = MemDevice;

    fn fresh(&self) -> MemDevice {
        MemDevice::new(512, 16 << 20)
    }

    fn reopen(&self, device: MemDevice) -> MemDevice {
        device.flush().unwrap();
        device.snapshot()
    }
}

atomic_api::conformance_tests!(MemHarness);

#[test]
fn conformance_on_4k_sectors() {
    struct Mem4k;
    impl Harness for Mem4k {
        type Device = MemDevice;
        fn fresh(&self) -> MemDevice {
            MemDevice::new(4096, 16 << 20)
        }
        fn reopen(&self, device: MemDevice) -> MemDevice {
            device.flush().unwrap();
            device.snapshot()
        }
    }
    atomic_api::conformance::run_all(&Mem4k);
}

#[test]
fn crash_keeps_durable_state_plus_a_prefix_of_pending() {
    let dev = MemDevice::new(512, 1 << 20);
    let mut a = Request::new();
    a.write(0, vec![1u8; 512]);
    dev.submit(a).unwrap();
    dev.flush().unwrap();
    for tag in 2..5u8 {
        let mut r = Request::new();
        r.write(0, vec![tag; 512])
            .write(u64::from(tag) * 10, vec![tag; 512]);
        dev.submit(r).unwrap();
    }
    assert_eq!(dev.pending_requests(), 3);
    for keep in 0..=3usize {
        let crashed = dev.crash(keep);
        let mut buf = vec![0u8; 512];
        crashed.read(0, &mut buf).unwrap();
        assert_eq!(buf[0], 1 + keep as u8, "sector 0 after keeping {keep}");
        for tag in 2..5u8 {
            crashed.read(u64::from(tag) * 10, &mut buf).unwrap();
            let visible = usize::from(tag - 1) <= keep;
            assert_eq!(
                buf[0] == tag,
                visible,
                "request {tag} visibility after keeping {keep}"
            );
        }
    }
}

#[test]
fn injected_faults() {
    let dev = MemDevice::new(512, 1 << 20);
    let mut r = Request::new();
    r.write(0, vec![1u8; 512]);
    dev.inject(Fault::SubmitNoSpace);
    assert!(matches!(
        dev.submit(r.clone()),
        Err(atomic_api::Error::NoSpace { .. })
    ));
    assert_eq!(dev.next_mapped(0).unwrap(), None, "NoSpace had an effect");
    dev.submit(r.clone()).expect("healthy after NoSpace");
    dev.inject(Fault::FlushIo);
    assert!(matches!(dev.flush(), Err(atomic_api::Error::Io { .. })));
    assert!(
        matches!(dev.submit(r), Err(atomic_api::Error::Failed { .. })),
        "not fail-stop"
    );
    assert!(matches!(dev.flush(), Err(atomic_api::Error::Failed { .. })));
}
