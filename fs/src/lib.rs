//! File system (being written).
