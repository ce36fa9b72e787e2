//! `duvisor-bench`: duvisor against `qemu-system-riscv64 -M virt` on the same Debian kernel and
//! initramfs.
//!
//! ```sh
//! cargo run --release -p duvisor-bench -- [--runs N] [--rows boot1,boot4,cpu,fork,smp,blk,blkrd,blkwr,tcpup,tcpdown] [--quick]
//! ```
//!
//! Runs alternate (duvisor, QEMU, duvisor, QEMU, …) so slow drifts in host load hit both
//! sides alike; each row reports the median of its runs. Results go to
//! `bench/results/<date>-<short-commit>.{json,md,svg}` and the latest table to `bench/README.md`.

mod host;
mod json;
mod net;
mod report;
mod stats;
mod svg;
mod workloads;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use duvisor::guest_console::{self, ConsoleOptions, ConsoleRun};
use guest_fetch::{GuestFiles, READY_MARKERS};

use report::{Meta, RowResult, Sample, Side};
use workloads::{RowId, Sizes, Timing, ALL_ROWS};

#[derive(Debug, Parser)]
#[command(
    name = "duvisor-bench",
    about = "Benchmark duvisor against qemu-system-riscv64 -M virt on the same Debian guest"
)]
struct Args {
    /// Runs of each side per row (default 3, or 1 with --quick).
    #[arg(long)]
    runs: Option<usize>,
    /// Rows to run, comma-separated: boot1,boot4,cpu,fork,smp,blk,blkrd,blkwr,tcpup,tcpdown
    /// (default: all).
    #[arg(long, value_parser = parse_rows_arg)]
    rows: Option<RowList>,
    /// Small workloads and one run each: a smoke test of the harness, not a measurement.
    #[arg(long)]
    quick: bool,
    /// Use this duvisor binary instead of building one.
    #[arg(long)]
    duvisor: Option<PathBuf>,
    /// Do not run `cargo build --release -p duvisor`; use the existing release binary.
    #[arg(long)]
    no_build: bool,
    /// Guest RAM for both sides.
    #[arg(long, default_value = "512M")]
    memory: String,
    /// Per-run timeout in seconds.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
    /// Where results are written (default: <workspace>/bench/results).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Do not rewrite the results section of bench/README.md.
    #[arg(long)]
    no_readme: bool,
    /// Skip the extra duvisor boot with --stats whose report is stored with the results.
    #[arg(long)]
    no_stats: bool,
}

/// `--rows` as one value (a bare `Vec` would make clap expect the option repeated).
#[derive(Debug, Clone, PartialEq, Eq)]
struct RowList(Vec<RowId>);

fn parse_rows_arg(s: &str) -> Result<RowList, String> {
    workloads::parse_rows(s).map(RowList)
}

fn workspace_root() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    p.canonicalize().unwrap_or(p)
}

/// Where `cargo build` in the workspace puts its output, stated explicitly:
/// 1. `$CARGO_TARGET_DIR` when set (a relative path is taken from the workspace root, where
///    we run cargo);
/// 2. else what `cargo metadata` reports (covers `build.target-dir` in a cargo config);
/// 3. else `<workspace>/target`.
fn target_dir(root: &Path, cargo: &str) -> PathBuf {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        return root.join(d);
    }
    let meta = host::command_output(Command::new(cargo).current_dir(root).args([
        "metadata",
        "--format-version",
        "1",
        "--no-deps",
        "--offline",
    ]));
    meta.as_deref()
        .and_then(json_string_field("target_directory"))
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

/// Extracts a top-level string field from `cargo metadata` output (paths only: handles `\\`
/// and `\"` escapes).
fn json_string_field(key: &str) -> impl Fn(&str) -> Option<String> + '_ {
    move |text: &str| {
        let pat = format!("\"{key}\":\"");
        let start = text.rfind(&pat)? + pat.len();
        let mut out = String::new();
        let mut chars = text[start..].chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => return Some(out),
                '\\' => out.push(chars.next()?),
                c => out.push(c),
            }
        }
        None
    }
}

/// The duvisor binary to benchmark: given, or built in release in the workspace.
fn duvisor_binary(args: &Args, root: &Path) -> Result<PathBuf> {
    if let Some(p) = &args.duvisor {
        if !p.is_file() {
            bail!("--duvisor {}: no such file", p.display());
        }
        return Ok(p.clone());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = target_dir(root, &cargo);
    let bin = target.join("release").join("duvisor");
    if !args.no_build {
        eprintln!(
            "duvisor-bench: cargo build --release -p duvisor (target dir {})",
            target.display()
        );
        let st = Command::new(&cargo)
            .current_dir(root)
            .args(["build", "--release", "-p", "duvisor"])
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .with_context(|| format!("running {cargo}"))?;
        if !st.success() {
            bail!("cargo build --release -p duvisor failed ({st})");
        }
    }
    if !bin.is_file() {
        bail!(
            "{} does not exist: build it with `cargo build --release -p duvisor` \
             (or pass --duvisor PATH)",
            bin.display()
        );
    }
    Ok(bin)
}

/// How this duvisor takes a virtio-blk disk, if it does (`run --help` lists `--disk`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DiskSyntax {
    /// `--disk path=FILE[,readonly]`
    KeyValue,
    /// `--disk FILE`
    Bare,
}

fn disk_syntax(bin: &Path) -> Option<DiskSyntax> {
    let help = host::command_output(Command::new(bin).args(["run", "--help"]))?;
    let line = help.lines().find(|l| l.contains("--disk"))?;
    Some(if line.contains("path=") {
        DiskSyntax::KeyValue
    } else {
        DiskSyntax::Bare
    })
}

/// A file of `mib` MiB of random bytes.
fn make_disk_image(path: &Path, mib: u32) -> Result<()> {
    let mut rnd = fs::File::open("/dev/urandom")?;
    let mut data = vec![0u8; (mib as usize) << 20];
    rnd.read_exact(&mut data)?;
    fs::write(path, &data).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Whether this duvisor has `--net passt` (`run --help` says so).
fn has_net_passt(bin: &Path) -> bool {
    host::command_output(Command::new(bin).args(["run", "--help"])).is_some_and(|h| {
        h.lines()
            .any(|l| l.contains("--net") && l.contains("passt"))
    })
}

struct Bench<'a> {
    duvisor: &'a Path,
    guest: &'a GuestFiles,
    memory: &'a str,
    timeout: Duration,
    disk: Option<PathBuf>,
    disk_syntax: Option<DiskSyntax>,
    /// The network rows' namespace (made for the first of them).
    netns: Option<net::Netns>,
    scratch: PathBuf,
}

impl Bench<'_> {
    fn command(&self, side: Side, cpus: u32, disk: bool, extra: &[&str]) -> Command {
        let disk = self.disk.as_ref().filter(|_| disk);
        match side {
            Side::Duvisor => {
                let mut c = guest_console::duvisor_command(
                    self.duvisor,
                    &self.guest.kernel,
                    &self.guest.initrd,
                    cpus,
                    self.memory,
                    extra,
                );
                if let Some(d) = disk {
                    c.arg("--disk");
                    match self.disk_syntax {
                        Some(DiskSyntax::KeyValue) => c.arg(format!("path={}", d.display())),
                        _ => c.arg(d),
                    };
                }
                c
            }
            Side::Qemu => {
                let mut c = guest_console::qemu_command(
                    &self.guest.kernel,
                    &self.guest.initrd,
                    cpus,
                    self.memory,
                    extra,
                );
                if let Some(d) = disk {
                    c.arg("-drive")
                        .arg(format!("file={},format=raw,if=none,id=d0", d.display()))
                        .args(["-device", "virtio-blk-device,drive=d0"]);
                }
                c
            }
        }
    }

    fn run(&self, row: &workloads::Row, side: Side) -> Sample {
        let opts = ConsoleOptions::new(&row.script, self.timeout, READY_MARKERS)
            .watch(workloads::START)
            .watch(workloads::END);
        if let Some(dir) = row.net {
            return self.run_net(row, side, dir, &opts);
        }
        let cmd = self.command(side, row.cpus, row.disk_mib.is_some(), &[]);
        match guest_console::run_console(cmd, &opts) {
            Ok(r) => sample_of(row, &r),
            Err(e) => Sample::failed(format!("cannot start: {e}")),
        }
    }

    /// A network row: the VM runs in the namespace with passt, the peer serves one transfer,
    /// and the run counts only if the peer moved every byte.
    fn run_net(
        &self,
        row: &workloads::Row,
        side: Side,
        dir: workloads::NetDir,
        opts: &ConsoleOptions,
    ) -> Sample {
        let Some(ns) = &self.netns else {
            return Sample::failed("no network namespace".into());
        };
        let want = row.bytes.unwrap_or(0);
        let peer = match net::Peer::start(ns, dir, want, self.timeout) {
            Ok(p) => p,
            Err(e) => return Sample::failed(format!("peer: {e}")),
        };
        let (cmd, passt) = match side {
            Side::Duvisor => (
                self.command(side, row.cpus, false, &["--net", "passt"]),
                None,
            ),
            Side::Qemu => match net::QemuPasst::start(ns, &self.scratch) {
                Ok(p) => {
                    let args = p.qemu_args();
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    (self.command(side, row.cpus, false, &args), Some(p))
                }
                Err(e) => {
                    let _ = peer.finish();
                    return Sample::failed(format!("starting passt for QEMU: {e}"));
                }
            },
        };
        let r = guest_console::run_console(ns.wrap(&cmd), opts);
        drop(passt);
        let report = peer.finish();
        let mut s = match r {
            Ok(r) => sample_of(row, &r),
            Err(e) => Sample::failed(format!("cannot start: {e}")),
        };
        let problem = match report {
            Ok(p) => {
                s.values.push((
                    "PEER".into(),
                    format!(
                        "{} bytes in {:.3} s ({:.1} MiB/s, host side)",
                        p.bytes,
                        p.secs,
                        p.bytes as f64 / (1u64 << 20) as f64 / p.secs.max(1e-9)
                    ),
                ));
                (p.bytes != want).then(|| format!("the peer moved {} bytes, not {want}", p.bytes))
            }
            Err(e) => Some(format!("peer: {e}")),
        };
        if let (Some(p), None) = (problem, &s.error) {
            s.error = Some(p);
            s.secs = None;
        }
        s
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn sample_of(row: &workloads::Row, r: &ConsoleRun) -> Sample {
    let mut error = None;
    if r.timed_out {
        error = Some(format!("timed out after {:.0} s", r.elapsed.as_secs_f64()));
    } else if r.status != Some(0) {
        error = Some(format!("exit status {:?}", r.status));
    }
    let secs = match row.timing {
        Timing::Process => r.elapsed.as_secs_f64(),
        Timing::Markers => match r.between(workloads::START, workloads::END) {
            Some(d) => d.as_secs_f64(),
            None => {
                error.get_or_insert_with(|| "start/end markers not seen".into());
                f64::NAN
            }
        },
    };
    let mut values: Vec<(String, String)> = Vec::new();
    for tag in row
        .check_tags
        .iter()
        .copied()
        .chain(["FORKS", "BLK", "DD", "NET"])
    {
        if let Some(v) = r.value(tag) {
            values.push((tag.to_string(), v));
        }
    }
    if let Some(e) = &mut error {
        e.push_str(&format!(
            "; console tail: {}; stderr tail: {}",
            tail(&r.output, 8),
            tail(&r.stderr, 4)
        ));
    }
    Sample {
        secs: error.is_none().then_some(secs),
        total_secs: r.elapsed.as_secs_f64(),
        ready_secs: r.ready_at.map(|d| d.as_secs_f64()),
        max_rss_kib: r.max_rss_kib,
        status: r.status,
        error,
        values,
    }
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("duvisor-bench: error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let args = Args::parse();
    let root = workspace_root();
    let runs = args.runs.unwrap_or(if args.quick { 1 } else { 3 }).max(1);
    let row_ids = args.rows.clone().map_or_else(|| ALL_ROWS.to_vec(), |r| r.0);
    let sizes = if args.quick {
        Sizes::quick()
    } else {
        Sizes::full()
    };

    let bin = duvisor_binary(&args, &root)?;
    let qemu_version = host::qemu_version();
    if qemu_version == "not found" {
        bail!("qemu-system-riscv64 not found: install QEMU 10 with scripts/install-deps.sh");
    }
    let guest = guest_fetch::fetch_guest(&guest_fetch::default_cache_dir(), true)
        .context("fetching the Debian riscv64 guest")?;
    let disk_syntax = disk_syntax(&bin);
    let net_skip = net::unavailable().or_else(|| {
        (!has_net_passt(&bin)).then(|| "n/a (this duvisor has no --net passt)".to_string())
    });

    let (full_commit, short_commit, dirty) = host::git_commit(&root);
    let unix = host::unix_now();
    let (date, time_utc) = host::utc_date_time(unix);
    let load_start = host::loadavg();
    eprintln!(
        "duvisor-bench: {runs} run(s) per side, rows {}, load average {:?}, duvisor {} ({short_commit}{}), {qemu_version}",
        row_ids.iter().map(|r| r.key()).collect::<Vec<_>>().join(","),
        load_start.unwrap_or_default(),
        bin.display(),
        if dirty { ", uncommitted changes" } else { "" },
    );

    let scratch = std::env::temp_dir().join(format!("duvisor-bench-{}", std::process::id()));
    fs::create_dir_all(&scratch)?;
    let mut bench = Bench {
        duvisor: &bin,
        guest: &guest,
        memory: &args.memory,
        timeout: Duration::from_secs(args.timeout),
        disk: None,
        disk_syntax,
        netns: None,
        scratch: scratch.clone(),
    };

    let mut results = Vec::new();
    for id in &row_ids {
        let row = workloads::row(*id, &sizes);
        let mut res = RowResult::new(row.clone());
        if let Some(mib) = row.disk_mib {
            if disk_syntax.is_none() {
                res.skipped = Some("n/a (no virtio-blk yet)".into());
                eprintln!("[{id}] skipped: duvisor run --help lists no --disk");
                results.push(res);
                continue;
            }
            let img = scratch.join("disk.img");
            make_disk_image(&img, mib)?;
            bench.disk = Some(img);
        }
        if row.net.is_some() {
            let why = net_skip.clone().or_else(|| {
                if bench.netns.is_some() {
                    return None;
                }
                match net::Netns::create() {
                    Ok(ns) => {
                        bench.netns = Some(ns);
                        None
                    }
                    Err(e) => Some(format!("n/a (network namespace: {e})")),
                }
            });
            if let Some(why) = why {
                eprintln!("[{id}] skipped: {why}");
                res.skipped = Some(why);
                results.push(res);
                continue;
            }
        }
        for i in 0..runs {
            for side in [Side::Duvisor, Side::Qemu] {
                let s = bench.run(&row, side);
                eprintln!(
                    "[{id}] run {}/{runs} {:<7} {}",
                    i + 1,
                    side.name(),
                    s.describe()
                );
                res.push(side, s);
            }
        }
        results.push(res);
    }

    let stats_report = if args.no_stats {
        None
    } else {
        eprintln!("duvisor-bench: one more duvisor boot (1 vCPU) with --stats");
        let cmd = bench.command(Side::Duvisor, 1, false, &["--stats"]);
        let r = guest_console::run_console(
            cmd,
            &ConsoleOptions::new("poweroff -f\n", bench.timeout, READY_MARKERS),
        )?;
        r.stderr
            .find("--- duvisor statistics ---")
            .map(|i| r.stderr[i..].trim_end().to_string())
    };
    drop(bench.netns.take());
    let _ = fs::remove_dir_all(&scratch);

    let meta = Meta {
        date: date.clone(),
        time_utc,
        cpu_model: host::cpu_model(),
        cores: host::cores(),
        ram_bytes: host::mem_total_bytes(),
        host_kernel: host::host_kernel(),
        load_start,
        load_end: host::loadavg(),
        commit: full_commit,
        short_commit: short_commit.clone(),
        dirty,
        duvisor_bin: bin.display().to_string(),
        qemu_version,
        kernel_version: guest.kernel_version.clone(),
        kernel: guest.kernel.display().to_string(),
        initrd: guest.initrd.display().to_string(),
        cmdline: guest_console::CMDLINE.to_string(),
        memory: args.memory.clone(),
        runs,
        quick: args.quick,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        duvisor_stats: stats_report,
    };

    let out_dir = args
        .out
        .clone()
        .unwrap_or_else(|| root.join("bench/results"));
    fs::create_dir_all(&out_dir)?;
    let stem = format!(
        "{date}-{short_commit}{}",
        if args.quick { "-quick" } else { "" }
    );
    let json_path = out_dir.join(format!("{stem}.json"));
    let md_path = out_dir.join(format!("{stem}.md"));
    let svg_path = out_dir.join(format!("{stem}.svg"));
    fs::write(&json_path, report::to_json(&meta, &results).pretty())?;
    let svg_name = svg_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    fs::write(
        &md_path,
        report::to_markdown(&meta, &results, Some(&svg_name)),
    )?;
    fs::write(&svg_path, report::to_svg(&meta, &results))?;

    let table = report::table(&results);
    println!("{table}");
    println!("{}", report::conditions(&meta));
    println!(
        "wrote {}, {} and {}",
        json_path.display(),
        md_path.display(),
        svg_path.display()
    );
    if !args.no_readme && !args.quick && args.out.is_none() {
        let readme = root.join("bench/README.md");
        let rel = |p: &Path| {
            p.strip_prefix(root.join("bench"))
                .map(|x| x.display().to_string())
                .unwrap_or_else(|_| p.display().to_string())
        };
        let section = format!(
            "Latest: {} — files: [{}]({}), [{}]({}), [{}]({})\n\n![duvisor vs QEMU]({})\n\n{}\n{}\n",
            stem,
            rel(&json_path),
            rel(&json_path),
            rel(&md_path),
            rel(&md_path),
            rel(&svg_path),
            rel(&svg_path),
            rel(&svg_path),
            report::conditions(&meta),
            table
        );
        report::update_readme(&readme, &section)?;
        println!("updated {}", readme.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_target_directory() {
        let f = json_string_field("target_directory");
        assert_eq!(
            f(r#"{"packages":[],"target_directory":"/work/a \"b\"/target","version":1}"#),
            Some("/work/a \"b\"/target".to_string())
        );
        assert_eq!(f("{}"), None);
    }

    #[test]
    fn cli() {
        let a = Args::try_parse_from(["b", "--runs", "5", "--rows", "cpu,smp", "--quick"]).unwrap();
        assert_eq!(a.runs, Some(5));
        assert_eq!(a.rows, Some(RowList(vec![RowId::Cpu, RowId::Smp])));
        assert!(Args::try_parse_from(["b", "--rows", "gpu"]).is_err());
    }
}
