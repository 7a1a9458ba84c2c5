//! Extended attributes: parsed on first use, rewritten whole (inline in the
//! inode sector when small, else in the xattr area) in one request with the
//! inode.
//!
//! Namespaces and permissions follow Linux's `xattr_permission`: `user.`
//! only on regular files and directories, with read/write permission (and
//! the sticky-directory owner rule); `trusted.` only for root; `security.`
//! and `system.` unchecked; any other prefix is EOPNOTSUPP. POSIX ACLs are
//! not interpreted (`system.posix_acl_*` are refused with EOPNOTSUPP so
//! tools fall back to mode bits).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;

use atomic_api::AtomicDevice;

use super::perm::{self, MAY_READ, MAY_WRITE};
use super::state::State;
use super::txn::Txn;
use super::types::{Ctx, XATTR_CREATE, XATTR_REPLACE};
use super::Fs;
use crate::errno::{Errno, Result};
use crate::format::xattr::{
    blob_len, decode_blob, decode_external, encode_blob, encode_external, external_sectors,
    XATTR_NAME_MAX, XATTR_VALUE_MAX,
};
use crate::format::{inline_capacity, Inode, XattrMap};

impl<D: AtomicDevice> Fs<D> {
    /// The parsed xattrs of `inode`, from the cache or the media.
    fn xattr_map(&self, st: &mut State, inode: &Inode) -> Result<Arc<XattrMap>> {
        if let Some(map) = st.xattrs.get(&inode.ino) {
            return Ok(map.clone());
        }
        let blob = if inode.xattr_external {
            let len = inode.xattr_len as usize;
            let n = external_sectors(len, self.sector_size());
            let mut buf = vec![0u8; (n * u64::from(self.sector_size())) as usize];
            self.dev
                .read(self.layout.xattr_lba(inode.ino), &mut buf)
                .map_err(|e| Errno(e.errno()))?;
            decode_external(&buf, len, inode.ino, self.sector_size()).ok_or(Errno::EIO)?
        } else {
            inode.xattr_inline.clone()
        };
        let map = Arc::new(decode_blob(&blob).ok_or(Errno::EIO)?);
        st.xattrs.insert(inode.ino, map.clone());
        Ok(map)
    }

    /// Linux's namespace and permission rules; `Ok(false)` means "treat as
    /// absent" (reads of namespaces the caller may not see).
    fn xattr_permission(&self, ctx: &Ctx, inode: &Inode, name: &[u8], mask: u32) -> Result<bool> {
        let write = mask & MAY_WRITE != 0;
        if name.starts_with(b"system.posix_acl_") {
            return Err(Errno::EOPNOTSUPP);
        }
        if name.starts_with(b"security.") || name.starts_with(b"system.") {
            return Ok(true);
        }
        if name.starts_with(b"trusted.") {
            return match (ctx.is_root(), write) {
                (true, _) => Ok(true),
                (false, true) => Err(Errno::EPERM),
                (false, false) => Ok(false),
            };
        }
        if !name.starts_with(b"user.") {
            return Err(Errno::EOPNOTSUPP);
        }
        if !perm::is_reg(inode) && !perm::is_dir(inode) {
            return if write { Err(Errno::EPERM) } else { Ok(false) };
        }
        if perm::is_dir(inode)
            && inode.mode & libc::S_ISVTX != 0
            && write
            && !perm::is_owner(inode, ctx)
        {
            return Err(Errno::EPERM);
        }
        perm::check(inode, ctx, mask)?;
        Ok(true)
    }

    /// Stages `map` as the new xattrs of `inode` (inline or external).
    fn stage_xattrs(&self, txn: &mut Txn, inode: &mut Inode, map: XattrMap) -> Result<()> {
        let ss = self.sector_size();
        let blob = encode_blob(&map);
        let target = inode.inline_target.as_ref().map_or(0, Vec::len);
        let old_ext = if inode.xattr_external {
            external_sectors(inode.xattr_len as usize, ss)
        } else {
            0
        };
        let base = self.layout.xattr_lba(inode.ino);
        let new_ext = if target + blob.len() <= inline_capacity(ss) {
            inode.xattr_inline = blob.clone();
            inode.xattr_external = false;
            0
        } else {
            let n = external_sectors(blob.len(), ss);
            if n > self.layout.xattr_sectors() {
                return Err(Errno::ENOSPC);
            }
            txn.writes
                .push((base, encode_external(&blob, inode.ino, ss)));
            inode.xattr_inline.clear();
            inode.xattr_external = true;
            n
        };
        if old_ext > new_ext {
            txn.trims.push((base + new_ext, old_ext - new_ext));
        }
        inode.xattr_len = blob.len() as u32;
        inode.ctime = self.now();
        txn.xattrs.push((inode.ino, Arc::new(map)));
        Ok(())
    }

    /// Sets `name` to `value`; `flags` may hold [`XATTR_CREATE`] or
    /// [`XATTR_REPLACE`]. Names up to 255 bytes, values up to 64 KiB, all
    /// of an inode's xattrs together up to 1 MiB (the xattr area).
    pub fn setxattr(
        &self,
        ctx: &Ctx,
        ino: u64,
        name: &OsStr,
        value: &[u8],
        flags: u32,
    ) -> Result<()> {
        let name = name.as_bytes();
        if name.is_empty() || name.len() > XATTR_NAME_MAX {
            return Err(Errno::ERANGE);
        }
        if value.len() > XATTR_VALUE_MAX {
            return Err(Errno::E2BIG);
        }
        if flags & !(XATTR_CREATE | XATTR_REPLACE) != 0 || flags == XATTR_CREATE | XATTR_REPLACE {
            return Err(Errno::EINVAL);
        }
        let mut st = self.lock();
        let st = &mut *st;
        let mut inode = self.inode(st, ino)?.clone();
        self.xattr_permission(ctx, &inode, name, MAY_WRITE)?;
        self.writable(st)?;
        let mut map = (*self.xattr_map(st, &inode)?).clone();
        let exists = map.contains_key(name);
        if flags & XATTR_CREATE != 0 && exists {
            return Err(Errno::EEXIST);
        }
        if flags & XATTR_REPLACE != 0 && !exists {
            return Err(Errno::ENODATA);
        }
        map.insert(name.to_vec(), value.to_vec());
        let _ = blob_len(&map);
        let mut txn = Txn::default();
        self.stage_xattrs(&mut txn, &mut inode, map)?;
        txn.put(inode);
        self.commit(st, txn)
    }

    /// The value of `name` (ENODATA if absent).
    pub fn getxattr(&self, ctx: &Ctx, ino: u64, name: &OsStr) -> Result<Vec<u8>> {
        let name = name.as_bytes();
        if name.is_empty() || name.len() > XATTR_NAME_MAX {
            return Err(Errno::ERANGE);
        }
        let mut st = self.lock();
        let inode = self.inode(&mut st, ino)?.clone();
        if !self.xattr_permission(ctx, &inode, name, MAY_READ)? {
            return Err(Errno::ENODATA);
        }
        let map = self.xattr_map(&mut st, &inode)?;
        map.get(name).cloned().ok_or(Errno::ENODATA)
    }

    /// Every attribute name the caller may see, each followed by a NUL
    /// (the `listxattr(2)` format).
    pub fn listxattr(&self, ctx: &Ctx, ino: u64) -> Result<Vec<u8>> {
        let mut st = self.lock();
        let inode = self.inode(&mut st, ino)?.clone();
        let map = self.xattr_map(&mut st, &inode)?;
        let mut out = Vec::new();
        for name in map.keys() {
            if name.starts_with(b"trusted.") && !ctx.is_root() {
                continue;
            }
            out.extend_from_slice(name);
            out.push(0);
        }
        Ok(out)
    }

    /// Removes `name` (ENODATA if absent).
    pub fn removexattr(&self, ctx: &Ctx, ino: u64, name: &OsStr) -> Result<()> {
        let name = name.as_bytes();
        if name.is_empty() || name.len() > XATTR_NAME_MAX {
            return Err(Errno::ERANGE);
        }
        let mut st = self.lock();
        let st = &mut *st;
        let mut inode = self.inode(st, ino)?.clone();
        self.xattr_permission(ctx, &inode, name, MAY_WRITE)?;
        self.writable(st)?;
        let mut map = (*self.xattr_map(st, &inode)?).clone();
        if map.remove(name).is_none() {
            return Err(Errno::ENODATA);
        }
        let mut txn = Txn::default();
        self.stage_xattrs(&mut txn, &mut inode, map)?;
        txn.put(inode);
        self.commit(st, txn)
    }
}
