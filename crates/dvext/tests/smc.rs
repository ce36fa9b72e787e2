//! Self-modifying and externally modified code: fence.i, stores to code pages (which
//! invalidate decoded blocks even without fence.i), virtual aliases, host writes, and a code
//! patch made by another hart.

mod common;

use std::time::Duration;

use common::*;
use dvext::csr::*;

/// `addi a0, zero, imm`
fn li_a0(imm: u32) -> u32 {
    (imm << 20) | 0x513
}

fn patch_program(fence: &str) -> String {
    format!(
        "
        .option norvc
        call patchme
        mv s1, a0
        la t0, patchme
        li t1, {new:#x}
        sw t1, 0(t0)
        {fence}
        call patchme
        mv s2, a0
        ecall
    patchme:
        addi a0, zero, 1
        ret
        ",
        new = li_a0(2)
    )
}

#[test]
fn store_then_fence_i_runs_the_new_code() {
    let mut vm = TestVm::with_program(&patch_program("fence.i"));
    vm.run_to_ecall();
    assert_eq!(vm.x(r::S1), 1);
    assert_eq!(vm.x(r::S2), 2);
}

#[test]
fn store_to_code_page_takes_effect_in_a_later_block_without_fence_i() {
    let mut vm = TestVm::with_program(&patch_program(""));
    vm.run_to_ecall();
    assert_eq!(vm.x(r::S1), 1);
    assert_eq!(vm.x(r::S2), 2);
}

#[test]
fn repeated_patching_in_a_loop() {
    for fence in ["", "fence.i"] {
        let mut vm = TestVm::with_program(&format!(
            "
            .option norvc
            li s0, 0
            li s1, 1
            li t2, 0x513
            li t3, 101
        loop:
            slli t1, s1, 20
            or t1, t1, t2             # addi a0, zero, s1
            la t0, target
            sw t1, 0(t0)
            {fence}
            jal ra, target
            add s0, s0, a0
            addi s1, s1, 1
            bne s1, t3, loop
            ecall
        target:
            addi a0, zero, 0
            ret
            "
        ));
        vm.run_to_ecall();
        assert_eq!(vm.x(r::S0), 5050, "fence: {fence:?}");
    }
}

#[test]
fn data_on_a_code_page_stays_exact() {
    let mut vm = TestVm::with_program(
        "
        la t0, counter
        li t1, 1000
    1:  ld t2, 0(t0)
        addi t2, t2, 1
        sd t2, 0(t0)
        addi t1, t1, -1
        bnez t1, 1b
        ld a0, 0(t0)
        ecall
        .balign 8
    counter:
        .dword 0
        ",
    );
    vm.run_to_ecall();
    assert_eq!(vm.x(r::A0), 1000);
}

#[test]
fn store_through_a_virtual_alias_invalidates_the_physical_block() {
    // The code page is also mapped RW at VA 0x4000_0000: a store through the alias must
    // invalidate the block reached through the identity mapping.
    let mut vm = TestVm::with_program(&format!(
        "
        .option norvc
        call patchme
        mv s1, a0
        la t0, patchme
        li t1, 0x80000000
        sub t0, t0, t1
        li t1, 0x40000000
        add t0, t0, t1            # alias of patchme
        li t1, {new:#x}
        sw t1, 0(t0)
        call patchme
        mv s2, a0
        ecall
    patchme:
        addi a0, zero, 1
        ret
        ",
        new = li_a0(3)
    ));
    let mut pt = VsPt::with_identity(3, &vm);
    pt.map(&vm, 0x4000_0000, RAM_GPA, 0, VS_RWX);
    vm.set_csr(HUVSATP, pt.satp());
    vm.run_to_ecall();
    assert_eq!(vm.x(r::S1), 1);
    assert_eq!(vm.x(r::S2), 3);
}

#[test]
fn host_writes_to_code_are_seen() {
    let mut vm = TestVm::with_program(".option norvc\n1: addi a0, zero, 1\necall\nj 1b\n");
    vm.run_to_ecall();
    assert_eq!(vm.x(r::A0), 1);
    // The hypervisor (or a DMA-ing device) rewrites the instruction.
    vm.write(RAM_GPA, &li_a0(7).to_le_bytes());
    vm.skip();
    vm.run_to_ecall();
    assert_eq!(vm.x(r::A0), 7);
}

#[test]
fn another_hart_patches_code_and_this_hart_fences() {
    // Flags in DATA; the patched function lives on the code page at `patchme`.
    // vCPU 0: call patchme, raise flag A, wait for flag B, fence.i, call patchme again.
    // vCPU 1: store to the code page first (priming its own write path), wait for A, patch,
    //         fence w,w, raise flag B.
    let src = format!(
        "
        .option norvc
        li s10, {DATA:#x}
        csrr t0, sscratch
        bnez t0, hart1
    hart0:
        call patchme
        mv s1, a0
        li t1, 1
        sw t1, 0(s10)             # A
    1:  lw t1, 4(s10)             # B
        beqz t1, 1b
        fence.i
        call patchme
        mv s2, a0
        ecall
    hart1:
        la t0, scratch
        sw zero, 0(t0)            # a store to the code page
    2:  lw t1, 0(s10)
        beqz t1, 2b
        la t0, patchme
        li t1, {new:#x}
        sw t1, 0(t0)
        fence w, w
        li t1, 1
        sw t1, 4(s10)
        ecall
    patchme:
        addi a0, zero, 1
        ret
        .balign 8
    scratch:
        .dword 0
        ",
        new = li_a0(9)
    );
    let mut vm = TestVm::with_program(&src);
    let mut h1 = vm.add_hart(1);
    h1.csr_write(HUVSSCRATCH, 1).unwrap();
    let intr = vm.intr.clone();
    let t = std::thread::spawn(move || {
        let e = run_with_watchdog(&mut h1, &intr, Duration::from_secs(60));
        (e, h1)
    });
    vm.run_to_ecall();
    let (e1, _h1) = t.join().unwrap();
    vm.expect_ecall(e1);
    assert_eq!(vm.x(r::S1), 1);
    assert_eq!(vm.x(r::S2), 9);
}

#[test]
fn region_that_patches_its_own_page_does_not_follow_a_stale_link() {
    // The block from `loop` is 64 instructions (the most a block holds) ending with the
    // store, so the compiled region exits at `patch`, whose block is compiled on its own; from
    // the second iteration on, the region follows its link to that code. In the fourth
    // iteration the store goes to `patch` instead of the data page: what runs next must be
    // the new instruction, not the linked code compiled from the old one.
    let mut vm = TestVm::with_program(&format!(
        "
        .option norvc
        li s0, 0
        li s1, 0
        li s2, 6
        li t0, {DATA:#x}
        la t6, patch
        sub t6, t6, t0
        li t1, {new:#x}
    loop:
        addi t4, s1, -3
        seqz t4, t4
        neg t4, t4
        and t5, t4, t6
        add t5, t5, t0
        .rept 58
        nop
        .endr
        sw t1, 0(t5)
    patch:
        addi a0, zero, 1
        add s0, s0, a0
        addi s1, s1, 1
        bne s1, s2, loop
        ecall
        ",
        new = li_a0(7)
    ));
    vm.hart.enable_jit(1, None).unwrap();
    vm.run_to_ecall();
    assert_eq!(vm.x(r::S0), 1 + 1 + 1 + 7 + 7 + 7);
    let s = vm.hart.stats();
    assert!(s.jit.chained > 0, "the regions were chained");
}
