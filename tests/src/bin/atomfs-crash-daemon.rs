//! Test-only: `atomfs-crash-daemon IMAGE MOUNTPOINT [-o OPTIONS]` is
//! `atomfs IMAGE MOUNTPOINT -f -o OPTIONS` — the same two library calls
//! (`atomfs::fuse::daemon::mount`, then `serve`) the `atomfs` binary makes
//! in the foreground, with the same option parser.
//!
//! It exists because cargo gives an integration test the path of its own
//! package's binaries only (`CARGO_BIN_EXE_*`), and the process-kill test
//! (`tests/crash_fuse_kill.rs`) must start, `kill -9` and restart a daemon.

use std::path::PathBuf;
use std::process::exit;

use atomfs::fuse::{daemon, options};

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("atomfs-crash-daemon: {msg}");
    exit(1);
}

fn main() {
    // Before any thread exists (see block_stop_signals).
    daemon::block_stop_signals();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut positional = Vec::new();
    let mut opts = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-o" => opts.push(it.next().unwrap_or_else(|| fail("-o needs a value"))),
            "-f" => {}
            _ => positional.push(PathBuf::from(a)),
        }
    }
    let [image, mnt] = positional.as_slice() else {
        fail("usage: atomfs-crash-daemon IMAGE MOUNTPOINT [-o OPTIONS]");
    };
    let cfg = options::parse(&opts).unwrap_or_else(|e| fail(e));
    let d = daemon::mount(image, mnt, &cfg).unwrap_or_else(|e| fail(e));
    if let Err(e) = d.serve() {
        fail(e);
    }
}
