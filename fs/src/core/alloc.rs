//! Inode number allocation without a bitmap.
//!
//! At mount the inode table is walked with `next_mapped` (a mapped inode
//! sector is an inode in use); numbers below the highest in use that are
//! unmapped go into a free set, everything above is free. Allocation takes
//! the smallest free number, so the table stays dense.
//!
//! A freed number rests for [`REST`] further frees before it can be taken
//! again. Why: FUSE names inodes by number, and a LOOKUP reply for the old
//! inode that the kernel processes after the number was reused for a new
//! one makes the kernel mark the *new* inode bad (stale generation), so its
//! users get EIO (seen with four processes renaming and unlinking over 160
//! shared names). The principled fix, not done, is to keep a number until
//! the kernel's FORGET; resting it closes the window in practice.

use std::collections::{BTreeSet, VecDeque};

/// Frees a number waits before it is reused.
const REST: usize = 1024;

/// The allocator.
#[derive(Clone, Debug, Default)]
pub(crate) struct InoAlloc {
    /// Free numbers below `next`.
    free: BTreeSet<u64>,
    /// Every number >= next is free.
    next: u64,
    /// Largest valid number.
    max: u64,
    /// Numbers in use.
    used: u64,
    /// Freed numbers not yet back in `free`, oldest first.
    resting: VecDeque<u64>,
}

impl InoAlloc {
    /// From the sorted list of numbers in use.
    pub fn from_used(used: &[u64], max: u64) -> InoAlloc {
        let mut free = BTreeSet::new();
        let mut expect = 1;
        for &ino in used {
            free.extend(expect..ino);
            expect = ino + 1;
        }
        InoAlloc {
            free,
            next: expect,
            max,
            used: used.len() as u64,
            resting: VecDeque::new(),
        }
    }

    /// Takes the smallest free number.
    pub fn allocate(&mut self) -> Option<u64> {
        let ino = match self.free.pop_first() {
            Some(ino) => ino,
            None if self.next <= self.max => {
                self.next += 1;
                self.next - 1
            }
            None => return None,
        };
        self.used += 1;
        Some(ino)
    }

    /// Returns a number (freed inode, or an allocation whose request
    /// failed): it rests first (see the module documentation).
    pub fn release(&mut self, ino: u64) {
        self.used -= 1;
        self.resting.push_back(ino);
        if self.resting.len() > REST {
            let back = self.resting.pop_front().expect("more than REST resting");
            self.give_back(back);
        }
    }

    fn give_back(&mut self, ino: u64) {
        if ino + 1 == self.next {
            self.next -= 1;
            // Fold free numbers at the top back into `next`.
            while self.next > 1 && self.free.remove(&(self.next - 1)) {
                self.next -= 1;
            }
        } else {
            self.free.insert(ino);
        }
    }

    pub fn used(&self) -> u64 {
        self.used
    }

    pub fn max(&self) -> u64 {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_smallest() {
        let mut a = InoAlloc::from_used(&[1, 2, 5], 10);
        assert_eq!(a.used(), 3);
        assert_eq!(a.allocate(), Some(3));
        assert_eq!(a.allocate(), Some(4));
        assert_eq!(a.allocate(), Some(6));
        let mut b = InoAlloc::from_used(&[1], 2);
        assert_eq!(b.allocate(), Some(2));
        assert_eq!(b.allocate(), None);
    }

    /// A freed number comes back only after REST more frees, then as the
    /// smallest again (and folded into `next` at the top).
    #[test]
    fn freed_numbers_rest_before_reuse() {
        let mut a = InoAlloc::from_used(&[1], u64::MAX);
        let first: Vec<u64> = (0..REST as u64 + 2)
            .map(|_| a.allocate().unwrap())
            .collect();
        a.release(first[0]);
        assert_eq!(
            a.allocate(),
            Some(first.last().unwrap() + 1),
            "reused at once"
        );
        for &ino in &first[1..=REST] {
            a.release(ino);
        }
        // first[0] has rested REST frees: it is the smallest free again.
        assert_eq!(a.allocate(), Some(first[0]));
        // 1, first[REST + 1], the one taken after the first free, first[0].
        assert_eq!(a.used(), 4);
    }
}
