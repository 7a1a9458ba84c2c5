//! Property test: random operation sequences on the core and on a simple
//! in-memory model give the same results and the same tree (dump_tree),
//! also after remounts.

mod common;
use common::*;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use atomfs::inspect::{digest_bytes, dump_tree, Node, Tree};
use atomfs::{
    Errno, FileKind, SetAttr, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, RENAME_EXCHANGE,
    RENAME_NOREPLACE,
};
use proptest::prelude::*;

const NAMES: [&str; 4] = ["a", "b", "c", "d2"];

#[derive(Clone, Debug)]
enum Op {
    Create(bool, usize),
    Write(bool, usize, u64, usize, u8),
    Truncate(bool, usize, u64),
    Punch(bool, usize, u64, u64),
    Unlink(bool, usize),
    Link(bool, usize, bool, usize),
    Rename(bool, usize, bool, usize, u32),
    SetXattr(bool, usize, u8, usize),
    RemoveXattr(bool, usize, u8),
    Remount,
}

fn op() -> impl Strategy<Value = Op> {
    let d = any::<bool>();
    let n = 0..NAMES.len();
    prop_oneof![
        (d, n.clone()).prop_map(|(d, n)| Op::Create(d, n)),
        (d, n.clone(), 0..20_000u64, 0..5000usize, any::<u8>())
            .prop_map(|(d, n, o, l, b)| Op::Write(d, n, o, l, b)),
        (d, n.clone(), 0..25_000u64).prop_map(|(d, n, s)| Op::Truncate(d, n, s)),
        (d, n.clone(), 0..20_000u64, 1..6000u64).prop_map(|(d, n, o, l)| Op::Punch(d, n, o, l)),
        (d, n.clone()).prop_map(|(d, n)| Op::Unlink(d, n)),
        (d, n.clone(), d, n.clone()).prop_map(|(a, b, c, e)| Op::Link(a, b, c, e)),
        (
            d,
            n.clone(),
            d,
            n.clone(),
            prop_oneof![Just(0), Just(RENAME_NOREPLACE), Just(RENAME_EXCHANGE)]
        )
            .prop_map(|(a, b, c, e, f)| Op::Rename(a, b, c, e, f)),
        (d, n.clone(), 0..3u8, 0..2000usize).prop_map(|(d, n, x, l)| Op::SetXattr(d, n, x, l)),
        (d, n, 0..3u8).prop_map(|(d, n, x)| Op::RemoveXattr(d, n, x)),
        Just(Op::Remount),
    ]
}

#[derive(Clone, Default)]
struct MFile {
    data: Vec<u8>,
    nlink: u32,
    xattrs: BTreeMap<String, Vec<u8>>,
}

#[derive(Default)]
struct Model {
    files: HashMap<u64, MFile>,
    /// (in subdir?, name) → model inode.
    names: BTreeMap<(bool, String), u64>,
    next: u64,
}

impl Model {
    fn tree(&self) -> Tree {
        let dir = |nlink, size| Node {
            kind: FileKind::Directory,
            perm: 0o755,
            uid: 0,
            gid: 0,
            nlink,
            size,
            digest: 0,
            target: vec![],
            rdev: 0,
            xattrs: BTreeMap::new(),
        };
        let in_sub = self.names.keys().filter(|(d, _)| *d).count() as u64;
        let mut t = Tree::new();
        let mut r = dir(3, self.names.len() as u64 - in_sub + 1);
        r.perm = 0o777;
        t.insert(PathBuf::new(), r);
        t.insert(PathBuf::from("sub"), dir(2, in_sub));
        for ((d, name), id) in &self.names {
            let f = &self.files[id];
            let path = if *d {
                PathBuf::from("sub").join(name)
            } else {
                PathBuf::from(name)
            };
            t.insert(
                path,
                Node {
                    kind: FileKind::RegularFile,
                    perm: 0o644,
                    uid: 0,
                    gid: 0,
                    nlink: f.nlink,
                    size: f.data.len() as u64,
                    digest: digest_bytes(&f.data),
                    target: vec![],
                    rdev: 0,
                    xattrs: f
                        .xattrs
                        .iter()
                        .map(|(k, v)| (k.into(), v.clone()))
                        .collect(),
                },
            );
        }
        t
    }
}

fn key(d: bool, n: usize) -> (bool, String) {
    (d, NAMES[n].to_string())
}

fn run(ops: Vec<Op>) {
    let mut fs = new_fs();
    let sub = mkdir(&fs, ROOT, "sub").ino;
    let dir = |d: bool| if d { sub } else { ROOT };
    let mut m = Model::default();
    for op in ops {
        let ino =
            |fs: &atomfs::Fs<_>, d: bool, n: usize| lookup(fs, dir(d), NAMES[n]).map(|a| a.ino);
        let got: Result<(), Errno> = match &op {
            Op::Create(d, n) => {
                let r = fs
                    .mknod(&root(), dir(*d), os(NAMES[*n]), libc::S_IFREG | 0o644, 0)
                    .map(drop);
                if r.is_ok() {
                    m.next += 1;
                    m.files.insert(
                        m.next,
                        MFile {
                            nlink: 1,
                            ..Default::default()
                        },
                    );
                    m.names.insert(key(*d, *n), m.next);
                } else {
                    assert_eq!(r, Err(Errno::EEXIST));
                    assert!(m.names.contains_key(&key(*d, *n)));
                }
                r
            }
            Op::Write(d, n, off, len, b) => match ino(&fs, *d, *n) {
                Ok(i) => {
                    let w = fs.write(&root(), i, *off, &vec![*b; *len], false).unwrap();
                    assert_eq!(w, *len);
                    let f = m.files.get_mut(&m.names[&key(*d, *n)]).unwrap();
                    if *len > 0 {
                        let end = *off as usize + len;
                        if f.data.len() < end {
                            f.data.resize(end, 0);
                        }
                        f.data[*off as usize..end].fill(*b);
                    }
                    Ok(())
                }
                Err(e) => Err(e),
            },
            Op::Truncate(d, n, size) => match ino(&fs, *d, *n) {
                Ok(i) => {
                    fs.setattr(
                        &root(),
                        i,
                        &SetAttr {
                            size: Some(*size),
                            ..Default::default()
                        },
                    )
                    .unwrap();
                    m.files
                        .get_mut(&m.names[&key(*d, *n)])
                        .unwrap()
                        .data
                        .resize(*size as usize, 0);
                    Ok(())
                }
                Err(e) => Err(e),
            },
            Op::Punch(d, n, off, len) => match ino(&fs, *d, *n) {
                Ok(i) => {
                    fs.fallocate(
                        &root(),
                        i,
                        *off,
                        *len,
                        FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                    )
                    .unwrap();
                    let f = m.files.get_mut(&m.names[&key(*d, *n)]).unwrap();
                    let end = ((off + len) as usize).min(f.data.len());
                    if (*off as usize) < end {
                        f.data[*off as usize..end].fill(0);
                    }
                    let _ = FALLOC_FL_KEEP_SIZE;
                    Ok(())
                }
                Err(e) => Err(e),
            },
            Op::Unlink(d, n) => {
                let r = fs.unlink(&root(), dir(*d), os(NAMES[*n]));
                if r.is_ok() {
                    let id = m.names.remove(&key(*d, *n)).unwrap();
                    let f = m.files.get_mut(&id).unwrap();
                    f.nlink -= 1;
                    if f.nlink == 0 {
                        m.files.remove(&id);
                    }
                }
                r
            }
            Op::Link(d, n, d2, n2) => {
                let src = ino(&fs, *d, *n);
                match src {
                    Ok(i) => {
                        let r = fs.link(&root(), i, dir(*d2), os(NAMES[*n2])).map(drop);
                        if r.is_ok() {
                            let id = m.names[&key(*d, *n)];
                            m.files.get_mut(&id).unwrap().nlink += 1;
                            m.names.insert(key(*d2, *n2), id);
                        } else {
                            assert_eq!(r, Err(Errno::EEXIST));
                        }
                        r
                    }
                    Err(e) => Err(e),
                }
            }
            Op::Rename(d, n, d2, n2, flags) => {
                let r = fs.rename(
                    &root(),
                    dir(*d),
                    os(NAMES[*n]),
                    dir(*d2),
                    os(NAMES[*n2]),
                    *flags,
                );
                let (k1, k2) = (key(*d, *n), key(*d2, *n2));
                let src = m.names.get(&k1).copied();
                let dst = m.names.get(&k2).copied();
                let want = match (src, dst) {
                    (None, _) => Err(Errno::ENOENT),
                    (Some(_), None) if *flags == RENAME_EXCHANGE => Err(Errno::ENOENT),
                    (Some(_), Some(_)) if *flags == RENAME_NOREPLACE => Err(Errno::EEXIST),
                    _ => Ok(()),
                };
                assert_eq!(r, want, "{op:?}");
                if r.is_ok() {
                    let (s, t) = (src.unwrap(), dst);
                    if Some(s) == t {
                        // Same inode: nothing happens.
                    } else if *flags == RENAME_EXCHANGE {
                        m.names.insert(k1, t.unwrap());
                        m.names.insert(k2, s);
                    } else {
                        m.names.remove(&k1);
                        if let Some(t) = m.names.insert(k2, s) {
                            let f = m.files.get_mut(&t).unwrap();
                            f.nlink -= 1;
                            if f.nlink == 0 {
                                m.files.remove(&t);
                            }
                        }
                    }
                }
                r
            }
            Op::SetXattr(d, n, x, len) => match ino(&fs, *d, *n) {
                Ok(i) => {
                    let name = format!("user.x{x}");
                    let value = vec![*x + 1; *len];
                    fs.setxattr(&root(), i, os(&name), &value, 0).unwrap();
                    m.files
                        .get_mut(&m.names[&key(*d, *n)])
                        .unwrap()
                        .xattrs
                        .insert(name, value);
                    Ok(())
                }
                Err(e) => Err(e),
            },
            Op::RemoveXattr(d, n, x) => match ino(&fs, *d, *n) {
                Ok(i) => {
                    let name = format!("user.x{x}");
                    let r = fs.removexattr(&root(), i, os(&name));
                    let had = m
                        .files
                        .get_mut(&m.names[&key(*d, *n)])
                        .unwrap()
                        .xattrs
                        .remove(&name);
                    assert_eq!(r.is_ok(), had.is_some());
                    r
                }
                Err(e) => Err(e),
            },
            Op::Remount => {
                fs = remount(&fs);
                Ok(())
            }
        };
        if let Err(e) = got {
            assert!(
                matches!(e, Errno::ENOENT | Errno::EEXIST | Errno::ENODATA),
                "{op:?}: {e}"
            );
        }
        assert_eq!(dump_tree(&fs).unwrap(), m.tree(), "after {op:?}");
    }
    assert_eq!(dump_tree(&remount(&fs)).unwrap(), m.tree());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn core_matches_model(ops in proptest::collection::vec(op(), 1..60)) {
        run(ops);
    }
}
