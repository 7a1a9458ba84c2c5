//! POSIX operations through a real FUSE mount of the `atomfs` binary:
//! every call below is a syscall the kernel turns into FUSE requests. The
//! tree is snapshotted (types, modes, owners, sizes, link counts,
//! nanosecond mtimes, contents, symlink targets, xattrs) before unmount
//! and must be identical after a remount.

mod fuse_common;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fuse_common::*;

/// Everything observable about one path.
#[derive(Debug, PartialEq, Eq)]
struct Node {
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    nlink: u64,
    rdev: u64,
    mtime: (i64, i64),
    /// Length and crc32c of the contents (regular files).
    data: Option<(usize, u32)>,
    target: Option<PathBuf>,
    xattrs: BTreeMap<String, Vec<u8>>,
}

fn xattrs(p: &Path) -> BTreeMap<String, Vec<u8>> {
    let c = cstr(p);
    let n = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
    assert!(n >= 0, "llistxattr {p:?}: {}", errno());
    let mut names = vec![0u8; n as usize];
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    assert!(n >= 0);
    names.truncate(n as usize);
    let mut out = BTreeMap::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cn = std::ffi::CString::new(name).unwrap();
        let mut buf = vec![0u8; 65536];
        let len =
            unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        assert!(len >= 0, "lgetxattr {p:?}");
        buf.truncate(len as usize);
        out.insert(String::from_utf8_lossy(name).into_owned(), buf);
    }
    out
}

/// Snapshot of the tree under `root`, keyed by relative path.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            if ft.is_dir() {
                stack.push(p.clone());
            }
            out.insert(
                p.strip_prefix(root).unwrap().to_path_buf(),
                Node {
                    mode: m.mode(),
                    uid: m.uid(),
                    gid: m.gid(),
                    size: if ft.is_dir() { 0 } else { m.size() },
                    nlink: m.nlink(),
                    rdev: m.rdev(),
                    mtime: (m.mtime(), m.mtime_nsec()),
                    data: ft.is_file().then(|| {
                        let d = fs::read(&p).unwrap();
                        (d.len(), crc32c::crc32c(&d))
                    }),
                    target: ft.is_symlink().then(|| fs::read_link(&p).unwrap()),
                    xattrs: xattrs(&p),
                },
            );
        }
    }
    out
}

fn renameat2(from: &Path, to: &Path, flags: u32) -> i32 {
    let (a, b) = (cstr(from), cstr(to));
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            flags,
        )
    };
    if r == 0 {
        0
    } else {
        errno()
    }
}

/// A 4096-aligned buffer for O_DIRECT.
struct Aligned {
    ptr: *mut u8,
    len: usize,
}

impl Aligned {
    fn new(len: usize, fill: u8) -> Aligned {
        let layout = std::alloc::Layout::from_size_align(len, 4096).unwrap();
        let ptr = unsafe { std::alloc::alloc(layout) };
        unsafe { std::ptr::write_bytes(ptr, fill, len) };
        Aligned { ptr, len }
    }
    fn as_slice(&self) -> &[u8] {
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        let layout = std::alloc::Layout::from_size_align(self.len, 4096).unwrap();
        unsafe { std::alloc::dealloc(self.ptr, layout) };
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// `writeback`: the mount has the kernel's writeback cache, which does not
/// write dirty pages back before LSEEK (a FUSE limitation), so SEEK_DATA /
/// SEEK_HOLE see only what was written back: fsync first there.
fn files_and_data(s: &Scratch, writeback: bool) {
    // create / write / read, sparse writes and holes
    fs::write(s.path("plain"), b"plain contents").unwrap();
    assert_eq!(fs::read(s.path("plain")).unwrap(), b"plain contents");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(s.path("sparse"))
        .unwrap();
    f.write_all_at(b"tail", 1 << 20).unwrap();
    assert_eq!(f.metadata().unwrap().len(), (1 << 20) + 4);
    let mut buf = vec![1u8; 4096];
    f.read_exact_at(&mut buf, 4096).unwrap();
    assert!(buf.iter().all(|&b| b == 0), "hole reads as zeros");
    assert!(
        f.metadata().unwrap().blocks() < 64,
        "a sparse file maps only what was written"
    );
    // SEEK_DATA / SEEK_HOLE
    if writeback {
        f.sync_all().unwrap();
    }
    let fd = f.as_raw_fd();
    let data = unsafe { libc::lseek(fd, 0, libc::SEEK_DATA) };
    assert!(
        ((1 << 20) - 4096..=1 << 20).contains(&data),
        "SEEK_DATA {data}"
    );
    assert_eq!(unsafe { libc::lseek(fd, 0, libc::SEEK_HOLE) }, 0);
    assert_eq!(
        unsafe { libc::lseek(fd, (1 << 20) + 10, libc::SEEK_DATA) },
        -1,
        "past EOF"
    );
    assert_eq!(errno(), libc::ENXIO);
    drop(f);

    // a write larger than one FUSE request (the kernel splits it)
    let big = pattern(3 << 20, 7);
    let mut f = File::create(s.path("big")).unwrap();
    assert_eq!(f.write(&big).unwrap(), big.len(), "one write(2) of 3 MiB");
    f.sync_all().unwrap();
    f.sync_data().unwrap();
    drop(f);
    assert_eq!(fs::read(s.path("big")).unwrap(), big);

    // truncate: shrink, then extend with zeros
    let f = OpenOptions::new().write(true).open(s.path("big")).unwrap();
    f.set_len(1000).unwrap();
    f.set_len(5000).unwrap();
    drop(f);
    let got = fs::read(s.path("big")).unwrap();
    assert_eq!(got.len(), 5000);
    assert_eq!(&got[..1000], &big[..1000]);
    assert!(got[1000..].iter().all(|&b| b == 0));

    // O_TRUNC open
    fs::write(s.path("plain"), b"new").unwrap();
    assert_eq!(fs::read(s.path("plain")).unwrap(), b"new");

    // fallocate: extend, keep-size, punch a hole
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(s.path("falloc"))
        .unwrap();
    let fd = f.as_raw_fd();
    assert_eq!(
        unsafe { libc::fallocate(fd, 0, 0, 65536) },
        0,
        "{}",
        errno()
    );
    assert_eq!(f.metadata().unwrap().len(), 65536);
    assert_eq!(
        unsafe { libc::fallocate(fd, libc::FALLOC_FL_KEEP_SIZE, 65536, 4096) },
        0
    );
    assert_eq!(f.metadata().unwrap().len(), 65536);
    f.write_all_at(&[0xAB; 65536], 0).unwrap();
    if writeback {
        f.sync_all().unwrap();
    }
    assert_eq!(
        unsafe {
            libc::fallocate(
                fd,
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                8192,
                16384,
            )
        },
        0,
        "{}",
        errno()
    );
    let mut all = vec![0u8; 65536];
    f.read_exact_at(&mut all, 0).unwrap();
    assert!(all[..8192].iter().all(|&b| b == 0xAB));
    assert!(all[8192..24576].iter().all(|&b| b == 0), "punched");
    assert!(all[24576..].iter().all(|&b| b == 0xAB));
    assert_eq!(unsafe { libc::lseek(fd, 8192, libc::SEEK_HOLE) }, 8192);
    assert_eq!(unsafe { libc::lseek(fd, 8192, libc::SEEK_DATA) }, 24576);
    drop(f);

    // O_APPEND from two descriptors interleaves whole writes
    let mut a = OpenOptions::new()
        .append(true)
        .create(true)
        .open(s.path("log"))
        .unwrap();
    let mut b = OpenOptions::new().append(true).open(s.path("log")).unwrap();
    for i in 0..10 {
        let (f, tag) = if i % 2 == 0 {
            (&mut a, "a")
        } else {
            (&mut b, "b")
        };
        write!(f, "{tag}{i};").unwrap();
    }
    drop((a, b));
    assert_eq!(
        fs::read_to_string(s.path("log")).unwrap(),
        "a0;b1;a2;b3;a4;b5;a6;b7;a8;b9;"
    );

    // copy_file_range (server side)
    let src = File::open(s.path("sparse")).unwrap();
    let dst = File::create(s.path("copy")).unwrap();
    let mut off_in: i64 = (1 << 20) - 10;
    let mut off_out: i64 = 0;
    let n = unsafe {
        libc::copy_file_range(
            src.as_raw_fd(),
            &mut off_in,
            dst.as_raw_fd(),
            &mut off_out,
            14,
            0,
        )
    };
    assert_eq!(n, 14, "copy_file_range: {}", errno());
    drop((src, dst));
    let mut want = vec![0u8; 10];
    want.extend_from_slice(b"tail");
    assert_eq!(fs::read(s.path("copy")).unwrap(), want);
}

fn mmap_and_direct(s: &Scratch) {
    // mmap MAP_SHARED write + msync
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(s.path("mapped"))
        .unwrap();
    f.set_len(16384).unwrap();
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            16384,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED, "mmap: {}", errno());
        let bytes = std::slice::from_raw_parts_mut(p.cast::<u8>(), 16384);
        bytes[..5].copy_from_slice(b"mmap!");
        bytes[9000..9005].copy_from_slice(b"page2");
        assert_eq!(
            libc::msync(p, 16384, libc::MS_SYNC),
            0,
            "msync: {}",
            errno()
        );
        assert_eq!(libc::munmap(p, 16384), 0);
    }
    drop(f);
    let got = fs::read(s.path("mapped")).unwrap();
    assert_eq!(&got[..5], b"mmap!");
    assert_eq!(&got[9000..9005], b"page2");

    // O_DIRECT writes, seen by a descriptor that had the old data cached
    fs::write(s.path("direct"), vec![b'o'; 8192]).unwrap();
    let mut cached = File::open(s.path("direct")).unwrap();
    let mut old = Vec::new();
    cached.read_to_end(&mut old).unwrap();
    assert_eq!(old, vec![b'o'; 8192]);
    let d = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(s.path("direct"))
        .expect("O_DIRECT open");
    let buf = Aligned::new(4096, b'D');
    assert_eq!(d.write_at(buf.as_slice(), 4096).unwrap(), 4096);
    let buf = Aligned::new(8192, b'E');
    assert_eq!(d.write_at(buf.as_slice(), 8192).unwrap(), 8192);
    d.sync_all().unwrap();
    drop(d);
    cached.seek(SeekFrom::Start(0)).unwrap();
    let mut now = Vec::new();
    cached.read_to_end(&mut now).unwrap();
    let mut want = vec![b'o'; 4096];
    want.extend_from_slice(&[b'D'; 4096]);
    want.extend_from_slice(&[b'E'; 8192]);
    assert_eq!(now.len(), want.len());
    assert!(now == want, "buffered reader sees the O_DIRECT writes");
    // and O_DIRECT reads
    let d = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(s.path("direct"))
        .unwrap();
    let buf = Aligned::new(4096, 0);
    let n = unsafe { libc::pread(d.as_raw_fd(), buf.ptr.cast(), 4096, 8192) };
    assert_eq!(n, 4096);
    assert!(buf.as_slice().iter().all(|&b| b == b'E'));
}

fn names(s: &Scratch) {
    // mkdir, readdir, rmdir
    fs::create_dir(s.path("dir")).unwrap();
    for i in 0..300 {
        fs::write(s.path(&format!("dir/f{i:03}")), format!("{i}")).unwrap();
    }
    let mut listed: Vec<String> = fs::read_dir(s.path("dir"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    listed.sort();
    let want: Vec<String> = (0..300).map(|i| format!("f{i:03}")).collect();
    assert_eq!(listed, want, "readdir lists every entry exactly once");
    let err = fs::remove_dir(s.path("dir")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTEMPTY));
    for i in 0..300 {
        if i % 3 != 0 {
            fs::remove_file(s.path(&format!("dir/f{i:03}"))).unwrap();
        }
    }
    assert_eq!(fs::read_dir(s.path("dir")).unwrap().count(), 100);
    File::open(s.path("dir")).unwrap().sync_all().unwrap(); // fsyncdir
    fs::create_dir(s.path("empty")).unwrap();
    fs::remove_dir(s.path("empty")).unwrap();
    assert!(!s.path("empty").exists());

    // rename, RENAME_NOREPLACE, RENAME_EXCHANGE
    fs::write(s.path("r1"), b"one").unwrap();
    fs::write(s.path("r2"), b"two").unwrap();
    fs::rename(s.path("r1"), s.path("dir/moved")).unwrap();
    assert!(!s.path("r1").exists());
    assert_eq!(fs::read(s.path("dir/moved")).unwrap(), b"one");
    assert_eq!(
        renameat2(&s.path("r2"), &s.path("dir/moved"), libc::RENAME_NOREPLACE),
        libc::EEXIST
    );
    assert_eq!(
        renameat2(&s.path("r2"), &s.path("dir/moved"), libc::RENAME_EXCHANGE),
        0
    );
    assert_eq!(fs::read(s.path("r2")).unwrap(), b"one");
    assert_eq!(fs::read(s.path("dir/moved")).unwrap(), b"two");
    fs::write(s.path("victim"), b"replaced").unwrap();
    fs::rename(s.path("r2"), s.path("victim")).unwrap();
    assert_eq!(fs::read(s.path("victim")).unwrap(), b"one");

    // hard links
    fs::hard_link(s.path("victim"), s.path("dir/link")).unwrap();
    let (a, b) = (
        fs::metadata(s.path("victim")).unwrap(),
        fs::metadata(s.path("dir/link")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino());
    assert_eq!(b.nlink(), 2);

    // symlinks, short and long
    std::os::unix::fs::symlink("victim", s.path("sym")).unwrap();
    assert_eq!(fs::read_link(s.path("sym")).unwrap(), Path::new("victim"));
    assert_eq!(fs::read(s.path("sym")).unwrap(), b"one");
    let long = "x/".repeat(700) + "end";
    std::os::unix::fs::symlink(&long, s.path("longsym")).unwrap();
    assert_eq!(fs::read_link(s.path("longsym")).unwrap(), Path::new(&long));

    // special files: a fifo that works, a device node that stats right
    let fifo = cstr(&s.path("fifo"));
    assert_eq!(
        unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) },
        0,
        "{}",
        errno()
    );
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(
        &fs::metadata(s.path("fifo")).unwrap().file_type()
    ));
    let mut p = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(s.path("fifo"))
        .unwrap();
    p.write_all(b"through the pipe").unwrap();
    let mut got = [0u8; 16];
    p.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"through the pipe");
    let dev = cstr(&s.path("null"));
    let rdev = libc::makedev(1, 3);
    assert_eq!(
        unsafe { libc::mknod(dev.as_ptr(), libc::S_IFCHR | 0o600, rdev) },
        0
    );
    assert_eq!(fs::metadata(s.path("null")).unwrap().rdev(), rdev);

    // chmod, chown, utimensat with nanoseconds
    fs::set_permissions(s.path("plain"), fs::Permissions::from_mode(0o4751)).unwrap();
    assert_eq!(
        fs::metadata(s.path("plain")).unwrap().mode() & 0o7777,
        0o4751
    );
    std::os::unix::fs::chown(s.path("plain"), Some(1234), Some(5678)).unwrap();
    let m = fs::metadata(s.path("plain")).unwrap();
    assert_eq!((m.uid(), m.gid()), (1234, 5678));
    let times = [
        libc::timespec {
            tv_sec: 1_000_000_000,
            tv_nsec: 123_456_789,
        },
        libc::timespec {
            tv_sec: 1_500_000_000,
            tv_nsec: 987_654_321,
        },
    ];
    let c = cstr(&s.path("plain"));
    assert_eq!(
        unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) },
        0
    );
    let m = fs::metadata(s.path("plain")).unwrap();
    assert_eq!((m.atime(), m.atime_nsec()), (1_000_000_000, 123_456_789));
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_500_000_000, 987_654_321));

    // xattrs with the size-probe protocol
    let c = cstr(&s.path("victim"));
    let set = |name: &str, value: &[u8], flags: i32| {
        let n = std::ffi::CString::new(name).unwrap();
        let r = unsafe {
            libc::setxattr(
                c.as_ptr(),
                n.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                flags,
            )
        };
        if r == 0 {
            0
        } else {
            errno()
        }
    };
    let get = |name: &str, size: usize| -> Result<(isize, Vec<u8>), i32> {
        let n = std::ffi::CString::new(name).unwrap();
        let mut buf = vec![0u8; size];
        let r = unsafe { libc::getxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), size) };
        if r < 0 {
            Err(errno())
        } else {
            buf.truncate(if size == 0 { 0 } else { r as usize });
            Ok((r, buf))
        }
    };
    assert_eq!(set("user.color", b"blue", 0), 0);
    assert_eq!(set("user.big", &vec![7u8; 3000], 0), 0);
    assert_eq!(get("user.color", 0), Ok((4, vec![])), "size probe");
    assert_eq!(get("user.color", 2), Err(libc::ERANGE));
    assert_eq!(get("user.color", 100), Ok((4, b"blue".to_vec())));
    assert_eq!(get("user.big", 3000).unwrap().1, vec![7u8; 3000]);
    assert_eq!(set("user.color", b"red", libc::XATTR_CREATE), libc::EEXIST);
    assert_eq!(set("user.nope", b"x", libc::XATTR_REPLACE), libc::ENODATA);
    assert_eq!(set("user.color", b"red", libc::XATTR_REPLACE), 0);
    let probe = unsafe { libc::listxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
    assert_eq!(probe as usize, "user.big\0user.color\0".len());
    let mut small = [0u8; 4];
    assert_eq!(
        unsafe { libc::listxattr(c.as_ptr(), small.as_mut_ptr().cast(), 4) },
        -1
    );
    assert_eq!(errno(), libc::ERANGE);
    assert_eq!(set("user.gone", b"soon", 0), 0);
    let n = std::ffi::CString::new("user.gone").unwrap();
    assert_eq!(unsafe { libc::removexattr(c.as_ptr(), n.as_ptr()) }, 0);
    assert_eq!(get("user.gone", 10), Err(libc::ENODATA));
}

fn open_unlinked_and_statfs(s: &Scratch) {
    let st = statfs(&s.mnt);
    assert_eq!(st.f_type, FUSE_SUPER_MAGIC);
    assert_eq!(st.f_namelen, 255);
    assert!(st.f_blocks > 0 && st.f_bfree <= st.f_blocks);
    assert!(st.f_files > 0 && st.f_ffree < st.f_files);
    let ffree = st.f_ffree;

    // unlink of an open file: still usable, reclaimed at the last close
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(s.path("orphan"))
        .unwrap();
    f.write_all(&vec![5u8; 200_000]).unwrap();
    assert_eq!(statfs(&s.mnt).f_ffree, ffree - 1);
    fs::remove_file(s.path("orphan")).unwrap();
    assert!(!s.path("orphan").exists());
    assert_eq!(f.metadata().unwrap().nlink(), 0);
    f.write_all(b"more").unwrap();
    let mut back = vec![0u8; 4];
    f.read_exact_at(&mut back, 200_000).unwrap();
    assert_eq!(&back, b"more");
    drop(f);
    // RELEASE is asynchronous: wait for the inode to be freed.
    let deadline = Instant::now() + Duration::from_secs(10);
    while statfs(&s.mnt).f_ffree != ffree {
        assert!(
            Instant::now() < deadline,
            "orphan not reclaimed after close"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn posix_operations_survive_remount() {
    if !fuse_available("posix_operations_survive_remount") {
        return;
    }
    let s = Scratch::new();
    make_image(&s.image, 256 << 20);
    let m = mount_fg(&s.image, &s.mnt, "");
    files_and_data(&s, false);
    mmap_and_direct(&s);
    names(&s);
    open_unlinked_and_statfs(&s);
    let before = snapshot(&s.mnt);
    assert!(before.len() > 100, "{} paths", before.len());
    let (status, err) = m.unmount().unwrap();
    assert!(status.success(), "daemon exit {status}: {err}");

    let m = mount_fg(&s.image, &s.mnt, "");
    let after = snapshot(&s.mnt);
    for (path, node) in &before {
        assert_eq!(after.get(path), Some(node), "{path:?} after remount");
    }
    assert_eq!(after.len(), before.len());
    let (status, err) = m.unmount().unwrap();
    assert!(status.success(), "daemon exit {status}: {err}");
}

/// The same operations with the kernel's writeback cache (`-o
/// writeback_cache`): weaker crash semantics, but the same results.
#[test]
fn posix_operations_with_writeback_cache() {
    if !fuse_available("posix_operations_with_writeback_cache") {
        return;
    }
    let s = Scratch::new();
    make_image(&s.image, 256 << 20);
    let m = mount_fg(&s.image, &s.mnt, "writeback_cache");
    files_and_data(&s, true);
    mmap_and_direct(&s);
    names(&s);
    open_unlinked_and_statfs(&s);
    // With the writeback cache the kernel owns file mtimes and sends them
    // late (or, after O_DIRECT writes, not at all): that is part of what
    // makes the option weaker. Everything else must survive exactly.
    let no_mtime = |mut t: BTreeMap<PathBuf, Node>| {
        for n in t.values_mut() {
            if n.data.is_some() {
                n.mtime = (0, 0);
            }
        }
        t
    };
    let before = no_mtime(snapshot(&s.mnt));
    let (status, err) = m.unmount().unwrap();
    assert!(status.success(), "daemon exit {status}: {err}");
    let m = mount_fg(&s.image, &s.mnt, "");
    let after = no_mtime(snapshot(&s.mnt));
    for (path, node) in &before {
        assert_eq!(after.get(path), Some(node), "{path:?} after remount");
    }
    assert_eq!(after.len(), before.len());
    m.unmount();
}

/// Runs `script` with `sh -c` as uid/gid 65534 with supplementary group
/// 4242; true if it exited 0.
fn as_nobody(s: &Scratch, script: &str) -> bool {
    std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--groups=4242",
            "--",
            "sh",
            "-c",
            script,
        ])
        .env("MNT", &s.mnt)
        .stderr(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// The caller's uid, gid and supplementary groups (read from /proc) reach
/// the core's permission checks, with and without the kernel's own checks
/// (`default_permissions`); without `allow_other` other users are kept out.
#[test]
fn permissions_use_the_callers_credentials() {
    if !fuse_available("permissions_use_the_callers_credentials") {
        return;
    }
    let s = Scratch::new();
    make_image(&s.image, 64 << 20);
    {
        let m = mount_fg(&s.image, &s.mnt, "");
        fs::write(s.path("public"), b"for everyone").unwrap();
        fs::create_dir(s.path("private")).unwrap();
        fs::set_permissions(s.path("private"), fs::Permissions::from_mode(0o700)).unwrap();
        fs::create_dir(s.path("grp")).unwrap();
        std::os::unix::fs::chown(s.path("grp"), Some(0), Some(4242)).unwrap();
        fs::set_permissions(s.path("grp"), fs::Permissions::from_mode(0o770)).unwrap();
        // The mounter's session only: the kernel refuses everyone else.
        assert!(!as_nobody(&s, r#"cat "$MNT/public""#));
        m.unmount();
    }
    for opts in ["allow_other", "allow_other,default_permissions"] {
        let m = mount_fg(&s.image, &s.mnt, opts);
        assert!(as_nobody(&s, r#"cat "$MNT/public""#), "{opts}");
        assert!(!as_nobody(&s, r#"ls "$MNT/private""#), "{opts}");
        assert!(!as_nobody(&s, r#"touch "$MNT/private/x""#), "{opts}");
        assert!(!as_nobody(&s, r#"chmod 777 "$MNT/public""#), "{opts}");
        assert!(!as_nobody(&s, r#"echo x >> "$MNT/public""#), "{opts}");
        // Write access through the supplementary group only.
        assert!(
            as_nobody(&s, r#"touch "$MNT/grp/by-group-$$""#),
            "{opts}: supplementary group"
        );
        let mine = format!("mine-{}", opts.len());
        assert!(
            as_nobody(&s, &format!(r#"echo hi > "$MNT/{mine}""#)),
            "{opts}"
        );
        let md = fs::metadata(s.path(&mine)).unwrap();
        assert_eq!((md.uid(), md.gid()), (65534, 65534), "{opts}");
        // The kernel applies the caller's umask to the mode it sends.
        assert!(as_nobody(
            &s,
            &format!(r#"umask 027; mkdir "$MNT/{mine}.d""#)
        ));
        assert_eq!(
            fs::metadata(s.path(&format!("{mine}.d"))).unwrap().mode() & 0o777,
            0o750,
            "{opts}"
        );
        m.unmount();
    }
}

/// Many threads creating, writing, renaming, listing and removing in the
/// same directories at once (the session is multi-threaded and the kernel
/// sends parallel directory operations).
#[test]
fn concurrent_operations_from_many_threads() {
    if !fuse_available("concurrent_operations_from_many_threads") {
        return;
    }
    let s = Scratch::new();
    make_image(&s.image, 256 << 20);
    let m = mount_fg(&s.image, &s.mnt, "");
    fs::create_dir(s.path("shared")).unwrap();
    let mnt = s.mnt.clone();
    let workers: Vec<_> = (0..6)
        .map(|t| {
            let mnt = mnt.clone();
            std::thread::spawn(move || {
                for i in 0..150 {
                    let p = mnt.join(format!("shared/t{t}-{i}"));
                    let data = pattern(1000 + i * 37, t as u8);
                    fs::write(&p, &data).unwrap();
                    if i % 5 == 0 {
                        let q = mnt.join(format!("shared/t{t}-{i}.renamed"));
                        fs::rename(&p, &q).unwrap();
                        assert_eq!(fs::read(&q).unwrap(), data);
                    } else if i % 7 == 0 {
                        fs::remove_file(&p).unwrap();
                    } else {
                        assert_eq!(fs::read(&p).unwrap(), data);
                    }
                }
            })
        })
        .collect();
    let lister = {
        let mnt = mnt.clone();
        std::thread::spawn(move || {
            for _ in 0..50 {
                let n = fs::read_dir(mnt.join("shared")).unwrap().count();
                assert!(n <= 6 * 150);
            }
        })
    };
    for w in workers {
        w.join().unwrap();
    }
    lister.join().unwrap();
    let mut expect = BTreeMap::new();
    for t in 0..6u8 {
        for i in 0..150usize {
            let name = if i % 5 == 0 {
                format!("t{t}-{i}.renamed")
            } else if i % 7 == 0 {
                continue;
            } else {
                format!("t{t}-{i}")
            };
            expect.insert(name, pattern(1000 + i * 37, t));
        }
    }
    let check = |mnt: &Path| {
        let names: Vec<String> = fs::read_dir(mnt.join("shared"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), expect.len());
        for (name, data) in &expect {
            assert_eq!(
                &fs::read(mnt.join("shared").join(name)).unwrap(),
                data,
                "{name}"
            );
        }
    };
    check(&s.mnt);
    m.unmount();
    let m = mount_fg(&s.image, &s.mnt, "");
    check(&s.mnt);
    m.unmount();
}

/// The mode of `p`, waiting out the kernel's attribute cache (1 s TTL) for
/// up to 3 s until it is `want`.
fn mode_becomes(p: &Path, want: u32) -> u32 {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let mode = fs::metadata(p).unwrap().mode() & 0o7777;
        if mode == want || Instant::now() > deadline {
            return mode;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A write by a user other than the owner clears setuid (and setgid when
/// group-exec is set) and succeeds, as on Linux: the daemon asks for
/// FUSE_HANDLE_KILLPRIV(_V2) and clears the bits itself, so the kernel no
/// longer sends a SETATTR(mode) as the writer, which the owner check
/// refused (EPERM).
#[test]
fn write_by_non_owner_clears_setuid() {
    if !fuse_available("write_by_non_owner_clears_setuid") {
        return;
    }
    let s = Scratch::new();
    make_image(&s.image, 64 << 20);
    for opts in [
        "allow_other",
        "allow_other,default_permissions",
        "allow_other,writeback_cache",
    ] {
        let m = mount_fg(&s.image, &s.mnt, opts);
        for (name, mode, after) in [
            ("suid", 0o4777, 0o777),
            ("sgid-gx", 0o6777, 0o777),
            // setgid without group-exec is not a privilege: kept.
            ("sgid", 0o2767, 0o2767),
        ] {
            let p = s.path(name);
            fs::write(&p, b"root's").unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
            assert!(
                as_nobody(&s, &format!(r#"echo more >> "$MNT/{name}""#)),
                "{opts}: {name}: write by non-owner refused"
            );
            assert_eq!(fs::read(&p).unwrap(), b"root'smore\n", "{opts}: {name}");
            assert_eq!(mode_becomes(&p, after), after, "{opts}: {name}");
            // Root (CAP_FSETID) keeps the bits.
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
            OpenOptions::new()
                .append(true)
                .open(&p)
                .unwrap()
                .write_all(b"x")
                .unwrap();
            assert_eq!(mode_becomes(&p, mode), mode, "{opts}: {name} by root");
            // Truncation by the non-owner clears them too.
            assert!(
                as_nobody(&s, &format!(r#": > "$MNT/{name}""#)),
                "{opts}: {name}: truncate by non-owner refused"
            );
            assert_eq!(mode_becomes(&p, after), after, "{opts}: {name} truncated");
            fs::remove_file(&p).unwrap();
        }
        m.unmount();
    }
}

/// `utimensat` with times at the ends of `i64` seconds (and far dates from
/// `touch -d`) neither panics the daemon nor loses the time: each is stored
/// and read back exactly, and the mount keeps serving.
#[test]
fn extreme_timestamps_are_stored_without_a_panic() {
    if !fuse_available("extreme_timestamps_are_stored_without_a_panic") {
        return;
    }
    let s = Scratch::new();
    make_image(&s.image, 64 << 20);
    let m = mount_fg(&s.image, &s.mnt, "");
    let p = s.path("t");
    fs::write(&p, b"x").unwrap();
    let c = cstr(&p);
    for (sec, nsec) in [
        (i64::MAX, 999_999_999),
        (i64::MAX, 0),
        (i64::MIN, 0),
        (i64::MIN + 1, 0),
        (i64::MIN + 1, 999_999_999),
        (-1, 500),
        (1 << 40, 1),
        (-(1 << 40), 1),
    ] {
        let ts = libc::timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        };
        let times = [ts, ts];
        let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) };
        assert_eq!(r, 0, "utimensat({sec}, {nsec}): errno {}", errno());
        // The VFS (timestamp_truncate) zeroes the nanoseconds of a time at
        // the superblock's limits, which for FUSE are i64's.
        let want = if sec == i64::MAX || sec == i64::MIN {
            (sec, 0)
        } else {
            (sec, nsec)
        };
        let md = fs::metadata(&p).unwrap();
        assert_eq!((md.mtime(), md.mtime_nsec()), want, "({sec}, {nsec})");
        assert_eq!((md.atime(), md.atime_nsec()), want, "({sec}, {nsec})");
    }
    for date in ["9999-12-31 23:59:59", "1000-01-01", "@-67768040609740800"] {
        let st = std::process::Command::new("touch")
            .arg("-d")
            .arg(date)
            .arg(&p)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        // touch may refuse a date it cannot represent; the mount must
        // stay up either way.
        let _ = st;
        fs::metadata(&p).unwrap();
    }
    assert_eq!(fs::read(&p).unwrap(), b"x");
    let (status, err) = m.unmount().unwrap();
    assert!(status.success(), "{status} {err}");
}

/// open(O_RDONLY|O_TRUNC) of a binary that is running fails with ETXTBSY
/// and leaves it whole; so do O_WRONLY and O_RDWR. (With
/// FUSE_ATOMIC_O_TRUNC the daemon truncated inside OPEN, before the VFS
/// refused the call.) Plain O_TRUNC opens still truncate.
#[test]
fn failed_truncating_open_of_a_running_binary_keeps_it() {
    if !fuse_available("failed_truncating_open_of_a_running_binary_keeps_it") {
        return;
    }
    let s = Scratch::new();
    make_image(&s.image, 64 << 20);
    let _m = mount_fg(&s.image, &s.mnt, "");
    let exe = s.path("sleep");
    fs::copy("/bin/sleep", &exe).unwrap();
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
    let len = fs::metadata(&exe).unwrap().len();
    let mut child = std::process::Command::new(&exe).arg("30").spawn().unwrap();
    // The spawn returns once execve has succeeded (Rust reports exec
    // failure through a CLOEXEC pipe), so the write denial is in place.
    for (what, flags) in [
        ("O_WRONLY", libc::O_WRONLY),
        ("O_RDWR", libc::O_RDWR),
        ("O_RDONLY|O_TRUNC", libc::O_RDONLY | libc::O_TRUNC),
    ] {
        let c = cstr(&exe);
        let fd = unsafe { libc::open(c.as_ptr(), flags) };
        let err = errno();
        if fd >= 0 {
            unsafe { libc::close(fd) };
        }
        assert_eq!((fd, err), (-1, libc::ETXTBSY), "{what} on a running binary");
        assert_eq!(fs::metadata(&exe).unwrap().len(), len, "{what} changed it");
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let f = s.path("plain");
    fs::write(&f, b"some bytes").unwrap();
    let c = cstr(&f);
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_TRUNC) };
    assert!(fd >= 0, "O_RDONLY|O_TRUNC: {}", errno());
    unsafe { libc::close(fd) };
    assert_eq!(fs::metadata(&f).unwrap().len(), 0);
}
