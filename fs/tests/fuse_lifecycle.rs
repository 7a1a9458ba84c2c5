//! The life of an `atomfs` mount: daemon mode and its readiness, signals,
//! durability at exit and after a kill, the stats file, refusals (second
//! mount, garbage images, unknown options), `ro`, and mounting through
//! `mount -t fuse.atomfs`, `mount.fuse3` and an fstab line.

mod fuse_common;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fuse_common::*;

fn kill(pid: i32, sig: i32) {
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
}

/// Waits for `mnt` to disappear from the mount table.
fn wait_unmounted(mnt: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while is_mounted(mnt) {
        assert!(Instant::now() < deadline, "{mnt:?} still mounted");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn one_line(err: &str) -> &str {
    let err = err.trim_end();
    assert_eq!(err.lines().count(), 1, "one error line, got: {err:?}");
    assert!(err.starts_with("atomfs: "), "{err:?}");
    err
}

#[test]
fn daemon_returns_when_ready_and_exits_after_umount() {
    if !fuse_available("daemon_returns_when_ready_and_exits_after_umount") {
        return;
    }
    let s = Scratch::new();
    make_image(&s.image, 64 << 20);
    let stats = s.dir.path().join("stats.json");
    let m = mount_bg(
        &s.image,
        &s.mnt,
        &format!("commit=1,stats_file={}", stats.display()),
    );
    // No waiting: the parent returned, so the mount must be usable now.
    assert_eq!(statfs(&s.mnt).f_type, FUSE_SUPER_MAGIC);
    let (fstype, source) = mount_type(&s.mnt).unwrap();
    assert_eq!(fstype, "fuse.atomfs");
    assert_eq!(Path::new(&source), s.image);
    fs::write(s.path("f"), vec![3u8; 100_000]).unwrap();
    assert!(!stats.exists(), "stats are written at exit only");
    m.unmount();
    // The daemon has released the image; the stats file is complete.
    let doc: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&stats).unwrap()).unwrap();
    assert_eq!(doc["version"], 1);
    let dev = &doc["device"];
    let at_mount = &doc["device_at_mount"];
    for key in [
        "requests",
        "flushes",
        "media_flushes",
        "submitted_bytes",
        "trimmed_sectors",
        "media_payload_bytes",
        "media_header_bytes",
        "media_checkpoint_bytes",
        "media_gc_bytes",
        "media_padding_bytes",
        "media_read_bytes",
    ] {
        assert!(dev[key].is_u64(), "device.{key}");
        assert!(at_mount[key].as_u64() <= dev[key].as_u64(), "{key}");
    }
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap();
    assert!(n(dev, "submitted_bytes") - n(at_mount, "submitted_bytes") >= 100_000);
    assert!(n(dev, "media_payload_bytes") >= 100_000);
    assert!(n(dev, "media_checkpoint_bytes") > n(at_mount, "media_checkpoint_bytes"));
    assert!(!stats.with_extension("json.tmp").exists());
    // And the data is there.
    let m = mount_bg(&s.image, &s.mnt, "");
    assert_eq!(fs::read(s.path("f")).unwrap(), vec![3u8; 100_000]);
    m.unmount();
}

#[test]
fn sigterm_and_sigint_unmount_and_flush() {
    if !fuse_available("sigterm_and_sigint_unmount_and_flush") {
        return;
    }
    let s = Scratch::new();
    make_image(&s.image, 64 << 20);
    for (sig, name) in [(libc::SIGTERM, "term"), (libc::SIGINT, "int")] {
        // commit=0: no background flush, so only the exit path can make
        // these writes durable.
        let m = mount_fg(&s.image, &s.mnt, "commit=0");
        fs::write(s.path(name), name.repeat(1000)).unwrap();
        fs::create_dir(s.path(&format!("{name}.d"))).unwrap();
        kill(m.pid(), sig);
        let (status, err) = m.wait();
        assert!(status.success(), "exit after signal {sig}: {status} {err}");
        assert!(!is_mounted(&s.mnt));
        let m = mount_fg(&s.image, &s.mnt, "");
        assert_eq!(fs::read_to_string(s.path(name)).unwrap(), name.repeat(1000));
        assert!(s.path(&format!("{name}.d")).is_dir());
        m.unmount();
    }
}

#[test]
fn sigterm_on_a_busy_mount_detaches_and_exits_when_released() {
    if !fuse_available("sigterm_on_a_busy_mount_detaches_and_exits_when_released") {
        return;
    }
    let s = Scratch::new();
    make_image(&s.image, 64 << 20);
    let m = mount_fg(&s.image, &s.mnt, "commit=0");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(s.path("busy"))
        .unwrap();
    f.write_all(b"before the signal").unwrap();
    kill(m.pid(), libc::SIGTERM);
    wait_unmounted(&s.mnt);
    // Detached, still served for the open file.
    f.write_all(b", after").unwrap();
    drop(f);
    let (status, err) = m.wait();
    assert!(status.success(), "{status} {err}");
    let m = mount_fg(&s.image, &s.mnt, "");
    assert_eq!(
        fs::read_to_string(s.path("busy")).unwrap(),
        "before the signal, after"
    );
    m.unmount();
}

/// The block layer's report on `image` (read-only): its findings, which
/// must hold no error, and how many user records the next mount would roll
/// forward past the last checkpoint (0 after a clean close).
fn records_to_recover(image: &Path) -> u64 {
    let media = blockdev::FileMedia::open_with(
        image,
        &blockdev::FileMediaOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    let report = blockdev::check(&media);
    let mut rolled = None;
    for f in &report.findings {
        assert!(
            !matches!(f.severity, blockdev::Severity::Error),
            "block layer: {}",
            f.message
        );
        if let Some(rest) = f.message.split("rolled forward ").nth(1) {
            rolled = rest.split(' ').next().and_then(|n| n.parse().ok());
        }
    }
    rolled.expect("the check reports what it rolled forward")
}

/// SIGTERM while files are busy and writes are running: the signal thread
/// detaches the mount and flushes while the last user lets go, and the
/// session's end must still unmount the core and close the device, whose
/// checkpoint leaves nothing to recover. (Before the fix the signal
/// thread's flush could still hold the file system when the session
/// ended: "file system still in use at exit", exit 1, no close checkpoint.
/// That race is timing-dependent; several rounds make it likely.)
#[test]
fn sigterm_on_a_busy_mount_always_writes_the_close_checkpoint() {
    if !fuse_available("sigterm_on_a_busy_mount_always_writes_the_close_checkpoint") {
        return;
    }
    let s = Scratch::new();
    make_image(&s.image, 128 << 20);
    for round in 0..6 {
        let m = mount_fg(&s.image, &s.mnt, "commit=0");
        let path = s.path(&format!("busy{round}"));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let stop = stop.clone();
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .unwrap();
            std::thread::spawn(move || {
                // Unsynced data for the signal thread's flush to write,
                // then writes until told to stop, then the last close.
                let chunk = vec![round as u8; 1 << 20];
                for _ in 0..16 {
                    f.write_all(&chunk).unwrap();
                }
                let mut at = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    std::os::unix::fs::FileExt::write_all_at(&f, &chunk[..4096], at).unwrap();
                    at = (at + 4096) % (16 << 20);
                }
            })
        };
        std::thread::sleep(Duration::from_millis(100 + 50 * round as u64));
        kill(m.pid(), libc::SIGTERM);
        wait_unmounted(&s.mnt);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer.join().unwrap();
        let (status, err) = m.wait();
        assert!(status.success(), "round {round}: {status} {err}");
        assert_eq!(
            records_to_recover(&s.image),
            0,
            "round {round}: no close checkpoint"
        );
        let m = mount_fg(&s.image, &s.mnt, "ro");
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            16 << 20,
            "round {round}"
        );
        m.unmount();
        let m = mount_fg(&s.image, &s.mnt, "");
        fs::remove_file(&path).unwrap();
        m.unmount();
    }
}

/// True once task `pid` blocks SIGINT (`SigBlk` in /proc/PID/status).
fn blocks_sigint(pid: u32) -> bool {
    let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigBlk:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .is_some_and(|m| m & (1 << (libc::SIGINT - 1)) != 0)
}

/// Ctrl-C (SIGINT) to `atomfs` while the daemonizing mount is starting is
/// not ignored: the parent passes it on, the child undoes the mount as soon
/// as it is up, and the parent fails with "interrupted" once the image is
/// released; no mount is left behind. The signal is sent as soon as the
/// parent blocks it (first thing in main), well before the mount is ready;
/// before the fix it stayed pending there and the parent exited 0 with the
/// mount up.
#[test]
fn ctrl_c_during_a_daemonizing_mount_aborts_it() {
    if !fuse_available("ctrl_c_during_a_daemonizing_mount_aborts_it") {
        return;
    }
    let s = Scratch::new();
    make_image(&s.image, 64 << 20);
    for round in 0..3 {
        let child = Command::new(ATOMFS)
            .arg(&s.image)
            .arg(&s.mnt)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !blocks_sigint(child.id()) {
            assert!(
                Instant::now() < deadline,
                "round {round}: SIGINT never blocked"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        kill(child.id() as i32, libc::SIGINT);
        let start = Instant::now();
        let (status, err) = wait_child(child);
        assert!(!status.success(), "round {round}: {status} {err}");
        assert!(start.elapsed() < Duration::from_secs(15), "round {round}");
        assert!(
            one_line(&err).contains("interrupted"),
            "round {round}: {err}"
        );
        assert!(!is_mounted(&s.mnt), "round {round}: still mounted");
        wait_released(&s.image);
    }
    // And the image is intact.
    let m = mount_bg(&s.image, &s.mnt, "");
    fs::write(s.path("after"), b"ok").unwrap();
    m.unmount();
}

/// Mounts `s.image` in the background with `-o log=LOG`, `RUST_LOG` set to
/// `rust_log` (unset if `None`, whatever the test runner's is).
fn mount_logging_to(s: &Scratch, log: &Path, rust_log: Option<&str>) -> std::process::Output {
    let mut cmd = Command::new(ATOMFS);
    cmd.arg(&s.image)
        .arg(&s.mnt)
        .arg("-o")
        .arg(format!("log={}", log.display()))
        .stdin(std::process::Stdio::null());
    match rust_log {
        Some(level) => cmd.env("RUST_LOG", level),
        None => cmd.env_remove("RUST_LOG"),
    };
    cmd.output().unwrap()
}

/// In the background the daemon's stderr is /dev/null; `-o log=PATH`
/// appends its log to PATH instead (at `RUST_LOG`'s level; syslog without
/// the option).
#[test]
fn background_daemon_logs_to_the_log_file() {
    if !fuse_available("background_daemon_logs_to_the_log_file") {
        return;
    }
    let s = Scratch::new();
    make_image(&s.image, 64 << 20);
    let log = s.dir.path().join("atomfs.log");
    let out = mount_logging_to(&s, &log, Some("debug"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::write(s.path("f"), b"x").unwrap();
    umount(&s.mnt);
    wait_released(&s.image);
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.contains("atomfs: FUSE init: capabilities"), "{text}");
    // An unwritable log path is refused up front, in one line.
    let out = run_atomfs(&s.image, &s.mnt, "log=/nonexistent-dir/x.log");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(one_line(&err).contains("/nonexistent-dir/x.log"), "{err}");
    assert!(!is_mounted(&s.mnt));
}

/// At the default level a clean session logs nothing: an ioctl (Python's
/// `open` asks TCGETS of every file) is ENOTTY, a poll answers ready, and
/// the unmount by `umount` leaves no warning, where fuser's defaults put
/// a warning in the log for each of them.
#[test]
fn a_clean_session_logs_nothing() {
    if !fuse_available("a_clean_session_logs_nothing") {
        return;
    }
    let s = Scratch::new();
    make_image(&s.image, 64 << 20);
    let log = s.dir.path().join("atomfs.log");
    let out = mount_logging_to(&s, &log, None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::write(s.path("f"), b"x").unwrap();
    let f = fs::File::open(s.path("f")).unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
    let mut winsize = [0u16; 4];
    // SAFETY: TIOCGWINSZ writes a struct winsize (four u16) to the pointer.
    let r = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, winsize.as_mut_ptr()) };
    assert_eq!(r, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::ENOTTY)
    );
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN | libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    assert_eq!(unsafe { libc::poll(&mut pfd, 1, 0) }, 1);
    assert_eq!(pfd.revents, libc::POLLIN | libc::POLLOUT);
    drop(f);
    umount(&s.mnt);
    wait_released(&s.image);
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.is_empty(), "the log of a clean session: {text}");
}

#[test]
fn sigkill_keeps_fsynced_data_and_loses_only_unsynced() {
    if !fuse_available("sigkill_keeps_fsynced_data_and_loses_only_unsynced") {
        return;
    }
    let s = Scratch::new();
    make_image(&s.image, 64 << 20);
    let m = mount_fg(&s.image, &s.mnt, "commit=0");
    let mut f = fs::File::create(s.path("synced")).unwrap();
    f.write_all(b"durable").unwrap();
    f.sync_all().unwrap();
    drop(f);
    fs::write(s.path("unsynced"), b"volatile").unwrap();
    kill(m.pid(), libc::SIGKILL);
    let (status, _) = m.wait();
    assert!(!status.success());
    // The dead mount must be cleaned up before the image is reused.
    let _ = Command::new("umount").arg("-l").arg(&s.mnt).status();
    wait_unmounted(&s.mnt);
    let m = mount_fg(&s.image, &s.mnt, "");
    assert_eq!(fs::read(s.path("synced")).unwrap(), b"durable");
    // commit=0 and no fsync: the group-commit buffer never reached the
    // media, and the crash state is the prefix up to the fsync.
    assert!(!s.path("unsynced").exists());
    m.unmount();
}

#[test]
fn sync_option_makes_each_operation_durable() {
    if !fuse_available("sync_option_makes_each_operation_durable") {
        return;
    }
    let s = Scratch::new();
    make_image(&s.image, 64 << 20);
    let m = mount_fg(&s.image, &s.mnt, "sync,commit=0");
    fs::write(s.path("now"), b"durable at once").unwrap();
    kill(m.pid(), libc::SIGKILL);
    let _ = m.wait();
    let _ = Command::new("umount").arg("-l").arg(&s.mnt).status();
    wait_unmounted(&s.mnt);
    let m = mount_fg(&s.image, &s.mnt, "");
    assert_eq!(fs::read(s.path("now")).unwrap(), b"durable at once");
    m.unmount();
}

#[test]
fn commit_interval_flushes_in_the_background() {
    if !fuse_available("commit_interval_flushes_in_the_background") {
        return;
    }
    let s = Scratch::new();
    make_image(&s.image, 64 << 20);
    let m = mount_fg(&s.image, &s.mnt, "commit=1");
    fs::write(s.path("later"), b"flushed by the commit thread").unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    kill(m.pid(), libc::SIGKILL);
    let _ = m.wait();
    let _ = Command::new("umount").arg("-l").arg(&s.mnt).status();
    wait_unmounted(&s.mnt);
    let m = mount_fg(&s.image, &s.mnt, "");
    assert_eq!(
        fs::read(s.path("later")).unwrap(),
        b"flushed by the commit thread"
    );
    m.unmount();
}

#[test]
fn second_mount_of_the_same_image_is_refused() {
    if !fuse_available("second_mount_of_the_same_image_is_refused") {
        return;
    }
    let s = Scratch::new();
    make_image(&s.image, 64 << 20);
    let m = mount_bg(&s.image, &s.mnt, "");
    fs::write(s.path("x"), b"x").unwrap();
    let other = s.extra_mnt("other");
    for opts in ["", "ro"] {
        let out = run_atomfs(&s.image, &other, opts);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        let line = one_line(&err);
        assert!(line.contains(s.image.to_str().unwrap()), "{line}");
        assert!(line.contains("in use"), "{line}");
        assert!(!is_mounted(&other));
    }
    // The first mount is unharmed.
    assert_eq!(fs::read(s.path("x")).unwrap(), b"x");
    m.unmount();
}

/// Images that are not an atomfs: each is refused with one line naming
/// the path, and not one byte of it changes.
#[test]
fn bad_images_are_refused_and_never_written() {
    if !fuse_available("bad_images_are_refused_and_never_written") {
        return;
    }
    let s = Scratch::new();
    let mut garbage = vec![0u8; 8 << 20];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for b in garbage.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let mut images: Vec<(PathBuf, &str)> = Vec::new();
    let p = s.dir.path().join("garbage");
    fs::write(&p, &garbage).unwrap();
    images.push((p, "random bytes"));
    let p = s.dir.path().join("zeros");
    fs::write(&p, vec![0u8; 8 << 20]).unwrap();
    images.push((p, "zeros"));
    let p = s.dir.path().join("tiny");
    fs::write(&p, &garbage[..1000]).unwrap();
    images.push((p, "truncated to 1000 bytes"));
    // A real atomfs cut short.
    let p = s.dir.path().join("cut");
    make_image(&p, 64 << 20);
    let f = OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(1 << 20).unwrap();
    drop(f);
    images.push((p, "atomfs truncated to 1 MiB"));
    // A valid block layer without a file system: the block layer would
    // write a recovery checkpoint on a read-write open; the check before
    // it must refuse first.
    let p = s.dir.path().join("nofs");
    blockdev::create_image(&p, 32 << 20, true).unwrap();
    let dev = blockdev::LogDevice::format(
        blockdev::FileMedia::open(&p).unwrap(),
        &blockdev::FormatOptions {
            segment_size_bytes: 1 << 20,
            ..Default::default()
        },
    )
    .unwrap();
    dev.close().unwrap();
    images.push((p, "block layer without a file system"));

    for (image, what) in &images {
        let before = fs::read(image).unwrap();
        for opts in ["", "ro"] {
            let out = run_atomfs(image, &s.mnt, opts);
            assert!(!out.status.success(), "{what} -o {opts:?} mounted");
            let err = String::from_utf8_lossy(&out.stderr);
            let line = one_line(&err);
            assert!(line.contains(image.to_str().unwrap()), "{what}: {line}");
            assert!(!is_mounted(&s.mnt), "{what}");
        }
        assert!(fs::read(image).unwrap() == before, "{what} was written");
    }
    // A missing image and a missing mount point.
    let out = run_atomfs(&s.dir.path().join("missing"), &s.mnt, "");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(one_line(&err).contains("missing"), "{err}");
    make_image(&s.image, 64 << 20);
    let out = run_atomfs(&s.image, &s.dir.path().join("nomnt"), "");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(one_line(&err).contains("nomnt"), "{err}");
}

#[test]
fn unknown_options_are_refused() {
    if !fuse_available("unknown_options_are_refused") {
        return;
    }
    let s = Scratch::new();
    make_image(&s.image, 64 << 20);
    let before = fs::read(&s.image).unwrap();
    for (opts, needle) in [
        ("frobnicate", "frobnicate"),
        ("rw,commit=abc", "commit=abc"),
        ("stats_file", "stats_file"),
    ] {
        let out = run_atomfs(&s.image, &s.mnt, opts);
        assert!(!out.status.success(), "{opts}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(one_line(&err).contains(needle), "{err}");
    }
    let out = Command::new(ATOMFS)
        .arg(&s.image)
        .arg(&s.mnt)
        .arg("--bogus")
        .output()
        .unwrap();
    assert!(!out.status.success());
    one_line(&String::from_utf8_lossy(&out.stderr));
    assert!(!is_mounted(&s.mnt));
    assert!(fs::read(&s.image).unwrap() == before);
}

#[test]
fn read_only_mount_refuses_writes_and_changes_nothing() {
    if !fuse_available("read_only_mount_refuses_writes_and_changes_nothing") {
        return;
    }
    let s = Scratch::new();
    make_image(&s.image, 64 << 20);
    let m = mount_bg(&s.image, &s.mnt, "");
    fs::write(s.path("file"), b"content").unwrap();
    fs::create_dir(s.path("dir")).unwrap();
    m.unmount();
    let before = fs::read(&s.image).unwrap();

    let m = mount_fg(&s.image, &s.mnt, "ro");
    assert_eq!(fs::read(s.path("file")).unwrap(), b"content");
    let erofs = |r: std::io::Result<()>| {
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EROFS));
    };
    erofs(fs::write(s.path("new"), b"x"));
    erofs(
        OpenOptions::new()
            .write(true)
            .open(s.path("file"))
            .map(drop),
    );
    erofs(fs::create_dir(s.path("d2")));
    erofs(fs::remove_file(s.path("file")));
    erofs(fs::rename(s.path("file"), s.path("moved")));
    erofs(std::os::unix::fs::symlink("file", s.path("sym")));
    // fsync of a file opened for reading is fine on a read-only mount.
    let f = fs::File::open(s.path("file")).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let (status, err) = m.unmount().unwrap();
    assert!(status.success(), "{status} {err}");
    assert!(
        fs::read(&s.image).unwrap() == before,
        "ro mount wrote the image"
    );
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `script` (sh) in a private mount namespace in which `atomfs` is
/// on the default search path: mount(8) clears PATH before it runs
/// `mount.fuse3`, whose shell then finds `fuse.TYPE` helpers only in the
/// standard directories. A bind mount of a directory holding an `atomfs`
/// symlink over /usr/local/sbin (or /usr/local/bin), visible only inside
/// the namespace, puts it there without touching the system. The script
/// gets `$IMG` and `$MNT`; whatever it leaves mounted is detached on exit.
fn in_namespace(s: &Scratch, script: &str) -> std::process::Output {
    let bin = s.extra_mnt("bin");
    let link = bin.join("atomfs");
    if !link.exists() {
        std::os::unix::fs::symlink(ATOMFS, &link).unwrap();
    }
    let target = ["/usr/local/sbin", "/usr/local/bin"]
        .into_iter()
        .find(|d| Path::new(d).is_dir())
        .expect("/usr/local/sbin or /usr/local/bin");
    let full = format!(
        "set -e\ntrap 'umount -l \"$MNT\" 2>/dev/null || true' EXIT\nmount --bind \"$BIN\" {target}\n{script}\n"
    );
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &full])
        .env("BIN", &bin)
        .env("IMG", &s.image)
        .env("MNT", &s.mnt)
        .output()
        .unwrap()
}

fn check_ok(what: &str, out: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The fstype of `$MNT`, printed by a namespace script.
const SHOW_TYPE: &str = r#"awk -v m="$MNT" '{ for (i = 7; $i != "-"; i++) ; if ($5 == m) print "type=" $(i+1) }' /proc/self/mountinfo"#;

#[test]
fn mount_helpers_and_fstab() {
    if !fuse_available("mount_helpers_and_fstab") {
        return;
    }
    if !have("mount.fuse3") || !have("unshare") {
        let required = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
            || std::env::var("ATOMFS_REQUIRE_FUSE").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "mount.fuse3 (Debian fuse3) and unshare are required"
        );
        eprintln!("SKIPPED mount_helpers_and_fstab: no mount.fuse3 or unshare");
        return;
    }
    let s = Scratch::new();
    make_image(&s.image, 64 << 20);

    // mount -t fuse.atomfs: mount(8) -> mount.fuse3 -> `atomfs IMG MNT -o ...`
    let out = in_namespace(
        &s,
        &format!(
            r#"mount -t fuse.atomfs "$IMG" "$MNT" -o rw,nodev,nosuid,noatime,commit=2
{SHOW_TYPE}
echo "mount -t" > "$MNT/via-mount"
cat "$MNT/via-mount"
umount "$MNT""#
        ),
    );
    let stdout = check_ok("mount -t fuse.atomfs", &out);
    assert!(stdout.contains("type=fuse.atomfs"), "{stdout}");
    assert!(stdout.contains("mount -t"), "{stdout}");
    wait_released(&s.image);

    // An fstab line with the options fstab users write.
    let fstab = s.dir.path().join("fstab");
    fs::write(
        &fstab,
        format!(
            "# test fstab\n{} {} fuse.atomfs defaults,_netdev,nofail,noauto,x-systemd.automount,commit=5 0 0\n",
            s.image.display(),
            s.mnt.display()
        ),
    )
    .unwrap();
    let out = in_namespace(
        &s,
        &format!(
            r#"mount --fstab "{}" "$MNT"
{SHOW_TYPE}
cat "$MNT/via-mount"
echo fstab > "$MNT/via-fstab"
umount "$MNT""#,
            fstab.display()
        ),
    );
    let stdout = check_ok("mount --fstab", &out);
    assert!(stdout.contains("type=fuse.atomfs"), "{stdout}");
    assert!(
        stdout.contains("mount -t"),
        "data written by the first mount: {stdout}"
    );
    wait_released(&s.image);

    // A bad option through mount(8): the helper's error line, no mount.
    let out = in_namespace(
        &s,
        r#"if mount -t fuse.atomfs "$IMG" "$MNT" -o no_such_option; then echo MOUNTED; fi
if grep -q " $MNT " /proc/self/mountinfo; then echo MOUNTED; fi"#,
    );
    let stdout = check_ok("bad option script", &out);
    assert!(!stdout.contains("MOUNTED"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("atomfs: unknown mount option 'no_such_option'"),
        "{stderr}"
    );

    // mount.fuse3 directly, with the TYPE#SOURCE syntax naming the binary
    // by path (needs no PATH at all), outside any namespace.
    let out = Command::new("mount.fuse3")
        .arg(format!("{ATOMFS}#{}", s.image.display()))
        .arg(&s.mnt)
        .args(["-o", "dev,suid,default_permissions"])
        .output()
        .unwrap();
    let m = Mounted {
        mnt: s.mnt.clone(),
        image: s.image.clone(),
        child: None,
    };
    assert!(
        out.status.success(),
        "mount.fuse3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mount_type(&s.mnt).unwrap().0, "fuse.atomfs");
    assert_eq!(fs::read(s.path("via-mount")).unwrap(), b"mount -t\n");
    assert_eq!(fs::read(s.path("via-fstab")).unwrap(), b"fstab\n");
    m.unmount();
}

/// Waits until a block device can be opened exclusively (its daemon
/// exited); images use `wait_released` (flock) instead.
fn wait_bdev_free(dev: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let c = cstr(dev);
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_EXCL) };
        if fd >= 0 {
            unsafe { libc::close(fd) };
            return;
        }
        assert!(Instant::now() < deadline, "{dev:?} still busy");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Detaches a loop device on drop.
struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
    }
}

/// A block device (a loop device over an image) mounts like an image,
/// and is opened exclusively: a second mount is refused.
#[test]
fn block_device_mount() {
    if !fuse_available("block_device_mount") {
        return;
    }
    if !Path::new("/dev/loop-control").exists() || !have("losetup") {
        let required = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
            || std::env::var("ATOMFS_REQUIRE_FUSE").is_ok_and(|v| v == "1");
        assert!(!required, "loop devices are required");
        eprintln!("SKIPPED block_device_mount: no loop devices");
        return;
    }
    let s = Scratch::new();
    make_image(&s.image, 64 << 20);
    let out = Command::new("losetup")
        .args(["--find", "--show"])
        .arg(&s.image)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "losetup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dev = Loop(String::from_utf8(out.stdout).unwrap().trim().to_string());
    let devpath = PathBuf::from(&dev.0);
    let m = mount_fg(&devpath, &s.mnt, "");
    assert_eq!(mount_type(&s.mnt).unwrap().1, dev.0);
    fs::write(s.path("on-a-block-device"), b"loop").unwrap();
    let other = s.extra_mnt("other");
    let out = run_atomfs(&devpath, &other, "");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(one_line(&err).contains(&dev.0), "{err}");
    umount(&s.mnt);
    let (status, err) = m.wait();
    assert!(status.success(), "{status} {err}");
    wait_bdev_free(&devpath);
    let m = mount_bg(&devpath, &s.mnt, "ro");
    assert_eq!(fs::read(s.path("on-a-block-device")).unwrap(), b"loop");
    umount(&m.mnt);
    // The daemon holds the device (O_EXCL) until it exits.
    wait_bdev_free(&devpath);
}
