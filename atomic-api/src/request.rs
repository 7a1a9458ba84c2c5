//! Requests: the unit of atomicity.

use crate::{Error, Geometry, Result};

/// One piece of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// Write `data` (a whole, non-zero number of sectors) starting at sector `lba`.
    Write { lba: u64, data: Vec<u8> },
    /// Unmap `sectors` sectors (at least one) starting at `lba`: they read as
    /// zeros afterwards and occupy no media.
    Trim { lba: u64, sectors: u64 },
}

impl Segment {
    /// First sector touched.
    pub fn lba(&self) -> u64 {
        match self {
            Segment::Write { lba, .. } | Segment::Trim { lba, .. } => *lba,
        }
    }

    /// Number of sectors touched, given the sector size.
    pub fn sectors(&self, sector_size: u32) -> u64 {
        match self {
            Segment::Write { data, .. } => data.len() as u64 / u64::from(sector_size),
            Segment::Trim { sectors, .. } => *sectors,
        }
    }
}

/// An ordered list of non-overlapping segments applied all or nothing.
///
/// Build it with [`Request::write`] and [`Request::trim`], then submit it to
/// an [`AtomicDevice`](crate::AtomicDevice), which calls
/// [`Request::validate`] before the request has any effect.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    segments: Vec<Segment>,
}

impl Request {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a write segment.
    pub fn write(&mut self, lba: u64, data: impl Into<Vec<u8>>) -> &mut Self {
        self.segments.push(Segment::Write {
            lba,
            data: data.into(),
        });
        self
    }

    /// Appends a trim segment.
    pub fn trim(&mut self, lba: u64, sectors: u64) -> &mut Self {
        self.segments.push(Segment::Trim { lba, sectors });
        self
    }

    /// Appends any segment.
    pub fn push(&mut self, segment: Segment) -> &mut Self {
        self.segments.push(segment);
        self
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    pub fn into_segments(self) -> Vec<Segment> {
        self.segments
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Total bytes of write data.
    pub fn write_bytes(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| match s {
                Segment::Write { data, .. } => data.len() as u64,
                Segment::Trim { .. } => 0,
            })
            .sum()
    }

    /// Checks the request against `geometry`: every segment whole sectors,
    /// inside the logical space, no two segments overlapping, and within the
    /// segment and byte limits. An empty request is valid (and a no-op).
    pub fn validate(&self, geometry: &Geometry) -> Result<()> {
        if self.segments.len() > geometry.max_segments as usize {
            return Err(Error::TooLarge {
                detail: format!(
                    "{} segments, the limit is {}",
                    self.segments.len(),
                    geometry.max_segments
                ),
            });
        }
        let bytes = self.write_bytes();
        if bytes > geometry.max_request_bytes {
            return Err(Error::TooLarge {
                detail: format!(
                    "{bytes} bytes of write data, the limit is {}",
                    geometry.max_request_bytes
                ),
            });
        }
        // (start, end, index) of every segment, sorted to find overlaps in
        // O(n log n) rather than comparing every pair.
        let mut ranges = Vec::with_capacity(self.segments.len());
        for (index, segment) in self.segments.iter().enumerate() {
            let sectors = match segment {
                Segment::Write { data, .. } => {
                    if data.is_empty() {
                        return Err(Error::Misaligned {
                            index,
                            detail: "write of zero bytes".into(),
                        });
                    }
                    geometry
                        .sectors_in(data.len())
                        .ok_or_else(|| Error::Misaligned {
                            index,
                            detail: format!(
                                "write of {} bytes is not a multiple of the {}-byte sector",
                                data.len(),
                                geometry.sector_size
                            ),
                        })?
                }
                Segment::Trim { sectors, .. } => {
                    if *sectors == 0 {
                        return Err(Error::Misaligned {
                            index,
                            detail: "trim of zero sectors".into(),
                        });
                    }
                    *sectors
                }
            };
            let lba = segment.lba();
            check_range(geometry, index, lba, sectors)?;
            ranges.push((lba, lba + sectors, index));
        }
        ranges.sort_unstable();
        for pair in ranges.windows(2) {
            if pair[1].0 < pair[0].1 {
                let (a, b) = (pair[0].2.min(pair[1].2), pair[0].2.max(pair[1].2));
                return Err(Error::Overlap {
                    first: a,
                    second: b,
                });
            }
        }
        Ok(())
    }
}

/// Checks that `sectors` sectors from `lba` lie inside the logical space.
/// `index` names the segment in the error (reads use 0).
pub fn check_range(geometry: &Geometry, index: usize, lba: u64, sectors: u64) -> Result<()> {
    match lba.checked_add(sectors) {
        Some(end) if end <= geometry.logical_sectors => Ok(()),
        _ => Err(Error::OutOfRange {
            index,
            lba,
            sectors,
        }),
    }
}

/// Validates a read buffer against the geometry and returns its sector count.
pub fn check_read(geometry: &Geometry, lba: u64, len: usize) -> Result<u64> {
    let sectors = geometry.sectors_in(len).ok_or_else(|| Error::Misaligned {
        index: 0,
        detail: format!(
            "read buffer of {len} bytes is not a multiple of the {}-byte sector",
            geometry.sector_size
        ),
    })?;
    check_range(geometry, 0, lba, sectors)?;
    Ok(sectors)
}
