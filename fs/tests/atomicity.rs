//! The rule: every state-changing operation is exactly ONE request, and a
//! failed request (NoSpace, Io) returns ENOSPC/EIO and changes nothing —
//! neither the tree (memory) nor the media.

mod common;
use common::*;

use std::sync::Arc;

use atomfs::inspect::dump_tree;
use atomfs::{
    Errno, Fs, SetAttr, TimeSet, Timespec, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE,
    RENAME_EXCHANGE, RENAME_NOREPLACE, XATTR_CREATE,
};
use atomic_api::{AtomicDevice, Fault, MemDevice};

type F = Fs<Arc<MemDevice>>;

/// Inode numbers of the fixture.
#[derive(Clone, Copy)]
struct Fx {
    f: u64,
    d: u64,
    g: u64,
    /// An open handle on `o` (in the root), unlinked in `prep` when asked.
    o: u64,
    fh: u64,
}

/// A small tree: /f (3000 bytes, xattr), /d/g, /e (empty dir), /s, /o (open).
fn fixture() -> (F, Fx) {
    let fs = new_fs();
    let f = create(&fs, ROOT, "f");
    fs.write(&root(), f.ino, 0, &[7u8; 3000], false).unwrap();
    fs.setxattr(&root(), f.ino, os("user.a"), b"1", 0).unwrap();
    let d = mkdir(&fs, ROOT, "d");
    let g = create(&fs, d.ino, "g");
    mkdir(&fs, ROOT, "e");
    fs.symlink(&root(), ROOT, os("s"), os("f")).unwrap();
    let o = create(&fs, ROOT, "o");
    fs.write(&root(), o.ino, 0, b"open", false).unwrap();
    let fh = fs.open(&root(), o.ino, libc::O_RDWR).unwrap();
    (
        fs,
        Fx {
            f: f.ino,
            d: d.ino,
            g: g.ino,
            o: o.ino,
            fh,
        },
    )
}

type Op = fn(&F, Fx) -> atomfs::Result<()>;

fn sa() -> SetAttr {
    SetAttr::default()
}

/// (name, prepare (not counted), operation).
fn cases() -> Vec<(&'static str, Op, Op)> {
    let none: Op = |_, _| Ok(());
    vec![
        ("mknod file", none, |fs, _| {
            fs.mknod(&root(), ROOT, os("n"), libc::S_IFREG | 0o644, 0)
                .map(drop)
        }),
        ("mknod fifo", none, |fs, _| {
            fs.mknod(&root(), ROOT, os("n"), libc::S_IFIFO | 0o644, 0)
                .map(drop)
        }),
        ("mknod chardev", none, |fs, _| {
            fs.mknod(&root(), ROOT, os("n"), libc::S_IFCHR | 0o644, 0x0103)
                .map(drop)
        }),
        ("create", none, |fs, _| {
            fs.create(&root(), ROOT, os("n"), 0o600, libc::O_RDWR | libc::O_EXCL)
                .map(drop)
        }),
        ("mkdir", none, |fs, x| {
            fs.mkdir(&root(), x.d, os("n"), 0o700).map(drop)
        }),
        ("symlink", none, |fs, _| {
            fs.symlink(&root(), ROOT, os("n"), os("target")).map(drop)
        }),
        ("symlink long", none, |fs, _| {
            fs.symlink(&root(), ROOT, os("n"), os(&"t".repeat(2000)))
                .map(drop)
        }),
        ("link", none, |fs, x| {
            fs.link(&root(), x.f, x.d, os("n")).map(drop)
        }),
        ("unlink", none, |fs, _| fs.unlink(&root(), ROOT, os("f"))),
        ("unlink open", none, |fs, _| {
            fs.unlink(&root(), ROOT, os("o"))
        }),
        (
            "release orphan",
            |fs, _| fs.unlink(&root(), ROOT, os("o")),
            |fs, x| fs.release(x.o, x.fh),
        ),
        ("rmdir", none, |fs, _| fs.rmdir(&root(), ROOT, os("e"))),
        ("rename same dir", none, |fs, _| {
            fs.rename(&root(), ROOT, os("f"), ROOT, os("f2"), 0)
        }),
        ("rename across", none, |fs, x| {
            fs.rename(&root(), ROOT, os("f"), x.d, os("f"), 0)
        }),
        ("rename overwrite", none, |fs, x| {
            fs.rename(&root(), ROOT, os("f"), x.d, os("g"), 0)
        }),
        ("rename noreplace", none, |fs, x| {
            fs.rename(&root(), ROOT, os("s"), x.d, os("s"), RENAME_NOREPLACE)
        }),
        ("rename exchange", none, |fs, x| {
            fs.rename(&root(), ROOT, os("e"), x.d, os("g"), RENAME_EXCHANGE)
        }),
        ("rename dir", none, |fs, x| {
            fs.rename(&root(), ROOT, os("e"), x.d, os("e2"), 0)
        }),
        (
            "rename dir over empty dir",
            |fs, x| fs.mkdir(&root(), x.d, os("e"), 0o755).map(drop),
            |fs, x| fs.rename(&root(), ROOT, os("e"), x.d, os("e"), 0),
        ),
        ("chmod", none, |fs, x| {
            fs.setattr(
                &root(),
                x.f,
                &SetAttr {
                    mode: Some(0o4711),
                    ..sa()
                },
            )
            .map(drop)
        }),
        ("chown", none, |fs, x| {
            fs.setattr(
                &root(),
                x.f,
                &SetAttr {
                    uid: Some(5),
                    gid: Some(6),
                    ..sa()
                },
            )
            .map(drop)
        }),
        ("truncate down", none, |fs, x| {
            fs.setattr(
                &root(),
                x.f,
                &SetAttr {
                    size: Some(700),
                    ..sa()
                },
            )
            .map(drop)
        }),
        ("truncate up", none, |fs, x| {
            fs.setattr(
                &root(),
                x.f,
                &SetAttr {
                    size: Some(1 << 40),
                    ..sa()
                },
            )
            .map(drop)
        }),
        ("utimens", none, |fs, x| {
            fs.setattr(
                &root(),
                x.f,
                &SetAttr {
                    atime: Some(TimeSet::At(Timespec::new(5, 6))),
                    mtime: Some(TimeSet::Now),
                    ..sa()
                },
            )
            .map(drop)
        }),
        ("write small", none, |fs, x| {
            fs.write(&root(), x.f, 100, b"abc", false).map(drop)
        }),
        ("write 1 MiB", none, |fs, x| {
            fs.write(&root(), x.g, 333, &vec![9u8; 1 << 20], false)
                .map(drop)
        }),
        ("append", none, |fs, x| {
            fs.write(&root(), x.f, 0, b"tail", true).map(drop)
        }),
        ("fallocate", none, |fs, x| {
            fs.fallocate(&root(), x.f, 0, 1 << 20, 0)
        }),
        ("fallocate keep size", none, |fs, x| {
            fs.fallocate(&root(), x.f, 0, 1 << 20, FALLOC_FL_KEEP_SIZE)
        }),
        ("punch hole", none, |fs, x| {
            fs.fallocate(
                &root(),
                x.f,
                100,
                2000,
                FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
            )
        }),
        ("setxattr", none, |fs, x| {
            fs.setxattr(&root(), x.f, os("user.b"), b"2", XATTR_CREATE)
        }),
        ("setxattr big", none, |fs, x| {
            fs.setxattr(&root(), x.f, os("user.big"), &[3u8; 3000], 0)
        }),
        (
            "shrink big xattr",
            |fs, x| fs.setxattr(&root(), x.f, os("user.big"), &[3u8; 3000], 0),
            |fs, x| fs.setxattr(&root(), x.f, os("user.big"), b"small", 0),
        ),
        ("removexattr", none, |fs, x| {
            fs.removexattr(&root(), x.f, os("user.a"))
        }),
        ("open O_TRUNC", none, |fs, x| {
            fs.open(&root(), x.f, libc::O_WRONLY | libc::O_TRUNC)
                .map(drop)
        }),
    ]
}

fn media(fs: &F) -> Vec<(u64, Vec<u8>)> {
    fs.device().sectors()
}

#[test]
fn every_operation_is_exactly_one_request() {
    for (name, prep, op) in cases() {
        let (fs, x) = fixture();
        prep(&fs, x).unwrap();
        let before = fs.device().stats().requests;
        op(&fs, x).unwrap_or_else(|e| panic!("{name}: {e}"));
        let n = fs.device().stats().requests - before;
        assert_eq!(n, 1, "{name} submitted {n} requests");
        // And the result survives a remount.
        let tree = dump_tree(&fs).unwrap();
        assert_eq!(
            dump_tree(&remount(&fs)).unwrap(),
            tree,
            "{name} after remount"
        );
    }
}

#[test]
fn failed_request_changes_nothing() {
    for fault in [Fault::SubmitNoSpace, Fault::SubmitIo] {
        for (name, prep, op) in cases() {
            let (fs, x) = fixture();
            prep(&fs, x).unwrap();
            let tree = dump_tree(&fs).unwrap();
            let sectors = media(&fs);
            fs.device().inject(fault);
            let err = op(&fs, x).expect_err(name);
            let want = if fault == Fault::SubmitNoSpace {
                Errno::ENOSPC
            } else {
                Errno::EIO
            };
            assert_eq!(err, want, "{name} under {fault:?}");
            assert_eq!(media(&fs), sectors, "{name}: media changed under {fault:?}");
            if fault == Fault::SubmitIo {
                // The device is fail-stop; the fs refuses further changes.
                assert_eq!(
                    fs.mknod(&root(), ROOT, os("later"), libc::S_IFREG | 0o644, 0)
                        .unwrap_err(),
                    Errno::EIO
                );
                let snap = fs.device().snapshot();
                let fs2 = Fs::mount(Arc::new(snap), &mount_opts()).unwrap();
                let mut expect = tree.clone();
                if name == "release orphan" {
                    // The handle is gone after a crash; mount reclaims the orphan.
                    expect = dump_tree(&fs2).unwrap();
                }
                assert_eq!(
                    dump_tree(&fs2).unwrap(),
                    expect,
                    "{name}: media tree under {fault:?}"
                );
                continue;
            }
            assert_eq!(
                dump_tree(&fs).unwrap(),
                tree,
                "{name}: tree changed under {fault:?}"
            );
            // Memory is consistent: retrying succeeds and gives the same
            // result as on a fixture that never failed.
            op(&fs, x).unwrap_or_else(|e| panic!("{name} retry: {e}"));
            let (clean, cx) = fixture();
            prep(&clean, cx).unwrap();
            op(&clean, cx).unwrap();
            assert_eq!(
                dump_tree(&fs).unwrap(),
                dump_tree(&clean).unwrap(),
                "{name}: retry differs"
            );
            assert_eq!(
                dump_tree(&remount(&fs)).unwrap(),
                dump_tree(&fs).unwrap(),
                "{name}: remount differs"
            );
        }
    }
}

#[test]
fn read_only_operations_submit_nothing() {
    let (fs, x) = fixture();
    let before = fs.device().stats().requests;
    fs.getattr(x.f).unwrap();
    lookup(&fs, ROOT, "f").unwrap();
    fs.read(x.f, 0, 10_000).unwrap();
    fs.readdir_all(&root(), ROOT).unwrap();
    fs.readlink(lookup(&fs, ROOT, "s").unwrap().ino).unwrap();
    fs.getxattr(&root(), x.f, os("user.a")).unwrap();
    fs.listxattr(&root(), x.f).unwrap();
    fs.access(&root(), x.f, libc::R_OK).unwrap();
    fs.statfs().unwrap();
    let fh = fs.open(&root(), x.g, libc::O_RDONLY).unwrap();
    fs.release(x.g, fh).unwrap();
    dump_tree(&fs).unwrap();
    let _ = x.d;
    assert_eq!(fs.device().stats().requests, before);
}

#[test]
fn flush_failure_makes_the_fs_refuse_writes() {
    let (fs, _) = fixture();
    fs.device().inject(Fault::FlushIo);
    assert_eq!(fs.sync().unwrap_err(), Errno::EIO);
    assert_eq!(
        fs.mkdir(&root(), ROOT, os("x"), 0o755).unwrap_err(),
        Errno::EIO
    );
}
