//! Four separate processes doing random creates, writes, renames, unlinks
//! and reads in shared directories of one atomfs mount for a bounded time;
//! then every surviving file must be intact, the image must pass fsck, and
//! a remount must show the same tree.
//!
//! The workers are this test binary run again (the ignored `worker` test,
//! selected by `--exact --ignored` with `ATOMFS_WORKER_DIR` set), so they are
//! real processes with their own pids, file tables and kernel credentials,
//! racing on the same directories as unrelated programs would.

mod fuse_common;

use std::collections::BTreeMap;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use atomic_api::AtomicDevice;
use fuse_common::*;
use rand::{Rng, SeedableRng};

const WORKERS: u64 = 4;
const DIRS: usize = 3;
const WORKER_SECONDS: u64 = 6;

/// A file's content is self-describing, so any reader can verify it
/// whatever name it has by now: `len (8 bytes) | crc32c of the rest (4) |
/// bytes`. A torn or mixed write shows up as a bad checksum or length.
fn content(rng: &mut impl Rng) -> Vec<u8> {
    let len = rng.gen_range(0..40_000usize);
    let body: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
    let mut v = Vec::with_capacity(12 + len);
    v.extend_from_slice(&(len as u64).to_le_bytes());
    v.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    v.extend_from_slice(&body);
    v
}

fn verify(path: &Path, data: &[u8]) -> Result<(), String> {
    if data.len() < 12 {
        return Err(format!(
            "{}: {} bytes, shorter than its header",
            path.display(),
            data.len()
        ));
    }
    let len = u64::from_le_bytes(data[..8].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(data[8..12].try_into().unwrap());
    let body = &data[12..];
    if body.len() != len || crc32c::crc32c(body) != crc {
        return Err(format!(
            "{}: torn or mixed content ({} body bytes, header says {len})",
            path.display(),
            body.len()
        ));
    }
    Ok(())
}

/// Races with other workers make ENOENT (a name vanished) and EEXIST
/// expected; anything else is a failure.
fn tolerated(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::NotFound | ErrorKind::AlreadyExists)
}

/// One worker process: random operations on `d0..d{DIRS}` until the time is
/// up. Panics (non-zero exit) on any unexpected error or bad content.
#[test]
#[ignore = "run as a child process by many_processes_share_directories"]
fn worker() {
    let Some(root) = std::env::var_os("ATOMFS_WORKER_DIR").map(PathBuf::from) else {
        panic!("worker is a child process of many_processes_share_directories");
    };
    let id: u64 = std::env::var("ATOMFS_WORKER_ID").unwrap().parse().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xA70F5 ^ id);
    let deadline = Instant::now() + Duration::from_secs(WORKER_SECONDS);
    let dir = |rng: &mut rand::rngs::StdRng| root.join(format!("d{}", rng.gen_range(0..DIRS)));
    // Names are drawn from a small space shared by all workers, so that
    // workers really collide on the same names.
    let name = |rng: &mut rand::rngs::StdRng| format!("f{}", rng.gen_range(0..40));
    let mut ops = 0u64;
    while Instant::now() < deadline {
        ops += 1;
        let p = dir(&mut rng).join(name(&mut rng));
        let r = match rng.gen_range(0..10) {
            0..=3 => {
                // Write to a private temporary name, then rename into place:
                // readers never see a half-written file under a shared name.
                let tmp = dir(&mut rng).join(format!(".tmp-{id}-{ops}"));
                fs::write(&tmp, content(&mut rng)).and_then(|_| fs::rename(&tmp, &p))
            }
            4..=5 => fs::rename(&p, dir(&mut rng).join(name(&mut rng))),
            6..=7 => fs::remove_file(&p),
            _ => match fs::read(&p) {
                Ok(data) => {
                    verify(&p, &data).unwrap_or_else(|e| panic!("worker {id}: {e}"));
                    Ok(())
                }
                Err(e) => Err(e),
            },
        };
        if let Err(e) = r {
            assert!(
                tolerated(&e),
                "worker {id}, op {ops} on {}: {e}",
                p.display()
            );
        }
    }
    println!("worker {id}: {ops} operations");
}

/// Reads every file under `root` into name → content, checking each.
fn snapshot(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for d in 0..DIRS {
        for e in fs::read_dir(root.join(format!("d{d}"))).unwrap() {
            let e = e.unwrap();
            let data = fs::read(e.path()).unwrap();
            let name = e.file_name().into_string().unwrap();
            // Temporaries are renamed into place right after being written
            // and renaming a private name cannot race, so none may remain.
            assert!(!name.starts_with(".tmp-"), "leftover temporary {name}");
            verify(&e.path(), &data).unwrap();
            files.insert(format!("d{d}/{name}"), data);
        }
    }
    files
}

#[test]
fn many_processes_share_directories() {
    if !fuse_available("many_processes_share_directories") {
        return;
    }
    let s = Scratch::new();
    make_image(&s.image, 256 << 20);
    let m = mount_fg(&s.image, &s.mnt, "");
    for d in 0..DIRS {
        fs::create_dir(s.mnt.join(format!("d{d}"))).unwrap();
    }
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..WORKERS)
        .map(|id| {
            Command::new(&exe)
                .args(["--exact", "worker", "--ignored", "--nocapture"])
                .env("ATOMFS_WORKER_DIR", &s.mnt)
                .env("ATOMFS_WORKER_ID", id.to_string())
                .spawn()
                .expect("spawn worker process")
        })
        .collect();
    for (id, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "worker process {id} failed: {:?}",
            out.status
        );
    }
    let before = snapshot(&s.mnt);
    assert!(!before.is_empty(), "the workers left no file at all");
    println!("{} files survive the workers", before.len());
    let (status, stderr) = m.unmount().expect("daemon exit");
    assert!(status.success(), "daemon exit: {status:?} {stderr}");

    // fsck of the unmounted image: block layer and file system.
    {
        let media = blockdev::FileMedia::open(&s.image).unwrap();
        let report = blockdev::check(&media);
        assert!(
            report.is_clean(),
            "block layer: {:?}",
            report.errors().collect::<Vec<_>>()
        );
        let dev = blockdev::LogDevice::open(
            media,
            &blockdev::OpenOptions {
                read_only: true,
                ..Default::default()
            },
        )
        .unwrap();
        let fsck = atomfs::fsck::check(&dev, &atomfs::fsck::FsckOptions::default());
        let errors: Vec<_> = fsck.errors().collect();
        assert!(errors.is_empty(), "fsck found: {errors:#?}");
        assert!(dev.space().live_bytes > 0);
    }

    let m = mount_fg(&s.image, &s.mnt, "");
    assert_eq!(
        snapshot(&s.mnt),
        before,
        "the tree changed across a remount"
    );
    m.unmount();
}
