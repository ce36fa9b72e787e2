//! Bare-metal test guests: a small RISC-V program packaged as a Linux `Image` (assembled with
//! Debian's riscv64 binutils), booted by the real `duvisor` binary, reporting `KEY=hex` lines
//! on the SBI debug console. Shared by the exit-handling and hostile-guest suites.
//!
//! The scaffold around a test's `body`:
//! * the Image header (text_offset 2 MiB, so the program runs at [`LOAD_ADDR`]);
//! * `trap`, installed in stvec: a synchronous exception records scause/stval in s10/s11 and
//!   resumes after the faulting instruction (2 or 4 bytes), or at `ra` for an instruction
//!   access fault (so `jalr ra, ...` to a bad address returns); an interrupt runs the test's
//!   `irq` code (by default: mask everything in `sie` and return), entered with the
//!   interrupted t6 saved in sscratch and scause in t6;
//! * `print_kv` (a0 = label, a1 = value; clobbers a0, a1, a6, a7, s2–s5).

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../../../dvext/tests/common/asm.rs"]
pub mod asm;

pub const LOAD_ADDR: u64 = 0x8020_0000;
pub const RAM_BASE: u64 = 0x8000_0000;
/// The SBI debug-console extension, used by `print_kv`.
pub const DBCN: u64 = 0x4442_434E;

/// Interrupt code used when a test gives none: mask all interrupts and return.
pub const DEFAULT_IRQ: &str = "    csrw sie, zero\n    csrr t6, sscratch\n    sret\n";

/// The Image with `body` and the default interrupt code.
pub fn guest_image(body: &str) -> Vec<u8> {
    guest_image_with_irq(body, DEFAULT_IRQ)
}

/// The Image with `body`; `irq` runs on interrupts (see the module documentation) and must
/// restore t6 from sscratch before its `sret`.
pub fn guest_image_with_irq(body: &str, irq: &str) -> Vec<u8> {
    let src = format!(
        r#"
    .option norvc
_start:
    j real_start
    .word 0
    .dword 0x200000          # text_offset
    .dword 0x100000          # image_size
    .dword 0                 # flags (little endian)
    .word 0x2                # header version 0.2
    .word 0
    .dword 0
    .ascii "RISCV\0\0\0"
    .ascii "RSC\x05"
    .word 0
real_start:
    la t0, trap
    csrw stvec, t0
    li s10, 0
    li s11, 0
{body}
    j .

# (rvc on while aligning: the pad may be a c.nop.)
    .option rvc
    .balign 4
    .option norvc
trap:
    csrw sscratch, t6
    csrr t6, scause
    bltz t6, irq
    csrr t6, sscratch
    csrr s10, scause
    csrr s11, stval
    li s9, 1
    beq s10, s9, 1f
    csrr s9, sepc
    lhu s8, 0(s9)
    andi s8, s8, 3
    addi s9, s9, 2
    li s7, 3
    bne s8, s7, 2f
    addi s9, s9, 2
2:  csrw sepc, s9
    sret
1:  csrw sepc, ra
    sret

irq:
{irq}

# print_kv: a0 = NUL-terminated label, a1 = value; prints "label=hex\n" with DBCN write_byte.
print_kv:
    mv s2, a0
    mv s3, a1
1:  lbu a0, 0(s2)
    beqz a0, 2f
    li a7, {DBCN:#x}
    li a6, 2
    ecall
    addi s2, s2, 1
    j 1b
2:  li a0, '='
    li a7, {DBCN:#x}
    li a6, 2
    ecall
    li s4, 60
3:  srl a0, s3, s4
    andi a0, a0, 15
    addi a0, a0, '0'
    li s5, '9' + 1
    blt a0, s5, 4f
    addi a0, a0, 39
4:  li a7, {DBCN:#x}
    li a6, 2
    ecall
    addi s4, s4, -4
    bgez s4, 3b
    li a0, '\n'
    li a7, {DBCN:#x}
    li a6, 2
    ecall
    ret
"#
    );
    asm::assemble_at(&src, LOAD_ADDR)
}

/// Print `label=<value of reg>`; the label string is emitted inline.
pub fn check(label: &str, reg: &str) -> String {
    format!(
        "    mv a1, {reg}\n    la a0, 9f\n    call print_kv\n    .pushsection .rodata\n9:  .asciz \"{label}\"\n    .popsection\n"
    )
}

/// An SBI call: a0.. = `args`, a7 = `eid`, a6 = `fid`.
pub fn sbi(eid: u64, fid: u64, args: &[u64]) -> String {
    let mut s = String::new();
    for (i, a) in args.iter().enumerate() {
        s += &format!("    li a{i}, {a:#x}\n");
    }
    s + &format!("    li a7, {eid:#x}\n    li a6, {fid}\n    ecall\n")
}

/// SBI system shutdown.
pub const SHUTDOWN: &str =
    "    li a0, 0\n    li a1, 0\n    li a7, 0x53525354\n    li a6, 0\n    ecall\n";

/// A negative SBI error code as the guest sees it in a0.
pub const NEG: fn(i64) -> u64 = |v| v as u64;

/// How to boot a test guest.
pub struct Boot<'a> {
    pub name: &'a str,
    pub image: Vec<u8>,
    pub cpus: u32,
    pub memory: &'a str,
    pub args: Vec<String>,
    pub env: Vec<(&'a str, &'a str)>,
    pub timeout: Duration,
}

impl<'a> Boot<'a> {
    /// `body` with the default interrupt code, 64 MiB of RAM, `cpus` vCPUs, 60 s to finish.
    pub fn new(name: &'a str, body: &str, cpus: u32) -> Boot<'a> {
        Boot::with_image(name, guest_image(body), cpus)
    }

    pub fn with_image(name: &'a str, image: Vec<u8>, cpus: u32) -> Boot<'a> {
        Boot {
            name,
            image,
            cpus,
            memory: "64M",
            args: Vec::new(),
            env: Vec::new(),
            timeout: Duration::from_secs(60),
        }
    }

    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn env(mut self, k: &'a str, v: &'a str) -> Self {
        self.env.push((k, v));
        self
    }

    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Run `duvisor run` on the image; a guest that runs past the timeout is killed (and the
    /// outcome then shows SIGKILL).
    pub fn run(self) -> Outcome {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let image = dir.join(format!("guest-{}-{}.img", self.name, std::process::id()));
        std::fs::write(&image, &self.image).unwrap();
        let mut cmd = Command::new(super::duvisor_bin());
        cmd.args([
            "run",
            "--memory",
            self.memory,
            "--cpus",
            &self.cpus.to_string(),
            "--kernel",
        ])
        .arg(&image)
        .args(&self.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("run duvisor");
        let (mut so, mut se) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let so_t = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = so.read_to_end(&mut v);
            v
        });
        let se_t = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = se.read_to_end(&mut v);
            v
        });
        let start = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().expect("wait for duvisor") {
                break st;
            }
            if start.elapsed() > self.timeout {
                let _ = child.kill();
                break child.wait().expect("wait for duvisor");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = String::from_utf8_lossy(&so_t.join().unwrap()).into_owned();
        let stderr = String::from_utf8_lossy(&se_t.join().unwrap()).into_owned();
        if std::env::var_os("KEEP_TEST_IMAGES").is_none() {
            let _ = std::fs::remove_file(&image);
        }
        let values = stdout
            .lines()
            .filter_map(|l| {
                let (k, v) = l.trim().split_once('=')?;
                Some((k.to_string(), u64::from_str_radix(v, 16).ok()?))
            })
            .collect();
        Outcome {
            values,
            stdout,
            stderr,
            code: status.code(),
            signal: status.signal(),
            took: start.elapsed(),
        }
    }
}

/// How a test guest's VM ended and what it printed.
pub struct Outcome {
    pub values: HashMap<String, u64>,
    pub stdout: String,
    pub stderr: String,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub took: Duration,
}

const STATS_HEADER: &str = "--- duvisor statistics ---";

impl Outcome {
    /// The value the guest printed for `k`.
    pub fn get(&self, k: &str) -> u64 {
        *self
            .values
            .get(k)
            .unwrap_or_else(|| panic!("guest printed no {k}:\n{}\n{}", self.stdout, self.stderr))
    }

    /// stderr without the `--stats` block (log lines before it, the reason line after it).
    pub fn stderr_lines(&self) -> Vec<&str> {
        let mut out = Vec::new();
        let mut in_stats = false;
        for l in self.stderr.lines() {
            if l == STATS_HEADER {
                in_stats = true;
                continue;
            }
            // The block's lines are all indented or start with a known label; the reason
            // line printed after it starts with "duvisor:".
            if in_stats && !l.starts_with("duvisor:") {
                continue;
            }
            in_stats = false;
            out.push(l);
        }
        out
    }

    /// The `--stats` block, if the run printed one.
    pub fn stats(&self) -> Option<&str> {
        let start = self.stderr.find(STATS_HEADER)?;
        let rest = &self.stderr[start..];
        let end = rest.find("\nduvisor:").map_or(rest.len(), |e| e + 1);
        Some(&rest[..end])
    }

    /// duvisor ended by itself with `code` (no signal, no Rust panic, no timeout kill), and
    /// its stderr, stats aside, is exactly `reason` (no line for status 0).
    pub fn assert_stopped(&self, code: i32, reason: Option<&str>) {
        let ctx = || format!("stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        assert_eq!(
            self.signal,
            None,
            "duvisor was killed by a signal; {}",
            ctx()
        );
        assert_eq!(self.code, Some(code), "exit status; {}", ctx());
        assert!(!self.stderr.contains("panicked"), "{}", ctx());
        let lines = self.stderr_lines();
        match reason {
            None => assert!(lines.is_empty(), "unexpected stderr; {}", ctx()),
            Some(r) => assert_eq!(lines, [r], "{}", ctx()),
        }
    }

    /// With `--stats`: the DV-driver saw no emergency (no PMC violation, no bad doorbell) and
    /// was not called while the guest ran, so every guest access stayed inside the memory the
    /// driver granted this VM (the PMC checks each one and would have halted the VM).
    pub fn assert_no_emergency(&self) {
        let s = self
            .stats()
            .unwrap_or_else(|| panic!("no --stats block:\n{}", self.stderr));
        let calls = s
            .lines()
            .find(|l| l.starts_with("driver calls"))
            .unwrap_or_else(|| panic!("no driver-call line:\n{s}"));
        assert!(
            calls.ends_with(", 0 while the guest ran"),
            "the driver was called while the guest ran: {calls}"
        );
        assert!(
            !s.lines().any(|l| l.trim_start().starts_with("emergency")),
            "the driver reported an emergency:\n{s}"
        );
    }
}
