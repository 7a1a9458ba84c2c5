//! The atomfs file-system crash-consistency suite (issue 4, DESIGN.md §3
//! and §5): ACE-style workloads ([`workload`]) run through the fs core on
//! a `LogDevice` over `SimMedia` ([`explore`]); every crash image is
//! recovered, checked by fsck and compared with an oracle run on
//! `MemDevice`. See tests/README.md.

pub mod exec;
pub mod explore;
pub mod runner;
pub mod workload;
