//! 100,000 entries in one directory: creates and lookups stay O(1), and a
//! readdir interleaved with inserts and deletes returns every entry that was
//! present throughout exactly once.

mod common;
use common::*;

use std::collections::{HashMap, HashSet};
use std::time::Instant;

const N: usize = 100_000;

#[test]
fn hundred_thousand_entries() {
    let fs = new_fs_with(512, 4 << 30);
    let d = mkdir(&fs, ROOT, "big");
    let mut batch_times = Vec::new();
    let mut inos = HashMap::new();
    for batch in 0..10 {
        let t = Instant::now();
        for i in batch * N / 10..(batch + 1) * N / 10 {
            let name = format!("file-{i:06}");
            inos.insert(name.clone(), create(&fs, d.ino, &name).ino);
        }
        batch_times.push(t.elapsed());
    }
    // No slowdown as the directory grows (generous bound against noise).
    let first = batch_times[0].as_secs_f64();
    let last = batch_times[9].as_secs_f64();
    assert!(
        last < first * 4.0 + 0.5,
        "creates slowed down: {batch_times:?}"
    );
    assert_eq!(fs.getattr(d.ino).unwrap().size, N as u64);
    let t = Instant::now();
    for (name, ino) in &inos {
        assert_eq!(lookup(&fs, d.ino, name).unwrap().ino, *ino);
    }
    println!(
        "creates per batch {batch_times:?}, {N} lookups {:?}",
        t.elapsed()
    );

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
