//! Output: a Markdown table, a JSON file with every raw figure, an SVG chart.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::sys::{ctx, Result};
use crate::{FsKind, Report, Row};

/// Bytes in binary units with three significant digits.
pub fn human(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else if v >= 100.0 {
        format!("{v:.0} {}", UNITS[u])
    } else if v >= 10.0 {
        format!("{v:.1} {}", UNITS[u])
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

/// A write amplification, or `n/a` when no file data was written.
pub fn fmt_wa(wa: Option<f64>) -> String {
    wa.map(|w| format!("{w:.2}"))
        .unwrap_or_else(|| "n/a".into())
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "—".into()
    }
}

/// The block-layer breakdown from the atomfs daemon's stats file: either
/// `{"device": {...}, "device_at_mount": {...}}` (the difference is taken)
/// or the counters at the top level. Keys in the order shown.
pub fn atomfs_breakdown(v: &serde_json::Value) -> Option<Vec<(&'static str, u64)>> {
    let dev = v.get("device").unwrap_or(v);
    let at_mount = v.get("device_at_mount");
    let get = |k: &str| -> Option<u64> {
        let now = dev.get(k)?.as_u64()?;
        let then = at_mount
            .and_then(|m| m.get(k))
            .and_then(|x| x.as_u64())
            .unwrap_or(0);
        Some(now.saturating_sub(then))
    };
    let fields = [
        ("submitted", "submitted_bytes"),
        ("payload", "media_payload_bytes"),
        ("headers", "media_header_bytes"),
        ("checkpoint", "media_checkpoint_bytes"),
        ("gc", "media_gc_bytes"),
        ("padding", "media_padding_bytes"),
        ("requests", "requests"),
        ("flushes", "flushes"),
        ("media_flushes", "media_flushes"),
    ];
    let mut out: Vec<(&'static str, u64)> = fields
        .iter()
        .filter_map(|(name, key)| get(key).map(|n| (*name, n)))
        .collect();
    if out.is_empty() {
        return None;
    }
    let total: u64 = out
        .iter()
        .filter(|(n, _)| matches!(*n, "payload" | "headers" | "checkpoint" | "gc" | "padding"))
        .map(|(_, b)| b)
        .sum();
    out.push(("media total", total));
    Some(out)
}

/// The Markdown report: parameters, main table, seq read-back, atomfs
/// breakdown, errors and skipped file systems.
pub fn markdown(r: &Report) -> String {
    let mut s = String::new();
    let c = &r.config;
    let _ = writeln!(
        s,
        "## atomfs-bench ({} mode)\n\nKernel {}; devices: loop over sparse image files in `{}`, \
         {} each ({} for aged), `--direct-io={}`; device bytes = sectors written × 512 \
         from `/sys/block/loopN/stat` between mount-after-setup and the end of unmount. Time = \
         workload syscalls + unmount (atomfs: until the daemon exited).\n",
        if c.quick { "quick" } else { "full" },
        r.kernel,
        c.work_dir.display(),
        human(c.device_size),
        human(c.aged_device_size),
        if c.direct_io { "on" } else { "off" },
    );
    let _ = writeln!(
        s,
        "| workload | fs | ops | app bytes | device bytes | WA | device B/op | time s | device vs ext4 | time vs ext4 | device vs best other |"
    );
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    // The FUSE floor stores nothing: it is in the speed tables only.
    for row in r
        .rows
        .iter()
        .filter(|x| x.error.is_none() && !x.fs.is_floor())
    {
        let ext4 = r
            .row(&row.workload, FsKind::Ext4)
            .filter(|e| e.error.is_none());
        let m = &row.result;
        let per_op = m
            .device
            .write_bytes
            .checked_div(m.ops)
            .map(|b| b.to_string());
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {:.2} | {} | {} | {} |",
            row.workload,
            row.fs,
            m.ops,
            human(m.app_bytes),
            human(m.device.write_bytes),
            fmt_wa(m.wa()),
            per_op.unwrap_or_else(|| "—".into()),
            m.secs(),
            ext4.map(|e| ratio(
                m.device.write_bytes as f64,
                e.result.device.write_bytes as f64
            ))
            .unwrap_or_else(|| "—".into()),
            ext4.map(|e| ratio(m.secs(), e.result.secs()))
                .unwrap_or_else(|| "—".into()),
            best_other(r, row)
                .map(|b| ratio(m.device.write_bytes as f64, b as f64))
                .unwrap_or_else(|| "—".into()),
        );
    }

    speed(r, &mut s);
    targets(r, &mut s);

    let reads: Vec<&Row> = r.rows.iter().filter(|x| x.read_back.is_some()).collect();
    if !reads.is_empty() {
        let _ = writeln!(
            s,
            "\n**seq read-back** (after remount and `drop_caches`)\n\n| fs | bytes | time s | MiB/s | MiB/s vs ext4 | device read | write MiB/s | write vs ext4 |\n|---|---:|---:|---:|---:|---:|---:|---:|"
        );
        // (read MiB/s, write MiB/s) of a row.
        let rates = |row: &Row| {
            let rb = row.read_back.as_ref()?;
            Some((
                rb.bytes as f64 / 1048576.0 / rb.secs.max(1e-9),
                row.result.app_bytes as f64 / 1048576.0 / row.result.secs().max(1e-9),
            ))
        };
        let ext4 = reads
            .iter()
            .find(|x| x.fs == FsKind::Ext4 && x.workload == "seq")
            .and_then(|x| rates(x));
        for row in reads {
            let rb = row.read_back.as_ref().expect("filtered");
            let (read, write) = rates(row).expect("filtered");
            let vs = |a: f64, e: Option<f64>| e.map_or_else(|| "—".into(), |e| ratio(a, e));
            let _ = writeln!(
                s,
                "| {} | {} | {:.2} | {:.0} | {} | {} | {:.0} | {} |",
                row.fs,
                human(rb.bytes),
                rb.secs,
                read,
                vs(read, ext4.map(|e| e.0)),
                human(rb.device_read_bytes),
                write,
                vs(write, ext4.map(|e| e.1)),
            );
        }
    }

    let aged: Vec<&Row> = r.rows.iter().filter(|x| x.whole.is_some()).collect();
    if !aged.is_empty() {
        let _ = writeln!(
            s,
            "\n**aged, whole overwrite phase** (the main table shows the second half)\n\n| workload | fs | capacity | filled | overwritten | app bytes | device bytes | WA | time s |\n|---|---|---:|---:|---:|---:|---:|---:|---:|"
        );
        for row in aged {
            let w = row.whole.as_ref().expect("filtered");
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {:.2}× capacity{} | {} | {} | {} | {:.2} |",
                row.workload,
                row.fs,
                human(row.capacity),
                human(row.setup_bytes),
                w.app_bytes as f64 / row.capacity.max(1) as f64,
                if row.time_capped { " (time cap)" } else { "" },
                human(w.app_bytes),
                human(w.device.write_bytes),
                fmt_wa(w.wa()),
                w.secs()
            );
        }
    }

    let atom: Vec<(&Row, Vec<(&str, u64)>)> = r
        .rows
        .iter()
        .filter_map(|x| Some((x, x.atomfs_stats.as_ref().and_then(atomfs_breakdown)?)))
        .collect();
    if r.rows
        .iter()
        .any(|x| x.fs == FsKind::Atomfs && x.error.is_none())
    {
        if atom.is_empty() {
            let _ = writeln!(
                s,
                "\n(atomfs breakdown unavailable: the daemon wrote no `-o stats_file=` report)"
            );
        } else {
            let _ = writeln!(
                s,
                "\n**atomfs block-layer breakdown** (daemon's own counters for the measured mount)\n\n| workload | submitted | payload | headers | checkpoint | GC | padding | media total | loop device | requests | flushes |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
            );
            for (row, b) in atom {
                let g = |k: &str| b.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
                let hb = |k: &str| g(k).map(human).unwrap_or_else(|| "—".into());
                let n = |k: &str| g(k).map(|v| v.to_string()).unwrap_or_else(|| "—".into());
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                    row.workload,
                    hb("submitted"),
                    hb("payload"),
                    hb("headers"),
                    hb("checkpoint"),
                    hb("gc"),
                    hb("padding"),
                    hb("media total"),
                    human(row.whole.as_ref().unwrap_or(&row.result).device.write_bytes),
                    n("requests"),
                    n("flushes"),
                );
            }
        }
    }

    let _ = writeln!(s, "\n**Workloads**\n");
    let mut seen = BTreeMap::new();
    for row in &r.rows {
        seen.entry(row.workload.clone())
            .or_insert_with(|| row.params.describe());
    }
    for (name, d) in seen {
        let _ = writeln!(s, "- `{name}`: {d}");
    }
    let _ = writeln!(s, "\n**File systems**\n");
    for k in &c.fs {
        let _ = writeln!(s, "- {k}: {}", k.describe());
    }
    for (k, why) in &r.skipped {
        let _ = writeln!(s, "- skipped {k}: {why}");
    }
    let errs: Vec<&Row> = r.rows.iter().filter(|x| x.error.is_some()).collect();
    if !errs.is_empty() {
        let _ = writeln!(s, "\n**Errors**\n");
        for row in errs {
            let _ = writeln!(
                s,
                "- {} on {}: {}",
                row.workload,
                row.fs,
                row.error.as_deref().unwrap_or("")
            );
        }
    }
    s
}

/// `n` per second over `secs`; `None` without a time to divide by.
pub fn per_sec(n: u64, secs: f64) -> Option<f64> {
    (secs > 0.0 && secs.is_finite()).then(|| n as f64 / secs)
}

/// ops/s of every row (time as in the main table: workload + unmount), and
/// as a ratio to ext4's (higher is faster).
fn speed(r: &Report, s: &mut String) {
    let rows: Vec<&Row> = r.rows.iter().filter(|x| x.error.is_none()).collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "\n**speed** (ops/s = ops / time s, time = workload + unmount; seq: one op = one \
         1 MiB write, so ops/s = MiB/s)\n"
    );
    if rows.iter().any(|x| x.fs.is_floor()) {
        let _ = writeln!(
            s,
            "fusefloor is the FUSE floor: an in-memory FUSE file system with atomfs's fuser \
             settings that stores nothing (fsync does nothing; at unmount it writes its tree \
             if it changed). Its rows are what the FUSE round trips alone cost here; it is left \
             out of every device-bytes table.\n"
        );
    }
    let _ = writeln!(
        s,
        "| workload | fs | ops | time s | of it unmount s | ops/s | ops/s vs ext4 |\n|---|---|---:|---:|---:|---:|---:|"
    );
    for row in rows {
        let m = &row.result;
        let ops = per_sec(m.ops, m.secs());
        let ext4 = r
            .row(&row.workload, FsKind::Ext4)
            .filter(|e| e.error.is_none())
            .and_then(|e| per_sec(e.result.ops, e.result.secs()));
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.2} | {:.2} | {} | {} |",
            row.workload,
            row.fs,
            m.ops,
            m.secs(),
            m.unmount_secs,
            ops.map(|v| format!("{v:.0}")).unwrap_or_else(|| "—".into()),
            ops.zip(ext4)
                .map(|(a, e)| ratio(a, e))
                .unwrap_or_else(|| "—".into()),
        );
    }
}

/// The fewest device bytes any other file system wrote on this workload
/// (not the FUSE floor's, which stores nothing).
fn best_other(r: &Report, row: &Row) -> Option<u64> {
    r.rows
        .iter()
        .filter(|x| {
            x.workload == row.workload && x.fs != row.fs && x.error.is_none() && !x.fs.is_floor()
        })
        .map(|x| x.result.device.write_bytes)
        .min()
}

/// atomfs's WA targets from issue 5.
pub const WA_TARGETS: [(&str, f64); 8] = [
    ("create_fsync", 1.5),
    ("append_fsync", 1.3),
    ("overwrite_fsync", 1.3),
    ("rename_replace", 2.5),
    ("small_files", 1.7),
    ("seq", 1.02),
    ("aged50", 1.6),
    ("aged70", 2.2),
];

/// Which of issue 5's targets atomfs met in this run.
fn targets(r: &Report, s: &mut String) {
    let rows: Vec<&Row> = r
        .rows
        .iter()
        .filter(|x| x.fs == FsKind::Atomfs && x.error.is_none())
        .collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "\n**atomfs targets (issue 5)**\n\n| workload | WA | target | met | device vs best kernel fs | < best (not required for aged) |\n|---|---:|---:|---|---:|---|"
    );
    for row in rows {
        let target = WA_TARGETS
            .iter()
            .find(|(w, _)| *w == row.workload)
            .map(|t| t.1);
        let wa = row.result.wa();
        let met = match (wa, target) {
            (Some(w), Some(t)) => {
                if w <= t {
                    "yes"
                } else {
                    "NO"
                }
            }
            _ => "—",
        };
        let best = best_other(r, row);
        let dev = row.result.device.write_bytes;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            row.workload,
            fmt_wa(wa),
            target
                .map(|t| format!("≤ {t}"))
                .unwrap_or_else(|| "—".into()),
            met,
            best.map(|b| ratio(dev as f64, b as f64))
                .unwrap_or_else(|| "—".into()),
            match best {
                Some(b) if dev < b => "yes",
                Some(_) if row.workload.starts_with("aged") => "no (exempt)",
                Some(_) => "NO",
                None => "—",
            }
        );
    }
}

/// Writes `bench.json`, `bench.md` and `bench-wa.svg` into `out`.
pub fn write_all(r: &Report, out: &Path) -> Result<()> {
    ctx(std::fs::create_dir_all(out), || {
        format!("mkdir {}", out.display())
    })?;
    let json = serde_json::to_string_pretty(r).map_err(|e| e.to_string())?;
    let p = out.join("bench.json");
    ctx(std::fs::write(&p, json + "\n"), || {
        format!("write {}", p.display())
    })?;
    let p = out.join("bench.md");
    ctx(std::fs::write(&p, markdown(r)), || {
        format!("write {}", p.display())
    })?;
    svg(r, &out.join("bench-wa.svg"))
}

/// Colours of the file systems in the chart.
fn colour(k: FsKind) -> plotters::style::RGBColor {
    use plotters::style::RGBColor;
    match k {
        FsKind::Atomfs => RGBColor(0xd6, 0x27, 0x28),
        FsKind::Ext4 => RGBColor(0x1f, 0x77, 0xb4),
        FsKind::Xfs => RGBColor(0x2c, 0xa0, 0x2c),
        FsKind::Btrfs => RGBColor(0xff, 0x7f, 0x0e),
        // Not charted (no device bytes); a colour for completeness.
        FsKind::FuseFloor => RGBColor(0x7f, 0x7f, 0x7f),
    }
}

/// Grouped bars of WA per workload per file system (log scale), SVG only.
/// Workloads without file data (WA undefined) are left out of the chart.
pub fn svg(r: &Report, path: &Path) -> Result<()> {
    use plotters::prelude::*;

    let mut workloads: Vec<String> = Vec::new();
    let mut kinds: Vec<FsKind> = Vec::new();
    for row in r
        .rows
        .iter()
        .filter(|x| x.error.is_none() && x.result.wa().is_some() && !x.fs.is_floor())
    {
        if !workloads.contains(&row.workload) {
            workloads.push(row.workload.clone());
        }
        if !kinds.contains(&row.fs) {
            kinds.push(row.fs);
        }
    }
    kinds.sort();
    let wa = |w: &str, k: FsKind| {
        r.row(w, k)
            .filter(|x| x.error.is_none())
            .and_then(|x| x.result.wa())
    };
    let max = workloads
        .iter()
        .flat_map(|w| kinds.iter().filter_map(|k| wa(w, *k)))
        .fold(1.0f64, f64::max);
    let ymin = 0.5f64;
    let ymax = (max * 1.5).max(2.0);
    let n = workloads.len().max(1);
    let width = (160 + 110 * n) as u32;
    let e = |e: DrawingAreaErrorKind<_>| format!("svg {}: {e:?}", path.display());

    let root = SVGBackend::new(path, (width, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "write amplification (device bytes / application bytes), log scale",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), (ymin..ymax).log_scale())
        .map_err(e)?;
    let names = workloads.clone();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_max_light_lines(0)
        .x_labels(n)
        .x_label_formatter(&|x: &f64| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 {
                names.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc("WA")
        .y_label_formatter(&|y: &f64| format!("{y}"))
        .draw()
        .map_err(e)?;
    let group = 0.8;
    let bw = group / kinds.len().max(1) as f64;
    for (ki, k) in kinds.iter().enumerate() {
        let col = colour(*k);
        let bars: Vec<Rectangle<(f64, f64)>> = workloads
            .iter()
            .enumerate()
            .filter_map(|(wi, w)| {
                let v = wa(w, *k)?;
                let x0 = wi as f64 - group / 2.0 + ki as f64 * bw;
                Some(Rectangle::new(
                    [(x0, ymin), (x0 + bw * 0.9, v.max(ymin))],
                    col.filled(),
                ))
            })
            .collect();
        chart
            .draw_series(bars)
            .map_err(e)?
            .label(k.name())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], col.filled()));
        // The value above each bar.
        let labels: Vec<Text<(f64, f64), String>> = workloads
            .iter()
            .enumerate()
            .filter_map(|(wi, w)| {
                let v = wa(w, *k)?;
                let x0 = wi as f64 - group / 2.0 + ki as f64 * bw;
                Some(Text::new(
                    if v >= 10.0 {
                        format!("{v:.0}")
                    } else {
                        format!("{v:.1}")
                    },
                    (x0, v.max(ymin) * 1.04),
                    ("sans-serif", 10).into_font(),
                ))
            })
            .collect();
        chart.draw_series(labels).map_err(e)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_sec_divides_and_refuses_no_time() {
        assert_eq!(per_sec(1000, 2.0), Some(500.0));
        assert_eq!(per_sec(0, 1.0), Some(0.0));
        assert_eq!(per_sec(10, 0.0), None);
        assert_eq!(per_sec(10, f64::NAN), None);
    }
}
