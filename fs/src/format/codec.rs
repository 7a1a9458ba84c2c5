//! Little-endian field access and the crc32c seal of metadata sectors.
//!
//! Every metadata sector ends with a crc32c of all the bytes before it, so a
//! torn, stale or foreign sector never decodes. Fields are written at fixed
//! byte offsets (documented in FORMAT.md) with explicit little-endian
//! conversions — no `repr(C)` transmutes, so the format does not depend on
//! the host.

/// Reads a little-endian u16 at `at`.
pub fn get_u16(buf: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(buf[at..at + 2].try_into().unwrap())
}

/// Reads a little-endian u32 at `at`.
pub fn get_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().unwrap())
}

/// Reads a little-endian u64 at `at`.
pub fn get_u64(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().unwrap())
}

/// Reads a little-endian i64 at `at`.
pub fn get_i64(buf: &[u8], at: usize) -> i64 {
    i64::from_le_bytes(buf[at..at + 8].try_into().unwrap())
}

pub fn put_u16(buf: &mut [u8], at: usize, v: u16) {
    buf[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

pub fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

pub fn put_u64(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

pub fn put_i64(buf: &mut [u8], at: usize, v: i64) {
    buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Writes the crc32c of `sector[..len-4]` into the last four bytes.
pub fn seal(sector: &mut [u8]) {
    let n = sector.len() - 4;
    let crc = crc32c::crc32c(&sector[..n]);
    put_u32(sector, n, crc);
}

/// True when the last four bytes hold the crc32c of the rest.
pub fn verify(sector: &[u8]) -> bool {
    let n = sector.len() - 4;
    crc32c::crc32c(&sector[..n]) == get_u32(sector, n)
}

/// True for a sector of zeros: what an unmapped (trimmed or never written)
/// sector reads as.
pub fn is_zero(sector: &[u8]) -> bool {
    sector.iter().all(|&b| b == 0)
}
