//! Command-line interface.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Parser, Subcommand};

use crate::devices::virtio::blk::DiskSpec;
use crate::devices::virtio::net::{check_host_ports, NetSpec};
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
    /// Boot a Linux kernel (RISC-V Image), or a boot loader that boots one from a disk, in a
    /// new VM; the terminal is its serial console (Ctrl-A x quits).
    Run(RunArgs),
    /// Download Debian's riscv64 kernel and busybox and build a test initramfs (cached).
    FetchGuest(FetchArgs),
    /// Fetch the Debian guest (cached) and boot it to an interactive shell.
    Demo(DemoArgs),
}

impl Cli {
    /// What clap cannot check one value at a time: a host port forwarded by two `--net`s.
    /// A usage error, like a bad value.
    pub fn validate(&self) -> Result<(), clap::Error> {
        let machine = match &self.command {
            Command::Run(r) => &r.machine,
            Command::Demo(d) => &d.machine,
            Command::FetchGuest(_) => return Ok(()),
        };
        check_host_ports(&machine.nets).map_err(|e| {
            <Cli as clap::CommandFactory>::command().error(
                clap::error::ErrorKind::ArgumentConflict,
                format!("--net: {e}"),
            )
        })
    }
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
    /// A virtio-net device: tap=NAME or passt, optionally ,mac=52:54:00:12:34:56 and (passt
    /// only) ,hostfwd=tcp:2222:22 or ,hostfwd=udp:127.0.0.1:5353:53 forwarding a host port
    /// to the guest (both repeatable).
    #[arg(
        long = "net",
        value_name = "tap=NAME|passt[,mac=MAC][,hostfwd=tcp|udp:[ADDR:]HOSTPORT:GUESTPORT]..."
    )]
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
    #[arg(long, required_unless_present = "firmware")]
    pub kernel: Option<PathBuf>,
    /// Initial ramdisk (with --kernel).
    #[arg(long)]
    pub initrd: Option<PathBuf>,
    /// Kernel command line (with --kernel).
    #[arg(long, default_value = DEFAULT_CMDLINE)]
    pub cmdline: String,
    /// An S-mode boot loader (raw binary, e.g. Debian's u-boot-qemu
    /// /usr/lib/u-boot/qemu-riscv64_smode/u-boot.bin), loaded and entered where a kernel
    /// would be; it boots the kernel it finds on the disks. Not with --kernel.
    #[arg(long, conflicts_with_all = ["kernel", "initrd", "cmdline"], value_name = "FILE")]
    pub firmware: Option<PathBuf>,
    #[command(flatten)]
    pub machine: MachineArgs,
}

impl RunArgs {
    /// What the VM boots; clap has already refused a firmware given with a kernel.
    pub fn boot(&self) -> crate::vm::Boot {
        match (&self.firmware, &self.kernel) {
            (Some(fw), _) => crate::vm::Boot::Firmware(fw.clone()),
            (None, kernel) => crate::vm::Boot::Kernel {
                image: kernel.clone().unwrap_or_default(),
                initrd: self.initrd.clone(),
                cmdline: self.cmdline.clone(),
            },
        }
    }
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
    /// Boot a Debian disk image (see fetch-guest --disk) through Debian's U-Boot instead; without
    /// FILE, the cache's demo.img, built first when missing (needs root). (Not --disk: that
    /// adds a plain disk, as for run.)
    #[arg(long, value_name = "FILE", num_args = 0..=1)]
    pub disk_image: Option<Option<PathBuf>>,
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
            "--kernel or --firmware is required"
        );
    }

    #[test]
    fn firmware_excludes_a_kernel_and_its_options() {
        let c = Cli::try_parse_from(["duvisor", "run", "--firmware", "u-boot.bin"]).unwrap();
        let Command::Run(r) = c.command else { panic!() };
        assert!(
            matches!(r.boot(), crate::vm::Boot::Firmware(p) if p == std::path::Path::new("u-boot.bin"))
        );
        for extra in [
            &["--kernel", "k"][..],
            &["--initrd", "i"][..],
            &["--cmdline", "console=ttyS0"][..],
        ] {
            let mut argv = vec!["duvisor", "run", "--firmware", "u-boot.bin"];
            argv.extend_from_slice(extra);
            assert!(Cli::try_parse_from(&argv).is_err(), "{argv:?} accepted");
        }
        let c = Cli::try_parse_from(["duvisor", "run", "--kernel", "k", "--initrd", "i"]).unwrap();
        let Command::Run(r) = c.command else { panic!() };
        assert!(matches!(
            r.boot(),
            crate::vm::Boot::Kernel { initrd: Some(_), ref cmdline, .. } if cmdline == DEFAULT_CMDLINE
        ));
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

    #[test]
    fn a_host_port_forwarded_by_two_devices_is_a_usage_error() {
        let parse = |nets: &[&str]| {
            let mut args = vec!["duvisor", "demo"];
            for n in nets {
                args.extend(["--net", n]);
            }
            Cli::try_parse_from(args).unwrap()
        };
        let c = parse(&["passt,hostfwd=tcp:2222:22", "passt,hostfwd=udp:2222:22"]);
        assert!(c.validate().is_ok(), "tcp and udp ports are apart");
        let c = parse(&[
            "passt,hostfwd=tcp:2222:22",
            "passt,hostfwd=tcp:[::1]:2222:23",
        ]);
        let e = c.validate().unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
        assert!(
            e.to_string()
                .contains("--net: host port tcp 2222 is forwarded twice"),
            "{e}"
        );
    }
}
