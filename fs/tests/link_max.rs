//! `LINK_MAX` (65000, as ext4): link, mkdir and rename of a directory into
//! a full parent fail with EMLINK and change nothing. pjdfstest's
//! `link::link_count_max` cannot run through FUSE (glibc's
//! `pathconf(_PC_LINK_MAX)` does not know FUSE and answers 127), so the
//! limit is checked here on the core.

mod common;
use common::*;

use atomfs::inspect::dump_tree;
use atomfs::{Errno, RENAME_EXCHANGE, ROOT_INO};

const LINK_MAX: u32 = 65_000;

#[test]
fn link_fails_with_emlink_at_link_max() {
    let fs = new_fs();
    let d = mkdir(&fs, ROOT_INO, "d");
    let f = create(&fs, d.ino, "f");
    for i in 1..LINK_MAX {
        fs.link(&root(), f.ino, d.ino, os(&format!("l{i}")))
            .unwrap();
    }
    assert_eq!(fs.getattr(f.ino).unwrap().nlink, LINK_MAX);
    let before = dump_tree(&fs).unwrap();
    assert_eq!(
        fs.link(&root(), f.ino, d.ino, os("one-more")).unwrap_err(),
        Errno::EMLINK
    );
    assert_eq!(dump_tree(&fs).unwrap(), before);
    // One link fewer makes room again.
    fs.unlink(&root(), d.ino, os("l1")).unwrap();
    fs.link(&root(), f.ino, d.ino, os("one-more")).unwrap();
    assert_eq!(fs.getattr(f.ino).unwrap().nlink, LINK_MAX);
    assert_eq!(dump_tree(&remount(&fs)).unwrap(), dump_tree(&fs).unwrap());
}

#[test]
fn mkdir_and_rename_of_a_directory_into_a_full_parent_fail_with_emlink() {
    let fs = new_fs();
    let full = mkdir(&fs, ROOT_INO, "full");
    for i in 2..LINK_MAX {
        fs.mkdir(&root(), full.ino, os(&format!("s{i}")), 0o755)
            .unwrap();
    }
    assert_eq!(fs.getattr(full.ino).unwrap().nlink, LINK_MAX);
    let other = mkdir(&fs, ROOT_INO, "other");
    let moving = mkdir(&fs, other.ino, "moving");
    create(&fs, other.ino, "file");
    let before = dump_tree(&fs).unwrap();
    assert_eq!(
        fs.mkdir(&root(), full.ino, os("more"), 0o755).unwrap_err(),
        Errno::EMLINK
    );
    assert_eq!(
        fs.rename(&root(), other.ino, os("moving"), full.ino, os("moved"), 0)
            .unwrap_err(),
        Errno::EMLINK
    );
    // RENAME_EXCHANGE of a directory in `other` with a file in `full`
    // would give `full` one more link.
    create(&fs, full.ino, "f");
    let before_exchange = dump_tree(&fs).unwrap();
    assert_eq!(
        fs.rename(
            &root(),
            full.ino,
            os("f"),
            other.ino,
            os("moving"),
            RENAME_EXCHANGE
        )
        .unwrap_err(),
        Errno::EMLINK
    );
    assert_eq!(dump_tree(&fs).unwrap(), before_exchange);
    fs.unlink(&root(), full.ino, os("f")).unwrap();
    assert_eq!(dump_tree(&fs).unwrap(), before);
    // Moves that add no link to `full` still work: a file in, a directory
    // over an empty directory, a directory within `full`.
    fs.rename(&root(), other.ino, os("file"), full.ino, os("file"), 0)
        .unwrap();
    fs.rename(&root(), other.ino, os("moving"), full.ino, os("s2"), 0)
        .unwrap();
    assert_eq!(lookup(&fs, full.ino, "s2").unwrap().ino, moving.ino);
    fs.rename(&root(), full.ino, os("s3"), full.ino, os("s3b"), 0)
        .unwrap();
    assert_eq!(fs.getattr(full.ino).unwrap().nlink, LINK_MAX);
    assert_eq!(fs.getattr(other.ino).unwrap().nlink, 2);
    assert_eq!(dump_tree(&remount(&fs)).unwrap(), dump_tree(&fs).unwrap());
}
