//! Inode number allocation without a bitmap.
//!
//! At mount the inode table is walked with `next_mapped` (a mapped inode
//! sector is an inode in use); numbers below the highest in use that are
//! unmapped go into a free set, everything above is free. Allocation takes
//! the smallest free number, so the table stays dense.
//!
//! A freed number is reused at once. A caller that names inodes by number
//! beyond the core (the FUSE kernel) keeps it out of reach until it forgets
//! the inode: the core does not give a number back to the allocator while
//! entries for it are held (`MountOptions::hold_lookups`, `Fs::forget`).

use std::collections::BTreeSet;

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
    /// failed).
    pub fn release(&mut self, ino: u64) {
        self.used -= 1;
        self.give_back(ino);
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

    /// A freed number is the smallest free again (and folded into `next`
    /// at the top).
    #[test]
    fn freed_numbers_come_back() {
        let mut a = InoAlloc::from_used(&[1], 100);
        let got: Vec<u64> = (0..4).map(|_| a.allocate().unwrap()).collect();
        assert_eq!(got, [2, 3, 4, 5]);
        a.release(3);
        assert_eq!(a.allocate(), Some(3));
        a.release(5);
        a.release(4);
        assert_eq!(a.allocate(), Some(4));
        assert_eq!(a.used(), 4);
    }
}
