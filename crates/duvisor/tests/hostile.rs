//! Hostile guests: small bare-metal guests (booted by the real `duvisor` binary, see
//! `common/bare.rs`) that attack DuVisor through every interface a guest has — SBI calls with
//! garbage arguments, memory accesses outside RAM, MMIO abuse, malformed virtio requests and
//! an interrupt storm. Each attack must end in a precise guest-visible error (an SBI error
//! code, an access fault with the right scause/stval and the destination register untouched,
//! a virtio error status or DEVICE_NEEDS_RESET), and each VM in a clean stop: duvisor exits by
//! itself with the expected status, never by a signal or a Rust panic.
//!
//! "No memory outside the guest is read or written" is checked three ways:
//! * from inside the guest: every access outside RAM faults and loads nothing (a sentinel in
//!   the destination register survives), and stores to aliases of RAM (bit 63 set) change
//!   nothing in RAM;
//! * from the DV-driver: every run uses `--stats`, and the driver reports no emergency and no
//!   call while the guest ran. Every guest access is checked by the PMC against the memory
//!   the driver granted this VM, and a violation would have halted the VM with status 4
//!   (`dv-driver/tests/pmc_isolation.rs` shows that path for a faulty G-stage mapping);
//! * for device DMA: the disk image is compared byte for byte after the attacks, and the guest
//!   checks its canaries around the buffers it offered.

mod common;

use std::time::Duration;

use common::bare::{check, guest_image_with_irq, sbi, Boot, Outcome, DBCN, LOAD_ADDR, SHUTDOWN};

const RAM_SIZE: u64 = 64 << 20;
const RAM_END: u64 = 0x8000_0000 + RAM_SIZE;
const BIT63: u64 = 1 << 63;

mod ext {
    pub const BASE: u64 = 0x10;
    pub const TIME: u64 = 0x5449_4D45;
    pub const IPI: u64 = 0x0073_5049;
    pub const RFENCE: u64 = 0x5246_4E43;
    pub const HSM: u64 = 0x0048_534D;
    pub const SRST: u64 = 0x5352_5354;
    pub const PMU: u64 = 0x0050_4D55;
    pub const SUSP: u64 = 0x5355_5350;
    pub const CPPC: u64 = 0x4350_5043;
    pub const NACL: u64 = 0x4E41_434C;
    pub const STA: u64 = 0x0053_5441;
    pub const LEGACY_GETCHAR: u64 = 2;
    pub const LEGACY_SEND_IPI: u64 = 4;
}

const SUCCESS: u64 = 0;
const ERR_FAILED: u64 = -1i64 as u64;
const ERR_NOT_SUPPORTED: u64 = -2i64 as u64;
const ERR_INVALID_PARAM: u64 = -3i64 as u64;
const ERR_INVALID_ADDRESS: u64 = -5i64 as u64;
const ERR_ALREADY_AVAILABLE: u64 = -6i64 as u64;

/// Boot `body` on `cpus` vCPUs with `--stats`; it must power off (status 0) without any
/// emergency in the driver.
fn run_clean(name: &str, body: &str, cpus: u32) -> Outcome {
    let o = Boot::new(name, body, cpus).arg("--stats").run();
    o.assert_stopped(0, None);
    o.assert_no_emergency();
    o
}

/// An SBI call whose a0 (error) is printed as `label`; a1 (value) as `label_V`.
fn sbi_err(label: &str, eid: u64, fid: u64, args: &[u64]) -> String {
    sbi(eid, fid, args)
        + "    mv s1, a0\n    mv s6, a1\n"
        + &check(label, "s1")
        + &check(&format!("{label}_V"), "s6")
}

/// Assert a list of `(label, expected a0)` in one go, so a failure shows every mismatch.
fn expect_all(o: &Outcome, cases: &[(&str, u64)]) {
    let bad: Vec<String> = cases
        .iter()
        .filter(|(k, want)| o.get(k) != *want)
        .map(|(k, want)| format!("  {k}: got {:#x}, want {want:#x}", o.get(k)))
        .collect();
    assert!(bad.is_empty(), "{}\nstdout:\n{}", bad.join("\n"), o.stdout);
}

// ---------------------------------------------------------------------------------------------
// SBI
// ---------------------------------------------------------------------------------------------

#[test]
fn ipi_and_rfence_with_garbage_hart_masks_are_refused() {
    // Two vCPUs: 0 runs, 1 exists but is stopped. Every hart mask naming a hart that does not
    // exist (above 1, or a base that overflows) must be SBI_ERR_INVALID_PARAM with nothing
    // sent; hart_mask_base = -1 means "all harts" and ignores the mask.
    let bad_masks: [(&str, u64, u64); 9] = [
        ("HART2", 1, 2),
        ("BIT63", BIT63, 0),
        ("ALL_BITS", u64::MAX, 0),
        ("BASE_NEG2", 1, u64::MAX - 1),
        ("BASE_NEG2_BIT1", 2, u64::MAX - 1),
        ("BASE_HUGE", 1, BIT63),
        ("BASE_4G", 1, 1 << 32),
        ("BASE_64", 1, 64),
        ("BASE1_BIT1", 2, 1),
    ];
    let mut b = String::new();
    // No IPI may be pending on hart 0 after the refused calls.
    for (name, mask, base) in bad_masks {
        b += &sbi_err(&format!("IPI_{name}"), ext::IPI, 0, &[mask, base]);
        b += &sbi_err(&format!("RFENCE_I_{name}"), ext::RFENCE, 0, &[mask, base]);
        b += &sbi_err(
            &format!("RFENCE_VMA_{name}"),
            ext::RFENCE,
            1,
            &[mask, base, 0, u64::MAX],
        );
    }
    b += "    csrr t0, sip\n    andi t0, t0, 2\n";
    b += &check("SSIP_AFTER_REFUSED", "t0");
    // An empty mask with a garbage base selects nobody: success, nothing sent.
    b += &sbi_err("IPI_EMPTY_MASK", ext::IPI, 0, &[0, 0xdead_beef_0000]);
    b += "    csrr t0, sip\n    andi t0, t0, 2\n";
    b += &check("SSIP_AFTER_EMPTY", "t0");
    // Hart 1 exists (stopped): a valid target.
    b += &sbi_err("IPI_STOPPED_HART", ext::IPI, 0, &[1, 1]);
    // Base -1: all harts, whatever the mask says; hart 0 gets its IPI.
    b += &sbi_err("IPI_ALL", ext::IPI, 0, &[0xdead_beef, u64::MAX]);
    b += "    csrr t0, sip\n    andi t0, t0, 2\n    csrci sip, 2\n";
    b += &check("SSIP_AFTER_ALL", "t0");
    b += &sbi_err("IPI_BOTH", ext::IPI, 0, &[0b11, 0]);
    b += "    csrci sip, 2\n";
    // Remote sfence.vma with a garbage range (the whole space is flushed), ASID variant.
    b += &sbi_err(
        "RFENCE_VMA_ALL_RANGE",
        ext::RFENCE,
        1,
        &[0, u64::MAX, u64::MAX, u64::MAX],
    );
    b += &sbi_err(
        "RFENCE_ASID_GARBAGE",
        ext::RFENCE,
        2,
        &[0b11, 0, 0x1234_5678, u64::MAX, u64::MAX],
    );
    // Hypervisor fences: the guest has no H extension.
    for fid in 3..=6 {
        b += &sbi_err(&format!("RFENCE_H{fid}"), ext::RFENCE, fid, &[1, 0, 0, 0]);
    }
    b += &sbi_err("RFENCE_FID7", ext::RFENCE, 7, &[1, 0]);
    // Legacy (v0.1) calls take the mask by address: bits above the last hart are ignored;
    // an address that is not RAM is an invalid address, never a device access.
    b += "    li t0, 0x81000000\n    li t1, -1\n    sd t1, 0(t0)\n";
    b += &sbi_err("LEGACY_IPI_RAM", ext::LEGACY_SEND_IPI, 0, &[0x8100_0000]);
    b += "    csrci sip, 2\n";
    for (name, addr) in [
        ("UART", 0x1000_0000u64),
        ("PLIC_CLAIM", 0x0c20_0004),
        ("HOLE", 0x2000_0000),
        ("ABOVE_RAM", RAM_END),
        ("BIT63", BIT63 | 0x8100_0000),
    ] {
        b += &sbi(ext::LEGACY_SEND_IPI, 0, &[addr]);
        b += &check(&format!("LEGACY_IPI_{name}"), "a0");
    }
    // A mask in RAM the guest has never touched (not yet mapped in the G-stage table).
    b += &sbi(ext::LEGACY_SEND_IPI, 0, &[0x8300_0000]);
    b += &check("LEGACY_IPI_UNTOUCHED", "a0");
    b += SHUTDOWN;
    let o = run_clean("ipi-masks", &b, 2);

    let mut cases = Vec::new();
    let names: Vec<String> = bad_masks
        .iter()
        .flat_map(|(n, ..)| {
            [
                format!("IPI_{n}"),
                format!("RFENCE_I_{n}"),
                format!("RFENCE_VMA_{n}"),
            ]
        })
        .collect();
    for n in &names {
        cases.push((n.as_str(), ERR_INVALID_PARAM));
    }
    cases.extend([
        ("SSIP_AFTER_REFUSED", 0),
        ("IPI_EMPTY_MASK", SUCCESS),
        ("SSIP_AFTER_EMPTY", 0),
        ("IPI_STOPPED_HART", SUCCESS),
        ("IPI_ALL", SUCCESS),
        ("SSIP_AFTER_ALL", 2),
        ("IPI_BOTH", SUCCESS),
        ("RFENCE_VMA_ALL_RANGE", SUCCESS),
        ("RFENCE_ASID_GARBAGE", SUCCESS),
        ("RFENCE_H3", ERR_NOT_SUPPORTED),
        ("RFENCE_H4", ERR_NOT_SUPPORTED),
        ("RFENCE_H5", ERR_NOT_SUPPORTED),
        ("RFENCE_H6", ERR_NOT_SUPPORTED),
        ("RFENCE_FID7", ERR_NOT_SUPPORTED),
        ("LEGACY_IPI_RAM", SUCCESS),
        ("LEGACY_IPI_UART", ERR_INVALID_ADDRESS),
        ("LEGACY_IPI_PLIC_CLAIM", ERR_INVALID_ADDRESS),
        ("LEGACY_IPI_HOLE", ERR_INVALID_ADDRESS),
        ("LEGACY_IPI_ABOVE_RAM", ERR_INVALID_ADDRESS),
        ("LEGACY_IPI_BIT63", ERR_INVALID_ADDRESS),
        ("LEGACY_IPI_UNTOUCHED", SUCCESS),
    ]);
    expect_all(&o, &cases);
}

#[test]
fn hsm_attacks_get_precise_errors_and_leave_harts_consistent() {
    // Hart 1's program: publish a1 (opaque) at FLAG, wait for a stop request at FLAG+8, stop.
    let mut b = String::new();
    b += "    li t0, 0x81000000\n    sd zero, 0(t0)\n    sd zero, 8(t0)\n";
    // Bad hart IDs: INVALID_PARAM.
    for (name, id) in [
        ("ID2", 2u64),
        ("ID_NEG1", u64::MAX),
        ("ID_4G_PLUS1", (1 << 32) + 1),
        ("ID_BIT63", BIT63),
    ] {
        b += "    la a1, hart1\n";
        b += &format!(
            "    li a0, {id:#x}\n    li a2, 0\n    li a7, 0x48534d\n    li a6, 0\n    ecall\n"
        );
        b += &check(&format!("START_{name}"), "a0");
        b += &sbi_err(&format!("STATUS_{name}"), ext::HSM, 2, &[id]);
    }
    // Bad start addresses for an existing, stopped hart: INVALID_ADDRESS.
    for (name, addr) in [
        ("NULL", 0u64),
        ("HOLE", 0x1000),
        ("UART", 0x1000_0000),
        ("PLIC", 0x0c00_0000),
        ("RAM_END", RAM_END),
        ("STRADDLE_END", RAM_END - 2),
        ("BIT63_ALIAS", BIT63 | LOAD_ADDR),
        ("NEG", u64::MAX - 3),
    ] {
        b += &sbi_err(&format!("START_{name}"), ext::HSM, 0, &[1, addr, 0]);
    }
    // None of that left hart 1 anything but stopped.
    b += &sbi_err("STATUS1_AFTER_BAD", ext::HSM, 2, &[1]);
    // Start it for real, wait until it runs.
    b += "    la a1, hart1\n    li a0, 1\n    li a2, 0x1111\n    li a7, 0x48534d\n    li a6, 0\n    ecall\n";
    b += &check("START1", "a0");
    b += "    li t0, 0x81000000\n    li t2, 0x1111\n1:  ld t1, 0(t0)\n    bne t1, t2, 1b\n";
    // Starting a running hart (and the caller itself): ALREADY_AVAILABLE, with nothing reset.
    b += "    la a1, hart1\n    li a0, 1\n    li a2, 0x9999\n    li a7, 0x48534d\n    li a6, 0\n    ecall\n";
    b += &check("START1_RUNNING", "a0");
    b += "    la a1, hart1\n    li a0, 0\n    li a2, 0\n    li a7, 0x48534d\n    li a6, 0\n    ecall\n";
    b += &check("START0_SELF", "a0");
    b += &sbi_err("STATUS1_RUNNING", ext::HSM, 2, &[1]);
    b += "    li t0, 0x81000000\n    ld t1, 0(t0)\n";
    b += &check("FLAG_AFTER_RESTART_ATTEMPT", "t1");
    // Ask hart 1 to stop itself, wait for STOPPED, then start it again.
    b += "    li t0, 0x81000000\n    li t1, 1\n    sd t1, 8(t0)\n";
    b += "2:  li a0, 1\n    li a7, 0x48534d\n    li a6, 2\n    ecall\n    li t1, 1\n    bne a1, t1, 2b\n";
    b += "    la a1, hart1\n    li a0, 1\n    li a2, 0x2222\n    li a7, 0x48534d\n    li a6, 0\n    ecall\n";
    b += &check("RESTART1", "a0");
    b += "    li t0, 0x81000000\n    li t2, 0x2222\n3:  ld t1, 0(t0)\n    bne t1, t2, 3b\n";
    b += &check("FLAG_AFTER_RESTART", "t1");
    // Suspend types (SBI v2.0 §9.4): 0 is default retentive; reserved and platform-specific
    // types are INVALID_PARAM; default non-retentive is not supported here.
    for (name, ty) in [
        ("RETENTIVE", 0u64),
        ("RESERVED1", 1),
        ("PLATFORM_RET", 0x1000_0000),
        ("NON_RETENTIVE", 0x8000_0000),
        ("RESERVED_NR", 0x8000_0001),
        ("PLATFORM_NR", 0x9000_0000),
        ("ALL_ONES", 0xffff_ffff),
    ] {
        b += &sbi_err(&format!("SUSPEND_{name}"), ext::HSM, 3, &[ty, 0, 0]);
    }
    b += &sbi_err("HSM_FID4", ext::HSM, 4, &[]);
    b += &sbi_err("HSM_FID_NEG", ext::HSM, u64::MAX, &[]);
    b += SHUTDOWN;
    b += "hart1:\n    li t0, 0x81000000\n    sd a1, 0(t0)\n4:  ld t1, 8(t0)\n    beqz t1, 4b\n    sd zero, 8(t0)\n    li a7, 0x48534d\n    li a6, 1\n    ecall\n5:  j 5b\n";
    let o = run_clean("hsm", &b, 2);
    expect_all(
        &o,
        &[
            ("START_ID2", ERR_INVALID_PARAM),
            ("START_ID_NEG1", ERR_INVALID_PARAM),
            ("START_ID_4G_PLUS1", ERR_INVALID_PARAM),
            ("START_ID_BIT63", ERR_INVALID_PARAM),
            ("STATUS_ID2", ERR_INVALID_PARAM),
            ("STATUS_ID_NEG1", ERR_INVALID_PARAM),
            ("STATUS_ID_4G_PLUS1", ERR_INVALID_PARAM),
            ("STATUS_ID_BIT63", ERR_INVALID_PARAM),
            ("START_NULL", ERR_INVALID_ADDRESS),
            ("START_HOLE", ERR_INVALID_ADDRESS),
            ("START_UART", ERR_INVALID_ADDRESS),
            ("START_PLIC", ERR_INVALID_ADDRESS),
            ("START_RAM_END", ERR_INVALID_ADDRESS),
            ("START_STRADDLE_END", ERR_INVALID_ADDRESS),
            ("START_BIT63_ALIAS", ERR_INVALID_ADDRESS),
            ("START_NEG", ERR_INVALID_ADDRESS),
            ("STATUS1_AFTER_BAD", SUCCESS),
            ("STATUS1_AFTER_BAD_V", 1),
            ("START1", SUCCESS),
            ("START1_RUNNING", ERR_ALREADY_AVAILABLE),
            ("START0_SELF", ERR_ALREADY_AVAILABLE),
            ("STATUS1_RUNNING", SUCCESS),
            ("STATUS1_RUNNING_V", 0),
            ("FLAG_AFTER_RESTART_ATTEMPT", 0x1111),
            ("RESTART1", SUCCESS),
            ("FLAG_AFTER_RESTART", 0x2222),
            ("SUSPEND_RETENTIVE", SUCCESS),
            ("SUSPEND_RESERVED1", ERR_INVALID_PARAM),
            ("SUSPEND_PLATFORM_RET", ERR_INVALID_PARAM),
            ("SUSPEND_NON_RETENTIVE", ERR_NOT_SUPPORTED),
            ("SUSPEND_RESERVED_NR", ERR_INVALID_PARAM),
            ("SUSPEND_PLATFORM_NR", ERR_INVALID_PARAM),
            ("SUSPEND_ALL_ONES", ERR_INVALID_PARAM),
            ("HSM_FID4", ERR_NOT_SUPPORTED),
            ("HSM_FID_NEG", ERR_NOT_SUPPORTED),
        ],
    );
}

#[test]
fn unknown_calls_and_garbage_arguments_get_spec_errors() {
    let mut b = String::new();
    // Extensions DuVisor does not implement, reserved legacy IDs, garbage IDs.
    let unknown = [
        ("PMU", ext::PMU),
        ("SUSP", ext::SUSP),
        ("CPPC", ext::CPPC),
        ("NACL", ext::NACL),
        ("STA", ext::STA),
        ("EID9", 9),
        ("EID_NEG1", u64::MAX),
        ("EID_BIT63_BASE", BIT63 | ext::BASE),
        ("EID_HI_HSM", (1 << 32) | ext::HSM),
    ];
    for (name, eid) in unknown {
        b += &sbi_err(&format!("EXT_{name}"), eid, 0, &[]);
        b += &sbi_err(&format!("PROBE_{name}"), ext::BASE, 3, &[eid]);
    }
    // Unknown function IDs of implemented extensions.
    for (name, eid, fid) in [
        ("BASE", ext::BASE, 7u64),
        ("BASE_NEG", ext::BASE, u64::MAX),
        ("TIME", ext::TIME, 1),
        ("IPI", ext::IPI, 1),
        ("SRST", ext::SRST, 1),
        ("DBCN", DBCN, 3),
        ("DBCN_HUGE", DBCN, 1 << 40),
    ] {
        b += &sbi_err(&format!("FID_{name}"), eid, fid, &[]);
    }
    // Legacy getchar: no input (-1).
    b += &sbi(ext::LEGACY_GETCHAR, 0, &[]);
    b += &check("LEGACY_GETCHAR", "a0");
    // System reset with reserved or vendor types and reserved reasons (nothing stops).
    for (name, ty, reason) in [
        ("TYPE3", 3u64, 0u64),
        ("TYPE_VENDOR", 0xf000_0000, 0),
        ("TYPE_NEG", 0xffff_ffff, 0),
        ("REASON2", 0, 2),
        ("REASON_RESERVED_HIGH", 1, 0xdfff_ffff),
    ] {
        b += &sbi_err(&format!("SRST_{name}"), ext::SRST, 0, &[ty, reason]);
    }
    // Debug console: addresses outside RAM, into devices, wrapping, huge lengths.
    b += "    li t0, 0x83000000\n    li t1, 0x83001000\n    li t2, 10\n1:  sb t2, 0(t0)\n    addi t0, t0, 1\n    bne t0, t1, 1b\n";
    let dbcn_cases: [(&str, u64, u64, u64, u64); 12] = [
        ("W_STRADDLE_END", 0, 16, RAM_END - 4, 0),
        ("W_RAM_END", 0, 1, RAM_END, 0),
        ("W_UART", 0, 1, 0x1000_0000, 0),
        ("W_PLIC_CLAIM", 0, 4, 0x0c20_0004, 0),
        ("W_BIT63", 0, 4, BIT63 | LOAD_ADDR, 0),
        ("W_WRAP", 0, 16, u64::MAX - 1, 0),
        ("W_HI_NEG", 0, 4, LOAD_ADDR, u64::MAX),
        ("W_HUGE_NEAR_END", 0, u64::MAX, RAM_END - 0x800, 0),
        // A huge length at a valid address: a partial write of at most 4 KiB (all newlines).
        ("W_HUGE", 0, u64::MAX, 0x8300_0000, 0),
        ("R_HUGE", 1, u64::MAX, 0x8300_0000, 0),
        ("R_UART", 1, 16, 0x1000_0000, 0),
        ("R_OK", 1, 16, 0x8300_0000, 0),
    ];
    for (name, fid, n, lo, hi) in dbcn_cases {
        b += &sbi_err(&format!("DBCN_{name}"), DBCN, fid, &[n, lo, hi]);
    }
    // The UART was not touched by any of it: no byte written, line status still idle.
    b += "    li t1, 0x10000005\n    lbu t0, 0(t1)\n";
    b += &check("UART_LSR", "t0");
    b += SHUTDOWN;
    let o = run_clean("sbi-garbage", &b, 1);
    let mut cases: Vec<(String, u64)> = Vec::new();
    for (name, _) in unknown {
        cases.push((format!("EXT_{name}"), ERR_NOT_SUPPORTED));
        cases.push((format!("PROBE_{name}"), SUCCESS));
        cases.push((format!("PROBE_{name}_V"), 0));
    }
    for name in [
        "BASE",
        "BASE_NEG",
        "TIME",
        "IPI",
        "SRST",
        "DBCN",
        "DBCN_HUGE",
    ] {
        cases.push((format!("FID_{name}"), ERR_NOT_SUPPORTED));
    }
    cases.push(("LEGACY_GETCHAR".into(), ERR_FAILED));
    for name in [
        "TYPE3",
        "TYPE_VENDOR",
        "TYPE_NEG",
        "REASON2",
        "REASON_RESERVED_HIGH",
    ] {
        cases.push((format!("SRST_{name}"), ERR_INVALID_PARAM));
    }
    for (name, ..) in dbcn_cases {
        let want = match name {
            "W_HUGE" | "R_OK" => SUCCESS,
            _ => ERR_INVALID_PARAM,
        };
        cases.push((format!("DBCN_{name}"), want));
    }
    cases.push(("DBCN_W_HUGE_V".into(), 0x1000));
    cases.push(("DBCN_R_OK_V".into(), 0));
    cases.push(("UART_LSR".into(), 0x60));
    let cases: Vec<(&str, u64)> = cases.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    expect_all(&o, &cases);
    // The partial write went out: 4096 newlines between the labels around it.
    let w = o.stdout.find("DBCN_W_HUGE=").unwrap();
    let before = &o.stdout[..w];
    assert!(
        before.ends_with(&"\n".repeat(4096 + 1)),
        "the 4 KiB console write did not arrive"
    );
}

// ---------------------------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------------------------

/// Run `insn` (which uses t1 as the address and t0 as the destination/source) at `addr`, with
/// a sentinel in t0; print scause, stval and t0 afterwards.
fn probe(label: &str, insn: &str, addr: u64) -> String {
    format!("    li s10, 0\n    li s11, 0\n    li t1, {addr:#x}\n    li t0, 0x5eed\n    {insn}\n")
        + &check(&format!("{label}_CAUSE"), "s10")
        + &check(&format!("{label}_TVAL"), "s11")
        + &check(&format!("{label}_T0"), "t0")
}

const LOAD_ACCESS: u64 = 5;
const STORE_ACCESS: u64 = 7;
const INST_ACCESS: u64 = 1;

#[test]
fn accesses_outside_ram_fault_and_move_no_data() {
    let holes: [(&str, u64); 12] = [
        ("NULL", 0),
        ("LOW", 0x1000),
        ("CLINT", 0x0200_0000),
        ("AFTER_PLIC", 0x0c60_0000),
        ("AFTER_UART", 0x1000_0100),
        ("EMPTY_VIRTIO_SLOT", 0x1000_1000),
        ("PCIE", 0x3000_0000),
        ("RAM_END", RAM_END),
        ("FOUR_GIB", 0x1_0000_0000),
        ("TOP_OF_GPA", (1 << 41) - 8),
        ("BEYOND_GPA", 1 << 41),
        ("BIT63_ALIAS", BIT63 | 0x8100_0000),
    ];
    let mut b = String::new();
    // A canary at the RAM address the bit-63 alias would reach if the top bits were dropped.
    b += "    li t0, 0x81000000\n    li t1, 0x1234\n    sd t1, 0(t0)\n";
    for (name, addr) in holes {
        b += &probe(&format!("LD_{name}"), "ld t0, 0(t1)", addr);
        b += &probe(&format!("SD_{name}"), "sd t0, 0(t1)", addr);
        b += &probe(&format!("FETCH_{name}"), "jalr ra, 0(t1)", addr);
    }
    b += &probe("FETCH_UART", "jalr ra, 0(t1)", 0x1000_0000);
    b += &probe("FETCH_PLIC", "jalr ra, 0(t1)", 0x0c00_0000);
    b += &probe("LW_TOP", "lw t0, 0(t1)", u64::MAX - 3);
    // The last word of RAM is fine; a doubleword straddling the end is not.
    b += "    li t1, 0x83fffff8\n    li t2, 0x0102030405060708\n    sd t2, 0(t1)\n";
    b += &probe("LD_LAST", "ld t0, 0(t1)", RAM_END - 8);
    b += &probe("LD_STRADDLE_END", "ld t0, 0(t1)", RAM_END - 4);
    b += &probe("SD_STRADDLE_END", "sd t0, 0(t1)", RAM_END - 4);
    b += "    li t1, 0x83fffff8\n    ld t0, 0(t1)\n";
    b += &check("LAST_AFTER", "t0");
    b += "    li t0, 0x81000000\n    ld t1, 0(t0)\n";
    b += &check("CANARY", "t1");
    b += SHUTDOWN;
    let o = run_clean("memory", &b, 1);
    let mut cases: Vec<(String, u64)> = Vec::new();
    for (name, addr) in holes {
        for (kind, cause) in [
            ("LD", LOAD_ACCESS),
            ("SD", STORE_ACCESS),
            ("FETCH", INST_ACCESS),
        ] {
            cases.push((format!("{kind}_{name}_CAUSE"), cause));
            cases.push((format!("{kind}_{name}_TVAL"), addr));
            cases.push((format!("{kind}_{name}_T0"), 0x5eed));
        }
    }
    for (name, addr) in [("UART", 0x1000_0000u64), ("PLIC", 0x0c00_0000)] {
        cases.push((format!("FETCH_{name}_CAUSE"), INST_ACCESS));
        cases.push((format!("FETCH_{name}_TVAL"), addr));
    }
    cases.extend([
        ("LW_TOP_CAUSE".into(), LOAD_ACCESS),
        ("LW_TOP_TVAL".into(), u64::MAX - 3),
        ("LW_TOP_T0".into(), 0x5eed),
        ("LD_LAST_CAUSE".into(), 0),
        ("LD_LAST_T0".into(), 0x0102_0304_0506_0708),
        ("LD_STRADDLE_END_CAUSE".into(), LOAD_ACCESS),
        ("LD_STRADDLE_END_TVAL".into(), RAM_END),
        ("LD_STRADDLE_END_T0".into(), 0x5eed),
        ("SD_STRADDLE_END_CAUSE".into(), STORE_ACCESS),
        ("SD_STRADDLE_END_TVAL".into(), RAM_END),
        ("LAST_AFTER".into(), 0x0102_0304_0506_0708),
        ("CANARY".into(), 0x1234),
    ]);
    let cases: Vec<(&str, u64)> = cases.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    expect_all(&o, &cases);
}

/// A guest page table whose next level lies in device space: the walk's implicit PTE read
/// reaches the UART (and the PLIC). The hardware reports it as a guest-page fault with a
/// pseudoinstruction in htinst (0x3000); it was decoded as a 2-byte `ld x0`, the device was
/// read with side effects and the guest resumed 2 bytes into its instruction. The guest must
/// get the access fault of its own access instead, with stval its virtual address, and no
/// device may be touched.
#[test]
fn page_table_walks_into_device_space_get_access_faults() {
    const ROOT: u64 = 0x8300_0000;
    let pte = |pa: u64, flags: u64| ((pa >> 12) << 10) | flags;
    let mut b = String::new();
    // root[0] -> next level "in" the UART, root[1] -> in the PLIC, root[2] identity-maps
    // 0x8000_0000.. as one RWX gigapage (code, stack, trap handler).
    for (i, v) in [
        (0u64, pte(0x1000_0000, 1)),
        (1, pte(0x0c00_0000, 1)),
        (2, pte(0x8000_0000, 0xcf)),
    ] {
        b += &format!(
            "    li t0, {:#x}\n    li t1, {v:#x}\n    sd t1, 0(t0)\n",
            ROOT + 8 * i
        );
    }
    b += &format!(
        "    li t0, {:#x}\n    csrw satp, t0\n    sfence.vma\n",
        (8u64 << 60) | (ROOT >> 12)
    );
    b += &probe("LD_UART", "ld t0, 0(t1)", 0x0);
    b += &probe("LW_UART", "lw t0, 0(t1)", 0x28_0000);
    b += &probe("SD_UART", "sd t0, 0(t1)", 0x2000);
    b += &probe("FETCH_UART", "jalr ra, 0(t1)", 0x4000);
    b += &probe("LD_PLIC", "ld t0, 0(t1)", 0x4000_0000);
    b += &probe("SB_PLIC", "sb t0, 0(t1)", 0x4020_0001);
    // A compressed load: the pc must move by 2, not into the next instruction.
    b += "    .option rvc\n";
    b += &probe("CLD_UART", "c.ld a5, 0(a4)", 0x10);
    b += "    .option norvc\n";
    b += "    csrw satp, zero\n    sfence.vma\n";
    b += "    li t0, 0x77\n";
    b += &check("AFTER", "t0");
    b += SHUTDOWN;
    // c.ld's registers are a5 and a4: point a4 at the probe address too.
    let b = b.replace(
        "    li t1, 0x10\n",
        "    li t1, 0x10\n    li a4, 0x10\n    li a5, 0x5eed\n",
    );
    let o = run_clean("pt-in-mmio", &b, 1);
    let mut cases: Vec<(String, u64)> = Vec::new();
    for (name, cause, va) in [
        ("LD_UART", LOAD_ACCESS, 0x0),
        ("LW_UART", LOAD_ACCESS, 0x28_0000),
        ("SD_UART", STORE_ACCESS, 0x2000),
        ("FETCH_UART", INST_ACCESS, 0x4000),
        ("LD_PLIC", LOAD_ACCESS, 0x4000_0000),
        ("SB_PLIC", STORE_ACCESS, 0x4020_0001),
        ("CLD_UART", LOAD_ACCESS, 0x10),
    ] {
        cases.push((format!("{name}_CAUSE"), cause));
        cases.push((format!("{name}_TVAL"), va));
        cases.push((format!("{name}_T0"), 0x5eed));
    }
    cases.push(("AFTER".into(), 0x77));
    let cases: Vec<(&str, u64)> = cases.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    expect_all(&o, &cases);
    // Not one device access (--stats lists only kinds that happened): every exit of the
    // walks was an injected access fault.
    let stats = o.stats().unwrap();
    assert!(
        !stats.contains("mmio read") && !stats.contains("mmio write"),
        "a device was accessed by a page-table walk:\n{stats}"
    );
    let faults: u64 = stats
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("access fault injected"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no access-fault line:\n{stats}"));
    assert_eq!(faults, 7, "{stats}");
}

#[test]
fn mmio_abuse_faults_or_is_ignored_as_documented() {
    const PRIO10: u64 = 0x0c00_0028;
    let mut b = String::new();
    b += "    li t0, 1 << 13\n    csrs sstatus, t0\n"; // FP on
    b += "    li t1, 0x0c000028\n    li t0, 5\n    sw t0, 0(t1)\n";
    // Misaligned device accesses: access faults, nothing done.
    b += &probe("LW_MISALIGNED", "lw t0, 0(t1)", PRIO10 + 1);
    b += &probe("SW_MISALIGNED", "sw t0, 0(t1)", PRIO10 + 2);
    b += &probe("LD_HALF_ALIGNED", "ld t0, 0(t1)", PRIO10 - 4);
    b += &probe("LH_UART_ODD", "lh t0, 0(t1)", 0x1000_0001);
    // 8-byte accesses to a 4-byte register: reads as zero, writes ignored (plic.rs).
    b += &probe("SD_WIDE", "li t2, 7\n    sd t2, 0(t1)", PRIO10);
    b += &probe("LD_WIDE", "ld t0, 0(t1)", PRIO10);
    b += &probe("FLD_WIDE", "fld ft0, 0(t1)\n    fmv.x.d t0, ft0", PRIO10);
    b += &probe("FLW", "flw ft1, 0(t1)\n    fmv.x.d t0, ft1", PRIO10);
    // Atomics on a device: store/AMO access fault (LR: load access fault), rd untouched.
    b += &probe("AMOADD_W", "li t2, 1\n    amoadd.w t0, t2, (t1)", PRIO10);
    b += &probe(
        "AMOSWAP_D",
        "li t2, 1\n    amoswap.d t0, t2, (t1)",
        PRIO10 - 8,
    );
    b += &probe("LR_W", "lr.w t0, (t1)", PRIO10);
    b += &probe("SC_W", "li t2, 1\n    sc.w t0, t2, (t1)", PRIO10);
    b += &probe(
        "AMO_UART",
        "li t2, 0x41\n    amoor.w t0, t2, (t1)",
        0x1000_0000,
    );
    // After all that, the register still holds what the one valid write put there.
    b += "    li t1, 0x0c000028\n    lw t0, 0(t1)\n";
    b += &check("PRIO_AFTER", "t0");
    b += SHUTDOWN;
    let o = run_clean("mmio", &b, 1);
    let mut cases: Vec<(String, u64)> = Vec::new();
    let mut fault = |name: &str, cause: u64, tval: u64| {
        cases.push((format!("{name}_CAUSE"), cause));
        cases.push((format!("{name}_TVAL"), tval));
        cases.push((format!("{name}_T0"), 0x5eed));
    };
    fault("LW_MISALIGNED", LOAD_ACCESS, PRIO10 + 1);
    fault("SW_MISALIGNED", STORE_ACCESS, PRIO10 + 2);
    fault("LD_HALF_ALIGNED", LOAD_ACCESS, PRIO10 - 4);
    fault("LH_UART_ODD", LOAD_ACCESS, 0x1000_0001);
    fault("AMOADD_W", STORE_ACCESS, PRIO10);
    fault("AMOSWAP_D", STORE_ACCESS, PRIO10 - 8);
    fault("LR_W", LOAD_ACCESS, PRIO10);
    fault("SC_W", STORE_ACCESS, PRIO10);
    fault("AMO_UART", STORE_ACCESS, 0x1000_0000);
    cases.extend([
        ("SD_WIDE_CAUSE".into(), 0),
        ("LD_WIDE_CAUSE".into(), 0),
        ("LD_WIDE_T0".into(), 0),
        ("FLD_WIDE_CAUSE".into(), 0),
        ("FLD_WIDE_T0".into(), 0),
        ("FLW_CAUSE".into(), 0),
        ("FLW_T0".into(), 0xffff_ffff_0000_0005),
        ("PRIO_AFTER".into(), 5),
    ]);
    let cases: Vec<(&str, u64)> = cases.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    expect_all(&o, &cases);
    // The UART transmitted nothing (the AMO on its data register did not half-happen): the
    // console holds only the guest's key=value lines.
    for l in o.stdout.lines() {
        let v = l.split_once('=').map(|(_, v)| v);
        assert!(
            v.is_some_and(|v| v.len() == 16 && v.bytes().all(|c| c.is_ascii_hexdigit())),
            "stray console output {l:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Interrupt storm
// ---------------------------------------------------------------------------------------------

/// Interrupt code for the storm: per-hart counters at `tp` (0: software interrupts, 8:
/// external interrupts, 16: the hart's PLIC claim register, 24/32: saved t5/t4, 40: others).
/// An external interrupt is claimed, the UART's THR-empty interrupt switched off, and the
/// source completed.
const STORM_IRQ: &str = r#"
    slli t6, t6, 1
    srli t6, t6, 1
    addi t6, t6, -1
    bnez t6, 1f
    csrci sip, 2
    ld t6, 0(tp)
    addi t6, t6, 1
    sd t6, 0(tp)
    csrr t6, sscratch
    sret
1:  addi t6, t6, -8
    bnez t6, 2f
    sd t5, 24(tp)
    sd t4, 32(tp)
    ld t5, 16(tp)
    lw t6, 0(t5)
    beqz t6, 3f
    li t4, 0x10000001
    sb zero, 0(t4)
    lbu t4, 1(t4)
    sw t6, 0(t5)
    ld t6, 8(tp)
    addi t6, t6, 1
    sd t6, 8(tp)
3:  ld t4, 32(tp)
    ld t5, 24(tp)
    csrr t6, sscratch
    sret
2:  ld t6, 40(tp)
    addi t6, t6, 1
    sd t6, 40(tp)
    li t6, 0x20
    csrc sie, t6
    csrr t6, sscratch
    sret
"#;

const STORM_ROUNDS: u64 = 10_000;
const STORM_IPIS_1: u64 = 20_000;

#[test]
fn interrupt_storm_leaves_the_guest_making_progress() {
    // Hart 0 runs STORM_ROUNDS rounds of: an IPI to both harts, the UART's THR-empty interrupt
    // switched on (an external interrupt through the PLIC), and PLIC abuse (priorities,
    // enables and thresholds flipped, claims from contexts that have nothing, completions of
    // garbage IDs, registers of contexts that do not exist). Hart 1 meanwhile sends hart 0
    // STORM_IPIS_1 IPIs. Both keep interrupts enabled throughout; then the PLIC must still
    // deliver a plain UART interrupt and the VM must power off.
    let body = format!(
        r#"
    li tp, 0x81000000
    li t0, 0x0c200004
    sd t0, 16(tp)
    li t0, 0x81000100
    sd zero, 0(t0)
    sd zero, 8(t0)
    sd zero, 48(t0)
    li t0, 0x0c201004
    li t1, 0x81000100
    sd t0, 16(t1)
    li t0, 0x222
    csrs sie, t0
    csrsi sstatus, 2
    la a1, storm1
    li a0, 1
    li a2, 0
    li a7, 0x48534d
    li a6, 0
    ecall
    mv s0, zero
    li s1, {STORM_ROUNDS}
    li s6, 0x0c000000
    li s7, 0x10000001
    li s2, 0x0c001000
    li s3, 0x0c002000
    li s4, 0x0c200000
    li s5, 0x0c201000
round:
    li a0, 3
    li a1, 0
    li a7, 0x735049
    li a6, 0
    ecall
    andi t0, s0, 7
    sw t0, 0x28(s6)
    li t0, 0x400
    sw t0, 0(s3)
    li t0, 2
    sb t0, 0(s7)
    andi t0, s0, 1
    slli t0, t0, 2
    sw t0, 0(s4)
    lw t0, 4(s4)
    sw t0, 4(s4)
    sw zero, 4(s4)
    li t0, -1
    sw t0, 4(s4)
    li t0, 1023
    sw t0, 4(s4)
    li t0, 10
    sw t0, 4(s5)
    lw t0, 4(s5)
    li t0, 0x0c205000
    sw zero, 0(t0)
    lw t2, 4(t0)
    li t0, -1
    sw t0, 0(s3)
    sw zero, 0x80(s3)
    lw t0, 0(s2)
    sw zero, 0(s2)
    li t0, 0x0c21f000
    lw t2, 4(t0)
    addi s0, s0, 1
    bltu s0, s1, round
    # The storm is over: the PLIC still works. Priority 1, enable UART, threshold 0, THRE on.
    li t0, 1
    sw t0, 0x28(s6)
    li t0, 0x400
    sw t0, 0(s3)
    sw zero, 0(s4)
    ld s8, 8(tp)
    li t0, 2
    sb t0, 0(s7)
    li t2, 100000000
1:  ld t0, 8(tp)
    bne t0, s8, 2f
    addi t2, t2, -1
    bnez t2, 1b
2:  sub s8, t0, s8
    # Wait for hart 1 to finish, then report with interrupts off.
    li t1, 0x81000100
3:  ld t0, 48(t1)
    beqz t0, 3b
    csrci sstatus, 2
{}{}{}{}{}{}{}{}
    SHUTDOWN_HERE
storm1:
    la t0, trap
    csrw stvec, t0
    li tp, 0x81000100
    li t0, 0x222
    csrs sie, t0
    csrsi sstatus, 2
    li s0, 0
    li s1, {STORM_IPIS_1}
4:  li a0, 1
    li a1, 0
    li a7, 0x735049
    li a6, 0
    ecall
    addi s0, s0, 1
    bltu s0, s1, 4b
    csrci sstatus, 2
    sd s0, 56(tp)
    li t0, 1
    sd t0, 48(tp)
5:  wfi
    j 5b
"#,
        check("ROUNDS", "s0"),
        "    ld s1, 0(tp)\n",
        check("SSI_TAKEN_0", "s1"),
        "    ld s1, 8(tp)\n    ld s6, 40(tp)\n",
        check("EXT_TAKEN_0", "s1"),
        check("OTHER_TAKEN_0", "s6"),
        check("EXT_AFTER_STORM", "s8"),
        "    li t1, 0x81000100\n    ld s1, 0(t1)\n    ld s6, 56(t1)\n".to_string()
            + &check("SSI_TAKEN_1", "s1")
            + &check("IPIS_SENT_1", "s6"),
    )
    .replace("    SHUTDOWN_HERE\n", SHUTDOWN);
    let o = Boot::with_image("storm", guest_image_with_irq(&body, STORM_IRQ), 2)
        .arg("--stats")
        .timeout(Duration::from_secs(120))
        .run();
    o.assert_stopped(0, None);
    o.assert_no_emergency();
    assert_eq!(o.get("ROUNDS"), STORM_ROUNDS);
    assert_eq!(o.get("IPIS_SENT_1"), STORM_IPIS_1);
    assert_eq!(o.get("OTHER_TAKEN_0"), 0, "no interrupt but SSI and SEI");
    // IPIs coalesce while one is pending, so fewer may be taken than sent, but never more.
    let ssi0 = o.get("SSI_TAKEN_0");
    assert!(
        (1..=STORM_ROUNDS + STORM_IPIS_1).contains(&ssi0),
        "hart 0 took {ssi0} IPIs"
    );
    let ssi1 = o.get("SSI_TAKEN_1");
    assert!(
        (1..=STORM_ROUNDS).contains(&ssi1),
        "hart 1 took {ssi1} IPIs"
    );
    let ext = o.get("EXT_TAKEN_0");
    assert!(
        (1..=STORM_ROUNDS + 1).contains(&ext),
        "hart 0 took {ext} external interrupts"
    );
    assert_eq!(
        o.get("EXT_AFTER_STORM"),
        1,
        "the PLIC works after the storm"
    );
}

// ---------------------------------------------------------------------------------------------
// virtio-blk from the guest side
// ---------------------------------------------------------------------------------------------

/// Guest-physical layout of the test driver's queue 0 (8 entries) and buffers.
const DESC: u64 = 0x8100_0000;
const AVAIL: u64 = 0x8100_1000;
const USED: u64 = 0x8100_2000;
const HDR: u64 = 0x8100_3000;
const ST: u64 = 0x8100_3100;
const DATA: u64 = 0x8100_4000;
const INDIRECT: u64 = 0x8100_5000;
/// Where the guest keeps its canaries: right after DATA's 512 bytes, and the last 256 bytes of
/// RAM.
const CANARY: u64 = 0xcccc_cccc_cccc_cccc;
const DATA_FILL: u64 = 0xabab_abab_abab_abab;
const QSIZE: u64 = 8;

const NEXT: u64 = 1;
const WRITE: u64 = 2;
const INDIRECT_F: u64 = 4;

const T_IN: u64 = 0;
const T_OUT: u64 = 1;
const T_FLUSH: u64 = 4;
const T_GET_ID: u64 = 8;
const T_DISCARD: u64 = 11;
const T_WRITE_ZEROES: u64 = 13;

const DISK_SECTORS: usize = 128;

/// The test driver: `vq_init` (a0..a3 = descriptor table, driver area, device area, queue
/// size) resets the device at slot 0, negotiates VERSION_1 and INDIRECT_DESC, sets up queue 0
/// and sets DRIVER_OK, returning the device status in a0; `vq_submit` (a0 = head) makes a
/// chain available, notifies, and waits (10 s of guest time at most) for it to be used
/// (a0 = 0, a1 = used length) or for DEVICE_NEEDS_RESET (a0 = 1); 2 on timeout.
const VIRTIO_DRIVER: &str = r#"
vq_init:
    li t0, 0x10001000
    sw zero, 0x70(t0)
    li t1, 3
    sw t1, 0x70(t0)
    li t1, 1
    sw t1, 0x24(t0)
    sw t1, 0x20(t0)
    sw zero, 0x24(t0)
    li t1, 0x10000000
    sw t1, 0x20(t0)
    li t1, 11
    sw t1, 0x70(t0)
    sw zero, 0x30(t0)
    sw a3, 0x38(t0)
    sw a0, 0x80(t0)
    srli t1, a0, 32
    sw t1, 0x84(t0)
    sw a1, 0x90(t0)
    srli t1, a1, 32
    sw t1, 0x94(t0)
    sw a2, 0xa0(t0)
    srli t1, a2, 32
    sw t1, 0xa4(t0)
    li t1, 0x81001000
    sw zero, 0(t1)
    li t1, 0x81002000
    sw zero, 0(t1)
    li t1, 1
    sw t1, 0x44(t0)
    li t1, 15
    sw t1, 0x70(t0)
    lw a0, 0x70(t0)
    ret

vq_submit:
    li t0, 0x81001000
    lhu t1, 2(t0)
    andi t2, t1, 7
    slli t2, t2, 1
    add t2, t2, t0
    sh a0, 4(t2)
    fence w, w
    addi t1, t1, 1
    sh t1, 2(t0)
    fence w, w
    li t0, 0x10001000
    sw zero, 0x50(t0)
vq_wait:
    csrr t3, time
    li t4, 100000000
    add t3, t3, t4
1:  li t0, 0x81002000
    lhu t2, 2(t0)
    beq t2, t1, 2f
    li t0, 0x10001000
    lw t2, 0x70(t0)
    andi t2, t2, 0x40
    bnez t2, 3f
    csrr t2, time
    bltu t2, t3, 1b
    li a0, 2
    li a1, 0
    ret
2:  addi t2, t1, -1
    andi t2, t2, 7
    slli t2, t2, 3
    add t2, t2, t0
    lw a1, 8(t2)
    li a0, 0
    ret
3:  li a0, 1
    li a1, 0
    ret
"#;

/// Write descriptor `i` of the table at `table`.
fn desc_at(table: u64, i: u64, addr: u64, len: u64, flags: u64, next: u64) -> String {
    format!(
        "    li t0, {:#x}\n    li t1, {addr:#x}\n    sd t1, 0(t0)\n    li t1, {len:#x}\n    sw t1, 8(t0)\n    li t1, {flags}\n    sh t1, 12(t0)\n    li t1, {next}\n    sh t1, 14(t0)\n",
        table + 16 * i
    )
}

fn desc(i: u64, addr: u64, len: u64, flags: u64, next: u64) -> String {
    desc_at(DESC, i, addr, len, flags, next)
}

/// Request header `kind`/`sector` at HDR; status byte preset to 0xee; DATA's first doubleword
/// set to DATA_FILL.
fn header(kind: u64, sector: u64) -> String {
    format!(
        "    li t0, {HDR:#x}\n    li t1, {kind:#x}\n    sw t1, 0(t0)\n    sw zero, 4(t0)\n    li t1, {sector:#x}\n    sd t1, 8(t0)\n    li t0, {ST:#x}\n    li t1, 0xee\n    sb t1, 0(t0)\n    li t0, {DATA:#x}\n    li t1, {DATA_FILL:#x}\n    sd t1, 0(t0)\n"
    )
}

/// Re-initialise the device with the standard queue, print its status as `{label}_INIT`.
fn init(label: &str) -> String {
    format!(
        "    li a0, {DESC:#x}\n    li a1, {AVAIL:#x}\n    li a2, {USED:#x}\n    li a3, {QSIZE}\n    call vq_init\n    mv s1, a0\n"
    ) + &check(&format!("{label}_INIT"), "s1")
}

/// Submit chain `head` and print: `_R` (0 used, 1 needs reset, 2 timeout), `_LEN` (used
/// length), `_ST` (status byte, 0xee if untouched), `_DATA` (DATA's first doubleword),
/// `_STATUS` (device status register).
fn submit(label: &str, head: u64) -> String {
    format!("    li a0, {head}\n    call vq_submit\n    mv s1, a0\n    mv s6, a1\n")
        + &check(&format!("{label}_R"), "s1")
        + &check(&format!("{label}_LEN"), "s6")
        + &format!(
            "    li t0, {ST:#x}\n    lbu s1, 0(t0)\n    li t0, {DATA:#x}\n    ld s6, 0(t0)\n"
        )
        + &check(&format!("{label}_ST"), "s1")
        + &check(&format!("{label}_DATA"), "s6")
        + "    li t0, 0x10001000\n    lw s1, 0x70(t0)\n"
        + &check(&format!("{label}_STATUS"), "s1")
}

/// A request on a freshly initialised device: `descs` builds the chain, `head` is made
/// available.
fn request(label: &str, kind: u64, sector: u64, descs: &str, head: u64) -> String {
    init(label) + &header(kind, sector) + descs + &submit(label, head)
}

/// The usual three-descriptor request: header, one data buffer (`data`, `len`, `dflags`),
/// status byte.
fn three(data: u64, len: u64, dflags: u64) -> String {
    desc(0, HDR, 16, NEXT, 1) + &desc(1, data, len, dflags | NEXT, 2) + &desc(2, ST, 1, WRITE, 0)
}

/// Fill the canaries: 512 bytes after DATA, the last 256 bytes of RAM.
const CANARIES: &str = r#"
    li t0, 0x81004200
    li t2, 0x81004400
    li t1, 0xcccccccccccccccc
1:  sd t1, 0(t0)
    addi t0, t0, 8
    bne t0, t2, 1b
    li t0, 0x83ffff00
    li t2, 0x84000000
2:  sd t1, 0(t0)
    addi t0, t0, 8
    bne t0, t2, 2b
"#;

/// Check the canaries: prints CANARY_DATA and CANARY_END, the AND of each area's doublewords.
fn canaries_check() -> String {
    r#"
    li t0, 0x81004200
    li t2, 0x81004400
    li s1, -1
1:  ld t1, 0(t0)
    and s1, s1, t1
    addi t0, t0, 8
    bne t0, t2, 1b
    li t0, 0x83ffff00
    li t2, 0x84000000
    li s6, -1
2:  ld t1, 0(t0)
    and s6, s6, t1
    addi t0, t0, 8
    bne t0, t2, 2b
"#
    .to_string()
        + &check("CANARY_DATA", "s1")
        + &check("CANARY_END", "s6")
}

fn disk_pattern() -> Vec<u8> {
    (0..DISK_SECTORS * 512)
        .map(|i| (i % 251) as u8 ^ (i / 512) as u8)
        .collect()
}

fn doubleword(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

/// A scratch disk image with the test pattern.
fn disk_image(name: &str) -> std::path::PathBuf {
    let p = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("hostile-{name}-{}.img", std::process::id()));
    std::fs::write(&p, disk_pattern()).unwrap();
    p
}

/// The `virtio device needs reset: ...` reasons DuVisor logged, in order (DUVISOR_LOG=warn).
fn reset_reasons(o: &Outcome) -> Vec<String> {
    let strip = |l: &str| {
        let mut out = String::new();
        let mut esc = false;
        for c in l.chars() {
            match (esc, c) {
                (false, '\x1b') => esc = true,
                (true, 'm') => esc = false,
                (true, _) => {}
                (false, c) => out.push(c),
            }
        }
        out
    };
    o.stderr
        .lines()
        .map(strip)
        .filter_map(|l| {
            l.split_once("virtio device needs reset: ")
                .map(|(_, r)| r.to_string())
        })
        .collect()
}

/// Expected results of one request.
struct Want {
    r: u64,
    len: u64,
    st: u64,
    data: u64,
}

const NEEDS_RESET: Want = Want {
    r: 1,
    len: 0,
    st: 0xee,
    data: DATA_FILL,
};
/// Status after DRIVER_OK: ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK.
const LIVE: u64 = 0xf;
const STATUS_NEEDS_RESET: u64 = 0x40;

const MALFORMED: &str =
    "descriptor chain is malformed (loop, bad index, bad indirect table or over 4 GiB)";

/// One malformed request: label, header kind, sector, chain set-up, head index, expected
/// result, the reason DuVisor logs for a DEVICE_NEEDS_RESET.
type Attack = (&'static str, u64, u64, String, u64, Want, Option<String>);

#[test]
fn malformed_virtio_blk_requests_are_refused_and_the_disk_is_untouched() {
    let img = disk_image("blk");
    let original = std::fs::read(&img).unwrap();
    let sector1 = doubleword(&original, 512);
    let attacks: Vec<Attack> = vec![
        (
            "GOOD_READ",
            T_IN,
            1,
            three(DATA, 512, WRITE),
            0,
            Want {
                r: 0,
                len: 513,
                st: 0,
                data: sector1,
            },
            None,
        ),
        (
            "SHORT_HEADER",
            T_OUT,
            0,
            desc(0, HDR, 8, NEXT, 1) + &desc(1, ST, 1, WRITE, 0),
            0,
            Want {
                r: 0,
                len: 1,
                st: 1,
                data: DATA_FILL,
            },
            None,
        ),
        (
            "LOOP_SELF",
            T_IN,
            0,
            desc(0, HDR, 16, NEXT, 1) + &desc(1, DATA, 512, WRITE | NEXT, 1),
            0,
            NEEDS_RESET,
            Some(MALFORMED.into()),
        ),
        (
            "LOOP_HEAD",
            T_OUT,
            0,
            desc(0, HDR, 16, NEXT, 0),
            0,
            NEEDS_RESET,
            Some(MALFORMED.into()),
        ),
        (
            "NEXT_OUT_OF_TABLE",
            T_IN,
            0,
            desc(0, HDR, 16, NEXT, 200),
            0,
            NEEDS_RESET,
            Some(MALFORMED.into()),
        ),
        (
            "HEAD_OUT_OF_TABLE",
            T_IN,
            0,
            three(DATA, 512, WRITE),
            9,
            NEEDS_RESET,
            Some(MALFORMED.into()),
        ),
        (
            "DMA_TO_UART",
            T_IN,
            0,
            three(0x1000_0000, 512, WRITE),
            0,
            NEEDS_RESET,
            Some("guest buffer 0x10000000+0x200 is outside guest RAM".into()),
        ),
        (
            "DMA_FROM_PLIC",
            T_OUT,
            0,
            three(0x0c00_0000, 512, 0),
            0,
            NEEDS_RESET,
            Some("guest buffer 0xc000000+0x200 is outside guest RAM".into()),
        ),
        (
            "DMA_BEYOND_RAM",
            T_IN,
            0,
            three(RAM_END, 512, WRITE),
            0,
            NEEDS_RESET,
            Some(format!("guest buffer {RAM_END:#x}+0x200 is outside guest RAM")),
        ),
        (
            "DMA_STRADDLE_END",
            T_IN,
            0,
            three(RAM_END - 256, 512, WRITE),
            0,
            NEEDS_RESET,
            Some(format!(
                "guest buffer {:#x}+0x200 is outside guest RAM",
                RAM_END - 256
            )),
        ),
        (
            "DMA_BIT63_ALIAS",
            T_IN,
            0,
            three(BIT63 | DATA, 512, WRITE),
            0,
            NEEDS_RESET,
            Some(format!(
                "guest buffer {:#x}+0x200 is outside guest RAM",
                BIT63 | DATA
            )),
        ),
        (
            "HUGE_LEN_IN",
            T_IN,
            0,
            three(0x8000_0000, 0xffff_fe00, WRITE),
            0,
            NEEDS_RESET,
            Some("guest buffer 0x80000000+0xfffffe00 is outside guest RAM".into()),
        ),
        (
            "HUGE_LEN_OUT",
            T_OUT,
            0,
            three(0x8000_0000, 0xffff_fe00, 0),
            0,
            NEEDS_RESET,
            Some("guest buffer 0x80000000+0xfffffe00 is outside guest RAM".into()),
        ),
        (
            "CHAIN_OVER_4G",
            T_IN,
            0,
            desc(0, HDR, 16, NEXT, 1)
                + &desc(1, DATA, 0x8000_0000, WRITE | NEXT, 2)
                + &desc(2, DATA, 0x8000_0000, WRITE | NEXT, 3)
                + &desc(3, ST, 1, WRITE, 0),
            0,
            NEEDS_RESET,
            Some(MALFORMED.into()),
        ),
        (
            "NO_STATUS",
            T_IN,
            0,
            desc(0, HDR, 16, 0, 0),
            0,
            NEEDS_RESET,
            Some("no writable status byte".into()),
        ),
        (
            "STATUS_IN_PLIC_CLAIM",
            T_IN,
            0,
            desc(0, HDR, 16, NEXT, 1) + &desc(1, 0x0c20_0004, 1, WRITE, 0),
            0,
            NEEDS_RESET,
            Some("guest buffer 0xc200004+0x1 is outside guest RAM".into()),
        ),
        (
            "HEADER_IN_UART",
            T_IN,
            0,
            desc(0, 0x1000_0000, 16, NEXT, 1) + &desc(1, ST, 1, WRITE, 0),
            0,
            NEEDS_RESET,
            Some("guest buffer 0x10000000+0x10 is outside guest RAM".into()),
        ),
        (
            "READABLE_AFTER_WRITABLE",
            T_OUT,
            0,
            desc(0, HDR, 16, NEXT, 1)
                + &desc(1, DATA, 512, WRITE | NEXT, 2)
                + &desc(2, DATA, 512, NEXT, 3)
                + &desc(3, ST, 1, WRITE, 0),
            0,
            NEEDS_RESET,
            Some("device-readable descriptor after a device-writable one".into()),
        ),
        (
            "INDIRECT_IN_PLIC",
            T_IN,
            0,
            desc(0, 0x0c00_0000, 48, INDIRECT_F, 0),
            0,
            NEEDS_RESET,
            Some(MALFORMED.into()),
        ),
        (
            "INDIRECT_LOOP",
            T_IN,
            0,
            desc_at(INDIRECT, 0, HDR, 16, NEXT, 1)
                + &desc_at(INDIRECT, 1, DATA, 512, WRITE | NEXT, 1)
                + &desc(0, INDIRECT, 48, INDIRECT_F, 0),
            0,
            NEEDS_RESET,
            Some(MALFORMED.into()),
        ),
        (
            "INDIRECT_NESTED",
            T_IN,
            0,
            desc_at(INDIRECT, 0, INDIRECT, 48, INDIRECT_F, 0) + &desc(0, INDIRECT, 48, INDIRECT_F, 0),
            0,
            NEEDS_RESET,
            Some(MALFORMED.into()),
        ),
        (
            "SECTOR_BEYOND_DISK",
            T_IN,
            1 << 60,
            three(DATA, 512, WRITE),
            0,
            Want {
                r: 0,
                len: 1,
                st: 1,
                data: DATA_FILL,
            },
            None,
        ),
        (
            "WRITE_LAST_SECTOR_PLUS_ONE",
            T_OUT,
            DISK_SECTORS as u64 - 1,
            three(DATA, 1024, 0),
            0,
            Want {
                r: 0,
                len: 1,
                st: 1,
                data: DATA_FILL,
            },
            None,
        ),
        (
            "WRITE_SECTOR_OVERFLOW",
            T_OUT,
            u64::MAX / 512 + 1,
            three(DATA, 512, 0),
            0,
            Want {
                r: 0,
                len: 1,
                st: 1,
                data: DATA_FILL,
            },
            None,
        ),
        (
            "WRITE_PARTIAL_SECTOR",
            T_OUT,
            0,
            three(DATA, 100, 0),
            0,
            Want {
                r: 0,
                len: 1,
                st: 1,
                data: DATA_FILL,
            },
            None,
        ),
        (
            "DISCARD_BEYOND_DISK",
            T_DISCARD,
            0,
            format!(
                "    li t0, {DATA:#x}\n    li t1, 0x1000000000000\n    sd t1, 0(t0)\n    li t1, 8\n    sd t1, 8(t0)\n"
            ) + &three(DATA, 16, 0),
            0,
            Want {
                r: 0,
                len: 1,
                st: 1,
                data: 0x1_0000_0000_0000,
            },
            None,
        ),
        (
            "UNKNOWN_TYPE",
            0x7fff_ffff,
            0,
            three(DATA, 512, WRITE),
            0,
            Want {
                r: 0,
                len: 1,
                st: 2,
                data: DATA_FILL,
            },
            None,
        ),
    ];
    let mut b = String::from(CANARIES);
    // Registers of the device are 32-bit: a doubleword read of MagicValue reads as zero.
    b += "    li t1, 0x10001000\n    ld t0, 0(t1)\n    lw t2, 0(t1)\n";
    b += &check("MAGIC_LD", "t0");
    b += &check("MAGIC_LW", "t2");
    for (label, kind, sector, descs, head, ..) in &attacks {
        // DISCARD's segment is written by its chain set-up, after the header.
        b += &request(label, *kind, *sector, descs, *head);
    }
    // The driver moves the available index 100 chains ahead of the device.
    b += &init("AVAIL_JUMP");
    b += &header(T_IN, 0);
    b += &three(DATA, 512, WRITE);
    b += &format!(
        "    li t0, {AVAIL:#x}\n    sh zero, 4(t0)\n    li t1, 100\n    sh t1, 2(t0)\n    li t0, 0x10001000\n    sw zero, 0x50(t0)\n    li t1, 1\n    call vq_wait\n    mv s1, a0\n"
    );
    b += &check("AVAIL_JUMP_R", "s1");
    // Rings outside RAM or an invalid queue size: refused at DRIVER_OK.
    for (label, d, a, u, n) in [
        ("RING_IN_PLIC", 0x0c00_0000u64, AVAIL, USED, QSIZE),
        ("RING_BEYOND_RAM", RAM_END - 64, AVAIL, USED, QSIZE),
        ("USED_IN_UART", DESC, AVAIL, 0x1000_0000, QSIZE),
        ("QSIZE_3", DESC, AVAIL, USED, 3),
        ("QSIZE_0", DESC, AVAIL, USED, 0),
        ("QSIZE_HUGE", DESC, AVAIL, USED, 0x1_0000),
    ] {
        b += &format!(
            "    li a0, {d:#x}\n    li a1, {a:#x}\n    li a2, {u:#x}\n    li a3, {n:#x}\n    call vq_init\n    mv s1, a0\n"
        );
        b += &check(&format!("{label}_INIT"), "s1");
    }
    // A notify for a queue that does not exist is ignored; the device still works.
    b += &init("AFTER");
    b += "    li t0, 0x10001000\n    li t1, -1\n    sw t1, 0x50(t0)\n";
    b += &header(T_IN, 1);
    b += &three(DATA, 512, WRITE);
    b += &submit("AFTER", 0);
    b += &canaries_check();
    b += SHUTDOWN;
    b += VIRTIO_DRIVER;

    let o = Boot::new("virtio-blk", &b, 1)
        .arg("--stats")
        .arg("--disk")
        .arg(format!("path={}", img.display()))
        .env("DUVISOR_LOG", "warn")
        .timeout(Duration::from_secs(300))
        .run();
    let after = std::fs::read(&img).unwrap();
    let _ = std::fs::remove_file(&img);
    assert_eq!(o.signal, None, "stderr:\n{}", o.stderr);
    assert_eq!(o.code, Some(0), "stderr:\n{}", o.stderr);
    assert!(!o.stderr.contains("panicked"), "{}", o.stderr);
    o.assert_no_emergency();
    assert!(after == original, "the disk image changed");

    let mut cases: Vec<(String, u64)> = vec![
        ("MAGIC_LD".into(), 0),
        ("MAGIC_LW".into(), 0x7472_6976),
        ("AVAIL_JUMP_INIT".into(), LIVE),
        ("AVAIL_JUMP_R".into(), 1),
        ("AFTER_INIT".into(), LIVE),
        ("AFTER_R".into(), 0),
        ("AFTER_LEN".into(), 513),
        ("AFTER_ST".into(), 0),
        ("AFTER_DATA".into(), sector1),
        ("AFTER_STATUS".into(), LIVE),
        ("CANARY_DATA".into(), CANARY),
        ("CANARY_END".into(), CANARY),
    ];
    for label in [
        "RING_IN_PLIC",
        "RING_BEYOND_RAM",
        "USED_IN_UART",
        "QSIZE_3",
        "QSIZE_0",
        "QSIZE_HUGE",
    ] {
        cases.push((format!("{label}_INIT"), LIVE | STATUS_NEEDS_RESET));
    }
    let mut reasons = Vec::new();
    for (label, _, _, _, _, w, reason) in &attacks {
        let status = if w.r == 1 {
            LIVE | STATUS_NEEDS_RESET
        } else {
            LIVE
        };
        cases.extend([
            (format!("{label}_INIT"), LIVE),
            (format!("{label}_R"), w.r),
            (format!("{label}_LEN"), w.len),
            (format!("{label}_ST"), w.st),
            (format!("{label}_DATA"), w.data),
            (format!("{label}_STATUS"), status),
        ]);
        reasons.extend(reason.clone());
    }
    let cases: Vec<(&str, u64)> = cases.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    expect_all(&o, &cases);
    // Each refusal was reported, in order, with its reason.
    let logged = reset_reasons(&o);
    let queue_invalid = "queue 0 is not valid (bad size, or rings outside RAM)".to_string();
    assert_eq!(logged.len(), reasons.len() + 1 + 6, "{logged:#?}");
    assert_eq!(logged[..reasons.len()], reasons[..]);
    assert!(
        logged[reasons.len()].contains("available"),
        "{}",
        logged[reasons.len()]
    );
    assert!(
        logged[reasons.len() + 1..]
            .iter()
            .all(|l| *l == queue_invalid),
        "{logged:#?}"
    );
}

#[test]
fn writes_to_a_readonly_disk_fail_and_leave_the_file_bit_identical() {
    let img = disk_image("ro");
    let original = std::fs::read(&img).unwrap();
    let mtime = std::fs::metadata(&img).unwrap().modified().unwrap();
    let sector2 = doubleword(&original, 1024);
    let mut b = String::new();
    b += "    li t0, 0x10001000\n    lw s1, 0x10(t0)\n    andi s1, s1, 0x20\n";
    b += &check("F_RO", "s1");
    // A good write request, with data that differs from the disk.
    b += &request("WRITE", T_OUT, 2, &three(DATA, 512, 0), 0);
    b += &request("WRITE_MULTI", T_OUT, 0, &three(DATA, 4096, 0), 0);
    let seg = format!("    li t0, {DATA:#x}\n    sd zero, 0(t0)\n    li t1, 4\n    sd t1, 8(t0)\n");
    b += &request(
        "DISCARD",
        T_DISCARD,
        0,
        &(seg.clone() + &three(DATA, 16, 0)),
        0,
    );
    b += &request(
        "WRITE_ZEROES",
        T_WRITE_ZEROES,
        0,
        &(seg + &three(DATA, 16, 0)),
        0,
    );
    b += &request(
        "FLUSH",
        T_FLUSH,
        0,
        &(desc(0, HDR, 16, NEXT, 1) + &desc(1, ST, 1, WRITE, 0)),
        0,
    );
    b += &request("GET_ID", T_GET_ID, 0, &three(DATA, 20, WRITE), 0);
    b += &request("READ", T_IN, 2, &three(DATA, 512, WRITE), 0);
    b += SHUTDOWN;
    b += VIRTIO_DRIVER;
    let o = Boot::new("virtio-ro", &b, 1)
        .arg("--stats")
        .arg("--disk")
        .arg(format!("path={},readonly", img.display()))
        .run();
    let after = std::fs::read(&img).unwrap();
    let mtime_after = std::fs::metadata(&img).unwrap().modified().unwrap();
    let _ = std::fs::remove_file(&img);
    o.assert_stopped(0, None);
    o.assert_no_emergency();
    assert!(after == original, "the read-only image changed");
    assert_eq!(mtime_after, mtime, "the read-only image was written");
    let ioerr = |label: &str| {
        [
            (format!("{label}_R"), 0),
            (format!("{label}_LEN"), 1),
            (format!("{label}_ST"), 1),
            (format!("{label}_STATUS"), LIVE),
        ]
    };
    let mut cases: Vec<(String, u64)> = vec![("F_RO".into(), 0x20)];
    for l in ["WRITE", "WRITE_MULTI", "DISCARD", "WRITE_ZEROES"] {
        cases.extend(ioerr(l));
    }
    // The ID is the image's file name (its first 8 bytes here: "hostile-").
    let id = u64::from_le_bytes(*b"hostile-");
    cases.extend([
        ("FLUSH_R".into(), 0),
        ("FLUSH_ST".into(), 0),
        ("GET_ID_ST".into(), 0),
        ("GET_ID_LEN".into(), 21),
        ("GET_ID_DATA".into(), id),
        ("READ_ST".into(), 0),
        ("READ_LEN".into(), 513),
        ("READ_DATA".into(), sector2),
    ]);
    let cases: Vec<(&str, u64)> = cases.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    expect_all(&o, &cases);
}

// ---------------------------------------------------------------------------------------------
// How a hostile VM ends
// ---------------------------------------------------------------------------------------------

#[test]
fn resets_with_garbage_reasons_end_the_vm_with_one_line() {
    for (ty, reason, line) in [
        (
            2u64,
            0xf000_0001u64,
            "duvisor: guest requested a warm reset (reason 0xf0000001)",
        ),
        (
            1,
            0xe000_0000,
            "duvisor: guest requested a cold reset (reason 0xe0000000)",
        ),
    ] {
        let b = sbi(ext::SRST, 0, &[ty, reason]);
        let o = Boot::new("reset", &b, 1).arg("--stats").run();
        o.assert_stopped(3, Some(line));
        o.assert_no_emergency();
    }
}

#[test]
fn stopping_every_hart_ends_the_vm_with_one_line() {
    // Hart 1 was never started; hart 0 stops itself: nothing can ever run again.
    let b = sbi(ext::HSM, 1, &[]) + "1:  j 1b\n";
    let o = Boot::new("all-stopped", &b, 2)
        .arg("--stats")
        .timeout(Duration::from_secs(20))
        .run();
    o.assert_stopped(
        1,
        Some(
            "duvisor: error: every vCPU has stopped (SBI HSM hart_stop); none can be started again",
        ),
    );
    o.assert_no_emergency();
}
