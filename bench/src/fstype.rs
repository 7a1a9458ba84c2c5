//! The file systems under test: how each is created, mounted and unmounted.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

use crate::sys::{self, LoopDev, Mount, Result};

/// A file system under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FsKind {
    Atomfs,
    Ext4,
    Xfs,
    Btrfs,
    /// The FUSE floor (`fuse-floor`): an in-memory FUSE file system with
    /// atomfs's fuser settings and no storage, for the speed tables only.
    #[serde(rename = "fusefloor")]
    FuseFloor,
}

impl FsKind {
    /// The default set: the four real file systems.
    pub const ALL: [FsKind; 4] = [FsKind::Atomfs, FsKind::Ext4, FsKind::Xfs, FsKind::Btrfs];
    /// Every kind `--fs` accepts.
    pub const KNOWN: [FsKind; 5] = [
        FsKind::Atomfs,
        FsKind::Ext4,
        FsKind::Xfs,
        FsKind::Btrfs,
        FsKind::FuseFloor,
    ];

    pub fn name(self) -> &'static str {
        match self {
            FsKind::Atomfs => "atomfs",
            FsKind::Ext4 => "ext4",
            FsKind::Xfs => "xfs",
            FsKind::Btrfs => "btrfs",
            FsKind::FuseFloor => "fusefloor",
        }
    }

    /// True if it stores nothing, so its device bytes mean nothing: it is
    /// left out of every write-amplification figure.
    pub fn is_floor(self) -> bool {
        self == FsKind::FuseFloor
    }

    /// Why `workload` is not run on this file system, if it is not.
    pub fn refuses(self, workload: &str) -> Option<String> {
        (self.is_floor() && workload.starts_with("aged")).then(|| {
            format!(
                "{workload} is not run on fusefloor: it measures device bytes on a filled \
                 device, and fusefloor stores no data"
            )
        })
    }

    /// The options used, as printed with the results.
    pub fn describe(self) -> &'static str {
        match self {
            FsKind::Atomfs => "mkfs.atomfs -F; atomfs -f (defaults: write-through, commit=5)",
            FsKind::Ext4 => {
                "mkfs.ext4 -F -T default -E lazy_itable_init=0,lazy_journal_init=0; default mount (data=ordered)"
            }
            FsKind::Xfs => "mkfs.xfs -f; default mount",
            FsKind::Btrfs => "mkfs.btrfs -f; default mount",
            FsKind::FuseFloor => {
                "fuse-floor: in-memory FUSE file system, no data kept, atomfs's fuser settings: \
                 the cost of FUSE alone (speed tables only)"
            }
        }
    }
}

impl fmt::Display for FsKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FsKind {
    type Err = String;
    fn from_str(s: &str) -> Result<FsKind> {
        FsKind::KNOWN
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                format!("unknown file system {s:?} (atomfs, ext4, xfs, btrfs, fusefloor)")
            })
    }
}

/// Where the atomfs binaries are (and the FUSE floor's, built next to
/// them from this crate).
#[derive(Clone, Debug)]
pub struct AtomfsBins {
    pub mkfs: PathBuf,
    pub mount: PathBuf,
    pub fsck: PathBuf,
    pub fuse_floor: PathBuf,
}

impl AtomfsBins {
    /// The tools in `dir`. Cargo cannot name a binary `mkfs.atomfs` (rustc
    /// refuses dots in crate names), so a cargo target dir holds
    /// `mkfs-atomfs` and `fsck-atomfs`; the dotted names exist once
    /// installed or linked (`scripts/link-tools.sh`). Either is accepted,
    /// the dotted one first.
    pub fn in_dir(dir: &Path) -> AtomfsBins {
        let pick = |dotted: &str, dashed: &str| {
            let d = dir.join(dotted);
            if sys::is_executable(&d) {
                d
            } else {
                dir.join(dashed)
            }
        };
        AtomfsBins {
            mkfs: pick("mkfs.atomfs", "mkfs-atomfs"),
            mount: dir.join("atomfs"),
            fsck: pick("fsck.atomfs", "fsck-atomfs"),
            fuse_floor: dir.join("fuse-floor"),
        }
    }

    /// Why atomfs cannot be tested, if it cannot.
    pub fn missing(&self) -> Option<String> {
        [&self.mkfs, &self.mount]
            .into_iter()
            .find(|p| !sys::is_executable(p))
            .map(|p| format!("{} not built yet", p.display()))
    }

    /// Why the FUSE floor cannot be tested, if it cannot.
    pub fn floor_missing(&self) -> Option<String> {
        if !sys::is_executable(&self.fuse_floor) {
            return Some(format!(
                "{} not built yet (cargo build -p atomfs-bench)",
                self.fuse_floor.display()
            ));
        }
        (!Path::new("/dev/fuse").exists()).then(|| "no /dev/fuse".to_string())
    }
}

/// How long a FUSE daemon may take to mount, and to flush and exit after
/// unmount.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(60);
const EXIT_TIMEOUT: Duration = Duration::from_secs(600);

/// Creates, mounts and unmounts one file system kind.
#[derive(Clone, Debug)]
pub struct FsDriver {
    pub kind: FsKind,
    pub atomfs: AtomfsBins,
    /// Set once atomfs refused `-o stats_file=`: mount without it.
    pub stats_file_unsupported: bool,
}

impl FsDriver {
    pub fn new(kind: FsKind, atomfs: AtomfsBins) -> FsDriver {
        FsDriver {
            kind,
            atomfs,
            stats_file_unsupported: false,
        }
    }

    /// Why this file system cannot be tested here, if it cannot.
    pub fn unavailable(&self) -> Option<String> {
        let tool = match self.kind {
            FsKind::Atomfs => return self.atomfs.missing(),
            FsKind::FuseFloor => return self.atomfs.floor_missing(),
            FsKind::Ext4 => "mkfs.ext4",
            FsKind::Xfs => "mkfs.xfs",
            FsKind::Btrfs => "mkfs.btrfs",
        };
        if sys::which(tool).is_none() {
            let pkg = match self.kind {
                FsKind::Ext4 => "e2fsprogs",
                FsKind::Xfs => "xfsprogs",
                _ => "btrfs-progs",
            };
            return Some(format!("{tool} not found (Debian package {pkg})"));
        }
        let fstype = self.kind.name();
        let known = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
        if !known
            .lines()
            .any(|l| l.split_whitespace().last() == Some(fstype))
        {
            // Not registered yet: the module loads on first mount; try it.
            let _ = sys::run(Command::new("modprobe").arg(fstype));
            let known = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
            if !known
                .lines()
                .any(|l| l.split_whitespace().last() == Some(fstype))
            {
                return Some(format!("the kernel has no {fstype} support"));
            }
        }
        None
    }

    /// Makes the file system on `dev`.
    pub fn mkfs(&self, dev: &Path) -> Result<()> {
        let mut cmd = match self.kind {
            FsKind::Atomfs => {
                let mut c = Command::new(&self.atomfs.mkfs);
                c.arg("-F");
                c
            }
            FsKind::Ext4 => {
                // Lazy init would zero inode tables and the journal from a
                // kernel thread after mount, inside the measured window. It
                // changes when those writes happen, not the format. `-T
                // default`: below 512 MiB mke2fs would pick its "small"
                // profile (1 KiB blocks), unlike on any real disk.
                let mut c = Command::new("mkfs.ext4");
                c.args([
                    "-F",
                    "-q",
                    "-T",
                    "default",
                    "-E",
                    "lazy_itable_init=0,lazy_journal_init=0",
                ]);
                c
            }
            FsKind::Xfs => {
                let mut c = Command::new("mkfs.xfs");
                c.args(["-f", "-q"]);
                c
            }
            FsKind::Btrfs => {
                let mut c = Command::new("mkfs.btrfs");
                c.args(["-f", "-q"]);
                c
            }
            FsKind::FuseFloor => {
                let mut c = Command::new(&self.atomfs.fuse_floor);
                c.arg("--mkfs");
                c
            }
        };
        cmd.arg(dev);
        sys::run(&mut cmd).map(|_| ())
    }

    /// Mounts `dev` on `mnt`. For atomfs the daemon runs in the foreground
    /// as our child, logs to `log`, and is asked to write its block-layer
    /// counters to `stats_file` on unmount. The FUSE floor is mounted the
    /// same way (it has no counters).
    pub fn mount(
        &mut self,
        dev: &LoopDev,
        mnt: &Path,
        log: &Path,
        stats_file: &Path,
    ) -> Result<Mount> {
        std::fs::create_dir_all(mnt).map_err(|e| format!("mkdir {}: {e}", mnt.display()))?;
        if self.kind == FsKind::FuseFloor {
            // Always in the foreground, like `atomfs -f`.
            let mut c = Command::new(&self.atomfs.fuse_floor);
            c.arg(&dev.dev).arg(mnt);
            return Mount::fuse(c, mnt, log, MOUNT_TIMEOUT);
        }
        if self.kind != FsKind::Atomfs {
            sys::run(
                Command::new("mount")
                    .args(["-t", self.kind.name()])
                    .arg(&dev.dev)
                    .arg(mnt),
            )?;
            return Ok(Mount::kernel(mnt));
        }
        let cmd = |with_stats: bool| {
            let mut c = Command::new(&self.atomfs.mount);
            c.arg(&dev.dev).arg(mnt);
            if with_stats {
                c.arg("-o")
                    .arg(format!("stats_file={}", stats_file.display()));
            }
            c.arg("-f");
            c
        };
        if !self.stats_file_unsupported {
            match Mount::fuse(cmd(true), mnt, log, MOUNT_TIMEOUT) {
                Ok(m) => return Ok(m),
                Err(e) => {
                    // Perhaps the option is not implemented (yet): try
                    // once without it before calling the mount failed.
                    dev.wait_released(MOUNT_TIMEOUT)?;
                    let m =
                        Mount::fuse(cmd(false), mnt, log, MOUNT_TIMEOUT).map_err(|_| e.clone())?;
                    eprintln!("note: atomfs failed with -o stats_file ({e}); mounting without it, so no breakdown");
                    self.stats_file_unsupported = true;
                    return Ok(m);
                }
            }
        }
        Mount::fuse(cmd(false), mnt, log, MOUNT_TIMEOUT)
    }

    /// Unmounts and waits until everything is on the device: the FUSE
    /// daemon has exited and nobody holds the device.
    pub fn unmount(&self, m: &mut Mount, dev: &LoopDev) -> Result<()> {
        m.unmount(EXIT_TIMEOUT)?;
        dev.wait_released(EXIT_TIMEOUT)
    }
}
