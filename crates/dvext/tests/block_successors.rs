//! The interpreter's same-page successor links: after a block that ends in a branch or jump,
//! the run loop takes the next block from the link the previous run left, without a TLB or
//! jump-cache lookup. A block that can change the translation (`sfence.vma`, a CSR write)
//! must not be followed that way.

mod common;

use common::*;
use dvext::csr::*;

/// Where the copy of the code page goes.
const COPY: u64 = 0x8060_0000;

/// Every iteration stores `s2` into the leaf PTE of the code page and runs `sfence.vma`; on
/// the last one `s2` points the page at a copy in which the instruction after the fence sets
/// `a0` to 2 instead of 1.
const REMAP_GUEST: &str = "
    .option norvc
    li t0, 100
loop:
    addi t0, t0, -1
    bnez t0, 1f
    mv s2, s4             # last round: the copy's PTE
    j 1f                  # (through the same block as the other rounds)
1:
    sd s2, 0(s3)
    sfence.vma
after:
    li a0, 1
    bnez t0, loop
    ecall
";

#[test]
fn a_remapped_code_page_is_fetched_anew_after_sfence_vma() {
    let mut vm = TestVm::with_program(REMAP_GUEST);
    let mut pt = VsPt::new(3);
    let leaf = pt.map(&vm, RAM_GPA, RAM_GPA, 0, VS_RWX);
    // The page tables themselves, for the guest's store to the leaf.
    pt.map(&vm, VS_TABLES, VS_TABLES, 1, VS_RWX);
    // The copy: `li a0, 1` (addi a0, zero, 1) becomes `li a0, 2`.
    let code = vm.read(RAM_GPA, 4096);
    let li1 = 0x0010_0513u32.to_le_bytes();
    let at = code
        .windows(4)
        .position(|w| w == li1)
        .expect("li a0, 1 in the program");
    let mut copy = code.clone();
    copy[at..at + 4].copy_from_slice(&0x0020_0513u32.to_le_bytes());
    vm.write(COPY, &copy);
    vm.set_csr(HUVSATP, pt.satp());
    let pte = |gpa: u64| ((gpa >> 12) << 10) | VS_RWX;
    vm.hart.set_gpr(r::S2, pte(RAM_GPA));
    vm.hart.set_gpr(r::S3, leaf);
    vm.hart.set_gpr(r::S4, pte(COPY));
    vm.run_to_ecall();
    assert_eq!(vm.x(r::T0), 0);
    assert_eq!(vm.x(r::A0), 2, "ran the old page's code after the remap");
}
