//! Test-only: `atomfs-crash-daemon IMAGE MOUNTPOINT [-o OPTIONS]` is
//! `atomfs IMAGE MOUNTPOINT -f -o OPTIONS` — the same two library calls
//! (`atomfs::fuse::daemon::mount`, then `serve`) the `atomfs` binary makes
//! in the foreground, with the same option parser.
//!
//! It exists because cargo gives an integration test the path of its own
//! package's binaries only (`CARGO_BIN_EXE_*`), and the process-kill test
//! (`tests/crash_fuse_kill.rs`) must start, `kill -9` and restart a daemon.
//!
//! `--trace FILE` (used by `tests/crash_fuse_replay.rs`): the block layer
//! sits on the image's `FileMedia` wrapped in a recording media
//! ([`atomfs_tests::trace::TraceMedia`]) that appends every media write,
//! discard and flush to FILE. `daemon::mount` is hard-wired to a plain
//! `FileMedia`, so this mode builds the session itself from the same
//! parts: the same option parser, `LogDevice::open` with default options,
//! `Fs::mount` with the daemon's core options (`daemon::core_options`) and
//! the daemon's own FUSE session setup (`daemon::fuse_session`: adapter,
//! kernel mount options, ACL, worker threads, `clone_fd`). It serves until
//! unmounted, then unmounts the core (final flush) and closes the device
//! (its checkpoint), like `serve`. No `commit=` thread, no stats file and
//! no stop-signal handling: the test ends it with `umount`.

use std::path::{Path, PathBuf};
use std::process::exit;
use std::sync::Arc;

use atomfs::fuse::options::MountConfig;
use atomfs::fuse::{daemon, options};
use atomfs::Fs;
use atomfs_tests::trace::TraceMedia;
use blockdev::{FileMedia, FileMediaOptions, LogDevice, OpenOptions};

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("atomfs-crash-daemon: {msg}");
    exit(1);
}

/// The `--trace` mode (see the module docs).
fn serve_traced(image: &Path, mnt: &Path, cfg: &MountConfig, trace: &Path) -> Result<(), String> {
    let media = FileMedia::open_with(image, &FileMediaOptions::default())
        .map_err(|e| format!("{}: {e}", image.display()))?;
    let media =
        TraceMedia::create(media, trace).map_err(|e| format!("{}: {e}", trace.display()))?;
    let dev = LogDevice::open(media, &OpenOptions::default()).map_err(|e| e.to_string())?;
    let fs = Arc::new(
        Fs::mount(Arc::new(dev), &daemon::core_options(cfg))
            .map_err(|e| format!("{}: {e}", image.display()))?,
    );
    let session = daemon::fuse_session(fs.clone(), image, mnt, cfg)?;
    let served = daemon::run_session(session);
    let fs = Arc::try_unwrap(fs).map_err(|_| "file system still in use at exit".to_string())?;
    let dev = fs
        .unmount()
        .map_err(|e| format!("final flush failed: {e}"))?;
    let dev = Arc::try_unwrap(dev).map_err(|_| "device still in use at exit".to_string())?;
    let media = dev
        .close()
        .map_err(|e| format!("closing the device failed: {e}"))?;
    drop(media.into_inner());
    served.map_err(|e| format!("{}: FUSE session failed: {e}", mnt.display()))
}

fn main() {
    // Before any thread exists (see block_stop_signals).
    daemon::block_stop_signals();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut positional = Vec::new();
    let mut opts = Vec::new();
    let mut trace = None;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-o" => opts.push(it.next().unwrap_or_else(|| fail("-o needs a value"))),
            "--trace" => {
                trace = Some(PathBuf::from(
                    it.next().unwrap_or_else(|| fail("--trace needs a file")),
                ))
            }
            "-f" => {}
            _ => positional.push(PathBuf::from(a)),
        }
    }
    let [image, mnt] = positional.as_slice() else {
        fail("usage: atomfs-crash-daemon IMAGE MOUNTPOINT [-o OPTIONS] [--trace FILE]");
    };
    let cfg = options::parse(&opts).unwrap_or_else(|e| fail(e));
    if let Some(trace) = trace {
        if let Err(e) = serve_traced(image, mnt, &cfg, &trace) {
            fail(e);
        }
        return;
    }
    let d = daemon::mount(image, mnt, &cfg).unwrap_or_else(|e| fail(e));
    if let Err(e) = d.serve() {
        fail(e);
    }
}
