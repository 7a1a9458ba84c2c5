//! Exercises the harness's atomfs path (foreground FUSE-style daemon as a
//! child, mount detection, unmount + wait for the daemon's exit, stats file
//! parsing, breakdown table) before the real binaries exist, with shell
//! shims named `mkfs.atomfs` and `atomfs` that put ext4 on the device.
//! Needs root; skips with a printed reason otherwise.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use atomfs_bench::{precheck, report, Config, FsKind};

const MKFS: &str = "#!/bin/sh\n# mkfs.atomfs shim: [-F] DEV\nfor a; do dev=$a; done\nexec mkfs.ext4 -F -q \"$dev\"\n";

const DAEMON: &str = r#"#!/bin/sh
# atomfs shim: DEV MNT -f [-o stats_file=PATH]; stays in the foreground
# until MNT is unmounted, then writes its stats file and exits.
dev=$1; mnt=$2; shift 2; stats=
while [ $# -gt 0 ]; do
  case $1 in -o) shift; case $1 in stats_file=*) stats=${1#stats_file=};; esac;; esac
  shift
done
mount -t ext4 "$dev" "$mnt" || exit 1
while grep -q " $mnt " /proc/self/mountinfo; do sleep 0.02; done
if [ -n "$stats" ]; then
  printf '{"version":1,"device_at_mount":{"media_payload_bytes":100,"requests":1},"device":{"requests":11,"flushes":3,"media_flushes":3,"submitted_bytes":4096,"media_payload_bytes":4196,"media_header_bytes":512,"media_checkpoint_bytes":1024,"media_gc_bytes":0,"media_padding_bytes":0,"media_read_bytes":0}}' > "$stats.tmp"
  mv "$stats.tmp" "$stats"
fi
"#;

fn shim(dir: &Path, name: &str, text: &str) {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn atomfs_path_works_with_shims() {
    if let Some(why) = precheck() {
        println!("SKIPPED atomfs_shim: {why}");
        eprintln!("SKIPPED atomfs_shim: {why}");
        return;
    }
    let work = PathBuf::from("/var/tmp/atomfs-bench-shim");
    let bins = work.join("bin");
    std::fs::create_dir_all(&bins).unwrap();
    shim(&bins, "mkfs.atomfs", MKFS);
    shim(&bins, "atomfs", DAEMON);

    let mut cfg = Config::new(true);
    cfg.fs = vec![FsKind::Atomfs];
    cfg.workloads = vec!["create_fsync".into(), "seq".into()];
    cfg.work_dir = work.join("run");
    cfg.atomfs_bin_dir = bins.clone();
    cfg.device_size = 320 << 20;
    let r = atomfs_bench::run(&cfg).expect("bench run");
    let md = report::markdown(&r);
    println!("{md}");
    for w in ["create_fsync", "seq"] {
        let row = r.row(w, FsKind::Atomfs).expect("row");
        assert_eq!(row.error, None, "{w}");
        assert!(row.result.device.write_bytes >= row.result.app_bytes, "{w}");
        let b = report::atomfs_breakdown(row.atomfs_stats.as_ref().expect("stats file read"))
            .expect("breakdown");
        assert!(b.contains(&("payload", 4096)), "{b:?}");
        assert!(b.contains(&("media total", 4096 + 512 + 1024)), "{b:?}");
    }
    assert!(r.row("seq", FsKind::Atomfs).unwrap().read_back.is_some());
    assert!(md.contains("atomfs block-layer breakdown"));
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn atomfs_without_stats_file_option_still_runs() {
    if let Some(why) = precheck() {
        println!("SKIPPED atomfs_shim: {why}");
        eprintln!("SKIPPED atomfs_shim: {why}");
        return;
    }
    let work = PathBuf::from("/var/tmp/atomfs-bench-shim2");
    let bins = work.join("bin");
    std::fs::create_dir_all(&bins).unwrap();
    shim(&bins, "mkfs.atomfs", MKFS);
    // A daemon that knows no -o option at all.
    let strict = DAEMON.replacen(
        "dev=$1;",
        "for a; do [ \"$a\" = -o ] && { echo 'atomfs: unknown option' >&2; exit 1; }; done\ndev=$1;",
        1,
    );
    shim(&bins, "atomfs", &strict);
    let mut cfg = Config::new(true);
    cfg.fs = vec![FsKind::Atomfs];
    cfg.workloads = vec!["rename_replace".into()];
    cfg.work_dir = work.join("run");
    cfg.atomfs_bin_dir = bins;
    cfg.device_size = 320 << 20;
    let r = atomfs_bench::run(&cfg).expect("bench run");
    let row = r.row("rename_replace", FsKind::Atomfs).expect("row");
    assert_eq!(row.error, None);
    assert!(row.atomfs_stats.is_none());
    assert!(report::markdown(&r).contains("atomfs breakdown unavailable"));
    let _ = std::fs::remove_dir_all(&work);
}
