//! POSIX semantics of the core.

mod common;
use common::*;

use std::sync::Arc;

use atomfs::inspect::dump_tree;
use atomfs::{
    Ctx, Errno, FileKind, Fs, Groups, SetAttr, TimeSet, Timespec, Whence, FALLOC_FL_KEEP_SIZE,
    FALLOC_FL_PUNCH_HOLE, RENAME_EXCHANGE, RENAME_NOREPLACE, XATTR_CREATE, XATTR_REPLACE,
};
use atomic_api::{AtomicDevice, MemDevice};

#[test]
fn rename_variants_and_link_counts() {
    let fs = new_fs();
    let a = mkdir(&fs, ROOT, "a");
    let b = mkdir(&fs, ROOT, "b");
    let sub = mkdir(&fs, a.ino, "sub");
    assert_eq!(fs.getattr(ROOT).unwrap().nlink, 4);
    assert_eq!(fs.getattr(a.ino).unwrap().nlink, 3);
    // Move a directory under a new parent: nlink and `..` follow.
    fs.rename(&root(), a.ino, os("sub"), b.ino, os("sub"), 0)
        .unwrap();
    assert_eq!(fs.getattr(a.ino).unwrap().nlink, 2);
    assert_eq!(fs.getattr(b.ino).unwrap().nlink, 3);
    assert_eq!(lookup(&fs, sub.ino, "..").unwrap().ino, b.ino);
    // Into its own subtree: EINVAL.
    assert_eq!(
        fs.rename(&root(), ROOT, os("b"), sub.ino, os("x"), 0)
            .unwrap_err(),
        Errno::EINVAL
    );
    assert_eq!(
        fs.rename(&root(), ROOT, os("b"), b.ino, os("x"), 0)
            .unwrap_err(),
        Errno::EINVAL
    );
    // Overwrite a file; the old target is freed.
    let f = create(&fs, ROOT, "f");
    let g = create(&fs, ROOT, "g");
    fs.rename(&root(), ROOT, os("f"), ROOT, os("g"), 0).unwrap();
    assert_eq!(lookup(&fs, ROOT, "g").unwrap().ino, f.ino);
    assert_eq!(fs.getattr(g.ino).unwrap_err(), Errno::ENOENT);
    assert_eq!(lookup(&fs, ROOT, "f").unwrap_err(), Errno::ENOENT);
    // NOREPLACE, EXCHANGE.
    create(&fs, ROOT, "h");
    assert_eq!(
        fs.rename(&root(), ROOT, os("g"), ROOT, os("h"), RENAME_NOREPLACE)
            .unwrap_err(),
        Errno::EEXIST
    );
    let h = lookup(&fs, ROOT, "h").unwrap();
    fs.rename(&root(), ROOT, os("g"), b.ino, os("sub"), RENAME_EXCHANGE)
        .unwrap();
    assert_eq!(lookup(&fs, ROOT, "g").unwrap().ino, sub.ino);
    assert_eq!(lookup(&fs, b.ino, "sub").unwrap().ino, f.ino);
    assert_eq!(lookup(&fs, sub.ino, "..").unwrap().ino, ROOT);
    assert_eq!(fs.getattr(b.ino).unwrap().nlink, 2);
    assert_eq!(
        fs.rename(&root(), ROOT, os("h"), ROOT, os("zz"), RENAME_EXCHANGE)
            .unwrap_err(),
        Errno::ENOENT
    );
    // Dir over file and file over dir; non-empty target.
    assert_eq!(
        fs.rename(&root(), ROOT, os("g"), ROOT, os("h"), 0)
            .unwrap_err(),
        Errno::ENOTDIR
    );
    assert_eq!(
        fs.rename(&root(), ROOT, os("h"), ROOT, os("g"), 0)
            .unwrap_err(),
        Errno::EISDIR
    );
    create(&fs, sub.ino, "inside");
    assert_eq!(
        fs.rename(&root(), ROOT, os("a"), ROOT, os("g"), 0)
            .unwrap_err(),
        Errno::ENOTEMPTY
    );
    // Hard links: rename onto another link of the same inode does nothing.
    fs.link(&root(), h.ino, ROOT, os("h2")).unwrap();
    assert_eq!(fs.getattr(h.ino).unwrap().nlink, 2);
    fs.rename(&root(), ROOT, os("h"), ROOT, os("h2"), 0)
        .unwrap();
    assert_eq!(fs.getattr(h.ino).unwrap().nlink, 2);
    fs.unlink(&root(), ROOT, os("h")).unwrap();
    assert_eq!(fs.getattr(h.ino).unwrap().nlink, 1);
    assert_eq!(
        fs.rmdir(&root(), ROOT, os("g")).unwrap_err(),
        Errno::ENOTEMPTY
    );
    assert_eq!(
        fs.unlink(&root(), ROOT, os("a")).unwrap_err(),
        Errno::EISDIR
    );
    assert_eq!(
        fs.rmdir(&root(), ROOT, os("h2")).unwrap_err(),
        Errno::ENOTDIR
    );
    assert_eq!(
        fs.link(&root(), a.ino, ROOT, os("alink")).unwrap_err(),
        Errno::EPERM
    );
    let tree = dump_tree(&fs).unwrap();
    assert_eq!(dump_tree(&remount(&fs)).unwrap(), tree);
}

#[test]
fn names_too_long_and_exists() {
    let fs = new_fs();
    let long = "n".repeat(256);
    let ok = "n".repeat(255);
    assert_eq!(
        fs.mknod(&root(), ROOT, os(&long), libc::S_IFREG | 0o644, 0)
            .unwrap_err(),
        Errno::ENAMETOOLONG
    );
    assert_eq!(lookup(&fs, ROOT, &long).unwrap_err(), Errno::ENAMETOOLONG);
    create(&fs, ROOT, &ok);
    assert_eq!(lookup(&fs, ROOT, &ok).unwrap().kind, FileKind::RegularFile);
    assert_eq!(
        fs.mkdir(&root(), ROOT, os(&ok), 0o755).unwrap_err(),
        Errno::EEXIST
    );
    // Many long names: buckets overflow and probing finds them all.
    for i in 0..50 {
        create(&fs, ROOT, &format!("{i:03}{}", "y".repeat(240)));
    }
    for i in 0..50 {
        lookup(&fs, ROOT, &format!("{i:03}{}", "y".repeat(240))).unwrap();
    }
    assert_eq!(names(&fs, ROOT).len(), 51);
}

#[test]
fn orphans_survive_until_close_and_are_reclaimed_after_crash() {
    let fs = new_fs();
    let f = create(&fs, ROOT, "f");
    fs.write(&root(), f.ino, 0, &[1u8; 10_000], false).unwrap();
    let fh = fs.open(&root(), f.ino, libc::O_RDWR).unwrap();
    fs.unlink(&root(), ROOT, os("f")).unwrap();
    // Still readable and writable through the handle.
    assert_eq!(fs.read(f.ino, 0, 4).unwrap(), [1, 1, 1, 1]);
    fs.write(&root(), f.ino, 0, b"zz", false).unwrap();
    let live = fs.device().space().live_bytes;
    // Crash now: mount frees the orphan and its data.
    fs.sync().unwrap();
    let crashed = Fs::mount(Arc::new(fs.device().crash(0)), &mount_opts()).unwrap();
    assert_eq!(crashed.getattr(f.ino).unwrap_err(), Errno::ENOENT);
    assert!(crashed.device().space().live_bytes < live - 10_000);
    // Without a crash, close frees it.
    fs.release(f.ino, fh).unwrap();
    assert_eq!(fs.getattr(f.ino).unwrap_err(), Errno::ENOENT);
    assert_eq!(
        fs.device().space().live_bytes,
        crashed.device().space().live_bytes
    );
    assert_eq!(dump_tree(&remount(&fs)).unwrap(), dump_tree(&fs).unwrap());
}

#[test]
fn enospc_loses_nothing() {
    let fs = new_fs_with(512, 256 << 10);
    let f = create(&fs, ROOT, "f");
    let mut written = 0u64;
    for chunk in [8192usize, 512] {
        loop {
            match fs.write(&root(), f.ino, written, &vec![3u8; chunk], false) {
                Ok(n) => written += n as u64,
                Err(e) => {
                    assert_eq!(e, Errno::ENOSPC);
                    break;
                }
            }
        }
    }
    assert!(written > 100 << 10);
    let tree = dump_tree(&fs).unwrap();
    assert_eq!(fs.getattr(f.ino).unwrap().size, written);
    assert_eq!(
        fs.mkdir(&root(), ROOT, os("more"), 0o755).unwrap_err(),
        Errno::ENOSPC
    );
    assert_eq!(dump_tree(&fs).unwrap(), tree);
    assert_eq!(dump_tree(&remount(&fs)).unwrap(), tree);
    // Freeing space makes room again.
    fs.setattr(
        &root(),
        f.ino,
        &SetAttr {
            size: Some(1000),
            ..Default::default()
        },
    )
    .unwrap();
    mkdir(&fs, ROOT, "more");
}

#[test]
fn sparse_terabyte_file_and_seek() {
    let fs = new_fs();
    let f = create(&fs, ROOT, "big");
    let tib = 1u64 << 40;
    fs.write(&root(), f.ino, tib - 3, b"end", false).unwrap();
    fs.write(&root(), f.ino, 4096, b"start", false).unwrap();
    let a = fs.getattr(f.ino).unwrap();
    assert_eq!(a.size, tib);
    assert_eq!(a.blocks, 2);
    assert_eq!(fs.read(f.ino, tib - 3, 10).unwrap(), b"end");
    assert_eq!(fs.read(f.ino, 1 << 30, 5).unwrap(), [0; 5]);
    assert_eq!(fs.lseek(f.ino, 0, Whence::Data).unwrap(), 4096);
    assert_eq!(fs.lseek(f.ino, 4096, Whence::Hole).unwrap(), 4608);
    assert_eq!(fs.lseek(f.ino, 5000, Whence::Data).unwrap(), tib - 512);
    assert_eq!(fs.lseek(f.ino, tib - 1, Whence::Hole).unwrap(), tib);
    assert_eq!(
        fs.lseek(f.ino, tib, Whence::Data).unwrap_err(),
        Errno::ENXIO
    );
    assert_eq!(
        fs.write(&root(), f.ino, atomfs::MAX_FILE_SIZE, b"x", false)
            .unwrap_err(),
        Errno::EFBIG
    );
    // Truncate to 2 TiB - 1 MiB works (the limit), one byte more does not.
    let max = atomfs::MAX_FILE_SIZE;
    fs.setattr(
        &root(),
        f.ino,
        &SetAttr {
            size: Some(max),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(
        fs.setattr(
            &root(),
            f.ino,
            &SetAttr {
                size: Some(max + 1),
                ..Default::default()
            }
        )
        .unwrap_err(),
        Errno::EFBIG
    );
}

#[test]
fn truncate_zeroes_tails_and_short_writes() {
    let fs = new_fs();
    let f = create(&fs, ROOT, "f");
    fs.write(&root(), f.ino, 0, &[9u8; 5000], false).unwrap();
    let set = |size| {
        fs.setattr(
            &root(),
            f.ino,
            &SetAttr {
                size: Some(size),
                ..Default::default()
            },
        )
        .unwrap()
    };
    set(700);
    assert_eq!(fs.getattr(f.ino).unwrap().blocks, 2);
    set(3000);
    let data = fs.read(f.ino, 0, 5000).unwrap();
    assert_eq!(data.len(), 3000);
    assert!(data[..700].iter().all(|&b| b == 9));
    assert!(data[700..].iter().all(|&b| b == 0));
    // A write larger than one request is short (POSIX-legal).
    let max = fs.device().geometry().max_request_bytes as usize;
    let n = fs
        .write(&root(), f.ino, 0, &vec![1u8; max + 10_000], false)
        .unwrap();
    assert!(n < max && n > max - 4096, "{n}");
    assert_eq!(fs.getattr(f.ino).unwrap().size, n as u64);
}

#[test]
fn fallocate_and_punch_hole() {
    let fs = new_fs();
    let f = create(&fs, ROOT, "f");
    fs.write(&root(), f.ino, 0, &[4u8; 4096], false).unwrap();
    fs.fallocate(
        &root(),
        f.ino,
        100,
        1000,
        FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
    )
    .unwrap();
    let data = fs.read(f.ino, 0, 4096).unwrap();
    assert!(data[..100].iter().all(|&b| b == 4));
    assert!(data[100..1100].iter().all(|&b| b == 0));
    assert!(data[1100..].iter().all(|&b| b == 4));
    assert_eq!(fs.getattr(f.ino).unwrap().blocks, 7); // sector 512..1024 trimmed
    fs.fallocate(&root(), f.ino, 0, 10_000, FALLOC_FL_KEEP_SIZE)
        .unwrap();
    assert_eq!(fs.getattr(f.ino).unwrap().size, 4096);
    fs.fallocate(&root(), f.ino, 0, 10_000, 0).unwrap();
    assert_eq!(fs.getattr(f.ino).unwrap().size, 10_000);
    assert_eq!(
        fs.fallocate(&root(), f.ino, 0, 10 << 30, 0).unwrap_err(),
        Errno::ENOSPC
    );
    assert_eq!(
        fs.fallocate(&root(), f.ino, 0, 10, FALLOC_FL_PUNCH_HOLE)
            .unwrap_err(),
        Errno::EOPNOTSUPP
    );
}

#[test]
fn xattrs_flags_limits_and_spill() {
    let fs = new_fs();
    let f = create(&fs, ROOT, "f");
    let set = |n: &str, v: &[u8], fl| fs.setxattr(&root(), f.ino, os(n), v, fl);
    set("user.a", b"1", XATTR_CREATE).unwrap();
    assert_eq!(
        set("user.a", b"2", XATTR_CREATE).unwrap_err(),
        Errno::EEXIST
    );
    assert_eq!(
        set("user.b", b"2", XATTR_REPLACE).unwrap_err(),
        Errno::ENODATA
    );
    set("user.a", b"2", XATTR_REPLACE).unwrap();
    let big = vec![0xabu8; 65536];
    set("user.big", &big, 0).unwrap();
    assert_eq!(
        set("user.huge", &vec![0u8; 65537], 0).unwrap_err(),
        Errno::E2BIG
    );
    assert_eq!(set("bogus.x", b"", 0).unwrap_err(), Errno::EOPNOTSUPP);
    assert_eq!(fs.listxattr(&root(), f.ino).unwrap(), b"user.a\0user.big\0");
    let fs2 = remount(&fs);
    assert_eq!(fs2.getxattr(&root(), f.ino, os("user.big")).unwrap(), big);
    fs.removexattr(&root(), f.ino, os("user.big")).unwrap();
    assert_eq!(
        fs.removexattr(&root(), f.ino, os("user.big")).unwrap_err(),
        Errno::ENODATA
    );
    assert_eq!(fs.getxattr(&root(), f.ino, os("user.a")).unwrap(), b"2");
    // Non-root: trusted.* invisible, user.* needs write permission.
    let user = Ctx::user(1000, 1000);
    fs.setxattr(&root(), f.ino, os("trusted.t"), b"x", 0)
        .unwrap();
    assert_eq!(
        fs.getxattr(&user, f.ino, os("trusted.t")).unwrap_err(),
        Errno::ENODATA
    );
    assert_eq!(fs.listxattr(&user, f.ino).unwrap(), b"user.a\0");
    assert_eq!(
        fs.setxattr(&user, f.ino, os("user.z"), b"", 0).unwrap_err(),
        Errno::EACCES
    );
    // Only the inline blob remains: the xattr area is trimmed.
    let region_end = fs.layout().region(f.ino + 1);
    assert!(fs
        .device()
        .next_mapped(fs.layout().xattr_lba(f.ino))
        .unwrap()
        .is_none_or(|r| r.start >= region_end));
}

#[test]
fn permissions_match_linux() {
    let fs = new_fs();
    let alice = Ctx {
        uid: 1000,
        gid: 1000,
        groups: vec![50].into(),
        ..Ctx::default()
    };
    let bob = Ctx::user(1001, 1001);
    let d = fs.mkdir(&alice, ROOT, os("d"), 0o755).unwrap();
    assert_eq!(d.uid, 1000);
    assert_eq!(
        fs.mknod(&bob, d.ino, os("x"), libc::S_IFREG | 0o644, 0)
            .unwrap_err(),
        Errno::EACCES
    );
    let f = fs
        .mknod(&alice, d.ino, os("f"), libc::S_IFREG | 0o640, 0)
        .unwrap();
    assert_eq!(
        fs.open(&bob, f.ino, libc::O_RDONLY).unwrap_err(),
        Errno::EACCES
    );
    assert_eq!(
        fs.access(&bob, f.ino, libc::R_OK).unwrap_err(),
        Errno::EACCES
    );
    fs.access(&alice, f.ino, libc::R_OK | libc::W_OK).unwrap();
    assert_eq!(
        fs.access(&root(), f.ino, libc::X_OK).unwrap_err(),
        Errno::EACCES
    );
    fs.access(&root(), f.ino, libc::R_OK | libc::W_OK).unwrap();
    // chmod only by the owner; chown only by root or to an own group.
    let chmod = |c: &Ctx, m| {
        fs.setattr(
            c,
            f.ino,
            &SetAttr {
                mode: Some(m),
                ..Default::default()
            },
        )
    };
    assert_eq!(chmod(&bob, 0o777).unwrap_err(), Errno::EPERM);
    chmod(&alice, 0o6755).unwrap();
    let chown = |c: &Ctx, u: Option<u32>, g: Option<u32>| {
        fs.setattr(
            c,
            f.ino,
            &SetAttr {
                uid: u,
                gid: g,
                ..Default::default()
            },
        )
    };
    assert_eq!(chown(&alice, Some(1001), None).unwrap_err(), Errno::EPERM);
    assert_eq!(chown(&alice, None, Some(51)).unwrap_err(), Errno::EPERM);
    let a = chown(&alice, None, Some(50)).unwrap();
    assert_eq!((a.gid, a.perm), (50, 0o755)); // set-id bits cleared
                                              // Write by non-root clears setuid.
    chmod(&alice, 0o4755).unwrap();
    fs.write(&alice, f.ino, 0, b"x", false).unwrap();
    assert_eq!(fs.getattr(f.ino).unwrap().perm, 0o755);
    // setgid on a file whose group the caller is not in is dropped.
    chown(&root(), None, Some(7)).unwrap();
    assert_eq!(chmod(&alice, 0o2755).unwrap().perm, 0o755);
    // utimens: explicit times need ownership, NOW needs write access.
    let t = |c: &Ctx, s: TimeSet| {
        fs.setattr(
            c,
            f.ino,
            &SetAttr {
                mtime: Some(s),
                ..Default::default()
            },
        )
    };
    assert_eq!(t(&bob, TimeSet::Now).unwrap_err(), Errno::EACCES);
    assert_eq!(
        t(&bob, TimeSet::At(Timespec::new(1, 2))).unwrap_err(),
        Errno::EPERM
    );
    assert_eq!(
        t(&alice, TimeSet::At(Timespec::new(1, 2))).unwrap().mtime,
        Timespec::new(1, 2)
    );
    chmod(&alice, 0o666).unwrap();
    t(&bob, TimeSet::Now).unwrap();
    assert_eq!(
        t(&bob, TimeSet::At(Timespec::new(1, 2))).unwrap_err(),
        Errno::EPERM
    );
    // A truncate carries the kernel's own timestamps with it (FUSE
    // writeback_cache sends SETATTR size + mtime + ctime for
    // open(O_TRUNC)): write access is enough, as for the truncate.
    let truncated = fs
        .setattr(
            &bob,
            f.ino,
            &SetAttr {
                size: Some(0),
                mtime: Some(TimeSet::At(Timespec::new(3, 4))),
                ctime: Some(Timespec::new(3, 4)),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!((truncated.size, truncated.mtime), (0, Timespec::new(3, 4)));
    // Sticky directory: only owner of file or dir (or root) may remove.
    let tmp = fs.mkdir(&root(), ROOT, os("tmp"), 0o1777).unwrap();
    fs.mknod(&alice, tmp.ino, os("a"), libc::S_IFREG | 0o666, 0)
        .unwrap();
    assert_eq!(fs.unlink(&bob, tmp.ino, os("a")).unwrap_err(), Errno::EPERM);
    assert_eq!(
        fs.rename(&bob, tmp.ino, os("a"), tmp.ino, os("b"), 0)
            .unwrap_err(),
        Errno::EPERM
    );
    fs.unlink(&alice, tmp.ino, os("a")).unwrap();
    // setgid directory: group and setgid inherited.
    let sg = fs.mkdir(&root(), ROOT, os("sg"), 0o2777).unwrap();
    fs.setattr(
        &root(),
        sg.ino,
        &SetAttr {
            gid: Some(77),
            ..Default::default()
        },
    )
    .unwrap();
    let inner = fs.mkdir(&bob, sg.ino, os("in"), 0o755).unwrap();
    assert_eq!((inner.gid, inner.perm & 0o2000), (77, 0o2000));
    let file = fs
        .mknod(&bob, sg.ino, os("f"), libc::S_IFREG | 0o644, 0)
        .unwrap();
    assert_eq!(file.gid, 77);
    // umask applies.
    let masked = Ctx {
        umask: 0o077,
        ..Ctx::user(1000, 1000)
    };
    assert_eq!(
        fs.mknod(&masked, tmp.ino, os("m"), libc::S_IFREG | 0o666, 0)
            .unwrap()
            .perm,
        0o600
    );
    // Search permission is needed for lookup.
    let private = fs.mkdir(&alice, ROOT, os("private"), 0o700).unwrap();
    fs.mknod(&alice, private.ino, os("x"), libc::S_IFREG | 0o644, 0)
        .unwrap();
    assert_eq!(
        fs.lookup(&bob, private.ino, os("x")).unwrap_err(),
        Errno::EACCES
    );
}

#[test]
fn special_files_and_timestamps() {
    let fs = new_fs();
    let c = fs
        .mknod(&root(), ROOT, os("c"), libc::S_IFCHR | 0o600, 0x0501)
        .unwrap();
    assert_eq!((c.kind, c.rdev), (FileKind::CharDevice, 0x0501));
    let p = fs
        .mknod(&root(), ROOT, os("p"), libc::S_IFIFO | 0o600, 0)
        .unwrap();
    assert_eq!(p.kind, FileKind::NamedPipe);
    let s = fs
        .mknod(&root(), ROOT, os("s"), libc::S_IFSOCK | 0o600, 0)
        .unwrap();
    assert_eq!(s.kind, FileKind::Socket);
    let before = fs.getattr(ROOT).unwrap();
    let f = create(&fs, ROOT, "f");
    let after = fs.getattr(ROOT).unwrap();
    assert!(after.mtime > before.mtime && after.ctime > before.ctime);
    assert_eq!(f.atime, f.mtime);
    fs.write(&root(), f.ino, 0, b"x", false).unwrap();
    let w = fs.getattr(f.ino).unwrap();
    assert!(w.mtime > f.mtime && w.atime == f.atime); // noatime: reads never write
    fs.read(f.ino, 0, 1).unwrap();
    assert_eq!(fs.getattr(f.ino).unwrap().atime, f.atime);
    let ns = Timespec::new(1234, 567_890_123);
    let a = fs
        .setattr(
            &root(),
            f.ino,
            &SetAttr {
                atime: Some(TimeSet::At(ns)),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(a.atime, ns);
    assert_eq!(remount(&fs).getattr(f.ino).unwrap().atime, ns);
    let st = fs.statfs().unwrap();
    assert_eq!(st.namelen, 255);
    assert!(st.bfree > 0 && st.bfree <= st.blocks && st.ffree < st.files);
}

#[test]
fn mount_refuses_bad_superblocks() {
    use atomfs::{MkfsOptions, MountError};
    let dev = MemDevice::new(512, 1 << 20);
    assert!(matches!(
        Fs::mount(&dev, &mount_opts()),
        Err(MountError::NotAtomfs)
    ));
    Fs::mkfs(
        &&dev,
        &MkfsOptions {
            label: "x".repeat(64),
            ..Default::default()
        },
    )
    .unwrap();
    let fs = Fs::mount(&dev, &mount_opts()).unwrap();
    assert_eq!(fs.superblock().label, "x".repeat(64).as_bytes());
    assert!(Fs::mkfs(
        &&dev,
        &MkfsOptions {
            label: "x".repeat(65),
            ..Default::default()
        }
    )
    .is_err());
    // Unknown incompatible feature / version / corrupt primary with good backup.
    let patch = |f: &dyn Fn(&mut atomfs::format::Superblock)| {
        let d = dev.snapshot();
        let mut sb = fs.superblock().clone();
        f(&mut sb);
        let sector = sb.encode();
        let mut req = atomic_api::Request::new();
        req.write(0, [sector.clone(), sector].concat());
        d.submit(req).unwrap();
        Fs::mount(d, &mount_opts()).map(drop)
    };
    assert!(matches!(
        patch(&|sb| sb.incompat = 1 << 40),
        Err(MountError::IncompatFeatures(_))
    ));
    assert!(matches!(
        patch(&|sb| sb.version = 99),
        Err(MountError::Version { .. })
    ));
    assert!(matches!(
        patch(&|sb| sb.ro_compat = 1),
        Err(MountError::RoCompatFeatures(_))
    ));
    let d = dev.snapshot();
    let mut req = atomic_api::Request::new();
    req.write(0, vec![0xffu8; 512]);
    d.submit(req).unwrap();
    Fs::mount(d, &mount_opts()).unwrap(); // backup superblock
                                          // Wrong sector size.
    let big = MemDevice::new(4096, 1 << 20);
    let mut req = atomic_api::Request::new();
    let mut sector = fs.superblock().encode();
    sector.resize(4096, 0);
    req.write(0, sector);
    big.submit(req).unwrap();
    assert!(Fs::mount(big, &mount_opts()).is_err());
}

#[test]
fn works_with_4096_byte_sectors() {
    let fs = new_fs_with(4096, 1 << 30);
    let d = mkdir(&fs, ROOT, "d");
    let f = create(&fs, d.ino, "f");
    fs.write(&root(), f.ino, 5000, &[2u8; 10_000], false)
        .unwrap();
    fs.setxattr(&root(), f.ino, os("user.v"), &[1u8; 3000], 0)
        .unwrap();
    fs.symlink(&root(), d.ino, os("l"), os(&"p".repeat(4000)))
        .unwrap();
    fs.setattr(
        &root(),
        f.ino,
        &SetAttr {
            size: Some(6000),
            ..Default::default()
        },
    )
    .unwrap();
    let tree = dump_tree(&fs).unwrap();
    assert_eq!(dump_tree(&remount(&fs)).unwrap(), tree);
    assert_eq!(fs.read(f.ino, 4990, 20).unwrap()[..10], [0u8; 10]);
}

/// O_TRUNC truncates whatever the access mode, and needs write permission
/// (Linux: `build_open_flags` adds MAY_WRITE for O_TRUNC).
#[test]
fn open_rdonly_with_trunc_truncates_and_needs_write_permission() {
    let fs = new_fs();
    let f = create(&fs, ROOT, "f");
    assert_eq!(fs.write(&root(), f.ino, 0, b"hello", false), Ok(5));
    fs.setattr(
        &root(),
        f.ino,
        &SetAttr {
            mode: Some(0o644),
            ..Default::default()
        },
    )
    .unwrap();
    let reader = Ctx::user(1000, 1000);
    assert_eq!(
        fs.open(&reader, f.ino, libc::O_RDONLY | libc::O_TRUNC)
            .err(),
        Some(Errno::EACCES)
    );
    assert_eq!(
        fs.getattr(f.ino).unwrap().size,
        5,
        "a refused open changed the file"
    );
    let fh = fs
        .open(&root(), f.ino, libc::O_RDONLY | libc::O_TRUNC)
        .unwrap();
    assert_eq!(fs.getattr(f.ino).unwrap().size, 0);
    fs.release(f.ino, fh).unwrap();
}

/// Loads counted by [`counted_groups`] (one test uses it).
static GROUP_LOADS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn counted_groups(_pid: u32) -> Vec<u32> {
    GROUP_LOADS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    vec![50]
}

#[test]
fn supplementary_groups_are_read_only_when_a_check_needs_them() {
    use std::sync::atomic::Ordering::SeqCst;
    let fs = new_fs();
    let owner = Ctx::user(1000, 1000);
    let d = fs.mkdir(&root(), ROOT, os("d"), 0o777).unwrap();
    let (f, fh) = fs
        .create(
            &owner,
            d.ino,
            os("f"),
            libc::S_IFREG | 0o640,
            libc::O_WRONLY,
        )
        .unwrap();
    fs.release(f.ino, fh).unwrap();
    fs.setattr(
        &root(),
        f.ino,
        &SetAttr {
            gid: Some(50),
            ..SetAttr::default()
        },
    )
    .unwrap();
    let lazy = |uid: u32, gid: u32| Ctx {
        uid,
        gid,
        groups: Groups::lazy(counted_groups, 4242),
        ..Ctx::default()
    };
    // The owner's lookup and open decide on the owner class alone.
    let as_owner = lazy(1000, 1000);
    assert_eq!(fs.lookup(&as_owner, d.ino, os("f")).unwrap().ino, f.ino);
    fs.release(f.ino, fs.open(&as_owner, f.ino, libc::O_RDONLY).unwrap())
        .unwrap();
    assert!(!as_owner.groups.is_loaded());
    assert_eq!(GROUP_LOADS.load(SeqCst), 0);
    // Someone else reaches the group class: the groups are read once,
    // and membership of group 50 grants read (not write).
    let member = lazy(1001, 1001);
    fs.release(f.ino, fs.open(&member, f.ino, libc::O_RDONLY).unwrap())
        .unwrap();
    assert_eq!(
        fs.open(&member, f.ino, libc::O_WRONLY).unwrap_err(),
        Errno::EACCES
    );
    assert!(member.groups.is_loaded());
    assert_eq!(GROUP_LOADS.load(SeqCst), 1);
    // Without the group: others' bits (none).
    assert_eq!(
        fs.open(&Ctx::user(1001, 1001), f.ino, libc::O_RDONLY)
            .unwrap_err(),
        Errno::EACCES
    );
}
