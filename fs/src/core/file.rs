//! File data: open/release, read, write, truncate, fallocate, lseek,
//! readlink.
//!
//! Invariant: no data sector at or beyond `ceil(size / sector_size)` is
//! mapped, and the bytes of the last sector beyond `size` are zero. Writes
//! past EOF, truncation and hole punching maintain it, so extending a file
//! never needs to zero anything on the media.

use atomic_api::AtomicDevice;

use super::namespace::open_handle;
use super::perm::{self, MAY_READ, MAY_WRITE};
use super::read_buf::ReadBuf;
use super::txn::Txn;
use super::types::{Ctx, Whence, FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE};
use super::Fs;
use crate::errno::{Errno, Result};
use crate::format::{Inode, MAX_FILE_SIZE};

impl<D: AtomicDevice> Fs<D> {
    fn dev_read(&self, lba: u64, buf: &mut [u8]) -> Result<()> {
        self.dev.read(lba, buf).map_err(|e| Errno(e.errno()))
    }

    /// Mapped sectors in `start..end` (absolute sector numbers).
    pub(crate) fn mapped_in(&self, start: u64, end: u64) -> Result<u64> {
        let mut count = 0;
        let mut at = start;
        while at < end {
            match self.dev.next_mapped(at).map_err(|e| Errno(e.errno()))? {
                Some(r) if r.start < end => {
                    count += r.end.min(end) - r.start;
                    at = r.end;
                }
                _ => break,
            }
        }
        Ok(count)
    }

    /// Opens `ino` with `open(2)` flags (access mode, `O_TRUNC`,
    /// `O_APPEND`); checks permissions and returns a handle for
    /// [`Fs::release`]. The open count keeps an unlinked inode alive.
    /// `O_TRUNC` on a writable regular file truncates in one request.
    pub fn open(&self, ctx: &Ctx, ino: u64, flags: i32) -> Result<u64> {
        let mut st = self.lock();
        let st = &mut *st;
        let inode = self.inode(st, ino)?.clone();
        // Linux truncates on O_TRUNC whatever the access mode (also
        // O_RDONLY|O_TRUNC) and requires write permission for it.
        let trunc = flags & libc::O_TRUNC != 0 && perm::is_reg(&inode);
        let mut mask = match flags & libc::O_ACCMODE {
            libc::O_RDONLY => MAY_READ,
            libc::O_WRONLY => MAY_WRITE,
            _ => MAY_READ | MAY_WRITE,
        };
        if trunc {
            mask |= MAY_WRITE;
        }
        if perm::is_dir(&inode) && mask & MAY_WRITE != 0 {
            return Err(Errno::EISDIR);
        }
        perm::check(&inode, ctx, mask)?;
        if mask & MAY_WRITE != 0 && perm::is_reg(&inode) {
            self.writable(st)?;
        }
        if trunc {
            let mut txn = Txn::default();
            let mut inode = inode;
            self.stage_truncate(&mut txn, &mut inode, 0)?;
            if !ctx.is_root() {
                perm::kill_suid(&mut inode);
            }
            let now = self.now();
            inode.mtime = now;
            inode.ctime = now;
            txn.put(inode);
            self.commit(st, txn)?;
        }
        Ok(open_handle(st, ino, flags))
    }

    /// Closes a handle. The last close of an unlinked inode frees its
    /// region, inode and orphan record in one request.
    pub fn release(&self, ino: u64, fh: u64) -> Result<()> {
        let mut st = self.lock();
        let st = &mut *st;
        let ino = st.handles.remove(&fh).map_or(ino, |h| h.ino);
        let count = st.open.entry(ino).or_insert(1);
        *count = count.saturating_sub(1);
        if *count > 0 {
            return Ok(());
        }
        st.open.remove(&ino);
        let orphaned = st.inodes.get(&ino).is_some_and(|i| i.nlink == 0);
        if orphaned && !self.read_only {
            let mut txn = Txn::default();
            txn.freed.insert(ino);
            // On failure the orphan record stays; the next mount frees it.
            self.commit(st, txn)?;
        }
        Ok(())
    }

    /// Reads up to `size` bytes at `offset` (short at end of file). Holes
    /// read as zeros. The data is read without holding the metadata lock.
    pub fn read(&self, ino: u64, offset: u64, size: usize) -> Result<Vec<u8>> {
        self.read_buf(ino, offset, size).map(ReadBuf::into_vec)
    }

    /// [`Fs::read`] without the final copy into a `Vec`: the device reads
    /// into an aligned buffer (no bounce copy) which is returned as is.
    pub fn read_buf(&self, ino: u64, offset: u64, size: usize) -> Result<ReadBuf> {
        let file_size = {
            let mut st = self.lock();
            let inode = self.inode(&mut st, ino)?;
            if perm::is_dir(inode) {
                return Err(Errno::EISDIR);
            }
            inode.size
        };
        if offset >= file_size || size == 0 {
            return Ok(ReadBuf::empty());
        }
        let end = file_size.min(offset.saturating_add(size as u64));
        let ss = u64::from(self.sector_size());
        let first = offset / ss;
        let last = end.div_ceil(ss);
        let mut buf = ReadBuf::for_device(((last - first) * ss) as usize);
        self.dev_read(self.layout.region(ino) + first, buf.as_mut_slice())?;
        buf.narrow((offset - first * ss) as usize, (end - offset) as usize);
        Ok(buf)
    }

    /// Writes `data` at `offset` (or at end of file if `append`) as one
    /// request with the inode update; returns the bytes written. Only the
    /// covered sectors are written; partial sectors at the two ends are
    /// read-modify-written. A write larger than one request can hold
    /// (`max_request_bytes` less the inode sector) writes a prefix and
    /// returns the short count (POSIX-legal). Clears setuid/setgid when the
    /// caller is not root.
    pub fn write(
        &self,
        ctx: &Ctx,
        ino: u64,
        offset: u64,
        data: &[u8],
        append: bool,
    ) -> Result<usize> {
        let mut st = self.lock();
        let st = &mut *st;
        self.writable(st)?;
        let mut inode = self.inode(st, ino)?.clone();
        if perm::is_dir(&inode) {
            return Err(Errno::EISDIR);
        }
        if !perm::is_reg(&inode) {
            return Err(Errno::EINVAL);
        }
        let offset = if append { inode.size } else { offset };
        if data.is_empty() {
            return Ok(0);
        }
        if offset >= MAX_FILE_SIZE {
            return Err(Errno::EFBIG);
        }
        let ss = u64::from(self.sector_size());
        let geo = self.dev.geometry();
        let max_sectors = (geo.max_request_bytes.saturating_sub(ss) / ss).max(1);
        let first = offset / ss;
        let mut end = (offset + data.len() as u64).min(MAX_FILE_SIZE);
        end = end.min((first + max_sectors) * ss);
        if end <= offset {
            return Err(Errno::EFBIG);
        }
        let len = (end - offset) as usize;
        let last = end.div_ceil(ss);
        let old_sectors = self.layout.sectors_for(inode.size);
        let region = self.layout.region(ino);
        // The sectors are assembled in one pass, without zeroing them
        // first: a 1 MiB write is a memory-bound copy, and every extra pass
        // over it showed in the profile of a sequential write.
        let total = ((last - first) * ss) as usize;
        let head = (offset - first * ss) as usize;
        let tail = total - head - len;
        // Read-modify-write only the partially covered end sectors that may
        // hold data (below the old EOF); past it they are zeros.
        let old_sector = |index: u64| -> Result<Option<Vec<u8>>> {
            if index >= old_sectors {
                return Ok(None);
            }
            let mut sector = vec![0u8; ss as usize];
            self.dev_read(region + index, &mut sector)?;
            Ok(Some(sector))
        };
        let first_old = if head > 0 { old_sector(first)? } else { None };
        let last_old = match tail {
            0 => None,
            _ if last - 1 == first && head > 0 => first_old.clone(),
            _ => old_sector(last - 1)?,
        };
        let mut buf = Vec::with_capacity(total);
        match &first_old {
            Some(sector) => buf.extend_from_slice(&sector[..head]),
            None => buf.resize(head, 0),
        }
        buf.extend_from_slice(&data[..len]);
        match &last_old {
            Some(sector) => buf.extend_from_slice(&sector[ss as usize - tail..]),
            None => buf.resize(total, 0),
        }
        debug_assert_eq!(buf.len(), total);
        let below_old = old_sectors.clamp(first, last);
        // Sectors past the old EOF are unmapped (the invariant above).
        let newly = (last - first) - self.mapped_in(region + first, region + below_old)?;
        inode.data_sectors += newly;
        inode.size = inode.size.max(end);
        let now = self.now();
        inode.mtime = now;
        inode.ctime = now;
        if !ctx.is_root() {
            perm::kill_suid(&mut inode);
        }
        let mut txn = Txn::default();
        txn.writes.push((region + first, buf));
        txn.put(inode);
        self.commit(st, txn)?;
        Ok(len)
    }

    /// Stages changing the size of `inode` to `size` (truncate or extend):
    /// zeroes the tail of the new last sector and trims the sectors past it.
    pub(crate) fn stage_truncate(&self, txn: &mut Txn, inode: &mut Inode, size: u64) -> Result<()> {
        if size > MAX_FILE_SIZE {
            return Err(Errno::EFBIG);
        }
        if size < inode.size {
            let ss = u64::from(self.sector_size());
            let region = self.layout.region(inode.ino);
            let keep = self.layout.sectors_for(size);
            let old = self.layout.sectors_for(inode.size);
            if size % ss != 0 {
                let lba = region + size / ss;
                if self.mapped_in(lba, lba + 1)? == 1 {
                    let mut sector = vec![0u8; ss as usize];
                    self.dev_read(lba, &mut sector)?;
                    sector[(size % ss) as usize..].fill(0);
                    txn.writes.push((lba, sector));
                }
            }
            if old > keep {
                let gone = self.mapped_in(region + keep, region + old)?;
                if gone > 0 {
                    txn.trims.push((region + keep, old - keep));
                    inode.data_sectors = inode.data_sectors.saturating_sub(gone);
                }
            }
        }
        inode.size = size;
        Ok(())
    }

    /// `fallocate(2)`: mode 0, `FALLOC_FL_KEEP_SIZE`, or
    /// `FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE`.
    ///
    /// Allocation on a thin-provisioned device: the block layer allocates
    /// on write, so mode 0 checks that the unwritten part of the range fits
    /// in the free space (ENOSPC otherwise) and extends the size, but cannot
    /// reserve the space — a later write may still get ENOSPC. Writing zeros
    /// to reserve it would double the write cost of every preallocation.
    /// Every call writes the inode (ctime) as one request.
    pub fn fallocate(
        &self,
        ctx: &Ctx,
        ino: u64,
        offset: u64,
        length: u64,
        mode: u32,
    ) -> Result<()> {
        let _ = ctx;
        let mut st = self.lock();
        let st = &mut *st;
        self.writable(st)?;
        let mut inode = self.inode(st, ino)?.clone();
        if perm::is_dir(&inode) {
            return Err(Errno::EISDIR);
        }
        if !perm::is_reg(&inode) {
            return Err(Errno::ENODEV);
        }
        if length == 0 {
            return Err(Errno::EINVAL);
        }
        let end = offset.checked_add(length).ok_or(Errno::EFBIG)?;
        if end > MAX_FILE_SIZE {
            return Err(Errno::EFBIG);
        }
        let ss = u64::from(self.sector_size());
        let region = self.layout.region(ino);
        let now = self.now();
        let mut txn = Txn::default();
        match mode {
            0 | FALLOC_FL_KEEP_SIZE => {
                let first = offset / ss;
                let last = end.div_ceil(ss);
                let unmapped = (last - first) - self.mapped_in(region + first, region + last)?;
                if unmapped * ss > self.dev.space().free_bytes {
                    return Err(Errno::ENOSPC);
                }
                if mode == 0 && end > inode.size {
                    inode.size = end;
                    inode.mtime = now;
                }
            }
            m if m == FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE => {
                let end = end.min(inode.size);
                if offset < end {
                    self.stage_punch(&mut txn, &mut inode, offset, end)?;
                }
                inode.mtime = now;
            }
            _ => return Err(Errno::EOPNOTSUPP),
        }
        inode.ctime = now;
        txn.put(inode);
        self.commit(st, txn)
    }

    /// Stages zeroing `offset..end` (inside the file): partial end sectors
    /// are read-modify-written, whole sectors trimmed.
    fn stage_punch(&self, txn: &mut Txn, inode: &mut Inode, offset: u64, end: u64) -> Result<()> {
        let ss = u64::from(self.sector_size());
        let region = self.layout.region(inode.ino);
        let whole_first = offset.div_ceil(ss);
        let whole_last = end / ss;
        let mut zero_part = |lba_off: u64, from: u64, to: u64| -> Result<()> {
            let lba = region + lba_off;
            if self.mapped_in(lba, lba + 1)? == 1 {
                let mut sector = vec![0u8; ss as usize];
                self.dev_read(lba, &mut sector)?;
                sector[from as usize..to as usize].fill(0);
                txn.writes.push((lba, sector));
            }
            Ok(())
        };
        if whole_first > whole_last {
            // Inside one sector.
            let s = offset / ss;
            return zero_part(s, offset - s * ss, end - s * ss);
        }
        if offset % ss != 0 {
            let s = offset / ss;
            zero_part(s, offset - s * ss, ss)?;
        }
        if end % ss != 0 {
            let s = end / ss;
            zero_part(s, 0, end - s * ss)?;
        }
        if whole_last > whole_first {
            let gone = self.mapped_in(region + whole_first, region + whole_last)?;
            if gone > 0 {
                txn.trims
                    .push((region + whole_first, whole_last - whole_first));
                inode.data_sectors = inode.data_sectors.saturating_sub(gone);
            }
        }
        Ok(())
    }

    /// `lseek` with `SEEK_DATA` / `SEEK_HOLE`, from the block layer's map.
    /// ENXIO at or past EOF; EOF counts as a hole.
    pub fn lseek(&self, ino: u64, offset: u64, whence: Whence) -> Result<u64> {
        let size = {
            let mut st = self.lock();
            let inode = self.inode(&mut st, ino)?;
            if perm::is_dir(inode) {
                return Err(Errno::EINVAL);
            }
            inode.size
        };
        if offset >= size {
            return Err(Errno::ENXIO);
        }
        let ss = u64::from(self.sector_size());
        let region = self.layout.region(ino);
        let end = region + self.layout.sectors_for(size);
        let at = region + offset / ss;
        let next = |from| self.dev.next_mapped(from).map_err(|e| Errno(e.errno()));
        match whence {
            Whence::Data => match next(at)? {
                Some(r) if r.start < end => Ok(offset.max((r.start - region) * ss)),
                _ => Err(Errno::ENXIO),
            },
            Whence::Hole => {
                let mut hole = at;
                while let Some(r) = next(hole)? {
                    if r.start > hole || hole >= end {
                        break;
                    }
                    hole = r.end;
                }
                Ok(offset.max((hole - region) * ss).min(size))
            }
        }
    }

    /// The target of a symbolic link.
    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        let mut st = self.lock();
        let inode = self.inode(&mut st, ino)?;
        if !perm::is_symlink(inode) {
            return Err(Errno::EINVAL);
        }
        if let Some(target) = &inode.inline_target {
            return Ok(target.clone());
        }
        let len = inode.size as usize;
        drop(st);
        let ss = self.sector_size() as usize;
        let mut buf = vec![0u8; len.div_ceil(ss) * ss];
        self.dev_read(self.layout.region(ino), &mut buf)?;
        buf.truncate(len);
        Ok(buf)
    }
}
