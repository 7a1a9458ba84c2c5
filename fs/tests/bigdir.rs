//! 100,000 entries in one directory: creates and lookups stay O(1), and a
//! readdir interleaved with inserts and deletes returns every entry that was
//! present throughout exactly once.
//!
//! "O(1)" is checked by the work each operation does, which is
//! deterministic, not by its time: every create is one request writing the
//! same few sectors whether the directory holds 0 or 90,000 names, and a
//! lookup after a remount (empty caches) reads a bucket or two and the
//! inode. Times are printed, for the curious.

mod common;
use common::*;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use atomfs::budget::{distinct_sectors_written, Recorder};
use atomfs::{Fs, MkfsOptions};
use atomic_api::MemDevice;

const N: usize = 100_000;

#[test]
fn hundred_thousand_entries() {
    let mem = Arc::new(MemDevice::new(512, 4 << 30));
    Fs::mkfs(
        &mem,
        &MkfsOptions {
            root_mode: Some(0o777),
            ..Default::default()
        },
    )
    .unwrap();
    let dev = Arc::new(Recorder::new(Arc::clone(&mem)));
    let fs = Fs::mount(Arc::clone(&dev), &mount_opts()).unwrap();
    let d = mkdir(&fs, ROOT, "big");
    dev.take();
    let mut batch_times = Vec::new();
    let mut inos = HashMap::new();
    for batch in 0..10 {
        let t = Instant::now();
        let mut most_sectors = 0;
        for i in batch * N / 10..(batch + 1) * N / 10 {
            let name = format!("file-{i:06}");
            inos.insert(name.clone(), create(&fs, d.ino, &name).ino);
            let requests = dev.take();
            assert_eq!(requests.len(), 1, "create {name}: one request");
            most_sectors = most_sectors.max(distinct_sectors_written(&requests, 512));
        }
        batch_times.push(t.elapsed());
        // The new inode, the bucket (and rarely the next one, when the
        // home bucket is full), the directory inode.
        assert!(
            most_sectors <= 4,
            "batch {batch}: a create wrote {most_sectors} sectors"
        );
    }
    assert_eq!(fs.getattr(d.ino).unwrap().size, N as u64);
    drop(fs);

    // Lookups with nothing cached: the reads they need, not their time.
    let fs = Fs::mount(Arc::clone(&dev), &mount_opts()).unwrap();
    let big = lookup(&fs, ROOT, "big").unwrap().ino;
    let (mut most, before) = (0, dev.reads());
    let t = Instant::now();
    for (name, ino) in &inos {
        let at = dev.reads();
        assert_eq!(lookup(&fs, big, name).unwrap().ino, *ino);
        most = most.max(dev.reads() - at);
    }
    let per_lookup = (dev.reads() - before) as f64 / N as f64;
    println!(
        "creates per batch {batch_times:?}; {N} cold lookups in {:?}, {per_lookup:.2} device reads each, at most {most}",
        t.elapsed()
    );
    assert!(most <= 4, "a lookup read {most} sectors");
    assert!(per_lookup <= 2.1, "{per_lookup:.2} device reads per lookup");
    let d = fs.getattr(big).unwrap();

    // Paged readdir with inserts and deletes between pages.
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut removed = HashSet::new();
    let mut added = HashSet::new();
    let mut offset = 0;
    let mut page = 0;
    loop {
        let mut got = Vec::new();
        fs.readdir(&root(), d.ino, offset, |e| {
            got.push(e.clone());
            got.len() == 1000
        })
        .unwrap();
        let Some(last) = got.last() else { break };
        offset = last.offset;
        for e in got.iter().filter(|e| e.name != "." && e.name != "..") {
            *seen
                .entry(e.name.to_string_lossy().into_owned())
                .or_default() += 1;
        }
        // Churn: delete two old names, add two new ones.
        for k in 0..2 {
            let victim = format!("file-{:06}", (page * 7919 + k * 104_729) % N);
            if removed.insert(victim.clone()) {
                fs.unlink(&root(), d.ino, os(&victim)).unwrap();
            }
            let fresh = format!("new-{page}-{k}");
            create(&fs, d.ino, &fresh);
            added.insert(fresh);
        }
        page += 1;
    }
    assert!(
        seen.values().all(|&n| n == 1),
        "an entry was returned twice"
    );
    for name in inos.keys().filter(|n| !removed.contains(*n)) {
        assert_eq!(seen.get(name), Some(&1), "{name} missing");
    }
    for name in seen.keys() {
        assert!(
            inos.contains_key(name) || added.contains(name),
            "{name} unknown"
        );
    }
    let seen_original = seen.keys().filter(|n| inos.contains_key(*n)).count();
    let removed_unseen = removed.iter().filter(|n| !seen.contains_key(*n)).count();
    assert_eq!(seen_original + removed_unseen, N);
}
