//! Inode numbers and the entries a caller holds (`hold_lookups`): the FUSE
//! kernel names inodes by number, and an entry for an old inode that it
//! processes after the number went to a new inode makes it mark the new
//! one bad (EIO). With `hold_lookups` a freed number is reused only after
//! the caller forgot every entry it was given for it.

mod common;
use common::*;

use std::sync::Arc;

use atomfs::{Fs, MkfsOptions, MountOptions, ROOT_INO};
use atomic_api::MemDevice;

fn fs_holding(hold_lookups: bool) -> Fs<Arc<MemDevice>> {
    let dev = Arc::new(MemDevice::new(512, 1 << 30));
    Fs::mkfs(&dev, &MkfsOptions::default()).unwrap();
    Fs::mount(
        dev,
        &MountOptions {
            hold_lookups,
            ..mount_opts()
        },
    )
    .unwrap()
}

fn mknod(fs: &Fs<Arc<MemDevice>>, name: &str) -> u64 {
    fs.mknod(&root(), ROOT_INO, os(name), libc::S_IFREG | 0o644, 0)
        .unwrap()
        .ino
}

#[test]
fn a_freed_number_waits_for_the_last_forget() {
    let fs = fs_holding(true);
    let a = mknod(&fs, "a"); // one entry (the MKNOD reply)
    assert_eq!(lookup(&fs, ROOT_INO, "a").unwrap().ino, a); // two
    assert_eq!(fs.getattr_entry(a).unwrap().ino, a); // three (READDIRPLUS)
    fs.getattr(a).unwrap(); // GETATTR hands out no entry
    assert_eq!(fs.held(a), 3);
    fs.unlink(&root(), ROOT_INO, os("a")).unwrap();
    // Freed, but the caller still holds entries for it.
    let b = mknod(&fs, "b");
    assert_ne!(b, a);
    fs.forget(a, 2);
    let c = mknod(&fs, "c");
    assert_ne!(c, a);
    fs.forget(a, 1);
    assert_eq!(fs.held(a), 0);
    // Now it is the smallest free number again.
    assert_eq!(mknod(&fs, "d"), a);
}

#[test]
fn forgetting_a_live_inode_keeps_it() {
    let fs = fs_holding(true);
    let a = mknod(&fs, "a");
    fs.forget(a, 1);
    fs.forget(a, 5); // more than held: no harm
    assert_eq!(lookup(&fs, ROOT_INO, "a").unwrap().ino, a);
    fs.forget(a, 1);
    fs.unlink(&root(), ROOT_INO, os("a")).unwrap();
    // Not held when freed: reused at once.
    assert_eq!(mknod(&fs, "b"), a);
}

#[test]
fn a_failed_open_of_an_existing_name_gives_its_hold_back() {
    let fs = fs_holding(true);
    let a = mknod(&fs, "a");
    fs.forget(a, 1);
    // create() of an existing name opens it; refused here (not writable by
    // this user), so no entry is handed out.
    fs.setattr(
        &root(),
        a,
        &atomfs::SetAttr {
            mode: Some(0o400),
            ..Default::default()
        },
    )
    .unwrap();
    let user = atomfs::Ctx::user(1000, 1000);
    assert!(fs
        .create(&user, ROOT_INO, os("a"), 0o644, libc::O_WRONLY)
        .is_err());
    assert_eq!(fs.held(a), 0);
}

#[test]
fn without_hold_lookups_a_number_is_reused_at_once() {
    let fs = fs_holding(false);
    let a = mknod(&fs, "a");
    lookup(&fs, ROOT_INO, "a").unwrap();
    fs.unlink(&root(), ROOT_INO, os("a")).unwrap();
    assert_eq!(fs.held(a), 0);
    assert_eq!(mknod(&fs, "b"), a);
}
