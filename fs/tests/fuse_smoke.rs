//! The first check of the FUSE path: mount an image with the real binary,
//! write through the kernel, unmount, remount and read it back.

mod fuse_common;

use fuse_common::*;

#[test]
fn write_unmount_remount_read() {
    if !fuse_available("write_unmount_remount_read") {
        return;
    }
    let s = Scratch::new();
    make_image(&s.image, 64 << 20);
    let m = mount_fg(&s.image, &s.mnt, "");
    assert_eq!(mount_type(&s.mnt).unwrap().0, "fuse.atomfs");
    assert_eq!(statfs(&s.mnt).f_type, FUSE_SUPER_MAGIC);
    std::fs::create_dir(s.path("d")).unwrap();
    std::fs::write(s.path("d/hello"), b"hello, atomfs\n").unwrap();
    let (status, err) = m.unmount().unwrap();
    assert!(status.success(), "daemon exit {status}: {err}");
    assert!(!is_mounted(&s.mnt));
    let m = mount_fg(&s.image, &s.mnt, "");
    assert_eq!(
        std::fs::read(s.path("d/hello")).unwrap(),
        b"hello, atomfs\n"
    );
    let (status, err) = m.unmount().unwrap();
    assert!(status.success(), "daemon exit {status}: {err}");
}
