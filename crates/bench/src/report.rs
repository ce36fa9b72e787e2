//! Results: samples per row, and their JSON, Markdown and SVG renderings.

use std::fs;
use std::path::Path;

use anyhow::Result;

use crate::json::Json;
use crate::stats::{format_rate, format_ratio, format_secs, median, ratio};
use crate::svg::{self, ChartRow};
use crate::workloads::{Row, Timing};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Duvisor,
    Qemu,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Duvisor => "duvisor",
            Side::Qemu => "qemu",
        }
    }
}

/// One run of one side.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The measured time (see [`Timing`]); `None` when the run failed.
    pub secs: Option<f64>,
    /// Spawn to exit.
    pub total_secs: f64,
    /// Spawn to the guest's ready marker.
    pub ready_secs: Option<f64>,
    pub max_rss_kib: Option<u64>,
    pub status: Option<i32>,
    pub error: Option<String>,
    /// `TAG=value` results the guest printed.
    pub values: Vec<(String, String)>,
}

impl Sample {
    pub fn failed(error: String) -> Self {
        Sample {
            secs: None,
            total_secs: 0.0,
            ready_secs: None,
            max_rss_kib: None,
            status: None,
            error: Some(error),
            values: Vec::new(),
        }
    }

    pub fn describe(&self) -> String {
        match (self.secs, &self.error) {
            (Some(s), _) => format!(
                "{} (process {:.2} s, ready at {}, peak RSS {})",
                format_secs(s),
                self.total_secs,
                self.ready_secs
                    .map_or("-".to_string(), |r| format!("{r:.2} s")),
                fmt_rss(self.max_rss_kib)
            ),
            (None, Some(e)) => format!("FAILED: {e}"),
            (None, None) => "FAILED".into(),
        }
    }

    fn to_json(&self) -> Json {
        Json::obj([
            ("seconds", Json::opt_num(self.secs)),
            ("process_seconds", Json::Num(self.total_secs)),
            ("ready_seconds", Json::opt_num(self.ready_secs)),
            (
                "peak_rss_kib",
                Json::opt_num(self.max_rss_kib.map(|k| k as f64)),
            ),
            (
                "exit_status",
                self.status.map_or(Json::Null, |s| Json::Num(s.into())),
            ),
            ("error", Json::opt_str(self.error.as_deref())),
            (
                "values",
                Json::obj(self.values.iter().map(|(k, v)| (k.clone(), Json::str(v)))),
            ),
        ])
    }
}

pub fn fmt_rss(kib: Option<u64>) -> String {
    kib.map_or("-".into(), |k| format!("{:.0} MiB", k as f64 / 1024.0))
}

pub struct RowResult {
    pub row: Row,
    /// Why the row did not run (e.g. "n/a (no virtio-blk yet)").
    pub skipped: Option<String>,
    pub duvisor: Vec<Sample>,
    pub qemu: Vec<Sample>,
}

impl RowResult {
    pub fn new(row: Row) -> Self {
        RowResult {
            row,
            skipped: None,
            duvisor: Vec::new(),
            qemu: Vec::new(),
        }
    }

    pub fn push(&mut self, side: Side, s: Sample) {
        match side {
            Side::Duvisor => self.duvisor.push(s),
            Side::Qemu => self.qemu.push(s),
        }
    }

    fn samples(&self, side: Side) -> &[Sample] {
        match side {
            Side::Duvisor => &self.duvisor,
            Side::Qemu => &self.qemu,
        }
    }

    pub fn median(&self, side: Side) -> Option<f64> {
        let v: Vec<f64> = self.samples(side).iter().filter_map(|s| s.secs).collect();
        median(&v)
    }

    pub fn median_rss_kib(&self, side: Side) -> Option<u64> {
        let v: Vec<f64> = self
            .samples(side)
            .iter()
            .filter_map(|s| s.max_rss_kib.map(|k| k as f64))
            .collect();
        median(&v).map(|k| k as u64)
    }

    pub fn ratio(&self) -> Option<f64> {
        ratio(self.median(Side::Duvisor), self.median(Side::Qemu))
    }

    fn ok_count(&self, side: Side) -> usize {
        self.samples(side)
            .iter()
            .filter(|s| s.secs.is_some())
            .count()
    }

    /// Whether both sides printed the same check values (first successful run of each).
    pub fn agree(&self) -> Option<bool> {
        if self.row.check_tags.is_empty() {
            return None;
        }
        let first = |side| {
            self.samples(side)
                .iter()
                .find(|s| s.secs.is_some())
                .map(|s| {
                    self.row
                        .check_tags
                        .iter()
                        .map(|t| {
                            s.values
                                .iter()
                                .find(|(k, _)| k == t)
                                .map(|(_, v)| v.clone())
                        })
                        .collect::<Vec<_>>()
                })
        };
        let (a, b) = (first(Side::Duvisor)?, first(Side::Qemu)?);
        Some(a == b && a.iter().all(Option::is_some))
    }

    fn cell(&self, side: Side) -> String {
        if let Some(s) = &self.skipped {
            return s.clone();
        }
        match (self.median(side), self.row.bytes) {
            (Some(m), Some(b)) if m > 0.0 => format!("{} ({})", format_secs(m), format_rate(b, m)),
            (Some(m), _) => format_secs(m),
            (None, _) => "failed".into(),
        }
    }

    /// Median throughput of `side`, MiB/s, for rows that move a known amount of data.
    pub fn median_mib_per_s(&self, side: Side) -> Option<f64> {
        let b = self.row.bytes? as f64 / (1u64 << 20) as f64;
        self.median(side).filter(|&m| m > 0.0).map(|m| b / m)
    }
}

/// Everything recorded about the conditions of a run.
pub struct Meta {
    pub date: String,
    pub time_utc: String,
    pub cpu_model: String,
    pub cores: usize,
    pub ram_bytes: Option<u64>,
    pub host_kernel: String,
    pub load_start: Option<[f64; 3]>,
    pub load_end: Option<[f64; 3]>,
    pub commit: String,
    pub short_commit: String,
    pub dirty: bool,
    pub duvisor_bin: String,
    pub qemu_version: String,
    pub kernel_version: String,
    pub kernel: String,
    pub initrd: String,
    pub cmdline: String,
    pub memory: String,
    pub runs: usize,
    pub quick: bool,
    pub command: String,
    pub duvisor_stats: Option<String>,
}

pub const NOISE_NOTE: &str = "The host is shared (other builds may run on the same cores), so \
timings are noisy; the load average at the start and end of the run is recorded. Runs alternate \
duvisor/QEMU and each cell is the median.";

fn load_str(l: Option<[f64; 3]>) -> String {
    l.map_or("unknown".into(), |[a, b, c]| {
        format!("{a:.2} {b:.2} {c:.2}")
    })
}

/// A short paragraph on the conditions (machine, versions, load).
pub fn conditions(m: &Meta) -> String {
    format!(
        "{}; host: {} ({} cores, {} GiB RAM, {}); duvisor {}{}; {}; guest: Debian Linux {} + busybox initramfs, {} RAM; {} run(s) per side{}; load average at start {}, at end {}. {}",
        m.time_utc,
        m.cpu_model,
        m.cores,
        m.ram_bytes.map_or("?".into(), |b| format!("{:.1}", b as f64 / (1u64 << 30) as f64)),
        m.host_kernel,
        m.short_commit,
        if m.dirty { " (with uncommitted changes)" } else { "" },
        m.qemu_version,
        m.kernel_version,
        m.memory,
        m.runs,
        if m.quick { ", --quick sizes" } else { "" },
        load_str(m.load_start),
        load_str(m.load_end),
        NOISE_NOTE
    )
}

/// The Markdown results table.
pub fn table(rows: &[RowResult]) -> String {
    let mut s = String::from(
        "| row | vCPUs | duvisor (median) | QEMU (median) | duvisor/QEMU | peak RSS duvisor / QEMU | runs ok duvisor, QEMU |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for r in rows {
        let ratio = if r.skipped.is_some() {
            "n/a".to_string()
        } else {
            r.ratio().map_or("-".into(), format_ratio)
        };
        let timing = match r.row.timing {
            Timing::Process => " (process start to exit)",
            Timing::Markers => "",
        };
        let agree = match r.agree() {
            Some(true) => " ✓ same results",
            Some(false) => " ✗ results differ or missing",
            None => "",
        };
        s.push_str(&format!(
            "| {}{timing}{agree} | {} | {} | {} | {} | {} / {} | {}/{}, {}/{} |\n",
            r.row.label,
            r.row.cpus,
            r.cell(Side::Duvisor),
            r.cell(Side::Qemu),
            ratio,
            fmt_rss(r.median_rss_kib(Side::Duvisor)),
            fmt_rss(r.median_rss_kib(Side::Qemu)),
            r.ok_count(Side::Duvisor),
            r.duvisor.len(),
            r.ok_count(Side::Qemu),
            r.qemu.len(),
        ));
    }
    s
}

pub fn to_json(m: &Meta, rows: &[RowResult]) -> Json {
    let side = |r: &RowResult, s: Side| {
        Json::obj([
            ("median_seconds", Json::opt_num(r.median(s))),
            ("median_mib_per_s", Json::opt_num(r.median_mib_per_s(s))),
            (
                "median_peak_rss_kib",
                Json::opt_num(r.median_rss_kib(s).map(|k| k as f64)),
            ),
            (
                "samples",
                Json::Arr(r.samples(s).iter().map(Sample::to_json).collect()),
            ),
        ])
    };
    let rows_json = rows
        .iter()
        .map(|r| {
            Json::obj([
                ("id", Json::str(r.row.id.key())),
                ("label", Json::str(&r.row.label)),
                ("vcpus", Json::Num(r.row.cpus.into())),
                (
                    "timing",
                    Json::str(match r.row.timing {
                        Timing::Process => "process start to exit (host wall clock)",
                        Timing::Markers => "BSTART= to BEND= on the console (host wall clock)",
                    }),
                ),
                ("skipped", Json::opt_str(r.skipped.as_deref())),
                ("bytes", Json::opt_num(r.row.bytes.map(|b| b as f64))),
                ("script", Json::str(&r.row.script)),
                ("duvisor", side(r, Side::Duvisor)),
                ("qemu", side(r, Side::Qemu)),
                ("ratio_duvisor_over_qemu", Json::opt_num(r.ratio())),
                ("results_agree", r.agree().map_or(Json::Null, Json::Bool)),
            ])
        })
        .collect();
    let load = |l: Option<[f64; 3]>| {
        l.map_or(Json::Null, |a| {
            Json::Arr(a.iter().map(|x| Json::Num(*x)).collect())
        })
    };
    Json::obj([
        ("schema", Json::Num(1.0)),
        ("date", Json::str(&m.date)),
        ("time_utc", Json::str(&m.time_utc)),
        ("command", Json::str(&m.command)),
        (
            "machine",
            Json::obj([
                ("cpu_model", Json::str(&m.cpu_model)),
                ("cores", Json::Num(m.cores as f64)),
                ("ram_bytes", Json::opt_num(m.ram_bytes.map(|b| b as f64))),
                ("host_kernel", Json::str(&m.host_kernel)),
                ("loadavg_start", load(m.load_start)),
                ("loadavg_end", load(m.load_end)),
            ]),
        ),
        (
            "duvisor",
            Json::obj([
                ("commit", Json::str(&m.commit)),
                ("short_commit", Json::str(&m.short_commit)),
                ("uncommitted_changes", Json::Bool(m.dirty)),
                ("binary", Json::str(&m.duvisor_bin)),
            ]),
        ),
        ("qemu_version", Json::str(&m.qemu_version)),
        (
            "guest",
            Json::obj([
                ("kernel_version", Json::str(&m.kernel_version)),
                ("kernel", Json::str(&m.kernel)),
                ("initrd", Json::str(&m.initrd)),
                ("cmdline", Json::str(&m.cmdline)),
                ("memory", Json::str(&m.memory)),
            ]),
        ),
        ("runs_per_side", Json::Num(m.runs as f64)),
        ("quick", Json::Bool(m.quick)),
        ("noise_note", Json::str(NOISE_NOTE)),
        ("rows", Json::Arr(rows_json)),
        (
            "duvisor_stats_boot_1vcpu",
            Json::opt_str(m.duvisor_stats.as_deref()),
        ),
    ])
}

pub fn to_markdown(m: &Meta, rows: &[RowResult], svg_name: Option<&str>) -> String {
    let mut s = format!(
        "# duvisor vs QEMU — {} ({})\n\n{}\n\n{}\n",
        m.date,
        m.short_commit,
        conditions(m),
        table(rows)
    );
    if let Some(svg) = svg_name {
        s.push_str(&format!("\n![chart]({svg})\n"));
    }
    s.push_str(&format!("\nCommand: `{}`\n", m.command));
    if let Some(st) = &m.duvisor_stats {
        s.push_str(&format!(
            "\n`duvisor run --stats` for one 1-vCPU boot to the shell and power off:\n\n```text\n{st}\n```\n"
        ));
    }
    s
}

pub fn to_svg(m: &Meta, rows: &[RowResult]) -> String {
    let chart: Vec<ChartRow> = rows
        .iter()
        .map(|r| ChartRow {
            label: format!("{} [{}]", r.row.id.key(), shorten(&r.row.label, 40)),
            duvisor: r.median(Side::Duvisor),
            qemu: r.median(Side::Qemu),
            note: Some(r.skipped.clone().unwrap_or_else(|| "failed".into())),
        })
        .collect();
    let subtitle = vec![
        format!(
            "{}, duvisor {}{}, {}",
            m.time_utc,
            m.short_commit,
            if m.dirty { "+changes" } else { "" },
            m.qemu_version
        ),
        format!(
            "host {} ({} cores), guest Linux {}, median of {} run(s) per side",
            m.cpu_model, m.cores, m.kernel_version, m.runs
        ),
        format!(
            "load average at start {}, at end {} (shared host: noisy)",
            load_str(m.load_start),
            load_str(m.load_end)
        ),
    ];
    svg::render(
        "duvisor vs qemu-system-riscv64 -M virt (seconds, shorter is better)",
        &subtitle,
        &chart,
    )
}

fn shorten(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

pub const README_BEGIN: &str = "<!-- duvisor-bench: latest results begin -->";
pub const README_END: &str = "<!-- duvisor-bench: latest results end -->";

/// Replaces the text between the results markers of `readme` (appends the markers when absent).
pub fn splice_readme(readme: &str, section: &str) -> String {
    let block = format!("{README_BEGIN}\n{section}{README_END}");
    match (readme.find(README_BEGIN), readme.find(README_END)) {
        (Some(a), Some(b)) if a < b => {
            format!("{}{block}{}", &readme[..a], &readme[b + README_END.len()..])
        }
        _ => format!("{}\n## Latest results\n\n{block}\n", readme.trim_end()),
    }
}

pub fn update_readme(path: &Path, section: &str) -> Result<()> {
    let old = fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n".into());
    fs::write(path, splice_readme(&old, section))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workloads::{row, RowId, Sizes};

    fn sample(secs: f64) -> Sample {
        Sample {
            secs: Some(secs),
            total_secs: secs + 1.0,
            ready_secs: Some(0.5),
            max_rss_kib: Some(2048),
            status: Some(0),
            error: None,
            values: ["ARITH", "SHA", "GZ"]
                .map(|t| (t.to_string(), "1".to_string()))
                .to_vec(),
        }
    }

    #[test]
    fn medians_ratios_and_table() {
        let mut r = RowResult::new(row(RowId::Cpu, &Sizes::quick()));
        for (d, q) in [(3.0, 1.0), (5.0, 2.0), (4.0, 9.0)] {
            r.push(Side::Duvisor, sample(d));
            r.push(Side::Qemu, sample(q));
        }
        r.push(Side::Qemu, Sample::failed("x".into()));
        assert_eq!(r.median(Side::Duvisor), Some(4.0));
        assert_eq!(r.median(Side::Qemu), Some(2.0));
        assert_eq!(r.ratio(), Some(2.0));
        assert_eq!(r.ok_count(Side::Qemu), 3);
        assert_eq!(r.agree(), Some(true));
        let mut skipped = RowResult::new(row(RowId::Blk, &Sizes::quick()));
        skipped.skipped = Some("n/a (no virtio-blk yet)".into());
        let t = table(&[r, skipped]);
        assert!(
            t.contains("| 4.00 s | 2.00 s | 2.00× | 2 MiB / 2 MiB | 3/3, 3/4 |"),
            "{t}"
        );
        assert!(
            t.contains("n/a (no virtio-blk yet) | n/a (no virtio-blk yet) | n/a |"),
            "{t}"
        );
    }

    #[test]
    fn throughput_rows_show_mib_per_s() {
        let mut r = RowResult::new(row(RowId::TcpUp, &Sizes::full()));
        r.push(Side::Duvisor, sample(4.0));
        r.push(Side::Qemu, sample(2.0));
        assert_eq!(r.median_mib_per_s(Side::Duvisor), Some(16.0));
        assert_eq!(r.median_mib_per_s(Side::Qemu), Some(32.0));
        let t = table(&[r]);
        assert!(
            t.contains("| 4.00 s (16.0 MiB/s) | 2.00 s (32.0 MiB/s) | 2.00× |"),
            "{t}"
        );
        let cpu = RowResult::new(row(RowId::Cpu, &Sizes::full()));
        assert_eq!(cpu.median_mib_per_s(Side::Duvisor), None);
    }

    #[test]
    fn readme_splice() {
        let a = splice_readme("# B\n\ntext\n", "one\n");
        assert!(a.contains(&format!("{README_BEGIN}\none\n{README_END}")));
        let b = splice_readme(&a, "two\n");
        assert!(b.contains("two") && !b.contains("one"));
        assert!(b.starts_with("# B\n\ntext\n"));
        assert_eq!(b.matches(README_BEGIN).count(), 1);
    }
}
