//! Shared helpers for the guest-boot tests: the Debian guest, and running it under duvisor or
//! QEMU with commands fed to its serial console (the console driving itself lives in
//! `duvisor::guest_console`, shared with the benchmark harness).

#![allow(dead_code)]

pub mod bare;
pub mod exit_paths;
mod temp_path;

#[allow(unused_imports)] // not every test binary makes files
pub use temp_path::TempPath;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use duvisor::guest_console::{self, ConsoleOptions};
use duvisor::guest_fetch::{self, GuestFiles};

pub use duvisor::guest_console::ConsoleRun as Run;

/// The Debian guest (fetched once, cached; concurrent tests share one download).
pub fn guest() -> GuestFiles {
    let dir = guest_fetch::default_cache_dir();
    guest_fetch::fetch_guest(&dir, false).expect("fetching the Debian riscv64 guest")
}

/// Start `cmd` with the guest console on stdin/stdout; once the guest prints the ready
/// marker, type `script`; collect everything until the process exits or `timeout` passes.
pub fn run_console(cmd: Command, script: &str, timeout: Duration) -> Run {
    guest_console::run_console(cmd, &ConsoleOptions::new(script, timeout)).expect("spawning the VM")
}

pub fn duvisor_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_duvisor"))
}

pub fn duvisor_cmd(g: &GuestFiles, cpus: u32, extra: &[&str]) -> Command {
    guest_console::duvisor_command(&duvisor_bin(), g, cpus, "512M", extra)
}

pub fn qemu_cmd(g: &GuestFiles, cpus: u32) -> Command {
    guest_console::qemu_command(g, cpus, "512M", &[])
}

/// A script that prints comparable facts about the guest (among them whether user space reads
/// the clock, which it does through the vDSO with `rdtime`) and powers it off.
pub const FACTS_SCRIPT: &str = r#"echo "KER""NEL=$(uname -sr)"
echo "HA""RTS=$(grep -c ^processor /proc/cpuinfo)"
echo "ON""LINE=$(cat /sys/devices/system/cpu/online)"
echo "SH""A=$(seq 1 20000 | sha256sum | cut -d' ' -f1)"
echo "GZ""IP=$(seq 1 5000 | gzip -9 | md5sum | cut -d' ' -f1)"
echo "AR""ITH=$(i=0; s=0; while [ $i -lt 2000 ]; do s=$((s + i * i % 7)); i=$((i + 1)); done; echo $s)"
echo "MEM""OK=$(head -c 4194304 /dev/zero | tr '\0' 'x' | wc -c)"
echo "UCL""OCK=$(date +%s >/dev/null 2>&1; echo $?)"
echo "DO""NE=1"
poweroff -f"#;
