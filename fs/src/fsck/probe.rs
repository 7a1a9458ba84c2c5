//! Recognising what a device or image holds from its first bytes, before
//! anything opens it: used by mkfs (refuse to overwrite a file system
//! without `-F`) and by fsck and mount (the sector size an atomfs image was
//! formatted with, since an image file has no logical block size of its
//! own).
//!
//! Pure byte inspection: no I/O, no dependence on the block layer's code
//! (its superblock layout is documented in `blockdev/FORMAT.md`, which is
//! what this module reads).

/// Bytes a caller should read from offset 0 for [`identify`] to see every
/// signature it knows (the btrfs superblock magic ends at byte 65608).
pub const PROBE_BYTES: usize = 68 * 1024;

/// Magic of the atomfs block layer superblock (copies at bytes 0 and 4096).
const BLOCK_LAYER_MAGIC: &[u8; 8] = b"ATOMFSBL";
/// Byte offsets of the two block-layer superblock copies.
const BLOCK_LAYER_SB: [usize; 2] = [0, 4096];
/// The block-layer superblock carries a crc32c of bytes 0..508 at 508.
const BLOCK_LAYER_CRC_AT: usize = 508;
/// Offset of the block layer's `sector_size` field.
const BLOCK_LAYER_SS_AT: usize = 40;

/// What the first bytes of a device look like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signature {
    /// An atomfs block layer (its superblock magic `ATOMFSBL`).
    Atomfs {
        /// The sector size it was formatted with, when a copy's crc is valid.
        sector_size: Option<u32>,
    },
    /// Another file system, volume or partition table: `what` names it,
    /// `evidence` says which bytes matched (for the one-line refusal).
    Foreign {
        what: &'static str,
        evidence: String,
    },
}

impl Signature {
    /// One phrase for messages, e.g. "an ext2/3/4 file system (magic 0xEF53 at byte 1080)".
    pub fn describe(&self) -> String {
        match self {
            Signature::Atomfs { .. } => {
                "an atomfs file system (block-layer magic \"ATOMFSBL\")".to_string()
            }
            Signature::Foreign { what, evidence } => format!("{what} ({evidence})"),
        }
    }
}

fn at(buf: &[u8], off: usize, len: usize) -> Option<&[u8]> {
    buf.get(off..off.checked_add(len)?)
}

fn has(buf: &[u8], off: usize, magic: &[u8]) -> bool {
    at(buf, off, magic.len()) == Some(magic)
}

/// The sector size recorded by a valid atomfs block-layer superblock copy
/// in `head` (copy A at 0, else copy B at 4096); `None` if neither copy has
/// the magic and a valid crc.
pub fn block_layer_sector_size(head: &[u8]) -> Option<u32> {
    BLOCK_LAYER_SB.iter().find_map(|&off| {
        let sb = at(head, off, 512)?;
        if &sb[..8] != BLOCK_LAYER_MAGIC {
            return None;
        }
        let stored = u32::from_le_bytes(sb[BLOCK_LAYER_CRC_AT..512].try_into().ok()?);
        if crc32c::crc32c(&sb[..BLOCK_LAYER_CRC_AT]) != stored {
            return None;
        }
        let ss = u32::from_le_bytes(
            sb[BLOCK_LAYER_SS_AT..BLOCK_LAYER_SS_AT + 4]
                .try_into()
                .ok()?,
        );
        matches!(ss, 512 | 4096).then_some(ss)
    })
}

/// Identifies the first signature found in `head` (the first
/// [`PROBE_BYTES`] of the device, or all of it if shorter); `None` when
/// nothing known is there (for instance zeros). File systems are checked
/// before partition tables, because a FAT boot sector also carries the MBR
/// marker 0x55AA.
pub fn identify(head: &[u8]) -> Option<Signature> {
    if BLOCK_LAYER_SB
        .iter()
        .any(|&off| has(head, off, BLOCK_LAYER_MAGIC))
    {
        return Some(Signature::Atomfs {
            sector_size: block_layer_sector_size(head),
        });
    }
    let foreign =
        |what: &'static str, evidence: String| Some(Signature::Foreign { what, evidence });
    if has(head, 1080, &[0x53, 0xEF]) {
        return foreign(
            "an ext2/3/4 file system",
            "magic 0xEF53 at byte 1080".into(),
        );
    }
    if has(head, 0, b"XFSB") {
        return foreign("an XFS file system", "magic \"XFSB\" at byte 0".into());
    }
    if has(head, 65600, b"_BHRfS_M") {
        return foreign(
            "a btrfs file system",
            "magic \"_BHRfS_M\" at byte 65600".into(),
        );
    }
    if has(head, 0, b"LUKS\xba\xbe") || has(head, 0, b"SKUL\xba\xbe") {
        return foreign("a LUKS encrypted volume", "magic \"LUKS\" at byte 0".into());
    }
    // Swap: the magic ends the first page, whatever the page size was.
    for page in [4096usize, 8192, 16384, 65536] {
        for magic in [&b"SWAPSPACE2"[..], &b"SWAP-SPACE"[..]] {
            if has(head, page - 10, magic) {
                return foreign(
                    "a swap area",
                    format!(
                        "magic \"{}\" at byte {}",
                        String::from_utf8_lossy(magic),
                        page - 10
                    ),
                );
            }
        }
    }
    if has(head, 32769, b"CD001") {
        return foreign(
            "an ISO 9660 file system",
            "magic \"CD001\" at byte 32769".into(),
        );
    }
    if has(head, 1024, &0xF2F5_2010u32.to_le_bytes()) {
        return foreign(
            "an F2FS file system",
            "magic 0xF2F52010 at byte 1024".into(),
        );
    }
    if has(head, 0, b"hsqs") {
        return foreign("a squashfs image", "magic \"hsqs\" at byte 0".into());
    }
    if has(head, 3, b"NTFS    ") {
        return foreign("an NTFS file system", "\"NTFS\" at byte 3".into());
    }
    if has(head, 82, b"FAT32   ") || has(head, 54, b"FAT16   ") || has(head, 54, b"FAT12   ") {
        return foreign("a FAT file system", "FAT boot sector".into());
    }
    if has(head, 512, b"LABELONE") {
        return foreign("an LVM physical volume", "\"LABELONE\" at byte 512".into());
    }
    for off in [512usize, 4096] {
        if has(head, off, b"EFI PART") {
            return foreign(
                "a GPT partition table",
                format!("\"EFI PART\" at byte {off}"),
            );
        }
    }
    if has(head, 510, &[0x55, 0xAA]) {
        return foreign(
            "an MBR partition table or boot sector",
            "0x55AA at byte 510".into(),
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blank() -> Vec<u8> {
        vec![0u8; PROBE_BYTES]
    }

    #[test]
    fn zeros_and_short_buffers_are_nothing() {
        assert_eq!(identify(&blank()), None);
        assert_eq!(identify(&[]), None);
        assert_eq!(identify(&[0x55; 100]), None);
    }

    #[test]
    fn recognises_foreign_signatures() {
        let cases: [(usize, &[u8], &str); 7] = [
            (1080, &[0x53, 0xEF], "ext2/3/4"),
            (0, b"XFSB", "XFS"),
            (65600, b"_BHRfS_M", "btrfs"),
            (4086, b"SWAPSPACE2", "swap"),
            (0, b"LUKS\xba\xbe", "LUKS"),
            (32769, b"CD001", "ISO 9660"),
            (512, b"EFI PART", "GPT"),
        ];
        for (off, magic, name) in cases {
            let mut b = blank();
            b[off..off + magic.len()].copy_from_slice(magic);
            let sig = identify(&b).unwrap();
            assert!(sig.describe().contains(name), "{name}: {}", sig.describe());
        }
        let mut b = blank();
        b[510] = 0x55;
        b[511] = 0xAA;
        assert!(identify(&b).unwrap().describe().contains("MBR"));
    }

    #[test]
    fn atomfs_block_layer_and_its_sector_size() {
        let mut b = blank();
        b[4096..4104].copy_from_slice(b"ATOMFSBL");
        b[4096 + 40..4096 + 44].copy_from_slice(&4096u32.to_le_bytes());
        // No valid crc yet: recognised, sector size unknown.
        assert_eq!(identify(&b), Some(Signature::Atomfs { sector_size: None }));
        let crc = crc32c::crc32c(&b[4096..4096 + 508]);
        b[4096 + 508..4096 + 512].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(block_layer_sector_size(&b), Some(4096));
        assert_eq!(
            identify(&b),
            Some(Signature::Atomfs {
                sector_size: Some(4096)
            })
        );
    }
}
