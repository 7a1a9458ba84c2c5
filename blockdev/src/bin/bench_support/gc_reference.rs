//! An idealised greedy cleaner, the yardstick for the GC rows: the same
//! number of segments and blocks per segment as the device under test, no
//! headers, no checkpoints, and it cleans the emptiest segment only when
//! fewer than `reserve` segments are free. With `reserve` = 1 this is the
//! textbook greedy figure the targets quote; with the device's own fixed
//! reserves it says how much of the gap is policy and how much is space the
//! layer must hold back.

/// Steady-state (user + copied) / user blocks after `warm_passes` then
/// `measure_passes` overwrites of every live block, picked by `pick`.
pub fn greedy_wa(
    segments: usize,
    blocks_per_segment: usize,
    fill: f64,
    reserve: usize,
    hot: Option<(f64, f64)>,
    (warm_passes, measure_passes): (u64, u64),
) -> f64 {
    let live = ((segments * blocks_per_segment) as f64 * fill) as usize;
    let mut sim = Sim {
        loc: vec![usize::MAX; live],
        count: vec![0; segments],
        members: vec![Vec::new(); segments],
        free: (1..segments).collect(),
        is_free: (0..segments).map(|s| s != 0).collect(),
        open: 0,
        used: 0,
        blocks_per_segment,
    };
    for b in 0..live {
        sim.append(b);
    }
    let hot_blocks = hot.map_or(0, |(_, share)| ((live as f64 * share) as usize).max(1));
    let mut rng = super::Rng(0x9e37_79b9_7f4a_7c15);
    let mut below = |n: usize| rng.below(n as u64) as usize;
    let (mut user, mut copied) = (0u64, 0u64);
    for i in 0..(warm_passes + measure_passes) * live as u64 {
        if i == warm_passes * live as u64 {
            (user, copied) = (0, 0);
        }
        let b = match hot {
            None => below(live),
            Some((writes, _)) if (below(1_000_000) as f64) < writes * 1e6 => below(hot_blocks),
            Some(_) => hot_blocks + below(live - hot_blocks),
        };
        sim.append(b);
        user += 1;
        while sim.free.len() < reserve {
            copied += sim.clean_emptiest();
        }
    }
    (user + copied) as f64 / user as f64
}

struct Sim {
    /// Segment of each live block.
    loc: Vec<usize>,
    /// Live blocks per segment.
    count: Vec<usize>,
    /// Blocks ever appended to each segment since it was opened (some dead).
    members: Vec<Vec<usize>>,
    free: std::collections::VecDeque<usize>,
    is_free: Vec<bool>,
    open: usize,
    used: usize,
    blocks_per_segment: usize,
}

impl Sim {
    fn append(&mut self, b: usize) {
        if self.used == self.blocks_per_segment {
            self.open = self
                .free
                .pop_front()
                .expect("greedy reference ran out of space");
            self.is_free[self.open] = false;
            self.members[self.open].clear();
            self.used = 0;
        }
        if let Some(old) = self.count.get_mut(self.loc[b]) {
            *old -= 1;
        }
        self.loc[b] = self.open;
        self.count[self.open] += 1;
        self.members[self.open].push(b);
        self.used += 1;
    }

    /// Copies the live blocks of the emptiest sealed segment forward and
    /// frees it; returns the blocks copied.
    fn clean_emptiest(&mut self) -> u64 {
        let victim = (0..self.count.len())
            .filter(|&s| s != self.open && !self.is_free[s])
            .min_by_key(|&s| self.count[s])
            .expect("greedy reference has no sealed segment");
        let live: Vec<usize> = std::mem::take(&mut self.members[victim])
            .into_iter()
            .filter(|&b| self.loc[b] == victim)
            .collect();
        for &b in &live {
            self.append(b);
        }
        debug_assert_eq!(self.count[victim], 0);
        self.is_free[victim] = true;
        self.free.push_back(victim);
        live.len() as u64
    }
}
