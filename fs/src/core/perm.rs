//! Linux permission rules, implemented in the core so that the file system
//! behaves the same with or without FUSE's `default_permissions`.

use super::types::Ctx;
use crate::errno::{Errno, Result};
use crate::format::Inode;

pub const MAY_READ: u32 = 4;
pub const MAY_WRITE: u32 = 2;
pub const MAY_EXEC: u32 = 1;

pub fn is_dir(inode: &Inode) -> bool {
    inode.mode & libc::S_IFMT == libc::S_IFDIR
}

pub fn is_reg(inode: &Inode) -> bool {
    inode.mode & libc::S_IFMT == libc::S_IFREG
}

pub fn is_symlink(inode: &Inode) -> bool {
    inode.mode & libc::S_IFMT == libc::S_IFLNK
}

/// `generic_permission`: owner, group or other bits; root passes everything
/// except execute on a non-directory with no execute bit at all.
pub fn allowed(inode: &Inode, ctx: &Ctx, mask: u32) -> bool {
    if ctx.is_root() {
        return mask & MAY_EXEC == 0 || is_dir(inode) || inode.mode & 0o111 != 0;
    }
    let mode = inode.mode;
    let bits = if ctx.uid == inode.uid {
        mode >> 6
    } else if mask & (mode ^ (mode >> 3)) & 7 == 0 {
        // Group and other bits agree on what is asked, so membership
        // cannot change the answer: Linux's acl_permission_check skips
        // in_group_p here too, and so the groups need not be read.
        mode
    } else if ctx.in_group(inode.gid) {
        mode >> 3
    } else {
        mode
    } & 7;
    bits & mask == mask
}

/// [`allowed`] or EACCES.
pub fn check(inode: &Inode, ctx: &Ctx, mask: u32) -> Result<()> {
    if allowed(inode, ctx, mask) {
        Ok(())
    } else {
        Err(Errno::EACCES)
    }
}

/// Owner or root (chmod, explicit utimes, ...).
pub fn is_owner(inode: &Inode, ctx: &Ctx) -> bool {
    ctx.is_root() || ctx.uid == inode.uid
}

/// Sticky-directory rule for removing or renaming `victim` out of `dir`.
pub fn sticky_ok(dir: &Inode, victim: &Inode, ctx: &Ctx) -> bool {
    dir.mode & libc::S_ISVTX == 0 || ctx.is_root() || ctx.uid == dir.uid || ctx.uid == victim.uid
}

/// Clears setuid, and setgid when group-exec is set (what Linux does on
/// write, truncate and chown of a non-directory).
pub fn kill_suid(inode: &mut Inode) {
    if is_dir(inode) {
        return;
    }
    inode.mode &= !libc::S_ISUID;
    if inode.mode & libc::S_IXGRP != 0 {
        inode.mode &= !libc::S_ISGID;
    }
}
