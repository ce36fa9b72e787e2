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
use guest_fetch::{GuestFiles, READY_MARKERS};

pub use duvisor::guest_console::ConsoleRun as Run;

/// The Debian guest (fetched once, cached; concurrent tests share one download).
pub fn guest() -> GuestFiles {
    let dir = guest_fetch::default_cache_dir();
    guest_fetch::fetch_guest(&dir, false).expect("fetching the Debian riscv64 guest")
}

/// Start `cmd` with the guest console on stdin/stdout; once the guest prints the ready
/// marker, type `script`; collect everything until the process exits or `timeout` passes.
pub fn run_console(cmd: Command, script: &str, timeout: Duration) -> Run {
    guest_console::run_console(cmd, &ConsoleOptions::new(script, timeout, READY_MARKERS))
        .expect("spawning the VM")
}

pub fn duvisor_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_duvisor"))
}

pub fn duvisor_cmd(g: &GuestFiles, cpus: u32, extra: &[&str]) -> Command {
    guest_console::duvisor_command(&duvisor_bin(), &g.kernel, &g.initrd, cpus, "512M", extra)
}

pub fn qemu_cmd(g: &GuestFiles, cpus: u32) -> Command {
    guest_console::qemu_command(&g.kernel, &g.initrd, cpus, "512M", &[])
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

/// Run `cmd` (stdin and stdout closed) to its end; a hang is a failure: it is killed after
/// `secs` seconds. Its exit status and stderr.
pub fn run_bounded(mut cmd: Command, secs: u64) -> (Option<i32>, String) {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run duvisor");
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} still running after {secs} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.code(), err)
}

/// `cmd` ends within 30 s with status 1 and exactly one line on stderr, containing `needle`.
pub fn assert_bounded_one_line_error(cmd: Command, needle: &str) {
    let what = format!("{cmd:?}");
    let (code, err) = run_bounded(cmd, 30);
    assert_eq!(code, Some(1), "{what}: {err}");
    let lines: Vec<_> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one-line error for {what}, got:\n{err}");
    assert!(
        lines[0].contains(needle),
        "{what}: want {needle:?} in {err}"
    );
}

/// `duvisor run` of a bare guest (`body` in the scaffold of [`bare`], then a spin) with 64 MiB
/// and `extra`, left running with stdout piped (the guest's `print_kv` lines) for the caller
/// to kill. The image lives as long as the returned path.
pub fn spawn_bare_vm(body: &str, extra: &[&str]) -> (std::process::Child, TempPath) {
    use std::process::Stdio;
    let kernel = TempPath::with("bare.img", &bare::guest_image(body));
    let child = Command::new(duvisor_bin())
        .args(["run", "--memory", "64M", "--kernel"])
        .arg(&*kernel)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run duvisor");
    (child, kernel)
}
