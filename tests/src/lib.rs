//! The atomfs file-system crash-consistency suite (issue 4, DESIGN.md §3
//! and §5): ACE-style workloads ([`workload`]) run through the fs core on
//! a `LogDevice` over `SimMedia` ([`explore`]); every crash image is
//! recovered, checked by fsck and compared with an oracle run on
//! `MemDevice`. Through the real kernel, [`fuse_kill`] kills the FUSE
//! daemon during syscall workloads ([`syscalls`]) and checks the same
//! contract on the image it leaves; [`fuse_replay`] records the media
//! history of a FUSE run ([`trace`]) and checks every crash image of it.
//! See tests/README.md.

pub mod exec;
pub mod explore;
pub mod fuse_kill;
pub mod fuse_replay;
pub mod runner;
pub mod syscalls;
pub mod trace;
pub mod workload;
