//! Bad input: opening garbage, zeros, truncated and damaged images, another
//! file system's image, and an image that is already open. Every case must
//! give a clear error (never a panic) and must never write to the media.

use std::process::Command;

use atomic_api::{AtomicDevice, Request};
use blockdev::{
    check, create_image, FileMedia, FileMediaError, FormatOptions, LogDevice, Media, OpenError,
    OpenOptions, SimMedia,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn tiny() -> FormatOptions {
    FormatOptions {
        segment_size_bytes: 64 << 10,
        checkpoint_interval_bytes: Some(256 << 10),
        ..FormatOptions::default()
    }
}

/// A formatted image with some flushed data, closed cleanly.
fn good_image(ss: u32) -> SimMedia {
    let media = SimMedia::new(ss, 16384 + 24 * (64 << 10));
    let dev = LogDevice::format(media, &tiny()).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for i in 0..200u64 {
        let n = rng.gen_range(1..16u64);
        let mut r = Request::new();
        r.write(
            rng.gen_range(0..if ss == 512 { 2000 } else { 100 }),
            vec![i as u8; (n * u64::from(ss)) as usize],
        );
        dev.submit(r).unwrap();
        if i % 10 == 0 {
            dev.flush().unwrap();
        }
    }
    dev.close().unwrap()
}

/// Opens `media` read-write and read-only; both must fail without
/// writing, and `check` must report errors without panicking. Returns the
/// read-write error.
fn must_refuse(media: &SimMedia, what: &str) -> OpenError {
    let before = media.contents();
    let writes = media.stats().writes;
    let r = std::panic::catch_unwind(|| LogDevice::open(media.clone(), &OpenOptions::default()));
    let err = match r {
        Err(_) => panic!("{what}: open panicked"),
        Ok(Ok(_)) => panic!("{what}: open succeeded"),
        Ok(Err(e)) => e,
    };
    let ro = OpenOptions {
        read_only: true,
        ..OpenOptions::default()
    };
    assert!(
        LogDevice::open(media.clone(), &ro).is_err(),
        "{what}: read-only open succeeded"
    );
    let report = std::panic::catch_unwind(|| check(media))
        .unwrap_or_else(|_| panic!("{what}: check panicked"));
    assert!(!report.is_clean(), "{what}: check found nothing wrong");
    assert_eq!(
        media.stats().writes,
        writes,
        "{what}: the media was written"
    );
    assert!(media.contents() == before, "{what}: the media changed");
    let msg = err.to_string();
    assert!(
        msg.starts_with("sim"),
        "{what}: error does not name the media: {msg}"
    );
    println!("{what}: {msg}");
    err
}

#[test]
fn zeros_and_garbage_are_not_atomfs() {
    for ss in [512u32, 4096] {
        let zeros = SimMedia::new(ss, 4 << 20);
        let e = must_refuse(&zeros, "zeros");
        assert!(matches!(e, OpenError::NotAtomfs { .. }), "{e}");
        let mut rng = ChaCha8Rng::seed_from_u64(u64::from(ss));
        let mut bytes = vec![0u8; 4 << 20];
        rng.fill(&mut bytes[..]);
        let garbage = SimMedia::from_bytes(ss, &bytes);
        let e = must_refuse(&garbage, "garbage");
        assert!(matches!(e, OpenError::NotAtomfs { .. }), "{e}");
        // Tiny media (smaller than the superblock area).
        must_refuse(&SimMedia::new(ss, 4096), "4 KiB media");
    }
}

#[test]
fn truncated_images_are_refused() {
    for ss in [512u32, 4096] {
        let good = good_image(ss);
        let len = good.len_bytes();
        for cut in [4096u64, 8192, 16384, 65536, len / 2, len - 64 * 1024] {
            let img = good.truncated(cut);
            let e = must_refuse(&img, &format!("truncated to {cut} of {len}"));
            assert!(
                !matches!(e, OpenError::Io { .. }),
                "truncation should be diagnosed, not reported as raw I/O: {e}"
            );
        }
    }
}

#[test]
fn superblock_damage_is_refused_when_both_copies_are_bad() {
    let good = good_image(512);
    // One copy damaged: still opens (and says so in check).
    let one = good.snapshot();
    one.poke(0, &[0xFFu8; 512]);
    let dev = LogDevice::open(one.clone(), &OpenOptions::default())
        .expect("open with one superblock copy");
    drop(dev);
    // Both copies damaged: refused.
    let both = good.snapshot();
    both.poke(0, &[0xFFu8; 512]);
    both.poke(4096, &[0xFFu8; 512]);
    must_refuse(&both, "both superblocks damaged");
}

/// Random damage anywhere: open and check never panic; a refused open
/// never writes.
#[test]
fn random_damage_never_panics() {
    let good = good_image(512);
    let len = good.len_bytes();
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let (mut opened, mut refused) = (0, 0);
    for i in 0..300 {
        let img = good.snapshot();
        // Damage where it matters most: superblocks and checkpoint slots
        // half the time, anywhere otherwise.
        let region = if i % 2 == 0 { 16384 } else { len };
        for _ in 0..rng.gen_range(1..4) {
            let at = rng.gen_range(0..region / 512) * 512;
            let mut junk = vec![0u8; 512];
            if rng.gen_bool(0.5) {
                rng.fill(&mut junk[..]);
            }
            img.poke(at, &junk);
        }
        let writes = img.stats().writes;
        let before = img.contents();
        let r = std::panic::catch_unwind(|| {
            let _ = check(&img);
            match LogDevice::open(img.clone(), &OpenOptions::default()) {
                Ok(dev) => {
                    // Whatever it recovered must be readable.
                    let mut from = 0;
                    let mut buf = vec![0u8; 512];
                    while let Ok(Some(r)) = dev.next_mapped(from) {
                        let _ = dev.read(r.start, &mut buf);
                        from = r.end;
                    }
                    true
                }
                Err(_) => false,
            }
        });
        match r {
            Err(_) => panic!("damage case {i}: panicked"),
            Ok(true) => opened += 1,
            Ok(false) => {
                refused += 1;
                assert_eq!(
                    img.stats().writes,
                    writes,
                    "damage case {i}: refused open wrote"
                );
                assert!(
                    img.contents() == before,
                    "damage case {i}: refused open changed the media"
                );
            }
        }
    }
    println!("random damage: {opened} opened, {refused} refused, 0 panics");
}

#[test]
fn ext4_image_is_not_atomfs() {
    if Command::new("mkfs.ext4").arg("-V").output().is_err() {
        println!("ext4_image_is_not_atomfs: skipped (mkfs.ext4 not found)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ext4.img");
    create_image(&path, 32 << 20, false).unwrap();
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&path)
        .output()
        .unwrap();
    if !out.status.success() {
        println!(
            "ext4_image_is_not_atomfs: skipped (mkfs.ext4 failed: {})",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return;
    }
    let before = std::fs::read(&path).unwrap();
    let media = FileMedia::open(&path).unwrap();
    let report = check(&media);
    assert!(!report.is_clean());
    let err = match LogDevice::open(media, &OpenOptions::default()) {
        Ok(_) => panic!("an ext4 image opened as atomfs"),
        Err(e) => e,
    };
    let msg = err.to_string();
    println!("ext4 image: {msg}");
    assert!(matches!(err, OpenError::NotAtomfs { .. }), "{msg}");
    assert!(msg.contains("ext4.img"), "error names the path: {msg}");
    assert!(
        std::fs::read(&path).unwrap() == before,
        "the ext4 image was modified"
    );
}

#[test]
fn image_already_open_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("busy.img");
    create_image(&path, 4 << 20, false).unwrap();
    let dev = LogDevice::format(FileMedia::open(&path).unwrap(), &tiny()).unwrap();
    // Same process, second opener.
    let err = FileMedia::open(&path).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, FileMediaError::Busy { .. }), "{msg}");
    assert!(
        msg.contains("busy.img") && msg.contains("already in use by another atomfs or mount"),
        "{msg}"
    );
    // Another process: flock(1) with -n fails on the held lock.
    if let Ok(out) = Command::new("flock")
        .args(["-n", "-x"])
        .arg(&path)
        .arg("true")
        .output()
    {
        assert!(
            !out.status.success(),
            "another process could lock the image"
        );
    } else {
        println!(
            "image_already_open_is_refused_clearly: flock(1) missing, cross-process part skipped"
        );
    }
    drop(dev);
    // Closing releases the lock. (Retry briefly: a child forked by a
    // concurrent test may hold a copy of the descriptor until it execs.)
    let mut media = FileMedia::open(&path);
    for _ in 0..50 {
        if !matches!(media, Err(FileMediaError::Busy { .. })) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        media = FileMedia::open(&path);
    }
    let dev = LogDevice::open(media.unwrap(), &OpenOptions::default()).unwrap();
    assert_eq!(dev.space().live_bytes, 0);
}

#[test]
fn read_only_open_never_writes() {
    let good = good_image(512);
    // Leave an unflushed tail to recover.
    let dev = LogDevice::open(good, &OpenOptions::default()).unwrap();
    let mut r = Request::new();
    r.write(5, vec![7u8; 4096]);
    dev.submit(r).unwrap();
    dev.flush().unwrap();
    let media = dev.media().snapshot();
    drop(dev);
    let writes = media.stats().writes;
    let ro = OpenOptions {
        read_only: true,
        ..OpenOptions::default()
    };
    let dev = LogDevice::open(media.clone(), &ro).unwrap();
    let mut buf = vec![0u8; 4096];
    dev.read(5, &mut buf).unwrap();
    assert_eq!(buf, vec![7u8; 4096]);
    let mut r = Request::new();
    r.write(5, vec![1u8; 512]);
    assert!(matches!(dev.submit(r), Err(atomic_api::Error::ReadOnly)));
    assert!(matches!(dev.flush(), Err(atomic_api::Error::ReadOnly)));
    drop(dev);
    assert_eq!(media.stats().writes, writes, "a read-only open wrote");
    assert_eq!(media.stats().discards, 0);
}
