//! Exit handling end to end: a small guest, packaged as a RISC-V Linux `Image` and booted by
//! the real `duvisor` binary, makes SBI calls and MMIO accesses and reports what it saw on the
//! console. Checks SBI results and error codes (SBI v2.0), MMIO emulation of each width,
//! compressed forms, access faults for holes, instruction fetch from MMIO, how a VM ends, and
//! that the exit-path micro-benchmark guest (`benches/exit_paths.rs`) takes each of its paths.

mod common;

use common::bare::{check, sbi, Boot, Outcome, LOAD_ADDR, NEG, SHUTDOWN};
use common::exit_paths::{self, exits};

fn boot(name: &str, body: &str, cpus: u32) -> Outcome {
    Boot::new(name, body, cpus).run()
}

#[test]
fn sbi_calls_return_spec_results_and_errors() {
    let mut b = String::new();
    b += &sbi(0x10, 0, &[]);
    b += &check("SPEC", "a1");
    b += &sbi(0x10, 3, &[0x5449_4D45]);
    b += &check("PROBE_TIME", "a1");
    b += &sbi(0x10, 3, &[0x1234_5678]);
    b += &check("PROBE_BOGUS", "a1");
    b += &sbi(0x0A00_0000, 0, &[]);
    b += &check("UNKNOWN_EXT", "a0");
    b += &sbi(0x10, 99, &[]);
    b += &check("UNKNOWN_FID", "a0");
    b += &sbi(0x0073_5049, 0, &[1 << 5, 0]);
    b += &check("IPI_BAD_MASK", "a0");
    b += &sbi(0x0073_5049, 0, &[1, 0]);
    b += &check("IPI_SELF", "a0");
    b += "    csrr t0, sip\n    andi t0, t0, 2\n";
    b += &check("SSIP", "t0");
    b += "    csrci sip, 2\n    csrr t0, sip\n    andi t0, t0, 2\n";
    b += &check("SSIP_CLEARED", "t0");
    b += &sbi(0x0048_534D, 2, &[0]);
    b += &check("HSM_STATUS0_ERR", "a0");
    b += &check("HSM_STATUS0", "a1");
    b += &sbi(0x0048_534D, 2, &[1]);
    b += &check("HSM_STATUS1", "a1");
    b += &sbi(0x0048_534D, 2, &[7]);
    b += &check("HSM_STATUS7", "a0");
    b += &sbi(0x0048_534D, 0, &[0, LOAD_ADDR, 0]);
    b += &check("HSM_START_RUNNING", "a0");
    b += &sbi(0x0048_534D, 0, &[1, 0x1000, 0]);
    b += &check("HSM_START_BAD_ADDR", "a0");
    b += &sbi(0x5246_4E43, 0, &[u64::MAX, u64::MAX]);
    b += &check("RFENCE_I_ALL", "a0");
    b += &sbi(0x5352_5354, 0, &[7, 0]);
    b += &check("SRST_BAD_TYPE", "a0");
    // DBCN console_write of a string in guest RAM, and of an address outside RAM.
    b += "    la a1, 5f\n    li a0, 11\n    li a2, 0\n    li a7, 0x4442434E\n    li a6, 0\n    ecall\n    .pushsection .rodata\n5:  .ascii \"hello-dbcn\\n\"\n    .popsection\n";
    b += &check("DBCN_WRITTEN", "a1");
    b += &sbi(0x4442_434E, 0, &[16, 0x2000_0000, 0]);
    b += &check("DBCN_BAD_ADDR", "a0");
    // base_hi holds address bits above 64 on RV64: any nonzero value is out of range.
    b += &sbi(0x4442_434E, 0, &[4, LOAD_ADDR, 1]);
    b += &check("DBCN_HI_SET", "a0");
    b += SHUTDOWN;
    let o = boot("sbi", &b, 2);
    assert_eq!(o.code, Some(0), "shutdown should exit 0: {}", o.stderr);
    assert_eq!(o.get("SPEC"), 2 << 24);
    assert_eq!(o.get("PROBE_TIME"), 1);
    assert_eq!(o.get("PROBE_BOGUS"), 0);
    assert_eq!(o.get("UNKNOWN_EXT"), NEG(-2), "SBI_ERR_NOT_SUPPORTED");
    assert_eq!(o.get("UNKNOWN_FID"), NEG(-2));
    assert_eq!(o.get("IPI_BAD_MASK"), NEG(-3), "SBI_ERR_INVALID_PARAM");
    assert_eq!(o.get("IPI_SELF"), 0);
    assert_eq!(o.get("SSIP"), 2, "a self-IPI sets SSIP");
    assert_eq!(o.get("SSIP_CLEARED"), 0);
    assert_eq!(o.get("HSM_STATUS0_ERR"), 0);
    assert_eq!(o.get("HSM_STATUS0"), 0, "hart 0 is started");
    assert_eq!(o.get("HSM_STATUS1"), 1, "hart 1 is stopped");
    assert_eq!(o.get("HSM_STATUS7"), NEG(-3));
    assert_eq!(
        o.get("HSM_START_RUNNING"),
        NEG(-6),
        "SBI_ERR_ALREADY_AVAILABLE"
    );
    assert_eq!(
        o.get("HSM_START_BAD_ADDR"),
        NEG(-5),
        "SBI_ERR_INVALID_ADDRESS"
    );
    assert_eq!(o.get("RFENCE_I_ALL"), 0);
    assert_eq!(o.get("SRST_BAD_TYPE"), NEG(-3));
    assert!(o.stdout.contains("hello-dbcn\n"), "{}", o.stdout);
    assert_eq!(o.get("DBCN_WRITTEN"), 11);
    assert_eq!(o.get("DBCN_BAD_ADDR"), NEG(-3));
    assert_eq!(o.get("DBCN_HI_SET"), NEG(-3));
}

#[test]
fn mmio_accesses_are_emulated_and_holes_fault() {
    let mut b = String::new();
    // UART line status: THR empty and transmitter empty.
    b += "    li t1, 0x10000005\n    lbu t0, 0(t1)\n";
    b += &check("LSR", "t0");
    // PLIC priority of source 10: word write, word read back, compressed read back.
    b += "    li a1, 0x0c000028\n    li t0, 5\n    sw t0, 0(a1)\n    lw t2, 0(a1)\n";
    b += &check("PLIC_PRIO", "t2");
    b += "    li a1, 0x0c000028\n    .option rvc\n    c.lw a2, 0(a1)\n    .option norvc\n";
    b += &check("PLIC_PRIO_C", "a2");
    // Load, store and fetch at holes in the guest-physical map.
    b += "    li t1, 0x20000000\n    ld t0, 0(t1)\n";
    b += &check("HOLE_LOAD_CAUSE", "s10");
    b += &check("HOLE_LOAD_TVAL", "s11");
    b += "    li s10, 0\n    li t1, 0x20000008\n    sd t0, 0(t1)\n";
    b += &check("HOLE_STORE_CAUSE", "s10");
    b += "    li s10, 0\n    li t1, 0x84000000\n    lw t0, 0(t1)\n";
    b += &check("ABOVE_RAM_CAUSE", "s10");
    b += "    li s10, 0\n    li t1, 0x10000000\n    jalr ra, 0(t1)\n";
    b += &check("FETCH_MMIO_CAUSE", "s10");
    // A misaligned MMIO access is refused with an access fault, not emulated.
    b += "    li s10, 0\n    li t1, 0x0c000029\n    lw t0, 0(t1)\n";
    b += &check("MISALIGNED_MMIO_CAUSE", "s10");
    b += SHUTDOWN;
    let o = boot("mmio", &b, 1);
    assert_eq!(
        o.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        o.stdout,
        o.stderr
    );
    assert_eq!(o.get("LSR"), 0x60);
    assert_eq!(o.get("PLIC_PRIO"), 5);
    assert_eq!(o.get("PLIC_PRIO_C"), 5);
    assert_eq!(o.get("HOLE_LOAD_CAUSE"), 5, "load access fault");
    assert_eq!(o.get("HOLE_LOAD_TVAL"), 0x2000_0000);
    assert_eq!(o.get("HOLE_STORE_CAUSE"), 7, "store access fault");
    assert_eq!(o.get("ABOVE_RAM_CAUSE"), 5);
    assert_eq!(o.get("FETCH_MMIO_CAUSE"), 1, "instruction access fault");
    assert_eq!(o.get("MISALIGNED_MMIO_CAUSE"), 5);
}

#[test]
fn guest_reset_ends_the_vm_with_nonzero_status_and_reason() {
    let b = "    li a0, 1\n    li a1, 1\n    li a7, 0x53525354\n    li a6, 0\n    ecall\n";
    let o = boot("reset", b, 1);
    assert_eq!(o.code, Some(3), "{}", o.stderr);
    let lines: Vec<_> = o.stderr.lines().collect();
    assert_eq!(
        lines,
        ["duvisor: guest requested a cold reset (reason system failure)"]
    );
}

#[test]
fn secondary_hart_starts_through_hsm_and_runs() {
    // Hart 0 starts hart 1 at `second` with opaque 0x1234; hart 1 reports a0/a1 and shuts the
    // VM down.
    let b = r#"
    la a1, second
    li a0, 1
    li a2, 0x1234
    li a7, 0x48534D
    li a6, 0
    ecall
    mv s7, a0
1:  j 1b
second:
    mv s6, a0
    mv s8, a1
"#
    .to_string()
        + &check("HART1_A0", "s6")
        + &check("HART1_OPAQUE", "s8")
        + &sbi(0x0048_534D, 2, &[1])
        + &check("HART1_STATUS", "a1")
        + SHUTDOWN;
    let o = boot("hsm", &b, 2);
    assert_eq!(
        o.code,
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        o.stdout,
        o.stderr
    );
    assert_eq!(o.get("HART1_A0"), 1);
    assert_eq!(o.get("HART1_OPAQUE"), 0x1234);
    assert_eq!(o.get("HART1_STATUS"), 0);
}

#[test]
fn exit_path_microbenchmark_guest_times_each_path_without_driver_calls() {
    let (n, faults) = (300, 40);
    let (figures, o) = exit_paths::run(n, faults);
    o.assert_stopped(0, None);
    assert_eq!(o.get("HART1_START"), 0, "HSM hart_start");
    let f = figures.unwrap_or_else(|| panic!("figures missing:\n{}", o.stdout));
    for (path, ns) in [
        ("SBI call", f.sbi_ns),
        ("MMIO read", f.mmio_ns),
        ("first-touch fault", f.fault_ns),
        ("IPI", f.ipi_ns),
    ] {
        // Whole-loop times at the counter's 100 ns resolution: a path that is not taken (or a
        // clock that does not run) reads 0; one above 10 ms means something waited on a timer.
        assert!(ns > 0.0 && ns < 10e6, "{path}: {ns} ns per round trip");
    }
    // Each path really left the guest: the vthread handled every one, and the driver none.
    assert!(exits(&o, "sbi call") >= 2 * n, "{:?}", o.stats());
    assert!(exits(&o, "mmio read") >= n, "{:?}", o.stats());
    assert!(exits(&o, "g-stage fault") >= faults, "{:?}", o.stats());
    o.assert_no_emergency();
}
