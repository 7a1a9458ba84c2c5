//! FileMedia under a LogDevice: the conformance suite on an image file,
//! exclusivity through the LogDevice, and one run on a real loop device
//! (skipped with a printed reason when not root or losetup is missing).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use atomic_api::conformance::{pattern, Harness};
use atomic_api::{AtomicDevice, Request};
use blockdev::{
    create_image, FileMedia, FileMediaError, FileMediaOptions, FormatOptions, IoMode, LogDevice,
    Media, MediaKind, OpenOptions,
};

struct FileHarness {
    dir: tempfile::TempDir,
    ss: u32,
    next: AtomicU64,
}

impl FileHarness {
    fn new(ss: u32) -> Self {
        Self {
            dir: tempfile::tempdir_in("/var/tmp").unwrap_or_else(|_| tempfile::tempdir().unwrap()),
            ss,
            next: AtomicU64::new(0),
        }
    }

    fn options(&self) -> FileMediaOptions {
        FileMediaOptions {
            image_sector_size: Some(self.ss),
            ..Default::default()
        }
    }
}

fn tiny() -> FormatOptions {
    FormatOptions {
        segment_size_bytes: 64 << 10,
        checkpoint_interval_bytes: Some(256 << 10),
        ..FormatOptions::default()
    }
}

impl Harness for FileHarness {
    type Device = LogDevice<FileMedia>;

    fn fresh(&self) -> Self::Device {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.path().join(format!("img{n}"));
        let size = if self.ss == 512 { 4 << 20 } else { 16 << 20 };
        create_image(&path, size, false).unwrap();
        let media = FileMedia::open_with(&path, &self.options()).unwrap();
        LogDevice::format(media, &tiny()).expect("format")
    }

    fn reopen(&self, device: Self::Device) -> Self::Device {
        let media = device.close().expect("close");
        let path = media.path().to_path_buf();
        drop(media);
        let media = FileMedia::open_with(&path, &self.options()).unwrap();
        LogDevice::open(media, &OpenOptions::default()).expect("open")
    }
}

#[test]
fn conformance_on_image_file_512() {
    atomic_api::conformance::run_all(&FileHarness::new(512));
}

#[test]
fn conformance_on_image_file_4k() {
    atomic_api::conformance::run_all(&FileHarness::new(4096));
}

#[test]
fn image_in_use_by_a_log_device_cannot_be_opened_again() {
    let h = FileHarness::new(512);
    let dev = h.fresh();
    let path = dev.media().path().to_path_buf();
    let err = FileMedia::open(&path).unwrap_err();
    assert!(matches!(err, FileMediaError::Busy { .. }), "{err}");
    assert!(err.to_string().contains("already in use"), "{err}");
    drop(dev);
    FileMedia::open(&path).expect("free after the device is dropped");
}

// ----------------------------------------------------------------- loop device

struct Loop {
    dev: PathBuf,
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

fn attach_loop(image: &Path, sector_size: u32) -> Result<Loop, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root".into());
    }
    let out = Command::new("losetup")
        .args(["-f", "--show", "--direct-io=on", "-b"])
        .arg(sector_size.to_string())
        .arg(image)
        .output()
        .map_err(|e| format!("cannot run losetup: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "losetup failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Ok(Loop { dev: dev.into() })
}

#[test]
fn real_loop_device() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let image = dir.path().join("loop.img");
    create_image(&image, 16 << 20, false).unwrap();
    for ss in [512u32, 4096] {
        let lo = match attach_loop(&image, ss) {
            Ok(lo) => lo,
            Err(reason) => {
                println!("real_loop_device: skipped ({reason})");
                return;
            }
        };
        let media = FileMedia::open(&lo.dev).expect("open loop device");
        println!(
            "real_loop_device: {} sector {} len {} {:?}",
            lo.dev.display(),
            media.sector_size(),
            media.len_bytes(),
            media.io_mode()
        );
        assert_eq!(media.kind(), MediaKind::BlockDevice);
        assert_eq!(media.sector_size(), ss);
        assert_eq!(media.len_bytes(), 16 << 20);
        assert_eq!(media.io_mode(), IoMode::Direct);
        // O_EXCL: a second opener is refused, with the path in the message.
        let err = FileMedia::open(&lo.dev).unwrap_err();
        assert!(matches!(err, FileMediaError::Busy { .. }), "{err}");
        assert!(err.to_string().contains(&*lo.dev.to_string_lossy()));
        // Discard works (or is ignored).
        media.discard(0, 1 << 20).unwrap();

        let dev = LogDevice::format(media, &tiny()).expect("format on loop");
        let sectors = 64;
        let data = pattern(ss as usize, 1000, sectors, 7);
        let mut r = Request::new();
        r.write(1000, data.clone()).trim(5000, 10);
        dev.submit(r).unwrap();
        dev.flush().unwrap();
        let media = dev.close().unwrap();
        drop(media);
        let dev = LogDevice::open(FileMedia::open(&lo.dev).unwrap(), &OpenOptions::default())
            .expect("reopen on loop");
        let mut buf = vec![0u8; data.len()];
        dev.read(1000, &mut buf).unwrap();
        assert!(buf == data, "data survives reopen on the loop device");
        assert!(blockdev::check(dev.media()).is_clean());
        drop(dev);
        drop(lo);
    }
}
