//! Fuzz regressions: every input saved under `fuzz/regressions/<target>/` (crashes libFuzzer
//! found, kept after the fix) runs through the same library function as the cargo-fuzz target,
//! together with hand-written seeds that pin down what the harnesses actually exercise.

use dvext::csr::cause;
use dvext::fuzzing::{self, ENGINE_CONFIG_LEN};
use dvext::hart::inst::Op;
use dvext::{Exit, HaltReason};

#[test]
fn decode_regressions() {
    for (path, data) in dvext::fuzzing::saved_inputs("decode") {
        eprintln!("decode: {}", path.display());
        fuzzing::decode(&data);
    }
}

#[test]
fn decode_every_compressed_parcel() {
    let mut legal = 0;
    for p in 0..=0xffffu32 {
        if p & 3 != 3 && fuzzing::check_decode(p).op != Op::Illegal {
            legal += 1;
        }
    }
    assert!(legal > 40_000, "only {legal} legal compressed parcels");
}

#[test]
fn decode_seeds() {
    // lw a0, 12(a1); sd a0, 8(sp); c.lw a0, 0(a1); amoswap.d; fcvt.w.d x0 (integer rd = x0)
    let cases = [
        (0x00c5_a503, Op::Lw),
        (0x00a1_3423, Op::Sd),
        (0x4188, Op::Lw),
        (0x08c5_b52f, Op::AmoswapD),
        (0xc200_0053, Op::FcvtWD),
    ];
    for (raw, op) in cases {
        assert_eq!(fuzzing::check_decode(raw).op, op, "{raw:#x}");
    }
    let bytes: Vec<u8> = cases.iter().flat_map(|c| c.0.to_le_bytes()).collect();
    fuzzing::decode(&bytes);
    fuzzing::decode(&[]);
    fuzzing::decode(&[0xff, 0xff, 0xff]);
}

#[test]
fn engine_regressions() {
    let saved = dvext::fuzzing::saved_inputs("engine");
    // The engine target has found crashes; if none are found the path is wrong.
    assert!(
        !saved.is_empty(),
        "no saved inputs under fuzz/regressions/engine"
    );
    for (path, data) in saved {
        eprintln!("engine: {}", path.display());
        fuzzing::engine(&data);
    }
}

/// An engine input: configuration bytes (see `fuzzing::engine`), then the program words.
fn engine_input(flags: u8, hedeleg: u16, vstvec_off: u16, program: &[u32]) -> Vec<u8> {
    let mut v = vec![0u8; ENGINE_CONFIG_LEN];
    v[0] = flags;
    v[1..3].copy_from_slice(&hedeleg.to_le_bytes());
    v[13..15].copy_from_slice(&vstvec_off.to_le_bytes());
    v.extend(program.iter().flat_map(|w| w.to_le_bytes()));
    v
}

const ECALL: u32 = 0x0000_0073;

/// The engine harness with time to reach the exit a test expects. With 1 ms (the fuzzer's
/// budget), `DVEXT_TEST_JIT=1` and a busy host, the watchdog once kicked the guest out before
/// its first `ecall` (`[Kicked]`). The programs end in 8 exits long before this.
fn engine_patient(data: &[u8]) -> Vec<Exit> {
    fuzzing::engine_with_budget(data, std::time::Duration::from_secs(2))
}
/// t0 = 0x8001_0000: the page right after guest RAM.
const T0_PAST_RAM: [u32; 3] = [0x8001_02b7, 0x0202_9293, 0x0202_d293];
/// sd zero, 0(t0)
const SD_ZERO_T0: u32 = 0x0002_b023;

#[test]
fn engine_runs_guest_code() {
    // addi a0, zero, 5; ecall; then zeros (an illegal parcel).
    let exits = engine_patient(&engine_input(0, 0, 0, &[0x0050_0513, ECALL]));
    assert!(
        matches!(
            exits[0],
            Exit::Trap {
                cause: cause::ECALL_VS,
                ..
            }
        ),
        "{exits:?}"
    );
    assert!(
        matches!(
            exits[1],
            Exit::Trap {
                cause: cause::ILLEGAL_INST,
                tval: 0,
                ..
            }
        ),
        "{exits:?}"
    );
}

#[test]
fn engine_loop_is_kicked_out() {
    // j .
    let exits = fuzzing::engine(&engine_input(0, 0, 0, &[0x0000_006f]));
    assert_eq!(exits, vec![Exit::Kicked]);
}

#[test]
fn engine_store_past_ram() {
    let mut prog = T0_PAST_RAM.to_vec();
    prog.push(SD_ZERO_T0);
    // Unmapped: a store guest-page fault with the transformed instruction.
    let exits = engine_patient(&engine_input(0, 0, 0, &prog));
    assert_eq!(
        exits[0],
        Exit::Trap {
            cause: cause::STORE_GUEST_PAGE_FAULT,
            tval: 0x8001_0000,
            htval: 0x8001_0000 >> 2,
            htinst: 0x0000_3023,
        }
    );
    // Mapped to memory the VM was never granted: the PMC halts it, nothing is written.
    let exits = engine_patient(&engine_input(4, 0, 0, &prog));
    assert!(
        matches!(
            exits.as_slice(),
            [Exit::Halted(HaltReason::PmcViolation { .. })]
        ),
        "{exits:?}"
    );
}

#[test]
fn engine_delegated_trap_reaches_the_guest_handler() {
    // The zero parcel at the entry is illegal; delegated, it enters vstvec (+0x100: ecall).
    let mut prog = vec![0u32; 0x40];
    prog.push(ECALL);
    let exits = engine_patient(&engine_input(8, 1 << cause::ILLEGAL_INST, 0x100, &prog));
    assert!(
        matches!(
            exits[0],
            Exit::Trap {
                cause: cause::ECALL_VS,
                ..
            }
        ),
        "{exits:?}"
    );
}

#[test]
fn engine_misaligned_access_near_address_zero() {
    // Found by the fuzzer: a misaligned 2/4/8-byte access at virtual address 1, 5, 9, ...
    // matched an empty software-TLB entry and used the guest address as a host pointer (a load
    // crashed the host process). It must translate, and fault on the unmapped GPA.
    for (inst, c, addr) in [
        (0x0010_1503, cause::LOAD_GUEST_PAGE_FAULT, 1), // lh a0, 1(zero)
        (0x0050_2503, cause::LOAD_GUEST_PAGE_FAULT, 5), // lw a0, 5(zero)
        (0x0090_3503, cause::LOAD_GUEST_PAGE_FAULT, 9), // ld a0, 9(zero)
        (0x0000_22a3, cause::STORE_GUEST_PAGE_FAULT, 5), // sw zero, 5(zero)
    ] {
        let exits = engine_patient(&engine_input(0, 0, 0, &[inst]));
        match exits[0] {
            Exit::Trap {
                cause, tval, htval, ..
            } => assert_eq!((cause, tval, htval), (c, addr, addr >> 2), "{inst:#x}"),
            e => panic!("{inst:#x}: {e:?}"),
        }
    }
}

#[test]
fn engine_odd_inputs() {
    fuzzing::engine(&[]);
    fuzzing::engine(&[0xff; ENGINE_CONFIG_LEN]);
    fuzzing::engine(&[0xff; 4096]);
}
