//! Byte budgets per operation (issue 3): on MemDevice the distinct sectors
//! written by the operation's requests must fit the budget less one header
//! sector. Prints the measured numbers.

mod common;
use common::*;

use std::sync::Arc;

use atomfs::budget::{self, distinct_sectors_written, Budget, Recorder};
use atomfs::{Fs, MkfsOptions};
use atomic_api::MemDevice;

type F = Fs<Arc<Recorder<MemDevice>>>;

fn fs_with(sector: u32) -> F {
    let dev = Arc::new(Recorder::new(MemDevice::new(sector, 1 << 30)));
    Fs::mkfs(&dev, &MkfsOptions::default()).unwrap();
    let fs = Fs::mount(dev, &mount_opts()).unwrap();
    fs.device().take();
    fs
}

/// Runs `setup` (not measured) then `op` + sync, and checks the budget.
fn measure(b: Budget, setup: impl Fn(&F) -> u64, op: impl Fn(&F, u64)) -> u64 {
    let fs = fs_with(512);
    let x = setup(&fs);
    fs.sync().unwrap();
    fs.device().take();
    op(&fs, x);
    fs.sync().unwrap();
    let reqs = fs.device().take();
    let sectors = distinct_sectors_written(&reqs, 512);
    let bytes = sectors * 512 + budget::HEADER_BYTES;
    println!(
        "{:40} {} sectors = {bytes} B with header (budget {} B)",
        b.name, sectors, b.bytes
    );
    assert!(
        sectors <= b.max_sectors(512),
        "{}: {sectors} sectors > {}",
        b.name,
        b.max_sectors(512)
    );
    bytes
}

fn file_with(fs: &F, size: usize) -> u64 {
    let f = fs
        .mknod(&root(), ROOT, os("f"), libc::S_IFREG | 0o644, 0)
        .unwrap();
    if size > 0 {
        fs.write(&root(), f.ino, 0, &vec![1u8; size], false)
            .unwrap();
    }
    f.ino
}

#[test]
fn budgets_hold() {
    let none = |_: &F| 0;
    measure(budget::CREATE_EMPTY, none, |fs, _| {
        fs.create(&root(), ROOT, os("new"), 0o644, libc::O_RDWR)
            .unwrap();
    });
    measure(budget::CREATE_WRITE_4K, none, |fs, _| {
        let (a, _) = fs
            .create(&root(), ROOT, os("new"), 0o644, libc::O_RDWR)
            .unwrap();
        fs.write(&root(), a.ino, 0, &[5u8; 4096], false).unwrap();
    });
    measure(
        budget::APPEND_4K,
        |fs| file_with(fs, 8192),
        |fs, ino| {
            fs.write(&root(), ino, 0, &[5u8; 4096], true).unwrap();
        },
    );
    // 900 -> 1000 bytes stays inside one sector; an append that crosses a
    // sector boundary writes two data sectors (one more than the budget).
    measure(
        budget::APPEND_100B,
        |fs| file_with(fs, 900),
        |fs, ino| {
            fs.write(&root(), ino, 0, &[5u8; 100], true).unwrap();
        },
    );
    measure(
        budget::RENAME_SAME_DIR,
        |fs| file_with(fs, 0),
        |fs, _| {
            fs.rename(&root(), ROOT, os("f"), ROOT, os("g"), 0).unwrap();
        },
    );
    measure(
        budget::UNLINK,
        |fs| file_with(fs, 5000),
        |fs, _| {
            fs.unlink(&root(), ROOT, os("f")).unwrap();
        },
    );
    measure(
        budget::RMDIR,
        |fs| fs.mkdir(&root(), ROOT, os("d"), 0o755).unwrap().ino,
        |fs, _| {
            fs.rmdir(&root(), ROOT, os("d")).unwrap();
        },
    );
    measure(budget::MKDIR, none, |fs, _| {
        fs.mkdir(&root(), ROOT, os("d"), 0o755).unwrap();
    });
}

#[test]
fn budgets_hold_in_a_populated_directory() {
    // Same operations among 1000 siblings: still O(1) sectors.
    let setup = |fs: &F| {
        for i in 0..1000 {
            fs.mknod(
                &root(),
                ROOT,
                os(&format!("sib{i}")),
                libc::S_IFREG | 0o644,
                0,
            )
            .unwrap();
        }
        file_with(fs, 0)
    };
    measure(budget::CREATE_EMPTY, setup, |fs, _| {
        fs.create(&root(), ROOT, os("new"), 0o644, libc::O_RDWR)
            .unwrap();
    });
    measure(budget::RENAME_SAME_DIR, setup, |fs, _| {
        fs.rename(&root(), ROOT, os("f"), ROOT, os("g"), 0).unwrap();
    });
    measure(budget::UNLINK, setup, |fs, _| {
        fs.unlink(&root(), ROOT, os("sib7")).unwrap();
    });
}

#[test]
fn metadata_update_is_one_sector_with_4k_sectors_too() {
    let fs = fs_with(4096);
    let f = fs
        .mknod(&root(), ROOT, os("f"), libc::S_IFREG | 0o644, 0)
        .unwrap();
    fs.device().take();
    fs.setattr(
        &root(),
        f.ino,
        &atomfs::SetAttr {
            mode: Some(0o600),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(distinct_sectors_written(&fs.device().take(), 4096), 1);
    fs.write(&root(), f.ino, 0, &[1u8; 100], false).unwrap();
    assert_eq!(distinct_sectors_written(&fs.device().take(), 4096), 2);
}
