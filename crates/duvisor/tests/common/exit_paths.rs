//! The exit-path micro-benchmark guest: a bare-metal program on two vCPUs that times, with the
//! guest's `time` counter, four ways out of the guest and back, each `n` times in a row:
//!
//! * `SBI`: an SBI call (`sbi_get_spec_version`): ecall, handled by the vthread, sret;
//! * `MMIO`: a byte read of the UART's line status register, emulated by the vthread;
//! * `FAULT`: the first store to a 2 MiB block of guest RAM not touched before: a G-stage
//!   fault that maps it (each touch a new block, so `n` is capped by the RAM above 64 MiB);
//! * `IPI`: hart 0 sends an IPI to hart 1 (SBI `send_ipi`) and waits until hart 1's interrupt
//!   handler has bumped a counter in memory: sender's exit, doorbell, hart 1 waking from WFI,
//!   its interrupt entry and handler, and the store seen by hart 0.
//!
//! Each prints `<NAME>_TICKS` (guest time-counter ticks for all `n`); the platform's time
//! counter runs at 10 MHz of host time.

use std::time::Duration;

use super::bare::{check, guest_image_with_irq, sbi, Boot, Outcome, SHUTDOWN};

/// Guest RAM: the fault loop touches 2 MiB blocks from 64 MiB up.
pub const MEMORY: &str = "512M";
/// Most first-touch faults the RAM above 64 MiB allows.
pub const MAX_FAULTS: u64 = (512 - 64) / 2;
/// Ticks of the guest's time counter per second (the device tree's timebase-frequency).
pub const TIMEBASE_HZ: f64 = 10_000_000.0;

/// Where hart 1 says it is ready and counts the IPIs it took (a page of its own: stores to a
/// page holding code would also invalidate that code).
const FLAGS: u64 = 0x8300_0000;
const FAULT_BASE: u64 = 0x8400_0000;

/// What each path took, per round trip, in host nanoseconds.
#[derive(Debug, Clone, Copy)]
pub struct ExitPaths {
    pub sbi_ns: f64,
    pub mmio_ns: f64,
    pub fault_ns: f64,
    pub ipi_ns: f64,
}

/// A timed loop: `n` runs of `body` (which may use t0-t2, a0-a7), ticks printed as `label`.
fn timed(label: &str, n: u64, body: &str) -> String {
    format!(
        "    li s1, {n}\n    rdtime t3\n1:\n{body}    addi s1, s1, -1\n    bnez s1, 1b\n    rdtime t4\n    sub t5, t4, t3\n{}",
        check(label, "t5")
    )
}

/// The guest: `n` round trips of each kind but `faults` first touches.
pub fn image(n: u64, faults: u64) -> Vec<u8> {
    assert!(
        (1..=MAX_FAULTS).contains(&faults),
        "faults must be 1..={MAX_FAULTS}"
    );
    let mut b = String::new();
    // Hart 1: interrupts on, then asleep in WFI; it counts each IPI it takes (irq below).
    b += &format!("    li t0, {FLAGS:#x}\n    sw zero, 0(t0)\n    sw zero, 4(t0)\n    fence\n");
    b += "    li a0, 1\n    la a1, hart1\n    li a2, 0\n";
    b += &sbi(0x48_534D, 0, &[]);
    b += &check("HART1_START", "a0");
    b += &format!("    li t0, {FLAGS:#x}\n2:  lw t1, 0(t0)\n    beqz t1, 2b\n");
    b += &timed("SBI_TICKS", n, &sbi(0x10, 0, &[]));
    b += &timed(
        "MMIO_TICKS",
        n,
        "    li t1, 0x10000005\n    lbu t0, 0(t1)\n",
    );
    b += &format!("    li t2, {FAULT_BASE:#x}\n    li t1, 0x200000\n");
    b += &timed(
        "FAULT_TICKS",
        faults,
        "    sd t1, 0(t2)\n    add t2, t2, t1\n",
    );
    // IPI: s6 counts the IPIs sent; wait until hart 1 has taken as many.
    b += &format!("    li s6, 0\n    li s7, {FLAGS:#x}\n");
    b += &timed(
        "IPI_TICKS",
        n,
        &format!(
            "    addi s6, s6, 1\n{}3:  lw t0, 4(s7)\n    bne t0, s6, 3b\n",
            sbi(0x73_5049, 0, &[2, 0])
        ),
    );
    b += SHUTDOWN;
    b += &format!(
        r#"    j .
    .balign 4
hart1:
    la t0, trap
    csrw stvec, t0
    csrsi sie, 2
    csrsi sstatus, 2
    li t0, {FLAGS:#x}
    li t1, 1
    sw t1, 0(t0)
4:  wfi
    j 4b
"#
    );
    // Only hart 1 enables interrupts, and its loop keeps nothing in registers: the handler
    // may use t0-t1.
    let irq = format!(
        "    csrci sip, 2\n    li t0, {FLAGS:#x}\n    lw t1, 4(t0)\n    addi t1, t1, 1\n    sw t1, 4(t0)\n    csrr t6, sscratch\n    sret\n"
    );
    guest_image_with_irq(&b, &irq)
}

/// Boot the guest (with `--stats`) and read its figures.
pub fn run(n: u64, faults: u64) -> (Option<ExitPaths>, Outcome) {
    let mut boot = Boot::with_image("exit-paths", image(n, faults), 2)
        .arg("--stats")
        .timeout(Duration::from_secs(120));
    boot.memory = MEMORY;
    let o = boot.run();
    let ns = |key: &str, count: u64| {
        o.values
            .get(key)
            .map(|&t| t as f64 * 1e9 / TIMEBASE_HZ / count as f64)
    };
    let figures = (|| {
        Some(ExitPaths {
            sbi_ns: ns("SBI_TICKS", n)?,
            mmio_ns: ns("MMIO_TICKS", n)?,
            fault_ns: ns("FAULT_TICKS", faults)?,
            ipi_ns: ns("IPI_TICKS", n)?,
        })
    })();
    (figures, o)
}

/// The count `--stats` gives for the VM-exit reason `reason` (0 if it has no line).
pub fn exits(o: &Outcome, reason: &str) -> u64 {
    o.stats()
        .and_then(|s| s.lines().find(|l| l.trim_start().starts_with(reason)))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
        .unwrap_or(0)
}
