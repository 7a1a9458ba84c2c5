//! `atomfs-bench`: see the library docs and `bench/README.md`.

use std::path::PathBuf;
use std::process::ExitCode;

use atomfs_bench::{report, Config, FsKind};
use clap::Parser;

/// Write amplification and time of atomfs against ext4, xfs and btrfs, each
/// on a fresh loop device, bytes counted at the loop device. Needs root.
#[derive(Parser, Debug)]
#[command(name = "atomfs-bench", version)]
struct Args {
    /// Small sizes: finishes in about two minutes for all four file systems.
    #[arg(long)]
    quick: bool,
    /// File systems, comma-separated (atomfs, ext4, xfs, btrfs; also
    /// fusefloor, the FUSE floor: not in the default set, speed tables only).
    #[arg(long, value_delimiter = ',', default_value = "atomfs,ext4,xfs,btrfs")]
    fs: Vec<FsKind>,
    /// Workloads, comma-separated: create_fsync, append_fsync,
    /// overwrite_fsync, rename_replace, metadata_fsync, small_files, seq,
    /// stat_files, bigdir_create, tree_copy, aged (= aged50,aged70,aged90; quick mode: aged50).
    #[arg(long, value_delimiter = ',')]
    workloads: Vec<String>,
    /// Where bench.md, bench.json and bench-wa.svg go.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// Directory for image files and mount points, on a real disk (not tmpfs).
    #[arg(long, default_value = "/var/tmp/atomfs-bench")]
    work_dir: PathBuf,
    /// Directory with the atomfs, mkfs.atomfs binaries (default: the
    /// directory of this executable, i.e. the same cargo target dir).
    #[arg(long)]
    atomfs_bin_dir: Option<PathBuf>,
    /// Size of each loop device in MiB (default 512 quick, 4096 full).
    #[arg(long)]
    device_mib: Option<u64>,
    /// Size of each loop device for aged, in MiB (default 512 quick, 1024 full).
    #[arg(long)]
    aged_device_mib: Option<u64>,
    /// Stop each aged overwrite phase after this many seconds even if it
    /// has not written 2× capacity (0.125× in quick mode) yet; the second
    /// half of what it wrote is reported, and the table says so.
    #[arg(long)]
    aged_max_secs: Option<f64>,
    /// Loop devices with buffered I/O through the host page cache instead
    /// of --direct-io=on.
    #[arg(long)]
    buffered_loop: bool,
    /// Source tree for tree_copy (default: rust-src, else ~/.cargo/registry/src).
    #[arg(long)]
    tree_source: Option<PathBuf>,
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

fn main() -> ExitCode {
    let a = Args::parse();
    let mut cfg = Config::new(a.quick);
    cfg.fs = a.fs;
    if !a.workloads.is_empty() {
        cfg.workloads = a.workloads;
    }
    cfg.work_dir = a.work_dir;
    if let Some(d) = a.atomfs_bin_dir {
        cfg.atomfs_bin_dir = d;
    }
    if let Some(m) = a.device_mib {
        cfg.device_size = m << 20;
    }
    if let Some(m) = a.aged_device_mib {
        cfg.aged_device_size = m << 20;
    }
    cfg.direct_io = !a.buffered_loop;
    cfg.aged_max_secs = a.aged_max_secs;
    if a.tree_source.is_some() {
        cfg.tree_source = a.tree_source;
    }
    cfg.seed = a.seed;

    let r = match atomfs_bench::run(&cfg) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("atomfs-bench: {e}");
            return ExitCode::from(2);
        }
    };
    print!("{}", report::markdown(&r));
    if let Err(e) = report::write_all(&r, &a.out) {
        eprintln!("atomfs-bench: {e}");
        return ExitCode::from(2);
    }
    eprintln!(
        "wrote {0}/bench.md, {0}/bench.json, {0}/bench-wa.svg",
        a.out.display()
    );
    if r.rows.iter().any(|x| x.error.is_some()) {
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
