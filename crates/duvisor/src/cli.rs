//! Command-line interface.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};

use crate::devices::virtio::blk::DiskSpec;
use crate::devices::virtio::net::NetSpec;
use crate::vm::DEFAULT_CMDLINE;

#[derive(Debug, Parser)]
#[command(
    name = "duvisor",
    version,
    about = "User-level RISC-V hypervisor on DV-Ext (delegated virtualization)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot a Linux kernel (RISC-V Image) in a new VM; the terminal is its serial console
    /// (Ctrl-A x quits).
    Run(RunArgs),
    /// Download Debian's riscv64 kernel and busybox and build a test initramfs (cached).
    FetchGuest(FetchArgs),
    /// Fetch the Debian guest (cached) and boot it to an interactive shell.
    Demo(DemoArgs),
}

#[derive(Debug, Args, Clone)]
pub struct MachineArgs {
    /// Number of vCPUs (1..=64).
    #[arg(long, default_value_t = 1)]
    pub cpus: u32,
    /// Guest RAM, e.g. 512M or 2G (a bare number is MiB).
    #[arg(long, default_value = "512M", value_parser = parse_size)]
    pub memory: u64,
    /// Print VM-exit and driver-call statistics when the VM ends.
    #[arg(long)]
    pub stats: bool,
    /// Map all guest RAM in the G-stage table up front instead of on first touch.
    #[arg(long)]
    pub map_all: bool,
    /// A virtio-blk disk backed by a raw image: path=FILE[,readonly] (repeatable).
    #[arg(long = "disk", value_name = "path=FILE[,readonly]")]
    pub disks: Vec<DiskSpec>,
    /// A virtio-net device: tap=NAME or passt, optionally ,mac=52:54:00:12:34:56 (repeatable).
    #[arg(long = "net", value_name = "tap=NAME|passt[,mac=MAC]")]
    pub nets: Vec<NetSpec>,
    /// A virtio-rng device fed from the host's getrandom.
    #[arg(long)]
    pub rng: bool,
    /// End the VM (status 6) when a vCPU keeps interrupts disabled with one pending for this
    /// many seconds: a locked-up guest kernel.
    #[arg(long, value_name = "SECS", value_parser = parse_watchdog)]
    pub watchdog: Option<std::time::Duration>,
    /// Run every guest instruction in the interpreter: no compiling tier (for comparison and
    /// debugging).
    #[arg(long)]
    pub no_jit: bool,
    /// Compile a decoded block to host code once it has run this many times (1 compiles
    /// every block on its first run).
    #[arg(long, value_name = "RUNS", default_value_t = dvext::JIT_DEFAULT_THRESHOLD,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub jit_threshold: u32,
    /// Debugging only: do not confine the running VM to its seccomp allow-list.
    #[arg(long)]
    pub no_sandbox: bool,
    /// Once set-up is done, run as this user (and its group, or GROUP): numeric ids or names.
    /// Capabilities are dropped whether or not this is given.
    #[arg(long, value_name = "USER[:GROUP]")]
    pub user: Option<crate::privileges::RunAs>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Linux kernel Image.
    #[arg(long)]
    pub kernel: PathBuf,
    /// Initial ramdisk.
    #[arg(long)]
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, default_value = DEFAULT_CMDLINE)]
    pub cmdline: String,
    #[command(flatten)]
    pub machine: MachineArgs,
}

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Cache directory (default: $DUVISOR_CACHE or ~/.cache/duvisor).
    #[arg(long)]
    pub cache: Option<PathBuf>,
    /// Build a bootable Debian riscv64 disk image (raw, GPT, ext4 root, booted by U-Boot's
    /// extlinux) at FILE instead. Needs root, mmdebstrap and qemu-user-static.
    #[arg(long, value_name = "FILE")]
    pub disk: Option<PathBuf>,
    /// Size of the disk image (e.g. 4G, 8192M; a bare number is MiB) [default: 4G].
    #[arg(long, requires = "disk", value_parser = parse_size)]
    pub size: Option<u64>,
    /// An OpenSSH public key (FILE.pub) that may log in to the image as root over ssh.
    /// Without one, root logs in on the console only (no password).
    #[arg(long, requires = "disk", value_name = "FILE.pub")]
    pub ssh_key: Option<PathBuf>,
    /// The image's host name [default: duvisor].
    #[arg(long, requires = "disk")]
    pub hostname: Option<String>,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    #[arg(long)]
    pub cache: Option<PathBuf>,
    #[command(flatten)]
    pub machine: MachineArgs,
}

/// Parse a watchdog limit: whole seconds, 1 to 3600.
pub fn parse_watchdog(s: &str) -> Result<std::time::Duration> {
    match s.trim().parse::<u64>() {
        Ok(n @ 1..=3600) => Ok(std::time::Duration::from_secs(n)),
        _ => bail!("not a watchdog limit: {s:?} (whole seconds, 1 to 3600)"),
    }
}

/// Parse a memory size: `512M`, `2G`, `1048576K`, `4096` (MiB).
pub fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => bail!("unknown size suffix in {s:?} (use K, M, G or T)"),
            };
            (&s[..i], m)
        }
        _ => (s, 1 << 20),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("not a size: {s:?}"))?;
    n.checked_mul(mult)
        .ok_or_else(|| anyhow::anyhow!("size {s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("2g").unwrap(), 2 << 30);
        assert_eq!(parse_size("64").unwrap(), 64 << 20);
        assert_eq!(parse_size("4096K").unwrap(), 4 << 20);
        assert!(parse_size("12X").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("-1M").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn run_args() {
        let c = Cli::try_parse_from([
            "duvisor", "run", "--kernel", "k", "--cpus", "4", "--memory", "1G",
        ])
        .unwrap();
        let Command::Run(r) = c.command else { panic!() };
        assert_eq!(r.machine.cpus, 4);
        assert_eq!(r.machine.memory, 1 << 30);
        assert_eq!(r.cmdline, DEFAULT_CMDLINE);
        assert!(
            Cli::try_parse_from(["duvisor", "run"]).is_err(),
            "--kernel is required"
        );
    }

    #[test]
    fn virtio_args() {
        let c = Cli::try_parse_from([
            "duvisor",
            "run",
            "--kernel",
            "k",
            "--disk",
            "path=/a.img",
            "--disk",
            "path=/b.img,readonly",
            "--net",
            "passt,mac=02:00:00:00:00:01",
            "--rng",
        ])
        .unwrap();
        let Command::Run(r) = c.command else { panic!() };
        let m = &r.machine;
        assert_eq!(m.disks.len(), 2);
        assert_eq!(m.disks[0].path, PathBuf::from("/a.img"));
        assert!(!m.disks[0].readonly);
        assert!(m.disks[1].readonly);
        assert_eq!(m.nets.len(), 1);
        assert!(m.rng);
        assert!(
            Cli::try_parse_from(["duvisor", "run", "--kernel", "k", "--disk", "readonly"]).is_err()
        );
        assert!(
            Cli::try_parse_from(["duvisor", "run", "--kernel", "k", "--disk", "path=x,bogus"])
                .is_err()
        );
        assert!(
            Cli::try_parse_from(["duvisor", "run", "--kernel", "k", "--net", "udp=1"]).is_err()
        );
    }
}
