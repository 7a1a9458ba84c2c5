//! Orphan reclaim at mount: only inodes without links are freed; a stray
//! orphan record (for a linked inode, the root, or a free slot) is dropped
//! and nothing reachable is lost.

mod common;
use common::*;

use std::sync::Arc;

use atomfs::format::orphan;
use atomfs::fsck::{check, FsckOptions};
use atomfs::inspect::dump_tree;
use atomfs::{Errno, Fs, ROOT_INO};
use atomic_api::{AtomicDevice, MemDevice, Request};

/// The inode numbers with an orphan record on `dev`.
fn orphan_records(fs: &Fs<Arc<MemDevice>>, dev: &MemDevice) -> Vec<u64> {
    let l = fs.layout();
    let (start, end) = (l.orphan_base, l.orphan_base + l.max_ino + 1);
    let mut out = Vec::new();
    let mut at = start;
    while let Some(r) = dev.next_mapped(at).unwrap() {
        if r.start >= end {
            break;
        }
        out.extend(r.start - start..r.end.min(end) - start);
        at = r.end;
    }
    out
}

#[test]
fn mount_frees_only_unlinked_orphans_and_drops_stray_records() {
    for ss in [512, 4096] {
        let fs = new_fs_with(ss, 1 << 30);
        let f = create(&fs, ROOT, "f");
        fs.write(&root(), f.ino, 0, &[7u8; 20_000], false).unwrap();
        let d = mkdir(&fs, ROOT, "d");
        let linked_twice = create(&fs, d.ino, "x");
        fs.link(&root(), linked_twice.ino, ROOT, os("x2")).unwrap();
        // A genuine orphan: open, then its last link removed.
        let g = create(&fs, ROOT, "g");
        fs.write(&root(), g.ino, 0, &[9u8; 20_000], false).unwrap();
        let fh = fs.open(&root(), g.ino, libc::O_RDWR).unwrap();
        fs.unlink(&root(), ROOT, os("g")).unwrap();
        fs.sync().unwrap();
        let tree = dump_tree(&fs).unwrap();
        let free_slot = g.ino + 40;
        assert_eq!(fs.getattr(free_slot).unwrap_err(), Errno::ENOENT);

        // The state after a crash, plus stray orphan records (what a buggy
        // or older writer, or a partial repair, could leave behind).
        let dev = fs.device().snapshot();
        let l = fs.layout();
        let mut req = Request::new();
        for ino in [f.ino, d.ino, linked_twice.ino, ROOT_INO, free_slot] {
            req.write(l.orphan_lba(ino), orphan::encode(ino, ss));
        }
        dev.submit(req).unwrap();
        let mut with_records = orphan_records(&fs, &dev);
        with_records.sort_unstable();
        let mut want = vec![f.ino, d.ino, linked_twice.ino, ROOT_INO, free_slot, g.ino];
        want.sort_unstable();
        assert_eq!(with_records, want, "{ss}: records before mount");

        let live_before = dev.space().live_bytes;
        let m = Fs::mount(Arc::new(dev), &mount_opts()).unwrap();
        // Everything linked survives, with its data and link counts.
        assert_eq!(dump_tree(&m).unwrap(), tree, "{ss}: tree after reclaim");
        assert_eq!(m.read(f.ino, 0, 20_000).unwrap(), vec![7u8; 20_000]);
        assert_eq!(m.getattr(linked_twice.ino).unwrap().nlink, 2);
        assert_eq!(m.getattr(d.ino).unwrap().nlink, 2);
        // The real orphan is gone, its data trimmed.
        assert_eq!(m.getattr(g.ino).unwrap_err(), Errno::ENOENT);
        assert!(m.device().space().live_bytes < live_before - 20_000);
        // Every record is gone, stray ones included.
        assert_eq!(orphan_records(&m, m.device()), Vec::<u64>::new());
        let r = check(m.device(), &FsckOptions::default());
        let errors: Vec<_> = r.errors().map(|f| f.message.clone()).collect();
        assert!(errors.is_empty(), "{ss}: fsck after reclaim: {errors:#?}");
        assert_eq!(r.stats.orphans, 0);
        // And a second mount sees the same tree.
        assert_eq!(dump_tree(&remount(&m)).unwrap(), tree);

        // Without the crash the open handle still works and close frees it.
        assert_eq!(fs.read(g.ino, 0, 4).unwrap(), [9, 9, 9, 9]);
        fs.release(g.ino, fh).unwrap();
        assert_eq!(fs.getattr(g.ino).unwrap_err(), Errno::ENOENT);
    }
}
