//! The buffer a file read returns: the device reads straight into it.
//!
//! Why not a `Vec<u8>`: the block layer reads with O_DIRECT, which needs a
//! sector-aligned memory address; a `Vec` from the allocator is not, so
//! every read went through a bounce buffer (a second copy), and cutting the
//! unaligned head off the front moved the rest once more. A `ReadBuf`
//! over-allocates by one page, reads into the page-aligned part, and trims
//! by moving its window, never the bytes. Profiling a cold 1 GiB read showed
//! these copies and zeroings as the daemon's largest CPU cost.
//!
//! Freed buffers go back to a small pool, so the next read of the same size
//! neither allocates nor zeroes: the device contract fills every byte of
//! the buffer it is given (unmapped sectors as zeros), so the old contents
//! of a pooled buffer are never seen.

use std::ops::Deref;
use std::sync::Mutex;

/// Memory alignment that satisfies O_DIRECT on every Linux device.
const ALIGN: usize = 4096;
/// Buffers kept for reuse: enough for the FUSE worker threads' reads in
/// flight at once.
const POOL_BUFFERS: usize = 8;
/// Larger buffers are freed, not pooled (bounds the pool at 8 × 2 MiB).
const POOL_MAX_BYTES: usize = (2 << 20) + ALIGN;

static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

fn pool() -> std::sync::MutexGuard<'static, Vec<Vec<u8>>> {
    // The pool holds plain buffers; a panic elsewhere cannot leave it
    // inconsistent.
    POOL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Bytes read from a file; derefs to `[u8]`.
pub struct ReadBuf {
    mem: Vec<u8>,
    start: usize,
    len: usize,
}

impl ReadBuf {
    /// `len` bytes starting at a 4096-aligned address, for the device to
    /// fill. Their contents are unspecified (zeros, or an earlier read's).
    pub(crate) fn for_device(len: usize) -> ReadBuf {
        let need = len + ALIGN;
        let reused = {
            let mut p = pool();
            p.iter()
                .position(|m| m.len() >= need)
                .map(|i| p.swap_remove(i))
        };
        let mem = reused.unwrap_or_else(|| vec![0u8; need]);
        let start = mem.as_ptr().align_offset(ALIGN);
        debug_assert!(start < ALIGN);
        ReadBuf { mem, start, len }
    }

    /// No bytes (EOF).
    pub(crate) fn empty() -> ReadBuf {
        ReadBuf {
            mem: Vec::new(),
            start: 0,
            len: 0,
        }
    }

    /// The whole aligned window, to read into.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.mem[self.start..self.start + self.len]
    }

    /// Keeps `len` bytes starting `skip` bytes into the current window.
    pub(crate) fn narrow(&mut self, skip: usize, len: usize) {
        assert!(skip + len <= self.len, "narrowing past the end");
        self.start += skip;
        self.len = len;
    }

    /// The bytes as a `Vec` (one copy).
    pub fn into_vec(self) -> Vec<u8> {
        self.to_vec()
    }
}

impl Drop for ReadBuf {
    fn drop(&mut self) {
        if self.mem.is_empty() || self.mem.len() > POOL_MAX_BYTES {
            return;
        }
        let mut p = pool();
        if p.len() < POOL_BUFFERS {
            p.push(std::mem::take(&mut self.mem));
        }
    }
}

impl Deref for ReadBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.mem[self.start..self.start + self.len]
    }
}

impl std::fmt::Debug for ReadBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadBuf").field("len", &self.len).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_narrowed_without_moving() {
        for len in [0, 1, 511, 4096, 100_000, 100_000, 50_000, 3 << 20] {
            let mut b = ReadBuf::for_device(len);
            assert_eq!(b.as_mut_slice().as_ptr() as usize % ALIGN, 0);
            assert_eq!(b.len(), len);
            for (i, x) in b.as_mut_slice().iter_mut().enumerate() {
                *x = i as u8;
            }
            if len >= 10 {
                b.narrow(3, len - 5);
                assert_eq!(b[0], 3);
                assert_eq!(b.len(), len - 5);
                let v = b.into_vec();
                assert_eq!(v.len(), len - 5);
                assert_eq!(v[1], 4);
            }
        }
        assert!(ReadBuf::empty().is_empty());
        assert!(pool().len() <= POOL_BUFFERS);
        assert!(pool().iter().all(|m| m.len() <= POOL_MAX_BYTES));
    }
}
