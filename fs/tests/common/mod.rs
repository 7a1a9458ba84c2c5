//! Shared helpers of the core tests.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use atomfs::{Clock, Ctx, FileAttr, Fs, MkfsOptions, MountOptions, Timespec, ROOT_INO};
use atomic_api::{AtomicDevice, MemDevice};

/// A clock that advances one second per reading, so every change is visible.
#[derive(Default)]
pub struct StepClock(AtomicI64);

impl Clock for StepClock {
    fn now(&self) -> Timespec {
        Timespec::new(1_700_000_000 + self.0.fetch_add(1, Ordering::Relaxed), 500)
    }
}

pub fn mount_opts() -> MountOptions {
    MountOptions {
        clock: Some(Arc::new(StepClock::default())),
        ..MountOptions::default()
    }
}

/// A fresh file system on a 512-byte-sector MemDevice of `capacity` bytes.
pub fn new_fs_with(sector: u32, capacity: u64) -> Fs<Arc<MemDevice>> {
    let dev = Arc::new(MemDevice::new(sector, capacity));
    Fs::mkfs(
        &dev,
        &MkfsOptions {
            root_mode: Some(0o777),
            ..Default::default()
        },
    )
    .unwrap();
    Fs::mount(dev, &mount_opts()).unwrap()
}

pub fn new_fs() -> Fs<Arc<MemDevice>> {
    new_fs_with(512, 1 << 30)
}

/// Remounts what the device holds now (as after a clean crash).
pub fn remount(fs: &Fs<Arc<MemDevice>>) -> Fs<Arc<MemDevice>> {
    Fs::mount(Arc::new(fs.device().snapshot()), &mount_opts()).unwrap()
}

pub fn root() -> Ctx {
    Ctx::root()
}

pub fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

pub fn create<D: AtomicDevice>(fs: &Fs<D>, parent: u64, name: &str) -> FileAttr {
    fs.mknod(&root(), parent, os(name), libc::S_IFREG | 0o644, 0)
        .unwrap()
}

pub fn mkdir<D: AtomicDevice>(fs: &Fs<D>, parent: u64, name: &str) -> FileAttr {
    fs.mkdir(&root(), parent, os(name), 0o755).unwrap()
}

pub fn lookup<D: AtomicDevice>(fs: &Fs<D>, parent: u64, name: &str) -> atomfs::Result<FileAttr> {
    fs.lookup(&root(), parent, os(name))
}

pub fn names<D: AtomicDevice>(fs: &Fs<D>, dir: u64) -> Vec<String> {
    let mut v: Vec<String> = fs
        .readdir_all(&root(), dir)
        .unwrap()
        .into_iter()
        .map(|e| e.name.to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

pub const ROOT: u64 = ROOT_INO;
