//! The on-disk format (FORMAT.md documents it byte by byte).
//!
//! Shared by the file system, mkfs and fsck: everything that turns bytes
//! into structures and back lives here, with explicit little-endian
//! encoding and a crc32c on every metadata sector.

pub mod codec;
pub mod dirent;
pub mod hash;
pub mod inode;
pub mod layout;
pub mod orphan;
pub mod superblock;
pub mod xattr;

pub use dirent::{Bucket, BucketError, Entry, NAME_MAX};
pub use hash::{home_bucket, name_hash};
pub use inode::{inline_capacity, Inode, InodeError};
pub use layout::{Layout, MAX_FILE_SIZE, REGION_BYTES, ROOT_INO, XATTR_AREA_BYTES};
pub use superblock::{Superblock, SuperblockError, LABEL_MAX, VERSION};
pub use xattr::XattrMap;
