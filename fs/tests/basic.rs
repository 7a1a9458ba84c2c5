//! Basic operations end to end on MemDevice.

mod common;
use common::*;

use atomfs::{Errno, FileKind};

#[test]
fn create_write_read_readdir_remount() {
    let fs = new_fs();
    let f = create(&fs, ROOT, "a");
    assert_eq!(f.kind, FileKind::RegularFile);
    assert_eq!(
        fs.write(&root(), f.ino, 0, b"hello world", false).unwrap(),
        11
    );
    assert_eq!(fs.read(f.ino, 0, 100).unwrap(), b"hello world");
    assert_eq!(fs.read(f.ino, 6, 3).unwrap(), b"wor");
    let d = mkdir(&fs, ROOT, "d");
    let g = create(&fs, d.ino, "g");
    fs.write(&root(), g.ino, 1000, b"x", false).unwrap();
    assert_eq!(fs.getattr(g.ino).unwrap().size, 1001);
    assert_eq!(fs.read(g.ino, 0, 2000).unwrap()[..1000], [0u8; 1000][..]);
    let s = fs.symlink(&root(), ROOT, os("s"), os("a/b/c")).unwrap();
    assert_eq!(fs.readlink(s.ino).unwrap(), b"a/b/c");
    let long = "x".repeat(3000);
    let l = fs.symlink(&root(), ROOT, os("l"), os(&long)).unwrap();
    assert_eq!(fs.readlink(l.ino).unwrap(), long.as_bytes());
    assert_eq!(names(&fs, ROOT), ["a", "d", "l", "s"]);
    assert_eq!(fs.getattr(ROOT).unwrap().nlink, 3);
    let before = atomfs::inspect::dump_tree(&fs).unwrap();
    let fs2 = remount(&fs);
    assert_eq!(atomfs::inspect::dump_tree(&fs2).unwrap(), before);
    assert_eq!(lookup(&fs2, d.ino, "g").unwrap().ino, g.ino);
    assert_eq!(lookup(&fs2, ROOT, "nope").unwrap_err(), Errno::ENOENT);
}

#[test]
fn fs_is_send_and_sync_and_usable_from_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<atomfs::Fs<atomic_api::MemDevice>>();
    let fs = std::sync::Arc::new(new_fs());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let fs = fs.clone();
            std::thread::spawn(move || {
                for i in 0..200 {
                    let name = format!("t{t}-{i}");
                    let f = create(&fs, ROOT, &name);
                    fs.write(&root(), f.ino, 0, name.as_bytes(), false).unwrap();
                    if i % 3 == 0 {
                        fs.unlink(&root(), ROOT, os(&name)).unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(names(&fs, ROOT).len(), 4 * 133);
    let tree = atomfs::inspect::dump_tree(&*fs).unwrap();
    assert_eq!(atomfs::inspect::dump_tree(&remount(&fs)).unwrap(), tree);
}
