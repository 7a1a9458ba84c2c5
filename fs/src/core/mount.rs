//! mkfs and mount.

use std::sync::{Arc, Mutex};

use atomic_api::{AtomicDevice, Request};

use super::alloc::InoAlloc;
use super::state::State;
use super::types::{Clock, MkfsOptions, MountError, MountOptions, SystemClock};
use super::Fs;
use crate::format::superblock::{COMPAT_KNOWN, INCOMPAT_KNOWN, RO_COMPAT_KNOWN};
use crate::format::{
    orphan, Inode, InodeError, Layout, Superblock, SuperblockError, LABEL_MAX, ROOT_INO, VERSION,
};

/// Default size of the directory-bucket cache.
const DEFAULT_DIR_CACHE: usize = 32 << 20;
/// Orphans freed per request at mount.
const ORPHANS_PER_REQUEST: usize = 128;

fn default_uuid(now: super::types::Timespec) -> [u8; 16] {
    let mut uuid = [0u8; 16];
    let a = crc32c::crc32c(&now.sec.to_le_bytes());
    let b = crc32c::crc32c(&now.nsec.to_le_bytes());
    let c = crc32c::crc32c(&std::process::id().to_le_bytes());
    let d = crc32c::crc32c_append(a ^ b, &c.to_le_bytes());
    for (i, w) in [a, b, c, d].iter().enumerate() {
        uuid[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
    }
    uuid[6] = (uuid[6] & 0x0f) | 0x40; // version 4 style
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    uuid
}

/// Writes an empty file system (superblock, backup, root directory) to
/// `device` as ONE request — which also trims everything else, so an old
/// file system underneath is gone — and flushes it.
pub fn mkfs<D: AtomicDevice + ?Sized>(device: &D, opts: &MkfsOptions) -> Result<(), MountError> {
    let geo = device.geometry();
    let layout = Layout::for_device(geo.sector_size, geo.logical_sectors).ok_or_else(|| {
        MountError::Geometry(format!(
            "{} logical sectors of {} bytes cannot hold atomfs",
            geo.logical_sectors, geo.sector_size
        ))
    })?;
    if opts.label.len() > LABEL_MAX {
        return Err(MountError::Invalid(format!(
            "label longer than {LABEL_MAX} bytes"
        )));
    }
    let now = opts.time.unwrap_or_else(|| SystemClock.now());
    let sb = Superblock {
        version: VERSION,
        compat: 0,
        incompat: 0,
        ro_compat: 0,
        layout,
        root_ino: ROOT_INO,
        uuid: opts.uuid.unwrap_or_else(|| default_uuid(now)),
        created: now,
        label: opts.label.as_bytes().to_vec(),
    };
    let root = Inode {
        ino: ROOT_INO,
        generation: 1,
        mode: libc::S_IFDIR | (opts.root_mode.unwrap_or(0o755) & 0o7777),
        uid: opts.root_uid,
        gid: opts.root_gid,
        nlink: 2,
        atime: now,
        mtime: now,
        ctime: now,
        btime: now,
        parent: ROOT_INO,
        ..Inode::default()
    };
    let sector = sb.encode();
    let root_lba = layout.inode_lba(ROOT_INO);
    let mut req = Request::new();
    req.write(0, [sector.clone(), sector].concat());
    req.trim(2, root_lba - 2);
    req.write(root_lba, root.encode(layout.sector_size));
    req.trim(root_lba + 1, geo.logical_sectors - root_lba - 1);
    device.submit(req)?;
    device.flush()?;
    Ok(())
}

/// Reads and checks the superblock (primary, else backup).
fn read_superblock<D: AtomicDevice + ?Sized>(
    device: &D,
    read_only: bool,
) -> Result<Superblock, MountError> {
    let geo = device.geometry();
    let mut buf = vec![0u8; geo.sector_size as usize * 2];
    device.read(0, &mut buf)?;
    let (primary, backup) = buf.split_at(geo.sector_size as usize);
    let sb = match Superblock::decode(primary) {
        Ok(sb) => sb,
        Err(first) => match Superblock::decode(backup) {
            Ok(sb) => {
                log::warn!("atomfs: primary superblock unreadable ({first:?}), using the backup");
                sb
            }
            Err(_) if first == SuperblockError::BadMagic => return Err(MountError::NotAtomfs),
            Err(_) => return Err(MountError::BadChecksum),
        },
    };
    if sb.version != VERSION {
        return Err(MountError::Version {
            found: sb.version,
            supported: VERSION,
        });
    }
    if sb.incompat & !INCOMPAT_KNOWN != 0 {
        return Err(MountError::IncompatFeatures(sb.incompat & !INCOMPAT_KNOWN));
    }
    if sb.ro_compat & !RO_COMPAT_KNOWN != 0 && !read_only {
        return Err(MountError::RoCompatFeatures(
            sb.ro_compat & !RO_COMPAT_KNOWN,
        ));
    }
    if sb.compat & !COMPAT_KNOWN != 0 {
        log::info!(
            "atomfs: ignoring unknown compatible features {:#x}",
            sb.compat
        );
    }
    if sb.layout.sector_size != geo.sector_size {
        return Err(MountError::SectorSize {
            fs: sb.layout.sector_size,
            device: geo.sector_size,
        });
    }
    sb.layout
        .validate(geo.logical_sectors)
        .map_err(MountError::Corrupt)?;
    if sb.root_ino != ROOT_INO {
        return Err(MountError::Corrupt(format!("root inode {}", sb.root_ino)));
    }
    Ok(sb)
}

/// The numbers of all mapped sectors in `start..end`, as offsets from `start`.
fn mapped_offsets<D: AtomicDevice + ?Sized>(
    device: &D,
    start: u64,
    end: u64,
) -> Result<Vec<u64>, MountError> {
    let mut out = Vec::new();
    let mut at = start;
    while let Some(r) = device.next_mapped(at)? {
        if r.start >= end {
            break;
        }
        out.extend(r.start - start..r.end.min(end) - start);
        at = r.end;
    }
    Ok(out)
}

impl<D: AtomicDevice> Fs<D> {
    /// Same as [`mkfs`].
    pub fn mkfs(device: &D, opts: &MkfsOptions) -> Result<(), MountError> {
        mkfs(device, opts)
    }

    /// Mounts: validates the superblock (magic, checksum, version, features,
    /// sector size, layout) and the root, walks the inode table with
    /// `next_mapped` for the allocator, and frees orphans (unless read-only).
    pub fn mount(device: D, opts: &MountOptions) -> Result<Fs<D>, MountError> {
        let sb = read_superblock(&device, opts.read_only)?;
        let layout = sb.layout;
        let ss = layout.sector_size;
        let mut root = vec![0u8; ss as usize];
        device.read(layout.inode_lba(ROOT_INO), &mut root)?;
        match Inode::decode(&root, ROOT_INO) {
            Ok(inode) if inode.mode & libc::S_IFMT == libc::S_IFDIR => {}
            Ok(_) => return Err(MountError::Corrupt("root is not a directory".into())),
            Err(InodeError::Free) => return Err(MountError::Corrupt("no root directory".into())),
            Err(e) => return Err(MountError::Corrupt(format!("root inode: {e:?}"))),
        }
        let used = mapped_offsets(
            &device,
            layout.inode_base,
            layout.inode_base + layout.max_ino + 1,
        )?;
        if used.first() == Some(&0) {
            return Err(MountError::Corrupt("inode slot 0 is in use".into()));
        }
        let orphans = mapped_offsets(
            &device,
            layout.orphan_base,
            layout.orphan_base + layout.max_ino + 1,
        )?;
        let clock: Arc<dyn Clock> = opts.clock.clone().unwrap_or_else(|| Arc::new(SystemClock));
        let now = clock.now();
        let mut state = State::new(
            InoAlloc::from_used(&used, layout.max_ino),
            opts.dir_cache_bytes.unwrap_or(DEFAULT_DIR_CACHE),
            (now.nsec ^ (now.sec as u32)).wrapping_mul(2654435761),
        );
        let mut valid_orphans = Vec::new();
        for ino in orphans {
            let mut buf = vec![0u8; ss as usize];
            device.read(layout.orphan_lba(ino), &mut buf)?;
            if orphan::decode(&buf) == Some(ino) {
                valid_orphans.push(ino);
            } else {
                log::warn!("atomfs: ignoring damaged orphan record {ino}");
            }
        }
        state.orphans.extend(valid_orphans.iter().copied());
        let fs = Fs {
            dev: device,
            sb,
            layout,
            clock,
            read_only: opts.read_only,
            sync: opts.sync,
            hold_lookups: opts.hold_lookups,
            state: Mutex::new(state),
        };
        if !opts.read_only {
            fs.reclaim_orphans(&valid_orphans)?;
        }
        Ok(fs)
    }

    /// Frees inodes left open-but-unlinked by a crash: an orphan record
    /// whose inode has no links frees the inode, its region and the record;
    /// a record whose inode is still linked (or whose slot is already free)
    /// is only dropped, so a stray record can never free a reachable file.
    /// A record whose inode sector cannot be read is kept for fsck. Each
    /// chunk is one request.
    fn reclaim_orphans(&self, orphans: &[u64]) -> Result<(), MountError> {
        for chunk in orphans.chunks(ORPHANS_PER_REQUEST) {
            let mut st = self.lock();
            let mut txn = super::txn::Txn::default();
            for &ino in chunk {
                match self.inode(&mut st, ino) {
                    Ok(inode) if inode.nlink == 0 && ino != ROOT_INO => {
                        txn.freed.insert(ino);
                    }
                    Ok(_) => {
                        log::warn!("atomfs: dropping the orphan record of linked inode {ino}");
                        txn.orphan_del.insert(ino);
                    }
                    Err(crate::errno::Errno::ENOENT) => {
                        log::warn!("atomfs: dropping the orphan record of free inode {ino}");
                        txn.orphan_del.insert(ino);
                    }
                    Err(e) => {
                        log::warn!(
                            "atomfs: keeping the orphan record of unreadable inode {ino} \
                             ({e}); run fsck.atomfs"
                        );
                    }
                }
            }
            let freed = txn.freed.len();
            let dropped = txn.orphan_del.len();
            self.commit(&mut st, txn)
                .map_err(|e| MountError::Corrupt(format!("freeing orphans: {e}")))?;
            log::info!(
                "atomfs: freed {freed} orphaned inodes, dropped {dropped} stray orphan records"
            );
        }
        Ok(())
    }
}
