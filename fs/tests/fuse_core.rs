//! Core behaviour the FUSE adapter relies on, checked without a mount (no
//! root needed): a read-only mount over a read-only block layer answers
//! fsync, fsyncdir and unmount with success (the kernel sends FSYNC for
//! files opened read-only on a `ro` mount), and refuses every change with
//! EROFS.

use std::ffi::OsStr;

use atomfs::{Ctx, Errno, Fs, MkfsOptions, MountOptions, ROOT_INO};
use blockdev::{FormatOptions, LogDevice, OpenOptions, SimMedia};

fn formatted() -> SimMedia {
    let media = SimMedia::new(512, 64 << 20);
    let dev = LogDevice::format(
        media,
        &FormatOptions {
            segment_size_bytes: 1 << 20,
            ..FormatOptions::default()
        },
    )
    .unwrap();
    Fs::mkfs(&dev, &MkfsOptions::default()).unwrap();
    let fs = Fs::mount(dev, &MountOptions::default()).unwrap();
    let (attr, fh) = fs
        .create(&Ctx::root(), ROOT_INO, OsStr::new("f"), 0o644, libc::O_RDWR)
        .unwrap();
    assert_eq!(fs.write(&Ctx::root(), attr.ino, 0, b"hello", false), Ok(5));
    fs.release(attr.ino, fh).unwrap();
    fs.unmount().unwrap().close().unwrap()
}

#[test]
fn read_only_mount_syncs_trivially_and_refuses_changes() {
    let media = formatted();
    let before = media.contents();
    let dev = LogDevice::open(
        media,
        &OpenOptions {
            read_only: true,
            ..OpenOptions::default()
        },
    )
    .unwrap();
    let fs = Fs::mount(
        dev,
        &MountOptions {
            read_only: true,
            ..MountOptions::default()
        },
    )
    .unwrap();
    let ino = fs
        .lookup(&Ctx::root(), ROOT_INO, OsStr::new("f"))
        .unwrap()
        .ino;
    let fh = fs.open(&Ctx::root(), ino, libc::O_RDONLY).unwrap();
    assert_eq!(fs.read(ino, 0, 100).unwrap(), b"hello");
    assert_eq!(fs.fsync(ino, false), Ok(()));
    assert_eq!(fs.fsync(ino, true), Ok(()));
    assert_eq!(fs.fsyncdir(ROOT_INO, false), Ok(()));
    assert_eq!(fs.sync(), Ok(()));
    assert_eq!(
        fs.write(&Ctx::root(), ino, 0, b"x", false),
        Err(Errno::EROFS)
    );
    assert_eq!(
        fs.mkdir(&Ctx::root(), ROOT_INO, OsStr::new("d"), 0o755)
            .err(),
        Some(Errno::EROFS)
    );
    // A failed flush would have marked the file system failed: reads and
    // a later fsync must still work.
    assert_eq!(fs.fsync(ino, false), Ok(()));
    fs.release(ino, fh).unwrap();
    let dev = fs.unmount().expect("read-only unmount succeeds");
    let media = dev.close().unwrap();
    assert!(
        media.contents() == before,
        "a read-only mount wrote the media"
    );
}
