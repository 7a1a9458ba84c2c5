//! mkfs.atomfs: formats a block device or image file with the atomfs block
//! layer and writes an empty file system (DESIGN.md §4).
//!
//! Cargo cannot name a binary `mkfs.atomfs` (no dots in bin names), so the
//! binary is `mkfs-atomfs` and `scripts/link-tools.sh` adds the dotted
//! symlink; every message uses the dotted name, which is what users type.
//!
//! Steps: refuse a device that already holds a file system (any signature
//! `atomfs::fsck::probe` knows) unless `-F`; format the block layer
//! (`LogDevice::format`); write the superblocks and the root directory as
//! ONE atomic request (`atomfs::mkfs`, which also flushes); close (writes a
//! checkpoint); print the geometry. `-n` computes the same geometry by
//! formatting a media that discards every write, so nothing is written.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use atomfs::format::Layout;
use atomfs::fsck::probe;
use atomfs::MkfsOptions;
use atomic_api::AtomicDevice;
use blockdev::{
    create_image, FileMedia, FileMediaOptions, FormatOptions, LogDevice, Media, MediaKind,
    NullMedia,
};
use clap::Parser;

const NAME: &str = "mkfs.atomfs";

#[derive(Parser, Debug)]
#[command(
    name = "mkfs.atomfs",
    bin_name = "mkfs.atomfs",
    version,
    about = "Create an atomfs file system on a block device or image file"
)]
struct Cli {
    /// Block device or image file.
    device: PathBuf,
    /// Create (or resize) the image file to SIZE bytes; suffixes K, M, G, T (powers of 1024).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    size: Option<u64>,
    /// Volume label (at most 64 bytes).
    #[arg(short = 'L', long = "label", value_name = "LABEL", default_value = "")]
    label: String,
    /// Sector size: 512 or 4096. Default: the device's logical block size; 4096 for images.
    #[arg(long, value_name = "BYTES", value_parser = parse_sector_size)]
    sector_size: Option<u32>,
    /// Segment size of the log (multiple of 4 KiB, 16 KiB to 1 GiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, default_value = "4M")]
    segment_size: u64,
    /// Share of usable segments kept free for cleaning (1-90).
    #[arg(long, value_name = "PERCENT", default_value_t = 20)]
    overprovision: u32,
    /// Dry run: print the geometry, write nothing.
    #[arg(short = 'n', long = "dry-run")]
    dry_run: bool,
    /// Force: overwrite an existing file system or other signature.
    #[arg(short = 'F', long = "force")]
    force: bool,
    /// Print only errors.
    #[arg(short = 'q', long = "quiet")]
    quiet: bool,
}

/// Parses `4096`, `64K`, `4M`, `1G`, `2T` (also `4MiB`, `4MB`): powers of 1024.
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (digits, shift) = match t.chars().last() {
        Some(c @ ('k' | 'K' | 'm' | 'M' | 'g' | 'G' | 't' | 'T')) => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                _ => 40,
            };
            (&t[..t.len() - 1], shift)
        }
        _ => (t, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{s}' is not a size (e.g. 4096, 64K, 4M, 1G, 2T)"))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("'{s}' is too large"))
}

fn parse_sector_size(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(v @ (512 | 4096)) => Ok(v),
        _ => Err(format!("sector size must be 512 or 4096, not '{s}'")),
    }
}

/// 16 random bytes shaped as a version-4 UUID.
fn random_uuid() -> Result<[u8; 16], String> {
    let mut u = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut u))
        .map_err(|e| format!("/dev/urandom: {e}"))?;
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    Ok(u)
}

fn fmt_uuid(u: &[u8; 16]) -> String {
    let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// `1073741824` → `1.00 GiB`.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < UNITS.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{v:.2} {}", UNITS[i])
    }
}

/// Reads the first [`probe::PROBE_BYTES`] (or fewer, if the device is
/// shorter) with plain reads.
fn read_head(path: &Path) -> Result<Vec<u8>, String> {
    let mut f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut head = Vec::with_capacity(probe::PROBE_BYTES);
    f.by_ref()
        .take(probe::PROBE_BYTES as u64)
        .read_to_end(&mut head)
        .map_err(|e| format!("{}: read: {e}", path.display()))?;
    Ok(head)
}

/// What the run will format.
struct Target {
    is_block_device: bool,
    exists: bool,
}

fn inspect_target(cli: &Cli) -> Result<Target, String> {
    let path = &cli.device;
    match std::fs::metadata(path) {
        Ok(meta) => {
            use std::os::unix::fs::FileTypeExt;
            let is_block_device = meta.file_type().is_block_device();
            if !is_block_device && !meta.is_file() {
                return Err(format!(
                    "{}: is neither a block device nor a regular file",
                    path.display()
                ));
            }
            if is_block_device && cli.size.is_some() {
                return Err(format!(
                    "{}: is a block device; --size only creates image files",
                    path.display()
                ));
            }
            Ok(Target {
                is_block_device,
                exists: true,
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if cli.size.is_none() {
                return Err(format!(
                    "{}: no such file or device (use --size SIZE to create an image)",
                    path.display()
                ));
            }
            Ok(Target {
                is_block_device: false,
                exists: false,
            })
        }
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// The geometry printed at the end.
struct Report {
    sector_size: u32,
    segment_size: u64,
    segments: u64,
    media_bytes: u64,
    capacity_bytes: u64,
    overprovision: u32,
    logical_sectors: u64,
    max_inodes: u64,
    label: String,
    uuid: Option<[u8; 16]>,
}

fn print_report(cli: &Cli, r: &Report, dry_run: bool) {
    let path = cli.device.display();
    if dry_run {
        println!("{NAME}: dry run, nothing written; {path} would get:");
    } else {
        println!("{NAME}: created atomfs on {path}");
    }
    println!("  sector size      {} bytes", r.sector_size);
    println!(
        "  segments         {} x {}",
        r.segments,
        human(r.segment_size)
    );
    println!("  media            {}", human(r.media_bytes));
    println!(
        "  capacity         {} of data ({}% overprovisioned for cleaning)",
        human(r.capacity_bytes),
        r.overprovision
    );
    println!(
        "  logical space    {} sectors (thin-provisioned, 2^{})",
        r.logical_sectors,
        63 - r.logical_sectors.leading_zeros()
    );
    println!("  max inodes       {}", r.max_inodes);
    println!(
        "  label            {}",
        if r.label.is_empty() {
            "(none)"
        } else {
            &r.label
        }
    );
    match &r.uuid {
        Some(u) => println!("  uuid             {}", fmt_uuid(u)),
        None => println!("  uuid             (chosen at format time)"),
    }
}

fn format_options(cli: &Cli, uuid: Option<[u8; 16]>) -> FormatOptions {
    FormatOptions {
        segment_size_bytes: cli.segment_size,
        overprovision_percent: cli.overprovision,
        uuid,
        ..FormatOptions::default()
    }
}

fn report_for<M: Media>(
    cli: &Cli,
    dev: &LogDevice<M>,
    media_bytes: u64,
    uuid: Option<[u8; 16]>,
) -> Result<Report, String> {
    let geo = dev.geometry();
    let layout = Layout::for_device(geo.sector_size, geo.logical_sectors).ok_or_else(|| {
        format!(
            "{}: the block layer's logical space cannot hold atomfs",
            cli.device.display()
        )
    })?;
    Ok(Report {
        sector_size: geo.sector_size,
        segment_size: cli.segment_size,
        segments: media_bytes.saturating_sub(16384) / cli.segment_size,
        media_bytes,
        capacity_bytes: dev.space().capacity_bytes,
        overprovision: cli.overprovision,
        logical_sectors: geo.logical_sectors,
        max_inodes: layout.max_ino,
        label: cli.label.clone(),
        uuid,
    })
}

fn run(cli: &Cli) -> Result<(), String> {
    if cli.label.len() > atomfs::format::LABEL_MAX {
        return Err(format!(
            "label is {} bytes; at most {} are allowed",
            cli.label.len(),
            atomfs::format::LABEL_MAX
        ));
    }
    let target = inspect_target(cli)?;
    let path = &cli.device;
    if target.exists {
        let head = read_head(path)?;
        if let Some(sig) = probe::identify(&head) {
            if !cli.force {
                return Err(format!(
                    "{}: contains {}; use -F to overwrite it",
                    path.display(),
                    sig.describe()
                ));
            }
            if !cli.quiet {
                eprintln!(
                    "{NAME}: {}: overwriting {} (-F)",
                    path.display(),
                    sig.describe()
                );
            }
        }
    }
    // Sector size and length, without writing.
    let (ss, len) = if target.is_block_device {
        let m = FileMedia::open_with(
            path,
            &FileMediaOptions {
                read_only: true,
                ..FileMediaOptions::default()
            },
        )
        .map_err(|e| e.to_string())?;
        if let Some(want) = cli.sector_size {
            if want != m.sector_size() {
                return Err(format!(
                    "{}: the device's logical block size is {}, not {want} (atomfs sectors must match it)",
                    path.display(),
                    m.sector_size()
                ));
            }
        }
        (m.sector_size(), m.len_bytes())
    } else {
        let ss = cli.sector_size.unwrap_or(4096);
        let len = match cli.size {
            Some(size) => size,
            None => std::fs::metadata(path)
                .map_err(|e| format!("{}: {e}", path.display()))?
                .len(),
        };
        (ss, len / u64::from(ss) * u64::from(ss))
    };
    if cli.dry_run {
        let media = NullMedia::new(ss, len, path.display().to_string());
        let dev =
            LogDevice::format(media, &format_options(cli, None)).map_err(|e| e.to_string())?;
        let report = report_for(cli, &dev, len, None)?;
        if !cli.quiet {
            print_report(cli, &report, true);
        }
        return Ok(());
    }
    let mut created = false;
    if let Some(size) = cli.size {
        let size = size / 4096 * 4096;
        if size == 0 {
            return Err(format!("--size {size}: the image must be at least 4 KiB"));
        }
        create_image(path, size, target.exists).map_err(|e| e.to_string())?;
        created = !target.exists;
    }
    let result = format_and_mkfs(cli, ss);
    if result.is_err() && created {
        // Do not leave a half-made image behind that we created ourselves.
        let _ = std::fs::remove_file(path);
    }
    let report = result?;
    if !cli.quiet {
        print_report(cli, &report, false);
    }
    Ok(())
}

fn format_and_mkfs(cli: &Cli, ss: u32) -> Result<Report, String> {
    let path = &cli.device;
    let media = FileMedia::open_with(
        path,
        &FileMediaOptions {
            read_only: false,
            image_sector_size: Some(ss),
            ..FileMediaOptions::default()
        },
    )
    .map_err(|e| e.to_string())?;
    debug_assert!(media.kind() == MediaKind::ImageFile || media.sector_size() == ss);
    let len = media.len_bytes();
    let dev = LogDevice::format(media, &format_options(cli, Some(random_uuid()?)))
        .map_err(|e| e.to_string())?;
    let uuid = random_uuid()?;
    atomfs::mkfs(
        &dev,
        &MkfsOptions {
            label: cli.label.clone(),
            uuid: Some(uuid),
            ..MkfsOptions::default()
        },
    )
    .map_err(|e| format!("{}: writing the file system: {e}", path.display()))?;
    let report = report_for(cli, &dev, len, Some(uuid))?;
    dev.close()
        .map_err(|e| format!("{}: closing: {e}", path.display()))?;
    Ok(report)
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_target(false)
        .init();
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{NAME}: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("4M"), Ok(4 << 20));
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
        assert!(parse_size("x").is_err());
        assert!(parse_size("99999999999T").is_err());
        assert_eq!(parse_sector_size("512"), Ok(512));
        assert!(parse_sector_size("1024").is_err());
    }
}
