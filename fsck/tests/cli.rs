//! fsck.atomfs as users run it: exit codes, read-only checks that never
//! write, repairs, bad input, JSON.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output};

use atomfs::format::{Inode, Layout};
use atomfs::{Ctx, Fs, MountOptions, ROOT_INO};
use atomic_api::{AtomicDevice, Request};
use blockdev::{FileMedia, FileMediaOptions, LogDevice, OpenOptions};

const FSCK: &str = env!("CARGO_BIN_EXE_fsck-atomfs");
const SS: u32 = 4096;

fn fsck(args: &[&str], path: &Path) -> Output {
    Command::new(FSCK).args(args).arg(path).output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn open_rw(path: &Path) -> LogDevice<FileMedia> {
    let m = FileMedia::open_with(
        path,
        &FileMediaOptions {
            image_sector_size: Some(SS),
            ..Default::default()
        },
    )
    .unwrap();
    LogDevice::open(m, &OpenOptions::default()).unwrap()
}

/// A formatted image with a few files (through the library, like mkfs).
fn image(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("fs.img");
    blockdev::create_image(&p, 64 << 20, false).unwrap();
    let m = FileMedia::open_with(
        &p,
        &FileMediaOptions {
            image_sector_size: Some(SS),
            ..Default::default()
        },
    )
    .unwrap();
    let dev = LogDevice::format(m, &Default::default()).unwrap();
    atomfs::mkfs(&dev, &Default::default()).unwrap();
    let fs = Fs::mount(dev, &MountOptions::default()).unwrap();
    let c = Ctx::root();
    let d = fs.mkdir(&c, ROOT_INO, OsStr::new("d"), 0o755).unwrap();
    let f = fs
        .mknod(&c, d.ino, OsStr::new("f"), libc::S_IFREG | 0o644, 0)
        .unwrap();
    fs.write(&c, f.ino, 0, b"data", false).unwrap();
    fs.link(&c, f.ino, ROOT_INO, OsStr::new("f2")).unwrap();
    fs.symlink(&c, ROOT_INO, OsStr::new("s"), OsStr::new("d/f"))
        .unwrap();
    fs.unmount().unwrap().close().unwrap();
    p
}

/// Rewrites inode `ino` of the image with `change` applied (valid crc).
fn tamper(path: &Path, ino: u64, change: impl FnOnce(&mut Inode)) {
    let dev = open_rw(path);
    let l = Layout::for_device(SS, dev.geometry().logical_sectors).unwrap();
    let mut b = vec![0u8; SS as usize];
    dev.read(l.inode_lba(ino), &mut b).unwrap();
    let mut inode = Inode::decode(&b, ino).unwrap();
    change(&mut inode);
    let mut req = Request::new();
    req.write(l.inode_lba(ino), inode.encode(SS));
    dev.submit(req).unwrap();
    dev.close().unwrap();
}

/// The inode number of /d/f in [`image`] (root 1, d 2, f 3).
const F_INO: u64 = 3;

#[test]
fn fresh_and_populated_images_are_clean() {
    let dir = tempfile::tempdir().unwrap();
    let p = image(dir.path());
    let o = fsck(&[], &p);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("clean"));
    assert!(
        text(&o).contains("3 entries") || text(&o).contains("4 entries"),
        "{}",
        text(&o)
    );
    let o = fsck(&["-f", "-v", "-n"], &p);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = fsck(&["-p"], &p);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

#[test]
fn errors_found_read_only_then_corrected() {
    let dir = tempfile::tempdir().unwrap();
    let p = image(dir.path());
    tamper(&p, F_INO, |i| i.nlink = 9);
    let before = std::fs::read(&p).unwrap();
    let o = fsck(&["-n"], &p);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(text(&o).contains("nlink 9"), "{}", text(&o));
    assert_eq!(std::fs::read(&p).unwrap(), before, "-n wrote");
    // No option: report only, like -n.
    let o = fsck(&[], &p);
    assert_eq!(o.status.code(), Some(4));
    assert_eq!(std::fs::read(&p).unwrap(), before, "a plain check wrote");
    let o = fsck(&["-y"], &p);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("FIXED"), "{}", text(&o));
    let o = fsck(&[], &p);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

#[test]
fn preen_leaves_unsafe_problems_with_exit_4() {
    let dir = tempfile::tempdir().unwrap();
    let p = image(dir.path());
    // /d/f freed behind the file system's back: two entries name a free inode.
    let dev = open_rw(&p);
    let l = Layout::for_device(SS, dev.geometry().logical_sectors).unwrap();
    let mut req = Request::new();
    req.trim(l.inode_lba(F_INO), 1);
    req.trim(l.region(F_INO), l.region_sectors);
    dev.submit(req).unwrap();
    dev.close().unwrap();
    let o = fsck(&["-p"], &p);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(text(&o).contains("free inode"), "{}", text(&o));
    let o = fsck(&["-y"], &p);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(fsck(&[], &p).status.code(), Some(0));
}

#[test]
fn json_report() {
    let dir = tempfile::tempdir().unwrap();
    let p = image(dir.path());
    tamper(&p, 2, |i| i.size = 40);
    let o = fsck(&["-n", "--json"], &p);
    assert_eq!(o.status.code(), Some(4));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["exit_code"], 4);
    assert_eq!(v["block_layer"]["clean"], true);
    let kinds: Vec<&str> = v["file_system"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["error"] == true)
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["dir_size"]);
    assert!(v["file_system"]["stats"]["inodes"].as_u64().unwrap() >= 4);
}

#[test]
fn bad_input_is_one_line_exit_8_and_never_written() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.img");
    let data: Vec<u8> = (0..(8u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&garbage, &data).unwrap();
    let zeros = dir.path().join("zeros.img");
    std::fs::write(&zeros, vec![0u8; 8 << 20]).unwrap();
    let truncated = dir.path().join("truncated.img");
    let full = std::fs::read(image(dir.path())).unwrap();
    std::fs::write(&truncated, &full[..full.len() / 2]).unwrap();
    let mut cases = vec![garbage, zeros, truncated];
    let ext4 = dir.path().join("ext4.img");
    std::fs::File::create(&ext4)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    if Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&ext4)
        .output()
        .is_ok_and(|o| o.status.success())
    {
        cases.push(ext4);
    } else {
        eprintln!("SKIP ext4 case: mkfs.ext4 is not available");
    }
    for p in cases {
        let before = std::fs::read(&p).unwrap();
        for args in [&[][..], &["-y"], &["-p"]] {
            let o = fsck(args, &p);
            assert_eq!(o.status.code(), Some(8), "{p:?} {args:?}: {}", text(&o));
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(err.lines().count(), 1, "{p:?}: {err}");
            assert!(err.starts_with("fsck.atomfs: "), "{err}");
            assert_eq!(std::fs::read(&p).unwrap(), before, "{p:?} {args:?} wrote");
        }
    }
    let o = fsck(&[], &dir.path().join("missing.img"));
    assert_eq!(o.status.code(), Some(8));
}

#[test]
fn usage_errors_exit_16() {
    let dir = tempfile::tempdir().unwrap();
    let p = image(dir.path());
    assert_eq!(Command::new(FSCK).output().unwrap().status.code(), Some(16));
    assert_eq!(fsck(&["-n", "-y"], &p).status.code(), Some(16));
    assert_eq!(fsck(&["--bogus"], &p).status.code(), Some(16));
    assert_eq!(fsck(&["--help"], &p).status.code(), Some(0));
}
