//! Shared helpers for the guest-boot tests: the Debian guest, and running it under duvisor or
//! QEMU with commands fed to its serial console.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use duvisor::guest_fetch::{self, GuestFiles};

/// The Debian guest (fetched once, cached; concurrent tests share one download).
pub fn guest() -> GuestFiles {
    let dir = guest_fetch::default_cache_dir();
    guest_fetch::fetch_guest(&dir, false).expect("fetching the Debian riscv64 guest")
}

pub struct Run {
    pub output: String,
    pub status: Option<i32>,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    /// Values printed by the guest as `TAG=value` lines (commands are written so their echo
    /// never contains the tag literally).
    pub fn value(&self, tag: &str) -> Option<String> {
        let key = format!("{tag}=");
        self.output
            .lines()
            .map(|l| l.trim_end_matches('\r'))
            .find_map(|l| l.find(&key).map(|i| l[i + key.len()..].trim().to_string()))
    }
}

/// Start `cmd` with the guest console on stdin/stdout; once the guest prints the ready
/// marker, type `script`; collect everything until the process exits or `timeout` passes.
pub fn run_console(mut cmd: Command, script: &str, timeout: Duration) -> Run {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning the VM");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let mut stdin = child.stdin.take();
    let mut out = Vec::new();
    let mut sent = false;
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(b) => out.extend_from_slice(&b),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if !sent && String::from_utf8_lossy(&out).contains(guest_fetch::READY_MARKER) {
            // Give the shell a moment to start reading, then type the script line by line.
            std::thread::sleep(Duration::from_millis(300));
            if let Some(s) = stdin.as_mut() {
                for line in script.lines() {
                    let _ = s.write_all(line.as_bytes());
                    let _ = s.write_all(b"\n");
                    let _ = s.flush();
                }
            }
            sent = true;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            break;
        }
    }
    drop(stdin);
    let status = child.wait().ok().and_then(|s| s.code());
    let _ = reader.join();
    Run {
        output: String::from_utf8_lossy(&out).into_owned(),
        status,
        stderr: err_reader.join().unwrap_or_default(),
        elapsed: start.elapsed(),
    }
}

pub fn duvisor_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_duvisor"))
}

pub const CMDLINE: &str = "console=ttyS0 panic=-1";

pub fn duvisor_cmd(g: &GuestFiles, cpus: u32, extra: &[&str]) -> Command {
    let mut c = Command::new(duvisor_bin());
    c.arg("run")
        .arg("--kernel")
        .arg(&g.kernel)
        .arg("--initrd")
        .arg(&g.initrd)
        .arg("--cmdline")
        .arg(CMDLINE)
        .arg("--cpus")
        .arg(cpus.to_string())
        .arg("--memory")
        .arg("512M")
        .args(extra);
    c
}

pub fn qemu_cmd(g: &GuestFiles, cpus: u32) -> Command {
    let mut c = Command::new("qemu-system-riscv64");
    c.args([
        "-M",
        "virt",
        "-m",
        "512M",
        "-smp",
        &cpus.to_string(),
        "-nographic",
        "-no-reboot",
    ])
    .arg("-kernel")
    .arg(&g.kernel)
    .arg("-initrd")
    .arg(&g.initrd)
    .arg("-append")
    .arg(CMDLINE);
    c
}

/// A script that prints comparable facts about the guest and powers it off.
pub const FACTS_SCRIPT: &str = r#"echo "KER""NEL=$(uname -sr)"
echo "HA""RTS=$(grep -c ^processor /proc/cpuinfo)"
echo "ON""LINE=$(cat /sys/devices/system/cpu/online)"
echo "SH""A=$(seq 1 20000 | sha256sum | cut -d' ' -f1)"
echo "GZ""IP=$(seq 1 5000 | gzip -9 | md5sum | cut -d' ' -f1)"
echo "AR""ITH=$(i=0; s=0; while [ $i -lt 2000 ]; do s=$((s + i * i % 7)); i=$((i + 1)); done; echo $s)"
echo "MEM""OK=$(head -c 4194304 /dev/zero | tr '\0' 'x' | wc -c)"
echo "DO""NE=1"
poweroff -f"#;
