//! `atomfs DEVICE|IMAGE MOUNTPOINT [-o opts] [-f] [-d]`: mounts an atomfs
//! through FUSE.
//!
//! Without `-f` it daemonizes, and the parent exits only once the mount is
//! usable (status 0) or the child has failed (its one-line error relayed,
//! status 1), so `mount -t fuse.atomfs`, fstab lines through `mount.fuse3`
//! and scripts can use the mount point as soon as the command returns.
//! Errors are one line: `atomfs: PATH: cause`.
//!
//! Options (`-o a,b,c`, repeatable): `ro`, `rw`, `sync`, `commit=SECONDS`
//! (background flush interval, default 5, 0 = off), `allow_other`,
//! `default_permissions`, `writeback_cache` (weaker crash semantics),
//! `direct_io` (every open bypasses the page cache, as with O_DIRECT),
//! `stats_file=PATH`, `log=PATH` (the log goes there instead of stderr,
//! or syslog in the background), `fsname=NAME`; the generic flags `dev`, `nodev`,
//! `suid`, `nosuid`, `exec`, `noexec`, `atime`, `noatime` go to the
//! kernel; `relatime`, `_netdev`, `nofail`, `defaults`, `auto`, `noauto`,
//! `user`, `nouser`, `x-*` and the like are accepted and ignored.
//!
//! Note: Linux does not forward sync(2)/syncfs(2) to FUSE servers, so on
//! an atomfs mount they only wait for the commit interval; use fsync.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::exit;

use atomfs::fuse::{daemon, options};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "atomfs",
    version,
    about = "Mount an atomfs file system (journal-free, one atomic request per operation) through FUSE"
)]
struct Cli {
    /// Block device or image file holding the file system.
    device: PathBuf,
    /// Directory to mount it on.
    mountpoint: PathBuf,
    /// Mount options, comma-separated (repeatable): ro, rw, sync,
    /// commit=SECONDS, allow_other, default_permissions, writeback_cache,
    /// direct_io, stats_file=PATH, log=PATH, fsname=NAME, and the generic
    /// mount options.
    #[arg(short = 'o', value_name = "OPTIONS", action = clap::ArgAction::Append)]
    options: Vec<String>,
    /// Stay in the foreground.
    #[arg(short = 'f')]
    foreground: bool,
    /// Debug logging to stderr (implies -f).
    #[arg(short = 'd')]
    debug: bool,
}

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("atomfs: {msg}");
    exit(1);
}

/// An absolute path without requiring it to exist (the mountpoint and the
/// device are checked later, with their own error messages). The daemon
/// changes directory to `/`, so relative paths must be resolved first.
fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p)
        .or_else(|_| std::path::absolute(p))
        .unwrap_or_else(|_| p.to_path_buf())
}

fn main() {
    // Before any thread exists (see block_stop_signals).
    daemon::block_stop_signals();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help, --version
            let _ = e.print();
            exit(0);
        }
        Err(e) => {
            // clap's message up to its usage block, folded into one line.
            let text = e.to_string();
            let msg: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.is_empty() && !l.starts_with("Usage:"))
                .collect();
            let msg = msg.join(" ");
            fail(format!(
                "{} (see atomfs --help)",
                msg.trim_start_matches("error: ")
            ));
        }
    };
    let mut cfg = match options::parse(&cli.options) {
        Ok(cfg) => cfg,
        Err(e) => fail(e),
    };
    let device = absolute(&cli.device);
    let mountpoint = absolute(&cli.mountpoint);
    if let Some(p) = &cfg.stats_file {
        cfg.stats_file = Some(absolute(p));
    }
    if let Some(p) = &cfg.log_file {
        cfg.log_file = Some(absolute(p));
    }
    let foreground = cli.foreground || cli.debug;
    init_logging(cli.debug, cfg.log_file.as_deref(), foreground).unwrap_or_else(|e| fail(e));
    if foreground {
        let d = daemon::mount(&device, &mountpoint, &cfg).unwrap_or_else(|e| fail(e));
        match d.serve() {
            Ok(()) => exit(0),
            Err(e) => fail(e),
        }
    }
    daemonize(&device, &mountpoint, &cfg);
}

/// Sets up the log: level `warn` (`-d`: `debug`; `RUST_LOG` overrides,
/// with env_logger's syntax), written to `-o log=PATH` (appended, created
/// if missing) if given, else to stderr in the foreground and to syslog
/// (facility daemon, ident `atomfs`, with the pid) in the background, where
/// stderr is /dev/null.
fn init_logging(debug: bool, file: Option<&Path>, foreground: bool) -> Result<(), String> {
    let level = if debug { "debug" } else { "warn" };
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level));
    builder.format_timestamp_millis();
    let to_syslog = file.is_none() && !foreground;
    if let Some(path) = file {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("{}: cannot open the log: {e}", path.display()))?;
        builder.target(env_logger::Target::Pipe(Box::new(f)));
    }
    let inner = builder.build();
    log::set_max_level(inner.filter());
    let out: Box<dyn log::Log> = if to_syslog {
        // SAFETY: a static ident; openlog keeps the pointer.
        unsafe { libc::openlog(c"atomfs".as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
        Box::new(Syslog { inner })
    } else {
        Box::new(inner)
    };
    log::set_boxed_logger(Box::new(QuietUnmount { out }))
        .map_err(|e| format!("cannot set up logging: {e}"))
}

/// Passes every record on, except fuser's warning that its own unmount
/// failed because the mount point is no longer mounted (EINVAL), which goes
/// out at debug level. fuser unmounts again when its session ends; after a
/// `umount` by the user, the normal way to stop atomfs, that always fails
/// so, and the warning appeared at every clean unmount (fuser's comment on
/// it: "not necessarily an error: may happen if a user called 'umount'").
/// Any other unmount failure (EBUSY...) stays a warning.
struct QuietUnmount {
    out: Box<dyn log::Log>,
}

impl QuietUnmount {
    fn already_unmounted(record: &log::Record) -> bool {
        if record.level() != log::Level::Warn || !record.target().starts_with("fuser") {
            return false;
        }
        let msg = record.args().to_string();
        (msg.starts_with("Failed to umount filesystem") || msg.starts_with("Unmount failed"))
            && msg.contains(&format!("(os error {})", libc::EINVAL))
    }
}

impl log::Log for QuietUnmount {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        self.out.enabled(metadata)
    }

    fn log(&self, record: &log::Record) {
        if !Self::already_unmounted(record) {
            return self.out.log(record);
        }
        self.out.log(
            &log::Record::builder()
                .level(log::Level::Debug)
                .target(record.target())
                .args(*record.args())
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .build(),
        );
    }

    fn flush(&self) {
        self.out.flush()
    }
}

/// The background daemon's logger: env_logger's filter, syslog's output.
struct Syslog {
    inner: env_logger::Logger,
}

impl log::Log for Syslog {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &log::Record) {
        if !self.inner.matches(record) {
            return;
        }
        let priority = match record.level() {
            log::Level::Error => libc::LOG_ERR,
            log::Level::Warn => libc::LOG_WARNING,
            log::Level::Info => libc::LOG_INFO,
            log::Level::Debug | log::Level::Trace => libc::LOG_DEBUG,
        };
        let msg = format!("{}: {}", record.target(), record.args()).replace('\0', " ");
        let Ok(msg) = std::ffi::CString::new(msg) else {
            return;
        };
        // SAFETY: constant format string and a valid C string argument.
        unsafe { libc::syslog(priority, c"%s".as_ptr(), msg.as_ptr()) };
    }

    fn flush(&self) {}
}

/// Forks; the child mounts and reports through a pipe, then serves; the
/// parent waits for the report and exits with it.
///
/// The stop signals are blocked (see `block_stop_signals`), so the parent
/// takes them through a signalfd while it waits: Ctrl-C (or SIGTERM,
/// SIGHUP) is passed on to the child as SIGTERM, which unmounts as soon as
/// the mount is up (a mount half set up is never left behind); the parent
/// then waits for the child to exit and fails with "interrupted".
fn daemonize(device: &Path, mountpoint: &Path, cfg: &options::MountConfig) -> ! {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        fail(format!(
            "cannot create a pipe: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: freshly created descriptors, owned once each.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: no other thread exists yet (only the main thread has run).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        fail(format!("cannot fork: {}", std::io::Error::last_os_error()));
    }
    if pid > 0 {
        drop(wr);
        let (report, interrupted) = wait_for_report(rd, pid);
        if interrupted {
            let mut status = 0;
            // SAFETY: waiting for our own child, which unmounts and exits.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            if let Some(msg) = report.strip_prefix("ERR ") {
                fail(msg);
            }
            fail(format!(
                "{}: interrupted; not mounted",
                mountpoint.display()
            ));
        }
        if report == "OK" {
            exit(0);
        }
        if let Some(msg) = report.strip_prefix("ERR ") {
            fail(msg);
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        fail(format!(
            "{}: the daemon exited before the mount was ready (wait status {status:#x})",
            mountpoint.display()
        ));
    }
    drop(rd);
    // SAFETY: the child leaves the parent's session and terminal.
    unsafe { libc::setsid() };
    let mut report = std::fs::File::from(wr);
    let d = match daemon::mount(device, mountpoint, cfg) {
        Ok(d) => d,
        Err(e) => {
            let _ = write!(report, "ERR {e}");
            exit(1);
        }
    };
    let _ = std::env::set_current_dir("/");
    detach_stdio();
    let _ = report.write_all(b"OK");
    drop(report);
    match d.serve() {
        Ok(()) => exit(0),
        Err(e) => {
            // A detached daemon has no stderr: the log (syslog or log=)
            // keeps an error at exit (a failed final flush).
            log::error!("atomfs: {e}");
            exit(1)
        }
    }
}

/// The parent's wait for the child's report (`OK` or `ERR ...`, then EOF),
/// forwarding a stop signal to the child as SIGTERM. Returns the report and
/// whether a signal came.
fn wait_for_report(rd: OwnedFd, child: libc::pid_t) -> (String, bool) {
    use std::os::fd::AsRawFd;
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: plain sigset manipulation on a local.
    unsafe {
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
    }
    // The signals are blocked in this thread (block_stop_signals), so they
    // queue for the signalfd, including any that came before it existed.
    // SAFETY: a new descriptor, owned below.
    let sfd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC) };
    let sfd = (sfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(sfd) });
    let mut pipe = std::fs::File::from(rd);
    let mut report = Vec::new();
    let mut interrupted = false;
    loop {
        let mut fds = [
            libc::pollfd {
                fd: pipe.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: sfd.as_ref().map_or(-1, |f| f.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: two valid pollfd entries (a negative fd is ignored).
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            let _ = pipe.read_to_end(&mut report);
            break;
        }
        if fds[1].revents & libc::POLLIN != 0 {
            if let Some(f) = &sfd {
                let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
                // SAFETY: reading one siginfo record into a buffer of its size.
                let _ = unsafe { libc::read(f.as_raw_fd(), info.as_mut_ptr().cast(), info.len()) };
            }
            if !interrupted {
                interrupted = true;
                // SAFETY: signalling our own child.
                unsafe { libc::kill(child, libc::SIGTERM) };
            }
        }
        if fds[0].revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
            let mut buf = [0u8; 4096];
            match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => report.extend_from_slice(&buf[..n]),
            }
        }
    }
    (String::from_utf8_lossy(&report).into_owned(), interrupted)
}

/// Points stdin, stdout and stderr at /dev/null so the daemon holds no
/// terminal and no pipe of whoever started it (mount(8) waits for EOF).
fn detach_stdio() {
    let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    else {
        return;
    };
    use std::os::fd::AsRawFd;
    for fd in 0..3 {
        // SAFETY: duplicating a valid descriptor onto the standard ones.
        unsafe { libc::dup2(null.as_raw_fd(), fd) };
    }
}
