//! The `-o` options of the `atomfs` mount binary.
//!
//! Parsed here (not in the binary) so they can be unit-tested. The list is
//! what `mount -t fuse.atomfs` and `/etc/fstab` lines (through
//! `mount.fuse3`) pass: atomfs's own options, the generic mount flags the
//! kernel understands (passed on to the FUSE mount), and the options that
//! only mean something to `mount(8)` or to fstab processing (ignored).
//! Anything else is an error, so a typo never silently mounts with the
//! wrong semantics.

use std::path::PathBuf;
use std::time::Duration;

/// A generic VFS mount flag the kernel applies to the FUSE mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VfsFlag {
    Dev,
    NoDev,
    Suid,
    NoSuid,
    Exec,
    NoExec,
    Atime,
    NoAtime,
}

impl VfsFlag {
    /// The flag this one cancels (the last of a pair wins).
    fn opposite(self) -> VfsFlag {
        match self {
            VfsFlag::Dev => VfsFlag::NoDev,
            VfsFlag::NoDev => VfsFlag::Dev,
            VfsFlag::Suid => VfsFlag::NoSuid,
            VfsFlag::NoSuid => VfsFlag::Suid,
            VfsFlag::Exec => VfsFlag::NoExec,
            VfsFlag::NoExec => VfsFlag::Exec,
            VfsFlag::Atime => VfsFlag::NoAtime,
            VfsFlag::NoAtime => VfsFlag::Atime,
        }
    }

    pub fn to_mount_option(self) -> fuser::MountOption {
        use fuser::MountOption as M;
        match self {
            VfsFlag::Dev => M::Dev,
            VfsFlag::NoDev => M::NoDev,
            VfsFlag::Suid => M::Suid,
            VfsFlag::NoSuid => M::NoSuid,
            VfsFlag::Exec => M::Exec,
            VfsFlag::NoExec => M::NoExec,
            VfsFlag::Atime => M::Atime,
            VfsFlag::NoAtime => M::NoAtime,
        }
    }
}

/// Everything `-o` can set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountConfig {
    /// `ro`: refuse every change (EROFS); the device is opened read-only.
    pub read_only: bool,
    /// `sync`: every operation is durable before it returns.
    pub sync: bool,
    /// `commit=SECONDS`: background flush interval; `None` = off (`commit=0`).
    pub commit: Option<Duration>,
    /// `allow_other`: let users other than the mounter in.
    pub allow_other: bool,
    /// `default_permissions`: the kernel checks permissions too.
    pub default_permissions: bool,
    /// `writeback_cache`: the kernel may buffer and reorder writes (weaker
    /// crash semantics; see the `fuse` module docs).
    pub writeback_cache: bool,
    /// `direct_io`: every open bypasses the kernel's page cache
    /// (`FOPEN_DIRECT_IO`), so each read and write reaches the daemon as
    /// issued; the kernel then refuses `MAP_SHARED` mmap (ENODEV).
    pub direct_io: bool,
    /// `stats_file=PATH`: device counters written at exit (bench/README.md).
    pub stats_file: Option<PathBuf>,
    /// `fsname=NAME`: the source shown in /proc/mounts (default: the device).
    pub fsname: Option<String>,
    /// `log=PATH`: append the daemon's log to PATH (created if missing)
    /// instead of stderr (`-f`) or syslog (in the background).
    pub log_file: Option<PathBuf>,
    /// Generic VFS flags, each at most once (the last of a pair wins).
    pub vfs_flags: Vec<VfsFlag>,
}

/// The default commit interval (DESIGN.md §3).
pub const DEFAULT_COMMIT: Duration = Duration::from_secs(5);

impl Default for MountConfig {
    fn default() -> Self {
        MountConfig {
            read_only: false,
            sync: false,
            commit: Some(DEFAULT_COMMIT),
            allow_other: false,
            default_permissions: false,
            writeback_cache: false,
            direct_io: false,
            stats_file: None,
            fsname: None,
            log_file: None,
            vfs_flags: Vec::new(),
        }
    }
}

/// Options that only mean something to mount(8), fstab processing or
/// mount.fuse3, or that atomfs already behaves as (`relatime` and friends:
/// atomfs is always `noatime`, reads never write). Accepted and ignored.
const IGNORED: &[&str] = &[
    "defaults",
    "auto",
    "noauto",
    "user",
    "nouser",
    "users",
    "_netdev",
    "nofail",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "lazytime",
    "nolazytime",
    "diratime",
    "nodiratime",
    "subtype=atomfs",
];

/// Parses every `-o` argument (each a comma-separated list) in order.
/// Errors are one line naming the offending option.
pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<MountConfig, String> {
    let mut cfg = MountConfig::default();
    for arg in args {
        for opt in arg.as_ref().split(',') {
            apply(&mut cfg, opt)?;
        }
    }
    Ok(cfg)
}

fn apply(cfg: &mut MountConfig, opt: &str) -> Result<(), String> {
    let (key, value) = match opt.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (opt, None),
    };
    let flag = |v: Option<&str>| -> Result<(), String> {
        match v {
            None => Ok(()),
            Some(_) => Err(format!("option '{key}' takes no value")),
        }
    };
    match key {
        "" => {}
        "ro" => {
            flag(value)?;
            cfg.read_only = true;
        }
        "rw" => {
            flag(value)?;
            cfg.read_only = false;
        }
        "sync" => {
            flag(value)?;
            cfg.sync = true;
        }
        // The last of a pair wins, as for ro/rw.
        "async" => {
            flag(value)?;
            cfg.sync = false;
        }
        "allow_other" => {
            flag(value)?;
            cfg.allow_other = true;
        }
        "default_permissions" => {
            flag(value)?;
            cfg.default_permissions = true;
        }
        "writeback_cache" => {
            flag(value)?;
            cfg.writeback_cache = true;
        }
        "direct_io" => {
            flag(value)?;
            cfg.direct_io = true;
        }
        "commit" => {
            let v = value.ok_or("option 'commit' needs a value: commit=SECONDS")?;
            let secs: u64 = v
                .parse()
                .map_err(|_| format!("option 'commit={v}': not a whole number of seconds"))?;
            cfg.commit = (secs > 0).then(|| Duration::from_secs(secs));
        }
        "stats_file" => match value {
            Some(v) if !v.is_empty() => cfg.stats_file = Some(PathBuf::from(v)),
            _ => return Err("option 'stats_file' needs a value: stats_file=PATH".into()),
        },
        "log" => match value {
            Some(v) if !v.is_empty() => cfg.log_file = Some(PathBuf::from(v)),
            _ => return Err("option 'log' needs a value: log=PATH".into()),
        },
        "fsname" => match value {
            Some(v) if !v.is_empty() => cfg.fsname = Some(v.to_string()),
            _ => return Err("option 'fsname' needs a value: fsname=NAME".into()),
        },
        "dev" | "nodev" | "suid" | "nosuid" | "exec" | "noexec" | "atime" | "noatime" => {
            flag(value)?;
            let f = match key {
                "dev" => VfsFlag::Dev,
                "nodev" => VfsFlag::NoDev,
                "suid" => VfsFlag::Suid,
                "nosuid" => VfsFlag::NoSuid,
                "exec" => VfsFlag::Exec,
                "noexec" => VfsFlag::NoExec,
                "atime" => VfsFlag::Atime,
                _ => VfsFlag::NoAtime,
            };
            cfg.vfs_flags.retain(|&g| g != f && g != f.opposite());
            cfg.vfs_flags.push(f);
        }
        _ if key.starts_with("x-") || IGNORED.contains(&opt) => {}
        _ => return Err(format!("unknown mount option '{opt}'")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let cfg = parse::<&str>(&[]).unwrap();
        assert_eq!(cfg, MountConfig::default());
        assert_eq!(cfg.commit, Some(Duration::from_secs(5)));
        assert!(!cfg.read_only && !cfg.sync && !cfg.writeback_cache && !cfg.direct_io);
    }

    #[test]
    fn own_options() {
        let cfg = parse(&[
            "ro,sync,commit=30",
            "allow_other,default_permissions",
            "writeback_cache,stats_file=/tmp/s.json,direct_io,log=/var/log/a.log",
        ])
        .unwrap();
        assert!(cfg.read_only && cfg.sync && cfg.allow_other && cfg.default_permissions);
        assert!(cfg.writeback_cache && cfg.direct_io);
        assert_eq!(cfg.commit, Some(Duration::from_secs(30)));
        assert_eq!(cfg.stats_file, Some(PathBuf::from("/tmp/s.json")));
        assert_eq!(cfg.log_file, Some(PathBuf::from("/var/log/a.log")));
        assert_eq!(parse(&["commit=0"]).unwrap().commit, None);
        assert!(!parse(&["ro,rw"]).unwrap().read_only);
    }

    #[test]
    fn generic_mount_options_are_accepted() {
        let cfg = parse(&[
            "rw,dev,suid,nodev,exec,noexec,noatime,relatime,_netdev,nofail,defaults",
            "auto,noauto,user,nouser,x-systemd.automount,x-gvfs-show,subtype=atomfs",
        ])
        .unwrap();
        assert!(!cfg.read_only);
        assert_eq!(
            cfg.vfs_flags,
            vec![
                VfsFlag::Suid,
                VfsFlag::NoDev,
                VfsFlag::NoExec,
                VfsFlag::NoAtime
            ]
        );
    }

    #[test]
    fn bad_options_are_one_line_errors() {
        for (opt, needle) in [
            ("bogus", "unknown mount option 'bogus'"),
            ("rw,frobnicate=3", "unknown mount option 'frobnicate=3'"),
            ("commit", "needs a value"),
            ("commit=soon", "not a whole number"),
            ("commit=-1", "not a whole number"),
            ("stats_file=", "needs a value"),
            ("log", "needs a value"),
            ("ro=1", "takes no value"),
            ("direct_io=1", "takes no value"),
            ("subtype=other", "unknown mount option"),
        ] {
            let err = parse(&[opt]).unwrap_err();
            assert!(err.contains(needle), "{opt}: {err}");
            assert!(!err.contains('\n'), "{opt}: {err}");
        }
    }
}
