//! fsck.atomfs: checks (and repairs) the atomfs block layer and file system.
//!
//! Cargo cannot name a binary `fsck.atomfs`, so the binary is `fsck-atomfs`
//! and `scripts/link-tools.sh` adds the dotted symlink; messages use the
//! dotted name.
//!
//! Steps: identify the device from its first bytes (anything but atomfs is
//! an operational error, exit 8, nothing written); open the block layer
//! read-only and run `blockdev::check`; run `atomfs::fsck::check`
//! read-only. Only when repairs are wanted (`-y`, `-p`) and needed is the
//! device reopened read-write, where the check runs again, writes its
//! repairs as ONE request, and a last read-only pass reports what remains.
//! Exit codes are e2fsck's (see `fsck/README.md`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use atomfs::fsck::{probe, FsckOptions, FsckReport};
use blockdev::{CheckReport, FileMedia, FileMediaOptions, LogDevice, OpenOptions, Severity};
use clap::Parser;
use serde_json::json;

const NAME: &str = "fsck.atomfs";

/// e2fsck exit codes.
const EXIT_CLEAN: u8 = 0;
const EXIT_CORRECTED: u8 = 1;
const EXIT_UNCORRECTED: u8 = 4;
const EXIT_OPERATIONAL: u8 = 8;
const EXIT_USAGE: u8 = 16;

#[derive(Parser, Debug)]
#[command(
    name = "fsck.atomfs",
    bin_name = "fsck.atomfs",
    version,
    about = "Check and repair an atomfs file system",
    after_help = "Exit codes: 0 clean, 1 errors corrected, 4 errors left uncorrected, \
                  8 operational error, 16 usage error."
)]
struct Cli {
    /// Block device or image file.
    device: PathBuf,
    /// Check only: open read-only, answer "no" to every repair.
    #[arg(short = 'n', conflicts_with_all = ["yes", "preen"])]
    no: bool,
    /// Repair everything that can be repaired.
    #[arg(short = 'y', conflicts_with = "preen")]
    yes: bool,
    /// Preen: repair only what cannot lose data; exit 4 if more is needed.
    #[arg(short = 'p', short_alias = 'a')]
    preen: bool,
    /// Force a full check (every check is always full; accepted for fsck(8)).
    #[arg(short = 'f')]
    force: bool,
    /// Also print notes (orphans, block-layer recovery details).
    #[arg(short = 'v')]
    verbose: bool,
    /// Print one machine-readable JSON report on stdout.
    #[arg(long)]
    json: bool,
}

/// An operational failure: one line, exit 8.
struct OpError(String);

fn read_head(path: &Path) -> Result<Vec<u8>, OpError> {
    let mut f =
        std::fs::File::open(path).map_err(|e| OpError(format!("{}: {e}", path.display())))?;
    let mut head = Vec::with_capacity(probe::PROBE_BYTES);
    f.by_ref()
        .take(probe::PROBE_BYTES as u64)
        .read_to_end(&mut head)
        .map_err(|e| OpError(format!("{}: read: {e}", path.display())))?;
    Ok(head)
}

fn open(path: &Path, ss: Option<u32>, read_only: bool) -> Result<LogDevice<FileMedia>, OpError> {
    let media = FileMedia::open_with(
        path,
        &FileMediaOptions {
            read_only,
            image_sector_size: ss,
            ..FileMediaOptions::default()
        },
    )
    .map_err(|e| OpError(e.to_string()))?;
    LogDevice::open(
        media,
        &OpenOptions {
            read_only,
            ..OpenOptions::default()
        },
    )
    .map_err(|e| OpError(e.to_string()))
}

/// Everything one run learned.
struct Outcome {
    block: CheckReport,
    /// The first (read-only) file-system pass, or the repairing pass.
    fs: FsckReport,
    /// After repairs: what a fresh read-only pass still finds.
    after: Option<FsckReport>,
    repaired: bool,
    skipped_repair: Option<String>,
}

fn run(cli: &Cli) -> Result<Outcome, OpError> {
    let path = &cli.device;
    let head = read_head(path)?;
    let ss = match probe::identify(&head) {
        Some(probe::Signature::Atomfs { sector_size }) => sector_size,
        Some(sig) => {
            return Err(OpError(format!(
                "{}: not an atomfs file system; it contains {}",
                path.display(),
                sig.describe()
            )))
        }
        None => {
            return Err(OpError(format!(
                "{}: not an atomfs file system (no block-layer superblock at byte 0 or 4096)",
                path.display()
            )))
        }
    };
    let dev = open(path, ss, true)?;
    let block = blockdev::check(dev.media());
    let fs = atomfs::fsck::check(&dev, &FsckOptions::default());
    if fs.not_atomfs {
        return Err(OpError(format!(
            "{}: the atomfs block layer holds no file system (no \"ATOMFSSB\" superblock; run mkfs.atomfs)",
            path.display()
        )));
    }
    let wants_repair = !cli.no && (cli.yes || cli.preen);
    let needs_repair = fs
        .findings
        .iter()
        .any(|f| f.is_error || (f.kind == atomfs::fsck::Problem::Orphan));
    if !wants_repair || !needs_repair || fs.aborted {
        return Ok(Outcome {
            block,
            fs,
            after: None,
            repaired: false,
            skipped_repair: None,
        });
    }
    if !block.is_clean() {
        return Ok(Outcome {
            block,
            fs,
            after: None,
            repaired: false,
            skipped_repair: Some(
                "the block layer has errors; file-system repairs were not attempted".into(),
            ),
        });
    }
    drop(dev);
    let dev = open(path, ss, false)?;
    let opts = FsckOptions {
        repair: cli.yes,
        preen: cli.preen,
    };
    let fs = atomfs::fsck::check(&dev, &opts);
    let repaired = fs.findings.iter().any(|f| f.repaired);
    let after = atomfs::fsck::check(&dev, &FsckOptions::default());
    dev.close()
        .map_err(|e| OpError(format!("{}: closing after repair: {e}", path.display())))?;
    Ok(Outcome {
        block,
        fs,
        after: Some(after),
        repaired,
        skipped_repair: None,
    })
}

fn exit_code(o: &Outcome) -> u8 {
    if !o.block.is_clean() {
        return EXIT_UNCORRECTED;
    }
    let final_report = o.after.as_ref().unwrap_or(&o.fs);
    if !final_report.is_clean() || o.fs.repair_error.is_some() {
        return EXIT_UNCORRECTED;
    }
    let had_errors = !o.fs.is_clean();
    // e2fsck says 1 whenever it changed the file system, also when all it
    // did was reclaim orphans (which are notes, not errors).
    if o.repaired {
        EXIT_CORRECTED
    } else if had_errors {
        EXIT_UNCORRECTED
    } else {
        EXIT_CLEAN
    }
}

fn print_text(cli: &Cli, o: &Outcome, code: u8) {
    let path = cli.device.display();
    for f in &o.block.findings {
        match f.severity {
            Severity::Error => println!("{path}: block layer: ERROR: {}", f.message),
            Severity::Warning => println!("{path}: block layer: warning: {}", f.message),
            Severity::Info if cli.verbose => println!("{path}: block layer: {}", f.message),
            Severity::Info => {}
        }
    }
    for f in &o.fs.findings {
        if !f.is_error && !cli.verbose && !f.repaired {
            continue;
        }
        let tag = match (f.is_error, f.repaired) {
            (true, true) => "FIXED",
            (true, false) => "ERROR",
            (false, true) => "note, done",
            (false, false) => "note",
        };
        println!("{path}: {tag}: {}", f.message);
    }
    if let Some(e) = &o.fs.repair_error {
        println!("{path}: repair failed: {e}");
    }
    if let Some(s) = &o.skipped_repair {
        println!("{path}: {s}");
    }
    if let Some(after) = &o.after {
        for f in after.errors() {
            println!("{path}: REMAINS: {}", f.message);
        }
    }
    let s = o.after.as_ref().unwrap_or(&o.fs).stats;
    let verdict = match code {
        EXIT_CLEAN => "clean".to_string(),
        EXIT_CORRECTED => format!(
            "{} errors corrected (one request of {} segments)",
            o.fs.errors().filter(|f| f.repaired).count(),
            o.fs.repair_segments
        ),
        _ => {
            let left = o
                .after
                .as_ref()
                .map_or(o.fs.errors().count(), |a| a.errors().count())
                + o.block.errors().count();
            let hint = if cli.no || !(cli.yes || cli.preen) {
                "; run fsck.atomfs -y to repair"
            } else if cli.preen {
                "; UNEXPECTED INCONSISTENCY: run fsck.atomfs -y"
            } else {
                ""
            };
            format!("{left} errors left uncorrected{hint}")
        }
    };
    println!(
        "{path}: {verdict}; {} inodes ({} files, {} directories, {} symlinks), {} entries, {} orphans, {} mapped sectors",
        s.inodes, s.regular_files, s.directories, s.symlinks, s.entries, s.orphans, s.mapped_sectors
    );
}

fn fs_json(r: &FsckReport) -> serde_json::Value {
    json!({
        "findings": r.findings.iter().map(|f| json!({
            "kind": f.kind.name(),
            "error": f.is_error,
            "repaired": f.repaired,
            "message": f.message,
        })).collect::<Vec<_>>(),
        "aborted": r.aborted,
        "stats": {
            "inodes": r.stats.inodes,
            "directories": r.stats.directories,
            "regular_files": r.stats.regular_files,
            "symlinks": r.stats.symlinks,
            "entries": r.stats.entries,
            "buckets": r.stats.buckets,
            "orphans": r.stats.orphans,
            "mapped_sectors": r.stats.mapped_sectors,
        },
        "repair_segments": r.repair_segments,
        "repair_bytes": r.repair_bytes,
        "repair_error": r.repair_error,
    })
}

fn print_json(cli: &Cli, o: &Outcome, code: u8) {
    let sev = |s: Severity| match s {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Error => "error",
    };
    let v = json!({
        "device": cli.device.display().to_string(),
        "exit_code": code,
        "block_layer": {
            "clean": o.block.is_clean(),
            "extents": o.block.extents,
            "mapped_sectors": o.block.mapped_sectors,
            "findings": o.block.findings.iter().map(|f| json!({
                "severity": sev(f.severity),
                "message": f.message,
            })).collect::<Vec<_>>(),
        },
        "file_system": fs_json(&o.fs),
        "after_repair": o.after.as_ref().map(fs_json),
        "repair_skipped": o.skipped_repair,
    });
    println!("{}", serde_json::to_string_pretty(&v).expect("json"));
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("error"))
        .format_target(false)
        .init();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            let code = match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => 0,
                _ => EXIT_USAGE,
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let _ = cli.force;
    match run(&cli) {
        Ok(outcome) => {
            let code = exit_code(&outcome);
            if cli.json {
                print_json(&cli, &outcome, code);
            } else {
                print_text(&cli, &outcome, code);
            }
            ExitCode::from(code)
        }
        Err(OpError(msg)) => {
            if cli.json {
                let v = json!({
                    "device": cli.device.display().to_string(),
                    "exit_code": EXIT_OPERATIONAL,
                    "error": msg,
                });
                println!("{}", serde_json::to_string_pretty(&v).expect("json"));
            }
            eprintln!("{NAME}: {msg}");
            ExitCode::from(EXIT_OPERATIONAL)
        }
    }
}
