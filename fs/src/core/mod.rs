//! The file-system core: POSIX operations by inode number, generic over any
//! [`AtomicDevice`], with no FUSE types.
//!
//! # The rule
//!
//! Every state-changing operation builds exactly ONE [`Request`] from
//! cached metadata (a [`txn::Txn`]), submits it, and only after `submit`
//! returns Ok installs the new metadata in its caches. A failed submit
//! (NoSpace, Io) returns ENOSPC/EIO and leaves memory and media exactly as
//! before. After an I/O failure the file system refuses all further changes
//! with EIO (the device is fail-stop too). Read-only operations submit
//! nothing.
//!
//! # atime policy
//!
//! `noatime`: reads never write. atime changes only through `setattr`
//! (utimens) and at creation. This keeps every read free of media writes;
//! the FUSE adapter should report `noatime` semantics in its docs.
//!
//! # Locking
//!
//! One mutex around the metadata state (inode cache, directory-bucket cache,
//! open counts, inode allocator). File data reads take the lock only to
//! snapshot the size, then read the device without it.

pub mod types;

mod alloc;
mod attr;
mod cache;
mod dir;
mod file;
mod mount;
mod namespace;
mod perm;
mod read_buf;
mod state;
mod txn;
mod xattr;

use std::sync::{Arc, Mutex, MutexGuard};

use atomic_api::{AtomicDevice, Request};

use crate::errno::{Errno, Result};
use crate::format::{Layout, Superblock};
use state::State;
use types::Clock;

pub use mount::mkfs;
pub use read_buf::ReadBuf;

/// A mounted atomfs over the device `D`.
///
/// Methods take `&self`; `Fs` is `Send + Sync` so a multi-threaded FUSE
/// session can share it behind an `Arc`.
pub struct Fs<D: AtomicDevice> {
    dev: D,
    sb: Superblock,
    layout: Layout,
    clock: Arc<dyn Clock>,
    read_only: bool,
    sync: bool,
    /// `MountOptions::hold_lookups`.
    hold_lookups: bool,
    state: Mutex<State>,
}

impl<D: AtomicDevice> Fs<D> {
    /// The device underneath.
    pub fn device(&self) -> &D {
        &self.dev
    }

    /// The superblock read at mount.
    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    /// Where everything lives.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// True if mounted read-only.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Flushes and gives the device back (unmount).
    pub fn unmount(self) -> Result<D> {
        self.sync()?;
        Ok(self.dev)
    }

    /// Makes everything done so far durable (`device.flush()`).
    ///
    /// Without the metadata lock: every operation that returned before
    /// this call has submitted its request, and the device's flush covers
    /// every request submitted before it is called. So other operations
    /// go on while the media flushes, and fsyncs from several threads
    /// share the device's flushes (group commit).
    pub fn sync(&self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        if self.lock().failed {
            return Err(Errno::EIO);
        }
        self.dev.flush().map_err(|e| {
            self.lock().failed = true;
            log::error!("atomfs: flush failed, refusing further writes: {e}");
            Errno::EIO
        })
    }

    /// fsync / fdatasync of a file: a device flush (every change is already
    /// one request, so there is nothing else to write).
    pub fn fsync(&self, _ino: u64, _datasync: bool) -> Result<()> {
        self.sync()
    }

    /// fsyncdir: a device flush.
    pub fn fsyncdir(&self, _ino: u64, _datasync: bool) -> Result<()> {
        self.sync()
    }

    /// Counts one more entry handed out for `ino` (with the lock held
    /// since the inode was found, so the number cannot have moved on).
    fn hold(&self, st: &mut State, ino: u64) {
        if self.hold_lookups {
            *st.held.entry(ino).or_insert(0) += 1;
        }
    }

    /// The caller forgot `n` entries of `ino` (FUSE FORGET). A freed
    /// inode's number goes back to the allocator with the last one.
    pub fn forget(&self, ino: u64, n: u64) {
        let mut st = self.lock();
        let st = &mut *st;
        let Some(count) = st.held.get_mut(&ino) else {
            return;
        };
        *count = count.saturating_sub(n);
        if *count == 0 {
            st.held.remove(&ino);
            if st.freed_held.remove(&ino) {
                st.alloc.release(ino);
            }
        }
    }

    /// Entries of `ino` handed out and not forgotten yet (0 without
    /// `MountOptions::hold_lookups`).
    pub fn held(&self, ino: u64) -> u64 {
        self.lock().held.get(&ino).copied().unwrap_or(0)
    }

    /// Gives a freed inode's number back, or keeps it while entries for it
    /// are held (see `MountOptions::hold_lookups`).
    fn release_ino(st: &mut State, ino: u64) {
        if st.held.contains_key(&ino) {
            st.freed_held.insert(ino);
        } else {
            st.alloc.release(ino);
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Caches are only modified after a successful submit, in code that
        // does not panic midway, so a poisoned lock still guards consistent
        // state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn flush_locked(&self, st: &mut State) -> Result<()> {
        // A read-only mount has nothing to make durable, and its device
        // refuses flushes: fsync of a file opened for reading, fsyncdir
        // and unmount must still succeed.
        if self.read_only {
            return Ok(());
        }
        if st.failed {
            return Err(Errno::EIO);
        }
        self.dev.flush().map_err(|e| {
            st.failed = true;
            log::error!("atomfs: flush failed, refusing further writes: {e}");
            Errno::EIO
        })
    }

    /// Submits one request; on failure marks the fs failed for I/O errors.
    /// Callers update caches only after this returns Ok.
    fn submit(&self, st: &mut State, req: Request) -> Result<()> {
        if st.failed {
            return Err(Errno::EIO);
        }
        if req.is_empty() {
            return Ok(());
        }
        match self.dev.submit(req) {
            Ok(()) => {
                if self.sync {
                    self.flush_locked(st)?;
                }
                Ok(())
            }
            Err(e) if e.is_rejection() => Err(Errno(e.errno())),
            Err(e) => {
                st.failed = true;
                log::error!("atomfs: device failed, refusing further writes: {e}");
                Err(Errno::EIO)
            }
        }
    }

    /// Refuses changes on a read-only or failed file system.
    fn writable(&self, st: &State) -> Result<()> {
        if self.read_only {
            Err(Errno::EROFS)
        } else if st.failed {
            Err(Errno::EIO)
        } else {
            Ok(())
        }
    }
}
