//! The file-system crash explorer (issue 4); being written.
