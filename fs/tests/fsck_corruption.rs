//! fsck on damaged file systems: every metadata sector of a populated file
//! system gets single-bit flips (several positions each); fsck must report
//! each, never panic, and `-y` must leave a file system that checks clean
//! and mounts. Plus targeted damage with known repairs (link counts,
//! entries to free inodes, unreachable inodes, misplaced and duplicate
//! entries, leaks, data past EOF) and preen's limits.

use std::ffi::OsStr;
use std::sync::Arc;

use atomfs::format::{home_bucket, Bucket, Entry, Inode, Layout, MAX_FILE_SIZE};
use atomfs::fsck::{check, FsckOptions, FsckReport, Problem};
use atomfs::inspect::dump_tree;
use atomfs::{Ctx, Errno, Fs, MkfsOptions, MountOptions, ROOT_INO};
use atomic_api::{AtomicDevice, MemDevice, Request};

type F = Fs<Arc<MemDevice>>;

fn ctx() -> Ctx {
    Ctx::root()
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

fn new_fs(ss: u32) -> F {
    let dev = Arc::new(MemDevice::new(ss, 1 << 30));
    Fs::mkfs(&dev, &MkfsOptions::default()).unwrap();
    Fs::mount(dev, &MountOptions::default()).unwrap()
}

fn ro() -> FsckOptions {
    FsckOptions::default()
}

fn yes() -> FsckOptions {
    FsckOptions {
        repair: true,
        preen: false,
    }
}

fn preen() -> FsckOptions {
    FsckOptions {
        repair: false,
        preen: true,
    }
}

fn assert_clean(r: &FsckReport, what: &str) {
    let errors: Vec<_> = r.errors().map(|f| f.message.clone()).collect();
    assert!(errors.is_empty(), "{what}: unexpected errors {errors:#?}");
    assert!(!r.aborted, "{what}: aborted");
}

/// Inode numbers of the populated tree.
struct Tree {
    file: u64,
    dir: u64,
    sub: u64,
    long_link: u64,
    big_xattr: u64,
    orphan_fh: (u64, u64),
}

/// Files (small, sparse, big), nested dirs, hard links, short and long
/// symlinks, inline and external xattrs, a fifo and a device, and an open
/// unlinked file (an orphan record).
fn populate(fs: &F) -> Tree {
    let ss = fs.layout().sector_size as usize;
    let c = ctx();
    let file = fs
        .mknod(&c, ROOT_INO, os("file"), libc::S_IFREG | 0o644, 0)
        .unwrap()
        .ino;
    fs.write(&c, file, 0, b"hello world", false).unwrap();
    fs.setxattr(&c, file, os("user.small"), b"v", 0).unwrap();
    let sparse = fs
        .mknod(&c, ROOT_INO, os("sparse"), libc::S_IFREG | 0o600, 0)
        .unwrap()
        .ino;
    fs.write(&c, sparse, 0, &[1u8; 5000], false).unwrap();
    fs.write(&c, sparse, 1 << 30, &[2u8; 100], false).unwrap();
    let dir = fs.mkdir(&c, ROOT_INO, os("dir"), 0o755).unwrap().ino;
    let sub = fs.mkdir(&c, dir, os("sub"), 0o700).unwrap().ino;
    let inner = fs
        .mknod(&c, sub, os("inner"), libc::S_IFREG | 0o644, 0)
        .unwrap()
        .ino;
    fs.write(&c, inner, 0, &vec![9u8; 3 * ss + 17], false)
        .unwrap();
    fs.link(&c, file, dir, os("file-link")).unwrap();
    fs.link(&c, file, sub, os("file-link2")).unwrap();
    fs.symlink(&c, ROOT_INO, os("short"), os("file")).unwrap();
    let long_target = "x/".repeat((ss / 2 + 10).min(2000));
    let long_link = fs
        .symlink(&c, dir, os("long"), os(&long_target))
        .unwrap()
        .ino;
    fs.mknod(&c, ROOT_INO, os("fifo"), libc::S_IFIFO | 0o644, 0)
        .unwrap();
    fs.mknod(&c, dir, os("tty"), libc::S_IFCHR | 0o600, 0x0401)
        .unwrap();
    let big_xattr = fs
        .mknod(&c, dir, os("xattrs"), libc::S_IFREG | 0o644, 0)
        .unwrap()
        .ino;
    fs.setxattr(&c, big_xattr, os("user.big"), &vec![7u8; 2 * ss + 100], 0)
        .unwrap();
    fs.setxattr(&c, big_xattr, os("user.other"), b"value", 0)
        .unwrap();
    fs.setxattr(&c, dir, os("user.dirattr"), b"d", 0).unwrap();
    let (attr, fh) = fs
        .create(&c, ROOT_INO, os("open-unlinked"), 0o644, libc::O_RDWR)
        .unwrap();
    fs.write(&c, attr.ino, 0, b"still open", false).unwrap();
    fs.unlink(&c, ROOT_INO, os("open-unlinked")).unwrap();
    Tree {
        file,
        dir,
        sub,
        long_link,
        big_xattr,
        orphan_fh: (attr.ino, fh),
    }
}

/// What kind of metadata a sector holds, for the flip census.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Meta {
    Superblock,
    Inode,
    Bucket,
    Orphan,
    Xattr,
}

/// Every mapped metadata sector (data sectors, including long symlink
/// targets, carry no checksum and are not metadata).
fn metadata_sectors(dev: &MemDevice, l: &Layout) -> Vec<(u64, Meta)> {
    let ss = u64::from(l.sector_size);
    let data_end = MAX_FILE_SIZE / ss;
    let mut out = Vec::new();
    let mut dirs = std::collections::BTreeSet::new();
    let mut at = 0;
    let mut mapped = Vec::new();
    while let Some(r) = dev.next_mapped(at).unwrap() {
        mapped.extend(r.clone());
        at = r.end;
    }
    for &lba in &mapped {
        if lba >= l.inode_base && lba <= l.inode_base + l.max_ino {
            let mut b = vec![0u8; ss as usize];
            dev.read(lba, &mut b).unwrap();
            let ino = lba - l.inode_base;
            let inode = Inode::decode(&b, ino).unwrap();
            if inode.mode & libc::S_IFMT == libc::S_IFDIR {
                dirs.insert(ino);
            }
        }
    }
    for lba in mapped {
        let region = lba / l.region_sectors;
        let off = lba % l.region_sectors;
        let kind = if lba < 2 {
            Meta::Superblock
        } else if region == 0 && lba >= l.orphan_base {
            Meta::Orphan
        } else if region == 0 {
            Meta::Inode
        } else if off >= data_end {
            Meta::Xattr
        } else if dirs.contains(&region) && off < l.buckets() {
            Meta::Bucket
        } else {
            continue;
        };
        out.push((lba, kind));
    }
    out
}

fn flip(dev: &MemDevice, lba: u64, bit: usize) {
    let ss = dev.geometry().sector_size as usize;
    let mut b = vec![0u8; ss];
    dev.read(lba, &mut b).unwrap();
    b[bit / 8] ^= 1 << (bit % 8);
    let mut req = Request::new();
    req.write(lba, b);
    dev.submit(req).unwrap();
}

fn flip_census(ss: u32) {
    let fs = new_fs(ss);
    let _tree = populate(&fs);
    let base = fs.device().snapshot();
    let l = *fs.layout();
    assert_clean(&check(&base, &ro()), "populated");
    let sectors = metadata_sectors(&base, &l);
    let mut census = std::collections::BTreeMap::<Meta, (usize, usize)>::new();
    let bits = [
        0usize,
        7,
        8 * 9 + 2,
        8 * 40 + 5,
        8 * 130 + 1,
        8 * (ss as usize - 5) + 6,
        8 * (ss as usize) - 1,
    ];
    for (lba, kind) in &sectors {
        for &bit in &bits {
            let dev = base.snapshot();
            flip(&dev, *lba, bit);
            let r = check(&dev, &ro());
            let e = census.entry(*kind).or_default();
            e.0 += 1;
            assert!(
                !r.is_clean(),
                "{kind:?} sector {lba} bit {bit}: flip not detected; findings {:#?}",
                r.findings
            );
            e.1 += 1;
            // -n never writes.
            assert_eq!(dev.sectors(), {
                let d2 = base.snapshot();
                flip(&d2, *lba, bit);
                d2.sectors()
            });
            let fixed = check(&dev, &yes());
            assert!(fixed.repair_error.is_none(), "{:?}", fixed.repair_error);
            let after = check(&dev, &ro());
            assert_clean(
                &after,
                &format!(
                    "{kind:?} sector {lba} bit {bit} after -y (first pass: {:#?})",
                    fixed.findings
                ),
            );
            let fs2 = Fs::mount(Arc::new(dev), &MountOptions::default())
                .unwrap_or_else(|e| panic!("{kind:?} {lba} bit {bit}: mount after repair: {e}"));
            dump_tree(&fs2).unwrap();
        }
    }
    eprintln!("{ss}-byte sectors: flips detected per metadata kind (tried, detected): {census:?}");
    for kind in [
        Meta::Superblock,
        Meta::Inode,
        Meta::Bucket,
        Meta::Orphan,
        Meta::Xattr,
    ] {
        let (tried, detected) = census.get(&kind).copied().unwrap_or_default();
        assert!(tried > 0, "no {kind:?} sector was exercised");
        assert_eq!(tried, detected);
    }
}

#[test]
fn fsck_fresh_file_system_is_clean() {
    for ss in [512, 4096] {
        let fs = new_fs(ss);
        let r = check(fs.device(), &ro());
        assert_clean(&r, "fresh");
        assert_eq!(r.stats.inodes, 1);
        assert_eq!(r.stats.directories, 1);
    }
}

#[test]
fn fsck_populated_file_system_is_clean_and_orphan_is_a_note() {
    for ss in [512, 4096] {
        let fs = new_fs(ss);
        let tree = populate(&fs);
        let r = check(fs.device(), &ro());
        assert_clean(&r, "populated");
        assert_eq!(r.stats.orphans, 1);
        assert!(r
            .findings
            .iter()
            .any(|f| f.kind == Problem::Orphan && !f.is_error));
        assert!(r.stats.entries >= 12, "{:?}", r.stats);
        // After the last close the orphan is gone and still clean.
        fs.release(tree.orphan_fh.0, tree.orphan_fh.1).unwrap();
        let r = check(fs.device(), &ro());
        assert_clean(&r, "after release");
        assert_eq!(r.stats.orphans, 0);
        // -y reclaims an orphan like mount would.
        let fs = new_fs(ss);
        let tree = populate(&fs);
        let dev = fs.device().snapshot();
        let r = check(&dev, &yes());
        assert!(r
            .findings
            .iter()
            .any(|f| f.kind == Problem::Orphan && f.repaired));
        let fs2 = Fs::mount(Arc::new(dev), &MountOptions::default()).unwrap();
        assert_eq!(fs2.getattr(tree.orphan_fh.0), Err(Errno::ENOENT));
    }
}

#[test]
fn fsck_bit_flips_in_every_metadata_sector_512() {
    flip_census(512);
}

#[test]
fn fsck_bit_flips_in_every_metadata_sector_4096() {
    flip_census(4096);
}

// ------------------------------------------------------------ targeted damage

fn read_inode(dev: &MemDevice, l: &Layout, ino: u64) -> Inode {
    let mut b = vec![0u8; l.sector_size as usize];
    dev.read(l.inode_lba(ino), &mut b).unwrap();
    Inode::decode(&b, ino).unwrap()
}

fn write_inode(dev: &MemDevice, l: &Layout, inode: &Inode) {
    let mut req = Request::new();
    req.write(l.inode_lba(inode.ino), inode.encode(l.sector_size));
    dev.submit(req).unwrap();
}

fn home_of(l: &Layout, dir: u64, name: &str) -> (u64, u64) {
    let idx = home_bucket(name.as_bytes(), l.dir_hash_bits);
    (idx, l.bucket_lba(dir, idx))
}

fn read_bucket(dev: &MemDevice, l: &Layout, dir: u64, lba: u64) -> Bucket {
    let mut b = vec![0u8; l.sector_size as usize];
    dev.read(lba, &mut b).unwrap();
    Bucket::decode(&b, dir).unwrap()
}

fn write_bucket(dev: &MemDevice, l: &Layout, dir: u64, lba: u64, bucket: &Bucket) {
    let mut req = Request::new();
    if bucket.is_trimmable() {
        req.trim(lba, 1);
    } else {
        req.write(lba, bucket.encode(dir, l.sector_size));
    }
    dev.submit(req).unwrap();
}

fn damaged() -> (F, Tree, MemDevice, Layout) {
    let fs = new_fs(512);
    let tree = populate(&fs);
    let dev = fs.device().snapshot();
    let l = *fs.layout();
    (fs, tree, dev, l)
}

fn kinds(r: &FsckReport) -> Vec<Problem> {
    r.errors().map(|f| f.kind).collect()
}

#[test]
fn fsck_wrong_link_count_is_repaired_even_by_preen() {
    let (_fs, tree, dev, l) = damaged();
    let mut inode = read_inode(&dev, &l, tree.file);
    assert_eq!(inode.nlink, 3);
    inode.nlink = 7;
    write_inode(&dev, &l, &inode);
    let r = check(&dev, &ro());
    assert_eq!(kinds(&r), vec![Problem::LinkCount]);
    let r = check(&dev, &preen());
    assert!(r.errors().all(|f| f.repaired));
    assert_clean(&check(&dev, &ro()), "after preen");
    assert_eq!(read_inode(&dev, &l, tree.file).nlink, 3);
}

#[test]
fn fsck_entry_pointing_at_free_inode_is_removed() {
    let (_fs, tree, dev, l) = damaged();
    // Free the long symlink behind the file system's back.
    let mut req = Request::new();
    req.trim(l.inode_lba(tree.long_link), 1);
    req.trim(l.region(tree.long_link), l.region_sectors);
    dev.submit(req).unwrap();
    let r = check(&dev, &ro());
    assert!(
        kinds(&r).contains(&Problem::EntryTarget),
        "{:#?}",
        r.findings
    );
    // Preen may not delete entries: left, exit-4 territory.
    let p = check(&dev, &preen());
    assert!(p.unrepaired().any(|f| f.kind == Problem::EntryTarget));
    assert!(!check(&dev, &ro()).is_clean());
    let y = check(&dev, &yes());
    assert!(y.errors().all(|f| f.repaired), "{:#?}", y.findings);
    assert_clean(&check(&dev, &ro()), "after -y");
    let fs2 = Fs::mount(Arc::new(dev), &MountOptions::default()).unwrap();
    assert_eq!(
        fs2.lookup(&ctx(), tree.dir, os("long")).map(|a| a.ino),
        Err(Errno::ENOENT)
    );
    assert_eq!(fs2.getattr(tree.dir).unwrap().size, 4);
}

#[test]
fn fsck_unreachable_directory_goes_to_lost_and_found() {
    let (_fs, tree, dev, l) = damaged();
    // Drop "sub" from "dir": the subtree (sub/inner, a link of file) is cut off.
    let (_, lba) = home_of(&l, tree.dir, "sub");
    let mut b = read_bucket(&dev, &l, tree.dir, lba);
    b.entries.retain(|e| e.name != b"sub");
    write_bucket(&dev, &l, tree.dir, lba, &b);
    let r = check(&dev, &ro());
    let k = kinds(&r);
    assert!(k.contains(&Problem::Unreachable), "{k:?}");
    let y = check(&dev, &yes());
    assert!(y.errors().all(|f| f.repaired), "{:#?}", y.findings);
    assert_clean(&check(&dev, &ro()), "after -y");
    let fs2 = Fs::mount(Arc::new(dev), &MountOptions::default()).unwrap();
    let lf = fs2.lookup(&ctx(), ROOT_INO, os("lost+found")).unwrap();
    let moved = fs2
        .lookup(&ctx(), lf.ino, os(&format!("#{}", tree.sub)))
        .unwrap();
    assert_eq!(moved.ino, tree.sub);
    assert!(fs2.lookup(&ctx(), tree.sub, os("inner")).is_ok());
    assert_eq!(fs2.getattr(tree.file).unwrap().nlink, 3);
    let t = dump_tree(&fs2).unwrap();
    assert!(t.keys().any(|p| p.ends_with("inner")));
}

#[test]
fn fsck_unreachable_file_without_entries_goes_to_lost_and_found() {
    let (_fs, _tree, dev, l) = damaged();
    // A linked inode that no directory names.
    let stray = Inode {
        ino: 500,
        generation: 1,
        mode: libc::S_IFREG | 0o644,
        nlink: 1,
        ..Inode::default()
    };
    write_inode(&dev, &l, &stray);
    assert!(kinds(&check(&dev, &ro())).contains(&Problem::Unreachable));
    check(&dev, &yes());
    assert_clean(&check(&dev, &ro()), "after -y");
    let fs2 = Fs::mount(Arc::new(dev), &MountOptions::default()).unwrap();
    let lf = fs2.lookup(&ctx(), ROOT_INO, os("lost+found")).unwrap();
    assert_eq!(fs2.lookup(&ctx(), lf.ino, os("#500")).unwrap().ino, 500);
}

#[test]
fn fsck_misplaced_duplicate_and_mistyped_entries() {
    let (_fs, tree, dev, l) = damaged();
    // Move "fifo" from its home bucket to the one after it (no overflow flag).
    let (idx, lba) = home_of(&l, ROOT_INO, "fifo");
    let mut b = read_bucket(&dev, &l, ROOT_INO, lba);
    let pos = b.find(b"fifo").unwrap();
    let e = b.entries.remove(pos);
    write_bucket(&dev, &l, ROOT_INO, lba, &b);
    let lba2 = l.bucket_lba(ROOT_INO, idx + 1);
    let mut b2 = read_bucket(&dev, &l, ROOT_INO, lba2);
    let slot = b2.free_slot().unwrap();
    b2.insert(Entry { slot, ..e });
    write_bucket(&dev, &l, ROOT_INO, lba2, &b2);
    // "short" gets a twin naming the file, and "file" a wrong type.
    let (_, lba3) = home_of(&l, ROOT_INO, "short");
    let mut b3 = read_bucket(&dev, &l, ROOT_INO, lba3);
    let slot = b3.free_slot().unwrap();
    b3.insert(Entry {
        ino: tree.file,
        slot,
        dtype: libc::DT_REG,
        name: b"short".to_vec(),
    });
    write_bucket(&dev, &l, ROOT_INO, lba3, &b3);
    let (_, lba4) = home_of(&l, ROOT_INO, "file");
    let mut b4 = read_bucket(&dev, &l, ROOT_INO, lba4);
    b4.entries
        .iter_mut()
        .find(|e| e.name == b"file")
        .unwrap()
        .dtype = libc::DT_DIR;
    write_bucket(&dev, &l, ROOT_INO, lba4, &b4);
    let k = kinds(&check(&dev, &ro()));
    for want in [
        Problem::EntryMisplaced,
        Problem::EntryDuplicate,
        Problem::EntryType,
    ] {
        assert!(k.contains(&want), "{want:?} not in {k:?}");
    }
    let y = check(&dev, &yes());
    assert!(y.errors().all(|f| f.repaired), "{:#?}", y.findings);
    assert_clean(&check(&dev, &ro()), "after -y");
    let fs2 = Fs::mount(Arc::new(dev), &MountOptions::default()).unwrap();
    assert!(fs2.lookup(&ctx(), ROOT_INO, os("fifo")).is_ok());
    let short = fs2.lookup(&ctx(), ROOT_INO, os("short")).unwrap();
    assert_eq!(short.kind, atomfs::FileKind::Symlink);
    assert_eq!(fs2.getattr(tree.file).unwrap().nlink, 3);
}

#[test]
fn fsck_leaks_and_data_past_eof_are_trimmed_by_preen() {
    let (_fs, tree, dev, l) = damaged();
    let ss = l.sector_size as usize;
    let mut req = Request::new();
    req.write(l.region(900) + 5, vec![1u8; ss]); // region of a free inode
    req.write(l.region(tree.file) + 10, vec![2u8; ss]); // file is 11 bytes
    req.write(l.xattr_lba(tree.big_xattr) + 40, vec![3u8; ss]); // past its blob
    req.write(l.orphan_lba(tree.sub), vec![4u8; ss]); // damaged orphan record
    req.write(7, vec![5u8; ss]); // between superblocks and inode table
    dev.submit(req).unwrap();
    let k = kinds(&check(&dev, &ro()));
    for want in [
        Problem::Leaked,
        Problem::DataBeyondEof,
        Problem::OrphanRecord,
    ] {
        assert!(k.contains(&want), "{want:?} not in {k:?}");
    }
    let p = check(&dev, &preen());
    assert!(p.errors().all(|f| f.repaired), "{:#?}", p.findings);
    assert_clean(&check(&dev, &ro()), "after preen");
    let mut b = vec![0u8; ss];
    dev.read(l.region(900) + 5, &mut b).unwrap();
    assert!(b.iter().all(|&x| x == 0));
    assert!(dev
        .next_mapped(l.region(900))
        .unwrap()
        .is_none_or(|r| r.start >= l.region(901)));
}

#[test]
fn fsck_damaged_root_inode_is_rebuilt() {
    let (_fs, _tree, dev, l) = damaged();
    flip(&dev, l.inode_lba(ROOT_INO), 8 * 30);
    let r = check(&dev, &ro());
    assert!(kinds(&r).contains(&Problem::Root));
    check(&dev, &yes());
    assert_clean(&check(&dev, &ro()), "after -y");
    let fs2 = Fs::mount(Arc::new(dev), &MountOptions::default()).unwrap();
    assert!(fs2.lookup(&ctx(), ROOT_INO, os("dir")).is_ok());
}

#[test]
fn fsck_on_log_device_over_sim_media() {
    use blockdev::{FormatOptions, LogDevice, OpenOptions, SimMedia};
    for ss in [512u32, 4096] {
        let media = SimMedia::new(ss, 64 << 20);
        let dev = LogDevice::format(
            media.clone(),
            &FormatOptions {
                segment_size_bytes: 1 << 20,
                ..FormatOptions::default()
            },
        )
        .unwrap();
        Fs::mkfs(&dev, &MkfsOptions::default()).unwrap();
        let fs = Fs::mount(dev, &MountOptions::default()).unwrap();
        let c = ctx();
        let d = fs.mkdir(&c, ROOT_INO, os("d"), 0o755).unwrap();
        let f = fs
            .mknod(&c, d.ino, os("f"), libc::S_IFREG | 0o644, 0)
            .unwrap();
        fs.write(&c, f.ino, 0, &[1u8; 10000], false).unwrap();
        fs.setxattr(&c, f.ino, os("user.x"), &vec![2u8; 5000], 0)
            .unwrap();
        let dev = fs.unmount().unwrap();
        assert_clean(&check(&dev, &ro()), "log device");
        let media = dev.close().unwrap();
        assert!(blockdev::check(&media).is_clean());
        // Damage an inode through the block layer and repair it there.
        let dev = LogDevice::open(media, &OpenOptions::default()).unwrap();
        let l = Layout::for_device(ss, dev.geometry().logical_sectors).unwrap();
        let mut b = vec![0u8; ss as usize];
        dev.read(l.inode_lba(d.ino), &mut b).unwrap();
        let mut inode = Inode::decode(&b, d.ino).unwrap();
        inode.size = 9;
        let mut req = Request::new();
        req.write(l.inode_lba(d.ino), inode.encode(ss));
        dev.submit(req).unwrap();
        assert_eq!(kinds(&check(&dev, &ro())), vec![Problem::DirSize]);
        let r = check(&dev, &preen());
        assert!(r.errors().all(|f| f.repaired));
        assert_eq!(r.repair_segments, 1);
        let media = dev.close().unwrap();
        assert!(blockdev::check(&media).is_clean());
        let dev = LogDevice::open(media, &OpenOptions::default()).unwrap();
        assert_clean(&check(&dev, &ro()), "after repair and reopen");
    }
}
