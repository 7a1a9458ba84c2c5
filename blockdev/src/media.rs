//! `Media`: the raw storage under a `LogDevice` (a block device, an image
//! file, or `SimMedia` in tests).
//!
//! Offsets and lengths are in bytes and must be multiples of
//! [`Media::sector_size`]; callers (the log layer) guarantee it. Buffers may
//! be at any memory address: an implementation that needs aligned memory
//! (O_DIRECT) copies through an aligned bounce buffer when given an
//! unaligned one, so callers that care about speed pass [`AlignedBuf`]s.

use std::io;

/// Raw storage. `Send + Sync + 'static`: the log layer may read from
/// several threads while one writes, and a write-behind write runs on a
/// thread of its own that holds the media (see [`Media::write_behind`]).
pub trait Media: Send + Sync + 'static {
    /// The media's logical block size (512 or 4096): the unit it never tears.
    fn sector_size(&self) -> u32;
    /// Usable size in bytes (a multiple of `sector_size`).
    fn len_bytes(&self) -> u64;
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes all of `data` at `offset`. Not durable until `flush`.
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()>;
    /// Makes every completed write durable (fdatasync / cache flush).
    fn flush(&self) -> io::Result<()>;
    /// Tells the storage beneath that `len` bytes at `offset` are free
    /// (BLKDISCARD, or a punched hole in an image file). Contents read back
    /// afterwards are unspecified (zeros or old data), so the log layer must
    /// never rely on them. Best effort: media without discard return Ok.
    fn discard(&self, offset: u64, len: u64) -> io::Result<()>;
    /// What this media is, for error messages (a path, or "sim").
    fn describe(&self) -> String;
    /// Whether a `LogDevice` should write its batch records behind the
    /// caller's back (on a writer thread, one at a time) by default. Real
    /// disks gain from overlapping the write with the next batch's work;
    /// in-memory media gain nothing and tests want them synchronous, so the
    /// default is no. `OpenOptions::write_behind` overrides it.
    fn write_behind(&self) -> bool {
        false
    }
}

impl<M: Media + ?Sized> Media for Box<M> {
    fn sector_size(&self) -> u32 {
        (**self).sector_size()
    }
    fn len_bytes(&self) -> u64 {
        (**self).len_bytes()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        (**self).write_at(offset, data)
    }
    fn flush(&self) -> io::Result<()> {
        (**self).flush()
    }
    fn discard(&self, offset: u64, len: u64) -> io::Result<()> {
        (**self).discard(offset, len)
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn write_behind(&self) -> bool {
        (**self).write_behind()
    }
}

/// Memory alignment that satisfies O_DIRECT on every Linux device.
pub const DIRECT_IO_ALIGN: usize = 4096;

/// A zero-initialised byte buffer whose start is aligned to
/// [`DIRECT_IO_ALIGN`], so O_DIRECT media can write it without copying.
pub struct AlignedBuf {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
    capacity: usize,
}

// SAFETY: AlignedBuf owns its allocation exclusively, like Vec<u8>.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only hands out &[u8].
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// A buffer of `len` zero bytes able to grow to `capacity` without
    /// reallocating.
    pub fn with_capacity(len: usize, capacity: usize) -> Self {
        let capacity = capacity.max(len).max(1).next_multiple_of(DIRECT_IO_ALIGN);
        let layout = std::alloc::Layout::from_size_align(capacity, DIRECT_IO_ALIGN)
            .expect("aligned buffer layout");
        // SAFETY: layout has non-zero size.
        let raw = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr =
            std::ptr::NonNull::new(raw).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        Self { ptr, len, capacity }
    }

    /// A buffer of `len` zero bytes.
    pub fn zeroed(len: usize) -> Self {
        Self::with_capacity(len, len)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Sets the length to `len` (≤ capacity); new bytes are zero.
    pub fn resize(&mut self, len: usize) {
        assert!(
            len <= self.capacity,
            "AlignedBuf cannot grow past its capacity"
        );
        if len > self.len {
            // SAFETY: [self.len, len) lies inside the allocation.
            unsafe { std::ptr::write_bytes(self.ptr.as_ptr().add(self.len), 0, len - self.len) };
        }
        self.len = len;
    }

    /// Appends `data` (must fit in the capacity). Copies once: the bytes
    /// are not zeroed first.
    pub fn extend_from_slice(&mut self, data: &[u8]) {
        let start = self.len;
        assert!(
            data.len() <= self.capacity - start,
            "AlignedBuf cannot grow past its capacity"
        );
        // SAFETY: [start, start + data.len()) lies inside the allocation
        // (checked above) and cannot overlap `data`, which is borrowed
        // shared while we hold `&mut self`.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.as_ptr().add(start), data.len())
        };
        self.len = start + data.len();
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Sets the length to `len` (≤ capacity) without zeroing: bytes past
    /// the old length keep what they last held. For a buffer about to be
    /// overwritten whole (a read into a reused buffer), where zeroing it
    /// first would be wasted work. Safe: the whole allocation is always
    /// initialised.
    pub fn set_len_keep(&mut self, len: usize) {
        assert!(
            len <= self.capacity,
            "AlignedBuf cannot grow past its capacity"
        );
        self.len = len;
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        let layout = std::alloc::Layout::from_size_align(self.capacity, DIRECT_IO_ALIGN)
            .expect("aligned buffer layout");
        // SAFETY: allocated in with_capacity with this very layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), layout) };
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the whole allocation is initialised (zeroed at allocation,
        // only ever overwritten since).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in Deref, and we hold &mut self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

/// True when `buf` starts at an address O_DIRECT accepts.
pub fn is_direct_aligned(buf: &[u8]) -> bool {
    (buf.as_ptr() as usize) % DIRECT_IO_ALIGN == 0
}

/// A media that stores nothing: reads return zeros, writes, flushes and
/// discards succeed and vanish. Formatting one gives the exact geometry of
/// a real device of the same size without touching anything (`mkfs -n`),
/// and benchmarks use it to measure the layer's CPU and memory alone.
#[derive(Clone, Debug)]
pub struct NullMedia {
    sector_size: u32,
    len_bytes: u64,
    name: String,
}

impl NullMedia {
    /// A null media of `len_bytes` with `sector_size`-byte sectors, named
    /// `name` in error messages.
    pub fn new(sector_size: u32, len_bytes: u64, name: impl Into<String>) -> Self {
        Self {
            sector_size,
            len_bytes,
            name: name.into(),
        }
    }
}

impl Media for NullMedia {
    fn sector_size(&self) -> u32 {
        self.sector_size
    }
    fn len_bytes(&self) -> u64 {
        self.len_bytes
    }
    fn read_at(&self, _offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        buf.fill(0);
        Ok(())
    }
    fn write_at(&self, _offset: u64, _data: &[u8]) -> std::io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn discard(&self, _offset: u64, _len: u64) -> std::io::Result<()> {
        Ok(())
    }
    fn describe(&self) -> String {
        self.name.clone()
    }
}
