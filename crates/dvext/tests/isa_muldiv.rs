//! RV64M against the unprivileged ISA manual, including the division special cases of its
//! table "Semantics for division by zero and division overflow".

mod common;

use common::*;

#[test]
fn multiplications() {
    check_cases(
        "",
        &[
            ("li a1, 7; li a2, -3; mul a0, a1, a2", -21i64 as u64),
            (
                "li a1, 0x100000001; li a2, 0x100000001; mul a0, a1, a2",
                0x2_0000_0001,
            ),
            ("li a1, -1; li a2, -1; mul a0, a1, a2", 1),
            // mulh: signed x signed, high half
            ("li a1, -1; li a2, -1; mulh a0, a1, a2", 0),
            (
                "li a1, 0x8000000000000000; li a2, 0x8000000000000000; mulh a0, a1, a2",
                0x4000_0000_0000_0000,
            ),
            ("li a1, -1; li a2, 5; mulh a0, a1, a2", u64::MAX),
            ("li a1, 0x7fffffffffffffff; li a2, 2; mulh a0, a1, a2", 0),
            (
                "li a1, 0x7fffffffffffffff; li a2, 0x7fffffffffffffff; mulh a0, a1, a2",
                0x3fff_ffff_ffff_ffff,
            ),
            // mulhu: unsigned x unsigned
            (
                "li a1, -1; li a2, -1; mulhu a0, a1, a2",
                0xffff_ffff_ffff_fffe,
            ),
            ("li a1, -1; li a2, 2; mulhu a0, a1, a2", 1),
            ("li a1, 0x8000000000000000; li a2, 4; mulhu a0, a1, a2", 2),
            // mulhsu: signed rs1 x unsigned rs2
            ("li a1, -1; li a2, -1; mulhsu a0, a1, a2", u64::MAX),
            ("li a1, 2; li a2, -1; mulhsu a0, a1, a2", 1),
            (
                "li a1, 0x8000000000000000; li a2, 0x8000000000000000; mulhsu a0, a1, a2",
                0xc000_0000_0000_0000,
            ),
            ("li a1, -2; li a2, 1; mulhsu a0, a1, a2", u64::MAX),
            // mulw: low 32 bits of the product, sign-extended; upper source bits ignored.
            ("li a1, 0x10000; li a2, 0x10000; mulw a0, a1, a2", 0),
            (
                "li a1, 0x8000; li a2, 0x10000; mulw a0, a1, a2",
                0xffff_ffff_8000_0000,
            ),
            ("li a1, 0xffffffff00000003; li a2, 5; mulw a0, a1, a2", 15),
            (
                "li a1, -3; li a2, 0x100000005; mulw a0, a1, a2",
                -15i64 as u64,
            ),
        ],
    );
}

#[test]
fn divisions_including_by_zero_and_overflow() {
    check_cases(
        "",
        &[
            ("li a1, -7; li a2, 2; div a0, a1, a2", -3i64 as u64),
            ("li a1, -7; li a2, 2; rem a0, a1, a2", u64::MAX),
            ("li a1, 7; li a2, -2; div a0, a1, a2", -3i64 as u64),
            ("li a1, 7; li a2, -2; rem a0, a1, a2", 1),
            (
                "li a1, -1; li a2, 2; divu a0, a1, a2",
                0x7fff_ffff_ffff_ffff,
            ),
            ("li a1, -1; li a2, 2; remu a0, a1, a2", 1),
            ("li a1, 100; li a2, 7; divu a0, a1, a2", 14),
            ("li a1, 100; li a2, 7; remu a0, a1, a2", 2),
            // Division by zero: quotient all ones, remainder the dividend.
            ("li a1, 42; div a0, a1, zero", u64::MAX),
            ("li a1, 42; divu a0, a1, zero", u64::MAX),
            ("li a1, 42; rem a0, a1, zero", 42),
            ("li a1, -42; rem a0, a1, zero", -42i64 as u64),
            ("li a1, -42; remu a0, a1, zero", -42i64 as u64),
            // Overflow: INT_MIN / -1 = INT_MIN, remainder 0.
            (
                "li a1, 0x8000000000000000; li a2, -1; div a0, a1, a2",
                0x8000_0000_0000_0000,
            ),
            ("li a1, 0x8000000000000000; li a2, -1; rem a0, a1, a2", 0),
            ("li a1, 0x8000000000000000; li a2, -1; divu a0, a1, a2", 0),
            (
                "li a1, 0x8000000000000000; li a2, -1; remu a0, a1, a2",
                0x8000_0000_0000_0000,
            ),
        ],
    );
}

#[test]
fn word_divisions() {
    check_cases(
        "",
        &[
            (
                "li a1, 0x80000000; li a2, -1; divw a0, a1, a2",
                0xffff_ffff_8000_0000,
            ),
            ("li a1, 0x80000000; li a2, -1; remw a0, a1, a2", 0),
            ("li a1, 5; divw a0, a1, zero", u64::MAX),
            ("li a1, 5; divuw a0, a1, zero", u64::MAX),
            (
                "li a1, 0x80000005; remw a0, a1, zero",
                0xffff_ffff_8000_0005,
            ),
            (
                "li a1, 0x80000005; remuw a0, a1, zero",
                0xffff_ffff_8000_0005,
            ),
            ("li a1, 0x7ffffff5; remuw a0, a1, zero", 0x7fff_fff5),
            ("li a1, 0x100000010; li a2, 0x500000004; divw a0, a1, a2", 4),
            ("li a1, 0xffffffff; li a2, 2; divuw a0, a1, a2", 0x7fff_ffff),
            (
                "li a1, 0xfffffffe; li a2, 1; divuw a0, a1, a2",
                0xffff_ffff_ffff_fffe,
            ),
            ("li a1, 0xffffffff; li a2, 0x10; remuw a0, a1, a2", 0xf),
            ("li a1, -7; li a2, 2; remw a0, a1, a2", u64::MAX),
            ("li a1, -7; li a2, 2; divw a0, a1, a2", -3i64 as u64),
            (
                "li a1, 0xfffffff9; li a2, 0x2; divw a0, a1, a2",
                -3i64 as u64,
            ),
            (
                "li a1, 0x1fffffff9; li a2, 2; divuw a0, a1, a2",
                0x7fff_fffc,
            ),
        ],
    );
}
