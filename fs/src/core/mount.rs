//! mkfs and mount.

use atomic_api::AtomicDevice;

use super::state::State;
use super::types::{MkfsOptions, MountError, MountOptions};
use super::Fs;

/// Writes an empty file system (superblock, backup, root directory) to
/// `device` as ONE request, and flushes it.
pub fn mkfs<D: AtomicDevice + ?Sized>(device: &D, opts: &MkfsOptions) -> Result<(), MountError> {
    let _ = (device, opts);
    todo!()
}

impl<D: AtomicDevice> Fs<D> {
    /// Same as [`mkfs`].
    pub fn mkfs(device: &D, opts: &MkfsOptions) -> Result<(), MountError> {
        mkfs(device, opts)
    }

    /// Mounts: validates the superblock (magic, checksum, version, features,
    /// sector size, layout), scans the inode table for the allocator and
    /// frees orphans (unless read-only).
    pub fn mount(device: D, opts: &MountOptions) -> Result<Fs<D>, MountError> {
        let _ = (device, opts, State::default);
        todo!()
    }
}
