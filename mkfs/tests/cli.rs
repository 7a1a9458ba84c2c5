//! mkfs.atomfs as users run it: creating images, refusing signatures,
//! dry runs that write nothing, too-small devices.

use std::path::Path;
use std::process::{Command, Output};

const MKFS: &str = env!("CARGO_BIN_EXE_mkfs-atomfs");

fn mkfs(args: &[&str], path: &Path) -> Output {
    Command::new(MKFS).args(args).arg(path).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Opens the image read-only and runs both checks (the block layer's and
/// the file system's), as fsck.atomfs does.
fn fsck_clean(path: &Path, ss: u32) -> atomfs::fsck::FsckReport {
    let media = blockdev::FileMedia::open_with(
        path,
        &blockdev::FileMediaOptions {
            read_only: true,
            image_sector_size: Some(ss),
            ..Default::default()
        },
    )
    .unwrap();
    let dev = blockdev::LogDevice::open(
        media,
        &blockdev::OpenOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(blockdev::check(dev.media()).is_clean());
    let r = atomfs::fsck::check(&dev, &Default::default());
    assert!(r.is_clean(), "{:#?}", r.findings);
    r
}

#[test]
fn size_creates_an_image_that_checks_clean() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("a.img");
    let o = mkfs(&["--size", "64M", "-L", "data"], &img);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for want in [
        "sector size      4096",
        "segments",
        "capacity",
        "max inodes",
        "label            data",
        "uuid",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
    assert!(out.starts_with("mkfs.atomfs: "), "dotted name: {out}");
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 64 << 20);
    let r = fsck_clean(&img, 4096);
    assert_eq!(r.stats.directories, 1);
    // 512-byte sectors on request.
    let img2 = dir.path().join("b.img");
    let o = mkfs(
        &[
            "--size",
            "32M",
            "--sector-size",
            "512",
            "--segment-size",
            "1M",
        ],
        &img2,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("sector size      512"));
    fsck_clean(&img2, 512);
}

#[test]
fn refuses_existing_atomfs_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("a.img");
    assert!(mkfs(&["--size", "64M", "-q"], &img).status.success());
    let before = std::fs::read(&img).unwrap();
    let o = mkfs(&[], &img);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("contains an atomfs file system") && err.contains("-F"),
        "{err}"
    );
    assert_eq!(std::fs::read(&img).unwrap(), before, "refusal wrote");
    let o = mkfs(&["-F"], &img);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_ne!(
        std::fs::read(&img).unwrap(),
        before,
        "a new uuid was written"
    );
    fsck_clean(&img, 4096);
}

#[test]
fn refuses_an_ext4_image_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("ext4.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let made = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&img)
        .output();
    match made {
        Ok(o) if o.status.success() => {}
        _ => {
            eprintln!("SKIP: mkfs.ext4 is not available");
            return;
        }
    }
    let before = std::fs::read(&img).unwrap();
    let o = mkfs(&[], &img);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("ext2/3/4") && err.contains("0xEF53"), "{err}");
    assert_eq!(std::fs::read(&img).unwrap(), before);
    let o = mkfs(&["-F", "--sector-size", "512"], &img);
    assert!(o.status.success(), "{}", stderr(&o));
    fsck_clean(&img, 512);
}

#[test]
fn refuses_other_signatures() {
    let dir = tempfile::tempdir().unwrap();
    for (off, magic, name) in [
        (0usize, &b"XFSB"[..], "XFS"),
        (65600, b"_BHRfS_M", "btrfs"),
        (510, &[0x55, 0xAA], "MBR"),
        (512, b"EFI PART", "GPT"),
        (4086, b"SWAPSPACE2", "swap"),
        (0, b"LUKS\xba\xbe", "LUKS"),
    ] {
        let img = dir.path().join(format!("{name}.img"));
        let mut data = vec![0u8; 32 << 20];
        data[off..off + magic.len()].copy_from_slice(magic);
        std::fs::write(&img, &data).unwrap();
        let o = mkfs(&[], &img);
        assert_eq!(o.status.code(), Some(1), "{name}");
        assert!(stderr(&o).contains(name), "{name}: {}", stderr(&o));
        assert_eq!(std::fs::read(&img).unwrap(), data, "{name}: refusal wrote");
    }
}

#[test]
fn dry_run_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("new.img");
    let o = mkfs(&["-n", "--size", "64M"], &img);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("dry run") && stdout(&o).contains("capacity"));
    assert!(!img.exists(), "dry run created the image");
    // An existing image: bytes and size unchanged.
    let img = dir.path().join("old.img");
    let data: Vec<u8> = (0..(16u32 << 20)).map(|i| (i % 251) as u8).collect();
    std::fs::write(&img, &data).unwrap();
    let o = mkfs(&["-n", "-F", "--size", "64M"], &img);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(&img).unwrap(), data);
    // The dry run predicts the real geometry.
    let o2 = mkfs(&["-F", "--size", "64M"], &img);
    let cap = |s: &str| {
        s.lines()
            .find(|l| l.contains("capacity"))
            .unwrap()
            .to_string()
    };
    assert_eq!(cap(&stdout(&o)), cap(&stdout(&o2)));
}

#[test]
fn too_small_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("tiny.img");
    let o = mkfs(&["--size", "1M"], &img);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("too small") && err.lines().count() == 1,
        "{err}"
    );
    assert!(
        !img.exists(),
        "the image mkfs created for a failed run is left"
    );
    let o = mkfs(&["-n", "--size", "1M"], &img);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("too small"));
}

#[test]
fn bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("x.img");
    for args in [
        &["--size", "12Q"][..],
        &["--size", "64M", "--sector-size", "1024"],
        &["--size", "64M", "--overprovision", "95"],
        &["--size", "64M", "-L", &"l".repeat(65)],
    ] {
        let o = mkfs(args, &img);
        assert!(!o.status.success(), "{args:?}");
        assert!(!img.exists(), "{args:?} created the image");
    }
    let o = mkfs(&[], &dir.path().join("missing.img"));
    assert!(stderr(&o).contains("--size"), "{}", stderr(&o));
}
