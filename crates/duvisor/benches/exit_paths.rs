//! Exit-path micro-benchmark: `cargo bench -p duvisor --bench exit_paths [-- RUNS]`.
//!
//! Boots the guest of `tests/common/exit_paths.rs` (assembled with Debian's riscv64 binutils,
//! as the exit tests are) on the release `duvisor` binary, RUNS times (default 5), and prints
//! the median host nanoseconds per round trip of an SBI call, an MMIO read of an emulated
//! device register, a first-touch G-stage fault and an IPI between two vCPUs, with the
//! `--stats` line that shows the DV-driver was not called while the guest ran.

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;

use common::exit_paths::{self, exits, ExitPaths, MAX_FAULTS};

/// Round trips per path and run (first-touch faults: as many as the guest's RAM allows).
const N: u64 = 20_000;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5)
        .max(1);
    let mut all: Vec<ExitPaths> = Vec::new();
    let mut driver = String::new();
    for run in 1..=runs {
        let (f, o) = exit_paths::run(N, MAX_FAULTS);
        let Some(f) = f.filter(|_| o.code == Some(0)) else {
            eprintln!(
                "exit_paths: run {run} failed (status {:?}):\n{}\n{}",
                o.code, o.stdout, o.stderr
            );
            std::process::exit(1);
        };
        o.assert_no_emergency();
        driver = o
            .stats()
            .and_then(|s| s.lines().find(|l| l.starts_with("driver calls")))
            .unwrap_or("")
            .to_string();
        eprintln!(
            "run {run}/{runs}: SBI {:.0} ns, MMIO {:.0} ns, fault {:.0} ns, IPI {:.0} ns ({} SBI calls, {} MMIO reads, {} G-stage faults in all)",
            f.sbi_ns,
            f.mmio_ns,
            f.fault_ns,
            f.ipi_ns,
            exits(&o, "sbi call"),
            exits(&o, "mmio read"),
            exits(&o, "g-stage fault")
        );
        all.push(f);
    }
    let m = |get: fn(&ExitPaths) -> f64| median(all.iter().map(get).collect());
    let rows = [
        (
            format!("SBI call (sbi_get_spec_version), {N}x"),
            m(|f| f.sbi_ns),
        ),
        (
            format!("MMIO read (UART line status), {N}x"),
            m(|f| f.mmio_ns),
        ),
        (
            format!("first-touch G-stage fault (2 MiB), {MAX_FAULTS}x"),
            m(|f| f.fault_ns),
        ),
        (
            format!("IPI to hart 1, acknowledged in memory, {N}x"),
            m(|f| f.ipi_ns),
        ),
    ];
    println!("| exit path (median of {runs} runs) | host ns per round trip |");
    println!("| --- | ---: |");
    for (path, ns) in rows {
        println!("| {path} | {ns:.0} |");
    }
    println!("{driver}");
}
