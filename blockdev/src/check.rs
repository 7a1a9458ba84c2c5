//! `check`: read-only verification of a block layer for fsck.

use crate::media::Media;

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Worth knowing (e.g. where the log ends).
    Info,
    /// Redundancy lost but nothing is wrong with the data (e.g. one
    /// superblock copy damaged).
    Warning,
    /// The block layer is inconsistent or cannot be opened.
    Error,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub message: String,
}

/// What `check` found.
#[derive(Clone, Debug, Default)]
pub struct CheckReport {
    pub findings: Vec<Finding>,
    /// Extents and mapped sectors after recovery (0 if it failed).
    pub extents: u64,
    pub mapped_sectors: u64,
}

impl CheckReport {
    /// True when no finding is an error.
    pub fn is_clean(&self) -> bool {
        self.findings.iter().all(|f| f.severity < Severity::Error)
    }

    pub fn errors(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
    }

    fn push(&mut self, severity: Severity, message: impl Into<String>) {
        self.findings.push(Finding {
            severity,
            message: message.into(),
        });
    }
}

/// Verifies the block layer on `media` without writing to it: superblock
/// copies, checkpoints, the record chains, that no two logical sectors map
/// to one media sector, and that segment live counts match the map.
pub fn check<M: Media>(media: &M) -> CheckReport {
    let mut r = CheckReport::default();
    let m: &dyn Media = media;
    let (st, info) = match crate::recovery::load(m, true, None) {
        Ok(x) => x,
        Err(e) => {
            r.push(Severity::Error, e.to_string());
            return r;
        }
    };
    for n in &info.superblock_notes {
        r.push(Severity::Warning, n.clone());
    }
    for n in &info.slot_notes {
        r.push(Severity::Info, n.clone());
    }
    r.push(
        Severity::Info,
        format!(
            "checkpoint {} loaded; rolled forward {} user records ({}) and {} GC records ({})",
            info.ckpt_gen, info.user_records, info.user_end, info.gc_records, info.gc_end
        ),
    );
    if let Err(e) = st.map.verify() {
        r.push(Severity::Error, format!("extent map: {e}"));
    }
    let l = &st.l;
    let data_end = l.seg_start(l.segs);
    let mut phys: Vec<(u64, u64, u64)> = Vec::with_capacity(st.map.extents());
    let mut live = vec![0u64; l.segs as usize];
    for p in st.map.iter() {
        if p.loc < l.data_start || p.loc + p.len > data_end {
            r.push(
                Severity::Error,
                format!(
                    "logical {}+{} maps outside the data area (sector {})",
                    p.lba, p.len, p.loc
                ),
            );
            continue;
        }
        phys.push((p.loc, p.len, p.lba));
        l.for_each_seg(p.loc, p.len, |s, n| live[s as usize] += n);
    }
    phys.sort_unstable();
    for w in phys.windows(2) {
        if w[0].0 + w[0].1 > w[1].0 {
            r.push(
                Severity::Error,
                format!(
                    "logical sectors {} and {} both map to media sector {}",
                    w[0].2 + (w[1].0 - w[0].0),
                    w[1].2,
                    w[1].0
                ),
            );
        }
    }
    use crate::segments::SegState;
    for (s, si) in st.segs.info.iter().enumerate() {
        if u64::from(si.live) != live[s] {
            r.push(
                Severity::Error,
                format!(
                    "segment {s}: live count {} but the map holds {}",
                    si.live, live[s]
                ),
            );
        }
        if live[s] > 0
            && matches!(
                si.state,
                SegState::Free | SegState::Ckpt | SegState::Quarantine | SegState::Recycled
            )
        {
            r.push(
                Severity::Error,
                format!(
                    "segment {s} is {:?} but holds {} live sectors",
                    si.state, live[s]
                ),
            );
        }
    }
    r.extents = st.map.extents() as u64;
    r.mapped_sectors = st.map.mapped();
    r
}
