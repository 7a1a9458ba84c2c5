//! Extended attributes: a sorted list serialized as one blob.
//!
//! Blob: repeated `[name_len u8][value_len u32 LE][name][value]`, sorted by
//! name. The blob lives in the inode's inline area when it fits beside a
//! short symlink target; otherwise in the xattr area at the top of the
//! inode's region, as sectors of `[payload: sector_size - 4][crc32c]`, whose
//! crc is seeded with the inode number and sector index so a misplaced
//! sector never validates.

use std::collections::BTreeMap;

use super::codec::*;

/// Longest xattr name (as Linux).
pub const XATTR_NAME_MAX: usize = 255;
/// Largest xattr value (as Linux's `XATTR_SIZE_MAX`).
pub const XATTR_VALUE_MAX: usize = 65536;
/// Bytes of entry header in the blob.
pub const XATTR_ENTRY_HEADER: usize = 5;

/// Name → value.
pub type XattrMap = BTreeMap<Vec<u8>, Vec<u8>>;

/// Serializes `map` as a blob.
pub fn encode_blob(map: &XattrMap) -> Vec<u8> {
    let mut out = Vec::with_capacity(blob_len(map));
    for (name, value) in map {
        out.push(name.len() as u8);
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(value);
    }
    out
}

/// Length of `encode_blob(map)`.
pub fn blob_len(map: &XattrMap) -> usize {
    map.iter()
        .map(|(n, v)| XATTR_ENTRY_HEADER + n.len() + v.len())
        .sum()
}

/// Parses a blob; `None` if it is malformed.
pub fn decode_blob(blob: &[u8]) -> Option<XattrMap> {
    let mut map = XattrMap::new();
    let mut at = 0;
    while at < blob.len() {
        if at + XATTR_ENTRY_HEADER > blob.len() {
            return None;
        }
        let nlen = blob[at] as usize;
        let vlen = get_u32(blob, at + 1) as usize;
        let start = at + XATTR_ENTRY_HEADER;
        let end = start.checked_add(nlen)?.checked_add(vlen)?;
        if nlen == 0 || end > blob.len() {
            return None;
        }
        map.insert(
            blob[start..start + nlen].to_vec(),
            blob[start + nlen..end].to_vec(),
        );
        at = end;
    }
    Some(map)
}

/// Payload bytes per external xattr sector.
pub fn payload_per_sector(sector_size: u32) -> usize {
    sector_size as usize - 4
}

/// Sectors an external blob of `len` bytes takes.
pub fn external_sectors(len: usize, sector_size: u32) -> u64 {
    len.div_ceil(payload_per_sector(sector_size)) as u64
}

fn sector_crc(ino: u64, index: u64, payload: &[u8]) -> u32 {
    let mut seed = [0u8; 16];
    seed[..8].copy_from_slice(&ino.to_le_bytes());
    seed[8..].copy_from_slice(&index.to_le_bytes());
    crc32c::crc32c_append(crc32c::crc32c(&seed), payload)
}

/// Encodes `blob` as consecutive external sectors of inode `ino`.
pub fn encode_external(blob: &[u8], ino: u64, sector_size: u32) -> Vec<u8> {
    let ss = sector_size as usize;
    let per = payload_per_sector(sector_size);
    let n = external_sectors(blob.len(), sector_size) as usize;
    let mut out = vec![0u8; n * ss];
    for (i, chunk) in blob.chunks(per).enumerate() {
        let sector = &mut out[i * ss..(i + 1) * ss];
        sector[..chunk.len()].copy_from_slice(chunk);
        let crc = sector_crc(ino, i as u64, &sector[..per]);
        put_u32(sector, per, crc);
    }
    out
}

/// Decodes `len` blob bytes from external sectors; `None` on a bad crc.
pub fn decode_external(sectors: &[u8], len: usize, ino: u64, sector_size: u32) -> Option<Vec<u8>> {
    let ss = sector_size as usize;
    let per = payload_per_sector(sector_size);
    let mut blob = Vec::with_capacity(len);
    for (i, sector) in sectors.chunks(ss).enumerate() {
        if sector_crc(ino, i as u64, &sector[..per]) != get_u32(sector, per) {
            return None;
        }
        let take = (len - blob.len()).min(per);
        blob.extend_from_slice(&sector[..take]);
    }
    (blob.len() == len).then_some(blob)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_and_external_roundtrip() {
        let mut map = XattrMap::new();
        map.insert(b"user.a".to_vec(), vec![]);
        map.insert(b"user.big".to_vec(), vec![7u8; 3000]);
        let blob = encode_blob(&map);
        assert_eq!(blob.len(), blob_len(&map));
        assert_eq!(decode_blob(&blob), Some(map));
        let ext = encode_external(&blob, 9, 512);
        assert_eq!(ext.len(), 512 * 6);
        assert_eq!(
            decode_external(&ext, blob.len(), 9, 512),
            Some(blob.clone())
        );
        assert_eq!(decode_external(&ext, blob.len(), 10, 512), None);
    }
}
