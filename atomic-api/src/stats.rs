//! Counters from which write amplification is read off.

use std::ops::Sub;

/// How much space the device has, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Space {
    /// Bytes of live (mapped) data the device can hold at most: media size
    /// less metadata, headers and the segments reserved for cleaning.
    pub capacity_bytes: u64,
    /// Bytes of new data that can still be accepted: `capacity - live`.
    pub free_bytes: u64,
    /// Bytes of mapped logical sectors.
    pub live_bytes: u64,
}

/// Counters since the device was opened.
///
/// Media bytes are split by purpose so that every byte written to the media
/// is attributed to exactly one field; [`Stats::media_bytes`] is their sum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests accepted by `submit`.
    pub requests: u64,
    /// Calls to `flush` that returned Ok.
    pub flushes: u64,
    /// Flushes of the media (fdatasync) actually issued.
    pub media_flushes: u64,
    /// Bytes of write data in accepted requests (what the caller asked for).
    pub submitted_bytes: u64,
    /// Sectors unmapped by accepted trims.
    pub trimmed_sectors: u64,
    /// Caller data written to the media (after group-commit coalescing).
    pub media_payload_bytes: u64,
    /// Record headers and commit blocks written to the media.
    pub media_header_bytes: u64,
    /// Checkpoints, map copies and superblocks written to the media.
    pub media_checkpoint_bytes: u64,
    /// Live data copied forward by garbage collection (payload and headers).
    pub media_gc_bytes: u64,
    /// Padding written to align records or fill segment tails.
    pub media_padding_bytes: u64,
    /// Bytes read from the media.
    pub media_read_bytes: u64,
}

impl Stats {
    /// Every byte written to the media.
    pub fn media_bytes(&self) -> u64 {
        self.media_payload_bytes
            + self.media_header_bytes
            + self.media_checkpoint_bytes
            + self.media_gc_bytes
            + self.media_padding_bytes
    }

    /// Media bytes per submitted byte (0 when nothing was submitted).
    pub fn write_amplification(&self) -> f64 {
        if self.submitted_bytes == 0 {
            0.0
        } else {
            self.media_bytes() as f64 / self.submitted_bytes as f64
        }
    }
}

impl Sub for Stats {
    type Output = Stats;

    /// The counters accumulated between two snapshots (`later - earlier`).
    fn sub(self, earlier: Stats) -> Stats {
        Stats {
            requests: self.requests - earlier.requests,
            flushes: self.flushes - earlier.flushes,
            media_flushes: self.media_flushes - earlier.media_flushes,
            submitted_bytes: self.submitted_bytes - earlier.submitted_bytes,
            trimmed_sectors: self.trimmed_sectors - earlier.trimmed_sectors,
            media_payload_bytes: self.media_payload_bytes - earlier.media_payload_bytes,
            media_header_bytes: self.media_header_bytes - earlier.media_header_bytes,
            media_checkpoint_bytes: self.media_checkpoint_bytes - earlier.media_checkpoint_bytes,
            media_gc_bytes: self.media_gc_bytes - earlier.media_gc_bytes,
            media_padding_bytes: self.media_padding_bytes - earlier.media_padding_bytes,
            media_read_bytes: self.media_read_bytes - earlier.media_read_bytes,
        }
    }
}
