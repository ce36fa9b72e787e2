//! Hand-derived test vectors for the F/D arithmetic in `dvext::hart::fpu`.
//!
//! Every expected value below was derived by hand from IEEE 754-2008 and the RISC-V
//! unprivileged ISA (F and D chapters); the comment next to a vector gives the reasoning.
//! (The same implementation was also cross-checked, outside this suite, against x86-64 SSE/FMA
//! hardware, which likewise detects tininess after rounding, on about 21 million random vectors
//! in the four rounding modes x86 has.)

mod fpu {
    use dvext::hart::fpu::*;

    const ALL: [Rm; 5] = [Rm::Rne, Rm::Rtz, Rm::Rdn, Rm::Rup, Rm::Rmm];

    // Single-precision constants.
    const S_ZERO: u32 = 0x0000_0000;
    const S_NZERO: u32 = 0x8000_0000;
    const S_ONE: u32 = 0x3f80_0000;
    const S_NONE: u32 = 0xbf80_0000;
    const S_TWO: u32 = 0x4000_0000;
    const S_THREE: u32 = 0x4040_0000;
    const S_HALF: u32 = 0x3f00_0000;
    const S_NHALF: u32 = 0xbf00_0000;
    const S_INF: u32 = 0x7f80_0000;
    const S_NINF: u32 = 0xff80_0000;
    const S_MAX: u32 = 0x7f7f_ffff;
    const S_NMAX: u32 = 0xff7f_ffff;
    const S_MIN_NORMAL: u32 = 0x0080_0000;
    const S_MIN_SUB: u32 = 0x0000_0001;
    const S_QNAN: u32 = 0x7fc0_0000;
    const S_QNAN_PAYLOAD: u32 = 0x7fc1_2345;
    const S_NEG_QNAN: u32 = 0xffc0_0001;
    const S_SNAN: u32 = 0x7f80_0001;
    const S_NEG_SNAN: u32 = 0xffa0_0000;

    // Double-precision constants.
    const D_ZERO: u64 = 0;
    const D_NZERO: u64 = 0x8000_0000_0000_0000;
    const D_ONE: u64 = 0x3ff0_0000_0000_0000;
    const D_NONE: u64 = 0xbff0_0000_0000_0000;
    const D_TWO: u64 = 0x4000_0000_0000_0000;
    const D_THREE: u64 = 0x4008_0000_0000_0000;
    const D_HALF: u64 = 0x3fe0_0000_0000_0000;
    const D_INF: u64 = 0x7ff0_0000_0000_0000;
    const D_NINF: u64 = 0xfff0_0000_0000_0000;
    const D_MAX: u64 = 0x7fef_ffff_ffff_ffff;
    const D_NMAX: u64 = 0xffef_ffff_ffff_ffff;
    const D_MIN_NORMAL: u64 = 0x0010_0000_0000_0000;
    const D_MIN_SUB: u64 = 0x0000_0000_0000_0001;
    const D_QNAN: u64 = 0x7ff8_0000_0000_0000;
    const D_QNAN_PAYLOAD: u64 = 0x7ff8_0000_0001_2345;
    const D_SNAN: u64 = 0x7ff0_0000_0000_0001;

    /// Runs `f` with fresh flags and returns `(result, flags)`.
    fn run<T>(f: impl FnOnce(&mut u8) -> T) -> (T, u8) {
        let mut flags = 0;
        let r = f(&mut flags);
        (r, flags)
    }

    /// Checks a binary single-precision operation in each rounding mode:
    /// `expect[i]` is the `(result, flags)` for `ALL[i]`.
    fn check_s2(
        name: &str,
        op: fn(u32, u32, Rm, &mut u8) -> u32,
        a: u32,
        b: u32,
        expect: [(u32, u8); 5],
    ) {
        for (rm, want) in ALL.iter().zip(expect) {
            let got = run(|f| op(a, b, *rm, f));
            assert_eq!(
                got, want,
                "{name}({a:#010x}, {b:#010x}) {rm:?}: got {:#010x}/{:#x}, want {:#010x}/{:#x}",
                got.0, got.1, want.0, want.1
            );
        }
    }

    fn check_d2(
        name: &str,
        op: fn(u64, u64, Rm, &mut u8) -> u64,
        a: u64,
        b: u64,
        expect: [(u64, u8); 5],
    ) {
        for (rm, want) in ALL.iter().zip(expect) {
            let got = run(|f| op(a, b, *rm, f));
            assert_eq!(
                got, want,
                "{name}({a:#018x}, {b:#018x}) {rm:?}: got {:#018x}/{:#x}, want {:#018x}/{:#x}",
                got.0, got.1, want.0, want.1
            );
        }
    }

    /// The same `(result, flags)` in every rounding mode.
    fn same<T: Copy>(r: T, flags: u8) -> [(T, u8); 5] {
        [(r, flags); 5]
    }

    // -----------------------------------------------------------------------------------------
    // Rounding modes
    // -----------------------------------------------------------------------------------------

    #[test]
    fn rm_from_bits() {
        assert_eq!(Rm::from_bits(0), Some(Rm::Rne));
        assert_eq!(Rm::from_bits(1), Some(Rm::Rtz));
        assert_eq!(Rm::from_bits(2), Some(Rm::Rdn));
        assert_eq!(Rm::from_bits(3), Some(Rm::Rup));
        assert_eq!(Rm::from_bits(4), Some(Rm::Rmm));
        for b in 5..=255 {
            assert_eq!(Rm::from_bits(b), None);
        }
        assert_eq!((NX, UF, OF, DZ, NV), (1, 2, 4, 8, 16));
    }

    #[test]
    fn div_one_third_all_modes() {
        // 1/3 = 1.010101...b × 2^-2. Single keeps 23 fraction bits 0101...010 (0x2aaaaa); the
        // rest is 0.1010...b = 2/3 ulp > 1/2, so nearest rounds up to 0x3eaaaaab.
        check_s2(
            "div_s",
            div_s,
            S_ONE,
            S_THREE,
            [
                (0x3eaa_aaab, NX),
                (0x3eaa_aaaa, NX),
                (0x3eaa_aaaa, NX),
                (0x3eaa_aaab, NX),
                (0x3eaa_aaab, NX),
            ],
        );
        // -1/3: the same magnitudes, with RDN/RUP swapped.
        check_s2(
            "div_s",
            div_s,
            S_NONE,
            S_THREE,
            [
                (0xbeaa_aaab, NX),
                (0xbeaa_aaaa, NX),
                (0xbeaa_aaab, NX),
                (0xbeaa_aaaa, NX),
                (0xbeaa_aaab, NX),
            ],
        );
        // 2/3 = 1.0101...b × 2^-1: the same fraction pattern one binade up.
        check_s2(
            "div_s",
            div_s,
            S_TWO,
            S_THREE,
            [
                (0x3f2a_aaab, NX),
                (0x3f2a_aaaa, NX),
                (0x3f2a_aaaa, NX),
                (0x3f2a_aaab, NX),
                (0x3f2a_aaab, NX),
            ],
        );
        // Double 1/3: 52 fraction bits 0101...01 (0x5555555555555); the rest is
        // 0.0101...b = 1/3 ulp < 1/2, so nearest rounds down.
        check_d2(
            "div_d",
            div_d,
            D_ONE,
            D_THREE,
            [
                (0x3fd5_5555_5555_5555, NX),
                (0x3fd5_5555_5555_5555, NX),
                (0x3fd5_5555_5555_5555, NX),
                (0x3fd5_5555_5555_5556, NX),
                (0x3fd5_5555_5555_5555, NX),
            ],
        );
        // Double -2/3.
        check_d2(
            "div_d",
            div_d,
            D_TWO | D_NZERO,
            D_THREE,
            [
                (0xbfe5_5555_5555_5555, NX),
                (0xbfe5_5555_5555_5555, NX),
                (0xbfe5_5555_5555_5556, NX),
                (0xbfe5_5555_5555_5555, NX),
                (0xbfe5_5555_5555_5555, NX),
            ],
        );
        // Exact quotient: no flags.
        check_s2("div_s", div_s, S_THREE, S_TWO, same(0x3fc0_0000, 0));
        check_d2("div_d", div_d, D_ONE, D_TWO, same(D_HALF, 0));
    }

    #[test]
    fn add_ties_all_modes() {
        // 1 + 2^-24 is exactly half an ulp above 1.0 (single).
        check_s2(
            "add_s",
            add_s,
            S_ONE,
            0x3380_0000,
            [
                (S_ONE, NX),
                (S_ONE, NX),
                (S_ONE, NX),
                (0x3f80_0001, NX),
                (0x3f80_0001, NX),
            ],
        );
        // (1 + 2^-23) + 2^-24: halfway between 0x3f800001 (odd) and 0x3f800002 (even).
        check_s2(
            "add_s",
            add_s,
            0x3f80_0001,
            0x3380_0000,
            [
                (0x3f80_0002, NX),
                (0x3f80_0001, NX),
                (0x3f80_0001, NX),
                (0x3f80_0002, NX),
                (0x3f80_0002, NX),
            ],
        );
        // -(1 + 2^-53) in double: a tie below -1.0.
        check_d2(
            "sub_d",
            sub_d,
            D_NONE,
            0x3ca0_0000_0000_0000, // 2^-53
            [
                (D_NONE, NX),
                (D_NONE, NX),
                (0xbff0_0000_0000_0001, NX),
                (D_NONE, NX),
                (0xbff0_0000_0000_0001, NX),
            ],
        );
        // Exact sums raise nothing.
        check_s2("add_s", add_s, S_ONE, S_TWO, same(S_THREE, 0));
        check_d2("add_d", add_d, D_ONE, D_TWO, same(D_THREE, 0));
        check_s2("sub_s", sub_s, S_THREE, S_ONE, same(S_TWO, 0));
        check_d2("sub_d", sub_d, D_THREE, D_TWO, same(D_ONE, 0));
        // 1.0 + min subnormal: far below the rounding position.
        check_d2(
            "add_d",
            add_d,
            D_ONE,
            D_MIN_SUB,
            [
                (D_ONE, NX),
                (D_ONE, NX),
                (D_ONE, NX),
                (0x3ff0_0000_0000_0001, NX),
                (D_ONE, NX),
            ],
        );
    }

    #[test]
    fn zero_sums_and_signs() {
        // x + (-x) is +0 except in RDN, where it is -0.
        let zero_sum_s = [
            (S_ZERO, 0),
            (S_ZERO, 0),
            (S_NZERO, 0),
            (S_ZERO, 0),
            (S_ZERO, 0),
        ];
        check_s2("add_s", add_s, S_ONE, S_NONE, zero_sum_s);
        check_s2("sub_s", sub_s, S_THREE, S_THREE, zero_sum_s);
        check_s2("add_s", add_s, S_ZERO, S_NZERO, zero_sum_s);
        check_s2("sub_s", sub_s, S_ZERO, S_ZERO, zero_sum_s);
        check_s2("add_s", add_s, S_NZERO, S_NZERO, same(S_NZERO, 0));
        check_s2("sub_s", sub_s, S_NZERO, S_ZERO, same(S_NZERO, 0));
        let zero_sum_d = [
            (D_ZERO, 0),
            (D_ZERO, 0),
            (D_NZERO, 0),
            (D_ZERO, 0),
            (D_ZERO, 0),
        ];
        check_d2("add_d", add_d, D_ONE, D_NONE, zero_sum_d);
        check_d2("add_d", add_d, D_MIN_SUB, D_MIN_SUB | D_NZERO, zero_sum_d);
        check_d2("add_d", add_d, D_NZERO, D_NZERO, same(D_NZERO, 0));
        // x + 0 = x exactly, subnormals included.
        check_s2("add_s", add_s, S_MIN_SUB, S_NZERO, same(S_MIN_SUB, 0));
        check_d2(
            "add_d",
            add_d,
            D_NZERO,
            0x800f_ffff_ffff_ffff,
            same(0x800f_ffff_ffff_ffff, 0),
        );
        // Products: the sign is the XOR of the operand signs.
        check_s2("mul_s", mul_s, S_NZERO, S_THREE, same(S_NZERO, 0));
        check_s2("mul_s", mul_s, S_NZERO, S_NONE, same(S_ZERO, 0));
        check_d2("mul_d", mul_d, D_NZERO, D_ZERO, same(D_NZERO, 0));
        check_d2("div_d", div_d, D_NZERO, D_NONE, same(D_ZERO, 0));
        check_s2("div_s", div_s, S_ONE, S_NINF, same(S_NZERO, 0));
    }

    #[test]
    fn invalid_operations() {
        let nv_s = same(CANONICAL_NAN_S, NV);
        let nv_d = same(CANONICAL_NAN_D, NV);
        check_s2("add_s", add_s, S_INF, S_NINF, nv_s);
        check_s2("sub_s", sub_s, S_INF, S_INF, nv_s);
        check_s2("mul_s", mul_s, S_ZERO, S_NINF, nv_s);
        check_s2("mul_s", mul_s, S_INF, S_NZERO, nv_s);
        check_s2("div_s", div_s, S_ZERO, S_NZERO, nv_s);
        check_s2("div_s", div_s, S_NINF, S_INF, nv_s);
        check_d2("add_d", add_d, D_NINF, D_INF, nv_d);
        check_d2("sub_d", sub_d, D_NINF, D_NINF, nv_d);
        check_d2("mul_d", mul_d, D_INF, D_ZERO, nv_d);
        check_d2("div_d", div_d, D_NZERO, D_ZERO, nv_d);
        check_d2("div_d", div_d, D_INF, D_INF, nv_d);
        // Infinity arithmetic that is valid.
        check_s2("add_s", add_s, S_INF, S_INF, same(S_INF, 0));
        check_s2("add_s", add_s, S_NINF, S_MAX, same(S_NINF, 0));
        check_d2("mul_d", mul_d, D_NINF, D_NONE, same(D_INF, 0));
        check_d2("div_d", div_d, D_INF, D_ZERO, same(D_INF, 0));
        check_d2("div_d", div_d, D_NINF, D_TWO, same(D_NINF, 0));
    }

    #[test]
    fn divide_by_zero() {
        check_s2("div_s", div_s, S_ONE, S_ZERO, same(S_INF, DZ));
        check_s2("div_s", div_s, S_NONE, S_ZERO, same(S_NINF, DZ));
        check_s2("div_s", div_s, S_ONE, S_NZERO, same(S_NINF, DZ));
        check_s2("div_s", div_s, S_MIN_SUB, S_NZERO, same(S_NINF, DZ));
        check_d2("div_d", div_d, D_MAX, D_ZERO, same(D_INF, DZ));
        check_d2("div_d", div_d, D_NONE, D_NZERO, same(D_INF, DZ));
    }

    #[test]
    fn nan_propagation_is_canonical() {
        for rm in ALL {
            // Quiet NaNs (any payload, any sign) in, canonical NaN out, no flags.
            for (a, b) in [
                (S_QNAN_PAYLOAD, S_ONE),
                (S_ONE, S_NEG_QNAN),
                (S_NEG_QNAN, S_QNAN_PAYLOAD),
                (S_QNAN, S_INF),
            ] {
                for op in [add_s, sub_s, mul_s, div_s] {
                    assert_eq!(run(|f| op(a, b, rm, f)), (CANONICAL_NAN_S, 0));
                }
            }
            // A signaling NaN anywhere raises NV.
            for (a, b) in [
                (S_SNAN, S_ONE),
                (S_ONE, S_NEG_SNAN),
                (S_SNAN, S_QNAN),
                (S_QNAN, S_SNAN),
                (S_ZERO, S_SNAN),
            ] {
                for op in [add_s, sub_s, mul_s, div_s] {
                    assert_eq!(run(|f| op(a, b, rm, f)), (CANONICAL_NAN_S, NV));
                }
            }
            for op in [add_d, sub_d, mul_d, div_d] {
                assert_eq!(
                    run(|f| op(D_QNAN_PAYLOAD, D_ONE, rm, f)),
                    (CANONICAL_NAN_D, 0)
                );
                assert_eq!(
                    run(|f| op(D_ONE, D_QNAN | D_NZERO, rm, f)),
                    (CANONICAL_NAN_D, 0)
                );
                assert_eq!(run(|f| op(D_SNAN, D_ONE, rm, f)), (CANONICAL_NAN_D, NV));
                assert_eq!(run(|f| op(D_INF, D_SNAN, rm, f)), (CANONICAL_NAN_D, NV));
            }
            // A quiet NaN with an infinity or zero is not an invalid operation.
            assert_eq!(run(|f| mul_s(S_QNAN, S_ZERO, rm, f)), (CANONICAL_NAN_S, 0));
            assert_eq!(run(|f| div_d(D_QNAN, D_ZERO, rm, f)), (CANONICAL_NAN_D, 0));
            assert_eq!(run(|f| sqrt_s(S_QNAN_PAYLOAD, rm, f)), (CANONICAL_NAN_S, 0));
            assert_eq!(run(|f| sqrt_s(S_SNAN, rm, f)), (CANONICAL_NAN_S, NV));
            assert_eq!(run(|f| sqrt_d(D_QNAN_PAYLOAD, rm, f)), (CANONICAL_NAN_D, 0));
            assert_eq!(run(|f| sqrt_d(D_SNAN, rm, f)), (CANONICAL_NAN_D, NV));
        }
    }

    #[test]
    fn overflow_per_rounding_mode() {
        // max · 2 = 2^129 overflows: ±inf when rounding away (RNE, RMM, and the directed mode
        // towards that infinity), otherwise ±max. OF and NX are raised either way.
        check_s2(
            "mul_s",
            mul_s,
            S_MAX,
            S_TWO,
            [
                (S_INF, OF | NX),
                (S_MAX, OF | NX),
                (S_MAX, OF | NX),
                (S_INF, OF | NX),
                (S_INF, OF | NX),
            ],
        );
        check_s2(
            "mul_s",
            mul_s,
            S_NMAX,
            S_TWO,
            [
                (S_NINF, OF | NX),
                (S_NMAX, OF | NX),
                (S_NINF, OF | NX),
                (S_NMAX, OF | NX),
                (S_NINF, OF | NX),
            ],
        );
        check_d2(
            "add_d",
            add_d,
            D_MAX,
            D_MAX,
            [
                (D_INF, OF | NX),
                (D_MAX, OF | NX),
                (D_MAX, OF | NX),
                (D_INF, OF | NX),
                (D_INF, OF | NX),
            ],
        );
        check_d2(
            "div_d",
            div_d,
            D_NMAX,
            D_HALF,
            [
                (D_NINF, OF | NX),
                (D_NMAX, OF | NX),
                (D_NINF, OF | NX),
                (D_NMAX, OF | NX),
                (D_NINF, OF | NX),
            ],
        );
        // max + half an ulp of max (2^103 for single) is a tie: RNE rounds to even, which
        // carries to 2^128 and overflows; RTZ/RDN give max, merely inexact (no OF: the result
        // rounded with an unbounded exponent is max itself).
        check_s2(
            "add_s",
            add_s,
            S_MAX,
            0x7300_0000, // 2^103
            [
                (S_INF, OF | NX),
                (S_MAX, NX),
                (S_MAX, NX),
                (S_INF, OF | NX),
                (S_INF, OF | NX),
            ],
        );
        // A quarter ulp above max: only RUP overflows.
        check_s2(
            "add_s",
            add_s,
            S_MAX,
            0x7280_0000, // 2^102
            [
                (S_MAX, NX),
                (S_MAX, NX),
                (S_MAX, NX),
                (S_INF, OF | NX),
                (S_MAX, NX),
            ],
        );
    }

    #[test]
    fn subnormal_results_and_underflow() {
        // 2^-126 · 0.5 = 2^-127 is an exact subnormal: no UF without inexactness.
        check_s2("mul_s", mul_s, S_MIN_NORMAL, S_HALF, same(0x0040_0000, 0));
        check_d2(
            "mul_d",
            mul_d,
            D_MIN_NORMAL,
            D_HALF,
            same(0x0008_0000_0000_0000, 0),
        );
        // Subnormal + subnormal is exact.
        check_s2(
            "add_s",
            add_s,
            0x0000_0003,
            0x0040_0000,
            same(0x0040_0003, 0),
        );
        // 2^-149 · 0.5 = 2^-150: halfway between 0 and the smallest subnormal.
        check_s2(
            "mul_s",
            mul_s,
            S_MIN_SUB,
            S_HALF,
            [
                (S_ZERO, UF | NX),
                (S_ZERO, UF | NX),
                (S_ZERO, UF | NX),
                (S_MIN_SUB, UF | NX),
                (S_MIN_SUB, UF | NX),
            ],
        );
        check_s2(
            "mul_s",
            mul_s,
            S_MIN_SUB,
            S_NHALF,
            [
                (S_NZERO, UF | NX),
                (S_NZERO, UF | NX),
                (0x8000_0001, UF | NX),
                (S_NZERO, UF | NX),
                (0x8000_0001, UF | NX),
            ],
        );
        // 3 · 2^-149 · 0.5 = 1.5 · 2^-149: tie between 1 and 2 units; even is 2.
        check_s2(
            "mul_s",
            mul_s,
            0x0000_0003,
            S_HALF,
            [
                (0x0000_0002, UF | NX),
                (0x0000_0001, UF | NX),
                (0x0000_0001, UF | NX),
                (0x0000_0002, UF | NX),
                (0x0000_0002, UF | NX),
            ],
        );
        // Double: 2^-1074 / 3 lies below half the smallest subnormal.
        check_d2(
            "div_d",
            div_d,
            D_MIN_SUB,
            D_THREE,
            [
                (D_ZERO, UF | NX),
                (D_ZERO, UF | NX),
                (D_ZERO, UF | NX),
                (D_MIN_SUB, UF | NX),
                (D_ZERO, UF | NX),
            ],
        );
        // 2^-1022 · (1 - 2^-53) = 2^-1022 - 2^-1075 has 53 significant bits, so rounded with an
        // unbounded exponent it stays below 2^-1022: tiny in every mode. On the subnormal grid
        // (spacing 2^-1074) it is a tie between 0x000fffffffffffff (odd) and 2^-1022 (even).
        check_d2(
            "mul_d",
            mul_d,
            D_MIN_NORMAL,
            0x3fef_ffff_ffff_ffff,
            [
                (D_MIN_NORMAL, UF | NX),
                (0x000f_ffff_ffff_ffff, UF | NX),
                (0x000f_ffff_ffff_ffff, UF | NX),
                (D_MIN_NORMAL, UF | NX),
                (D_MIN_NORMAL, UF | NX),
            ],
        );
    }

    #[test]
    fn tininess_is_detected_after_rounding() {
        // v1 = 2^-126 - 2^-151 = 1.(24 ones)b × 2^-127. Rounded to 24 bits with an unbounded
        // exponent it is a tie that RNE/RMM/RUP round up to 2^-126: not tiny, so no UF even
        // though the value is below 2^-126. RTZ/RDN keep it below 2^-126: tiny and inexact.
        let v1 = 0x380f_ffff_f000_0000;
        let expect = [
            (S_MIN_NORMAL, NX),
            (0x007f_ffff, UF | NX),
            (0x007f_ffff, UF | NX),
            (S_MIN_NORMAL, NX),
            (S_MIN_NORMAL, NX),
        ];
        for (rm, want) in ALL.iter().zip(expect) {
            assert_eq!(run(|f| d_to_s(v1, *rm, f)), want, "d_to_s(v1) {rm:?}");
        }
        // v2 = 2^-126 - 2^-150 = 1.(23 ones)b × 2^-127 has exactly 24 bits: tiny in every mode.
        // On the subnormal grid it is a tie between 0x007fffff (odd) and 2^-126 (even): RNE
        // rounds to 2^-126 yet still raises UF.
        let v2 = 0x380f_ffff_e000_0000;
        let expect = [
            (S_MIN_NORMAL, UF | NX),
            (0x007f_ffff, UF | NX),
            (0x007f_ffff, UF | NX),
            (S_MIN_NORMAL, UF | NX),
            (S_MIN_NORMAL, UF | NX),
        ];
        for (rm, want) in ALL.iter().zip(expect) {
            assert_eq!(run(|f| d_to_s(v2, *rm, f)), want, "d_to_s(v2) {rm:?}");
        }
        // Double through fma with a zero addend: 2^-1022 · (1 - 2^-53) = 2^-1022 - 2^-1075 has
        // 53 bits, so it is tiny in every mode, even where it rounds to 2^-1022.
        let expect = [
            (D_MIN_NORMAL, UF | NX),
            (0x000f_ffff_ffff_ffff, UF | NX),
            (0x000f_ffff_ffff_ffff, UF | NX),
            (D_MIN_NORMAL, UF | NX),
            (D_MIN_NORMAL, UF | NX),
        ];
        for (rm, want) in ALL.iter().zip(expect) {
            let got = run(|f| {
                fma_d(
                    D_MIN_NORMAL,
                    0x3fef_ffff_ffff_ffff,
                    D_ZERO,
                    false,
                    false,
                    *rm,
                    f,
                )
            });
            assert_eq!(got, want, "fma_d tiny {rm:?}");
        }
    }

    #[test]
    fn fma_single_rounding() {
        // a = 1 + 2^-52: a·a = 1 + 2^-51 + 2^-104 rounds (RNE) to 1 + 2^-51, so mul then add of
        // -(1 + 2^-51) gives 0, while the fused operation gives exactly 2^-104.
        let a = 0x3ff0_0000_0000_0001;
        let c = 0xbff0_0000_0000_0002; // -(1 + 2^-51)
        let (p, pf) = run(|f| mul_d(a, a, Rm::Rne, f));
        assert_eq!((p, pf), (0x3ff0_0000_0000_0002, NX));
        assert_eq!(run(|f| add_d(p, c, Rm::Rne, f)), (D_ZERO, 0));
        for rm in ALL {
            assert_eq!(
                run(|f| fma_d(a, a, c, false, false, rm, f)),
                (0x3970_0000_0000_0000, 0)
            );
            // fmsub with +c: a·a - (1 + 2^-51).
            assert_eq!(
                run(|f| fma_d(a, a, c ^ D_NZERO, false, true, rm, f)),
                (0x3970_0000_0000_0000, 0)
            );
            // fnmadd: -(a·a) - c = -2^-104.
            assert_eq!(
                run(|f| fma_d(a, a, c, true, true, rm, f)),
                (0xb970_0000_0000_0000, 0)
            );
        }
        // Single: a = 1 + 2^-23, a·a - (1 + 2^-22) = 2^-46.
        for rm in ALL {
            assert_eq!(
                run(|f| fma_s(0x3f80_0001, 0x3f80_0001, 0xbf80_0002, false, false, rm, f)),
                (0x2880_0000, 0)
            );
        }
        // An inexact fused result: (1 + 2^-23)^2 + 0 = 1 + 2^-22 + 2^-46 rounds per mode.
        let expect = [
            (0x3f80_0002, NX),
            (0x3f80_0002, NX),
            (0x3f80_0002, NX),
            (0x3f80_0003, NX),
            (0x3f80_0002, NX),
        ];
        for (rm, want) in ALL.iter().zip(expect) {
            let got = run(|f| fma_s(0x3f80_0001, 0x3f80_0001, S_ZERO, false, false, *rm, f));
            assert_eq!(got, want, "{rm:?}");
        }
    }

    #[test]
    fn fma_variants_and_specials() {
        // 2·3 ± 1 in the four instruction flavours.
        let cases = [
            (false, false, 0x40e0_0000u32), // fmadd:  2·3 + 1 = 7
            (false, true, 0x40a0_0000),     // fmsub:  2·3 - 1 = 5
            (true, false, 0xc0a0_0000),     // fnmsub: -(2·3) + 1 = -5
            (true, true, 0xc0e0_0000),      // fnmadd: -(2·3) - 1 = -7
        ];
        for (np, na, want) in cases {
            for rm in ALL {
                assert_eq!(
                    run(|f| fma_s(S_TWO, S_THREE, S_ONE, np, na, rm, f)),
                    (want, 0)
                );
                let want_d = s_to_d(want, &mut 0);
                assert_eq!(
                    run(|f| fma_d(D_TWO, D_THREE, D_ONE, np, na, rm, f)),
                    (want_d, 0)
                );
            }
        }
        // 0·inf is invalid even when the addend is a quiet NaN.
        assert_eq!(
            run(|f| fma_s(S_ZERO, S_INF, S_QNAN, false, false, Rm::Rne, f)),
            (CANONICAL_NAN_S, NV)
        );
        assert_eq!(
            run(|f| fma_d(D_NINF, D_NZERO, D_QNAN_PAYLOAD, true, true, Rm::Rne, f)),
            (CANONICAL_NAN_D, NV)
        );
        assert_eq!(
            run(|f| fma_d(D_INF, D_ZERO, D_ONE, false, false, Rm::Rne, f)),
            (CANONICAL_NAN_D, NV)
        );
        // Quiet NaN operands otherwise give the canonical NaN quietly; sNaN raises NV.
        assert_eq!(
            run(|f| fma_s(S_ONE, S_QNAN_PAYLOAD, S_ONE, false, false, Rm::Rne, f)),
            (CANONICAL_NAN_S, 0)
        );
        assert_eq!(
            run(|f| fma_s(S_INF, S_ONE, S_QNAN, false, false, Rm::Rne, f)),
            (CANONICAL_NAN_S, 0)
        );
        assert_eq!(
            run(|f| fma_s(S_ONE, S_ONE, S_SNAN, false, false, Rm::Rne, f)),
            (CANONICAL_NAN_S, NV)
        );
        assert_eq!(
            run(|f| fma_d(D_SNAN, D_ZERO, D_ONE, false, false, Rm::Rne, f)),
            (CANONICAL_NAN_D, NV)
        );
        // inf·x + (-inf) is invalid; inf·x + inf of the same sign is inf.
        assert_eq!(
            run(|f| fma_s(S_INF, S_ONE, S_NINF, false, false, Rm::Rne, f)),
            (CANONICAL_NAN_S, NV)
        );
        assert_eq!(
            run(|f| fma_s(S_INF, S_ONE, S_INF, true, true, Rm::Rne, f)),
            (S_NINF, 0)
        );
        assert_eq!(
            run(|f| fma_d(D_ONE, D_TWO, D_INF, false, true, Rm::Rne, f)),
            (D_NINF, 0)
        );
        // A finite product that would overflow does not matter when the addend is infinite.
        assert_eq!(
            run(|f| fma_d(D_MAX, D_MAX, D_NINF, false, false, Rm::Rne, f)),
            (D_NINF, 0)
        );
        // Zero results: +0 + -0 = +0 (RDN: -0); -0 + -0 = -0.
        for rm in ALL {
            let want = if rm == Rm::Rdn { S_NZERO } else { S_ZERO };
            assert_eq!(
                run(|f| fma_s(S_ONE, S_ZERO, S_NZERO, false, false, rm, f)),
                (want, 0)
            );
            assert_eq!(
                run(|f| fma_s(S_NONE, S_ZERO, S_NZERO, false, false, rm, f)),
                (S_NZERO, 0)
            );
            // Exact cancellation of a non-zero product.
            let want = if rm == Rm::Rdn { D_NZERO } else { D_ZERO };
            assert_eq!(
                run(|f| fma_d(D_TWO, D_THREE, 0x4018_0000_0000_0000, false, true, rm, f)),
                (want, 0)
            );
            // A zero product leaves a subnormal addend untouched.
            assert_eq!(
                run(|f| fma_d(D_ZERO, D_MAX, D_MIN_SUB, false, true, rm, f)),
                (D_MIN_SUB | D_NZERO, 0)
            );
        }
        // Overflow in the product with a small addend.
        assert_eq!(
            run(|f| fma_s(S_MAX, S_TWO, S_ONE, false, false, Rm::Rtz, f)),
            (S_MAX, OF | NX)
        );
        assert_eq!(
            run(|f| fma_s(S_MAX, S_TWO, S_ONE, false, false, Rm::Rne, f)),
            (S_INF, OF | NX)
        );
    }

    #[test]
    fn sqrt_cases() {
        for rm in ALL {
            // sqrt(-0) = -0 and sqrt(+0) = +0, exactly.
            assert_eq!(run(|f| sqrt_s(S_NZERO, rm, f)), (S_NZERO, 0));
            assert_eq!(run(|f| sqrt_s(S_ZERO, rm, f)), (S_ZERO, 0));
            assert_eq!(run(|f| sqrt_d(D_NZERO, rm, f)), (D_NZERO, 0));
            // Negative operands (including -inf and a negative subnormal) are invalid.
            for a in [S_NONE, S_NINF, 0x8000_0001] {
                assert_eq!(run(|f| sqrt_s(a, rm, f)), (CANONICAL_NAN_S, NV));
            }
            for a in [D_NONE, D_NINF, 0x8000_0000_0000_0001] {
                assert_eq!(run(|f| sqrt_d(a, rm, f)), (CANONICAL_NAN_D, NV));
            }
            assert_eq!(run(|f| sqrt_s(S_INF, rm, f)), (S_INF, 0));
            assert_eq!(run(|f| sqrt_d(D_INF, rm, f)), (D_INF, 0));
            // Exact roots.
            assert_eq!(run(|f| sqrt_s(0x4080_0000, rm, f)), (S_TWO, 0)); // sqrt(4)
            assert_eq!(run(|f| sqrt_d(0x4022_0000_0000_0000, rm, f)), (D_THREE, 0)); // sqrt(9)
                                                                                     // sqrt(2^-148) = 2^-74 (subnormal operand, exact).
            assert_eq!(run(|f| sqrt_s(0x0000_0002, rm, f)), (0x1a80_0000, 0));
            // sqrt(2^-1074) = 2^-537.
            let (r, fl) = run(|f| sqrt_d(D_MIN_SUB, rm, f));
            assert_eq!((r, fl), (0x1e60_0000_0000_0000, 0));
        }
        // sqrt(2) = 1.0110101000001001111001100|11...b: single truncation is below the true
        // value by less than half an ulp.
        let expect = [
            (0x3fb5_04f3, NX),
            (0x3fb5_04f3, NX),
            (0x3fb5_04f3, NX),
            (0x3fb5_04f4, NX),
            (0x3fb5_04f3, NX),
        ];
        for (rm, want) in ALL.iter().zip(expect) {
            assert_eq!(run(|f| sqrt_s(S_TWO, *rm, f)), want, "{rm:?}");
        }
        // Double sqrt(2) = 1.4142135623730950488...; 0x3ff6a09e667f3bcd = 1.41421356237309514547
        // is the nearest (above), 0x...bcc the truncation.
        let expect = [
            (0x3ff6_a09e_667f_3bcd, NX),
            (0x3ff6_a09e_667f_3bcc, NX),
            (0x3ff6_a09e_667f_3bcc, NX),
            (0x3ff6_a09e_667f_3bcd, NX),
            (0x3ff6_a09e_667f_3bcd, NX),
        ];
        for (rm, want) in ALL.iter().zip(expect) {
            assert_eq!(run(|f| sqrt_d(D_TWO, *rm, f)), want, "{rm:?}");
        }
        // sqrt(max) never overflows; sqrt(min subnormal single) = 2^-74.5 is inexact but normal.
        let (_, fl) = run(|f| sqrt_s(S_MAX, Rm::Rne, f));
        assert_eq!(fl, NX);
        let (r, fl) = run(|f| sqrt_s(S_MIN_SUB, Rm::Rne, f));
        // 2^-74.5 = 2^-75 · 1.41421356...: the single sqrt(2) significand, exponent -75.
        assert_eq!((r, fl), (0x1a35_04f3, NX));
    }

    #[test]
    fn min_max() {
        let mut f = 0;
        // -0 is less than +0.
        assert_eq!(min_s(S_NZERO, S_ZERO, &mut f), S_NZERO);
        assert_eq!(min_s(S_ZERO, S_NZERO, &mut f), S_NZERO);
        assert_eq!(max_s(S_NZERO, S_ZERO, &mut f), S_ZERO);
        assert_eq!(max_s(S_ZERO, S_NZERO, &mut f), S_ZERO);
        assert_eq!(min_d(D_ZERO, D_NZERO, &mut f), D_NZERO);
        assert_eq!(max_d(D_NZERO, D_ZERO, &mut f), D_ZERO);
        // Ordinary ordering, negatives and infinities.
        assert_eq!(min_s(S_ONE, S_TWO, &mut f), S_ONE);
        assert_eq!(max_s(S_ONE, S_TWO, &mut f), S_TWO);
        assert_eq!(min_s(S_NONE, S_NHALF, &mut f), S_NONE);
        assert_eq!(max_s(S_NONE, S_NHALF, &mut f), S_NHALF);
        assert_eq!(min_s(S_NINF, S_NMAX, &mut f), S_NINF);
        assert_eq!(max_d(D_INF, D_MAX, &mut f), D_INF);
        assert_eq!(min_d(D_NONE, D_MIN_SUB, &mut f), D_NONE);
        assert_eq!(max_d(0x8000_0000_0000_0001, D_NZERO, &mut f), D_NZERO);
        assert_eq!(f, 0);
        // One quiet NaN: the other operand, quietly.
        assert_eq!(run(|f| min_s(S_QNAN_PAYLOAD, S_ONE, f)), (S_ONE, 0));
        assert_eq!(run(|f| max_s(S_NONE, S_NEG_QNAN, f)), (S_NONE, 0));
        assert_eq!(run(|f| min_d(D_NZERO, D_QNAN, f)), (D_NZERO, 0));
        // One signaling NaN: the other operand, with NV.
        assert_eq!(run(|f| min_s(S_SNAN, S_ONE, f)), (S_ONE, NV));
        assert_eq!(run(|f| max_s(S_TWO, S_NEG_SNAN, f)), (S_TWO, NV));
        assert_eq!(run(|f| max_d(D_SNAN, D_NINF, f)), (D_NINF, NV));
        // Two NaNs: the canonical NaN, NV if either is signaling.
        assert_eq!(
            run(|f| min_s(S_QNAN_PAYLOAD, S_NEG_QNAN, f)),
            (CANONICAL_NAN_S, 0)
        );
        assert_eq!(run(|f| max_s(S_SNAN, S_QNAN, f)), (CANONICAL_NAN_S, NV));
        assert_eq!(
            run(|f| min_d(D_QNAN_PAYLOAD, D_QNAN_PAYLOAD, f)),
            (CANONICAL_NAN_D, 0)
        );
        assert_eq!(run(|f| max_d(D_QNAN, D_SNAN, f)), (CANONICAL_NAN_D, NV));
    }

    #[test]
    fn comparisons() {
        // (a, b, eq, lt, le) for ordered operands: no flags.
        let ordered = [
            (S_ONE, S_TWO, false, true, true),
            (S_TWO, S_ONE, false, false, false),
            (S_ONE, S_ONE, true, false, true),
            (S_ZERO, S_NZERO, true, false, true),
            (S_NZERO, S_ZERO, true, false, true),
            (S_NONE, S_NHALF, false, true, true),
            (S_NINF, S_NMAX, false, true, true),
            (S_INF, S_INF, true, false, true),
            (0x8000_0001, S_ZERO, false, true, true),
        ];
        for (a, b, e, l, le) in ordered {
            assert_eq!(run(|f| eq_s(a, b, f)), (e, 0), "eq {a:#x} {b:#x}");
            assert_eq!(run(|f| lt_s(a, b, f)), (l, 0), "lt {a:#x} {b:#x}");
            assert_eq!(run(|f| le_s(a, b, f)), (le, 0), "le {a:#x} {b:#x}");
            let (da, db) = (s_to_d(a, &mut 0), s_to_d(b, &mut 0));
            assert_eq!(run(|f| eq_d(da, db, f)), (e, 0));
            assert_eq!(run(|f| lt_d(da, db, f)), (l, 0));
            assert_eq!(run(|f| le_d(da, db, f)), (le, 0));
        }
        // feq is quiet: NV only for sNaN. flt/fle are signaling: NV for any NaN.
        assert_eq!(run(|f| eq_s(S_QNAN, S_ONE, f)), (false, 0));
        assert_eq!(run(|f| eq_s(S_QNAN, S_QNAN, f)), (false, 0));
        assert_eq!(run(|f| eq_s(S_ONE, S_SNAN, f)), (false, NV));
        assert_eq!(run(|f| lt_s(S_QNAN, S_ONE, f)), (false, NV));
        assert_eq!(run(|f| le_s(S_ONE, S_NEG_QNAN, f)), (false, NV));
        assert_eq!(run(|f| lt_s(S_SNAN, S_ONE, f)), (false, NV));
        assert_eq!(run(|f| eq_d(D_QNAN_PAYLOAD, D_QNAN_PAYLOAD, f)), (false, 0));
        assert_eq!(run(|f| eq_d(D_SNAN, D_ONE, f)), (false, NV));
        assert_eq!(run(|f| lt_d(D_ONE, D_QNAN, f)), (false, NV));
        assert_eq!(run(|f| le_d(D_QNAN, D_QNAN, f)), (false, NV));
    }

    #[test]
    fn classify_all_ten_classes() {
        let s = [
            (S_NINF, 0),
            (S_NONE, 1),
            (0x8000_0001, 2),
            (0x807f_ffff, 2),
            (S_NZERO, 3),
            (S_ZERO, 4),
            (S_MIN_SUB, 5),
            (0x007f_ffff, 5),
            (S_MIN_NORMAL, 6),
            (S_MAX, 6),
            (S_INF, 7),
            (S_SNAN, 8),
            (S_NEG_SNAN, 8),
            (0x7fbf_ffff, 8),
            (S_QNAN, 9),
            (S_NEG_QNAN, 9),
        ];
        for (a, bit) in s {
            assert_eq!(classify_s(a), 1 << bit, "classify_s({a:#x})");
        }
        let d = [
            (D_NINF, 0),
            (D_NMAX, 1),
            (0x800f_ffff_ffff_ffff, 2),
            (D_NZERO, 3),
            (D_ZERO, 4),
            (D_MIN_SUB, 5),
            (D_MIN_NORMAL, 6),
            (D_INF, 7),
            (D_SNAN, 8),
            (0xfff7_ffff_ffff_ffff, 8),
            (D_QNAN, 9),
            (0xffff_ffff_ffff_ffff, 9),
        ];
        for (a, bit) in d {
            assert_eq!(classify_d(a), 1 << bit, "classify_d({a:#x})");
        }
    }

    // -----------------------------------------------------------------------------------------
    // Conversions
    // -----------------------------------------------------------------------------------------

    /// Values as doubles for the integer conversion tests.
    fn d(x: f64) -> u64 {
        x.to_bits()
    }

    fn s(x: f32) -> u32 {
        x.to_bits()
    }

    #[test]
    fn to_int_rounding() {
        // (value, [RNE, RTZ, RDN, RUP, RMM]) for in-range inexact values: NX.
        let cases: [(f64, [i64; 5]); 8] = [
            (0.5, [0, 0, 0, 1, 1]),
            (1.5, [2, 1, 1, 2, 2]),
            (2.5, [2, 2, 2, 3, 3]),
            (-0.5, [0, 0, -1, 0, -1]),
            (-1.5, [-2, -1, -2, -1, -2]),
            (-2.5, [-2, -2, -3, -2, -3]),
            (2.75, [3, 2, 2, 3, 3]),
            (-0.25, [0, 0, -1, 0, 0]),
        ];
        for (x, want) in cases {
            for (rm, w) in ALL.iter().zip(want) {
                assert_eq!(run(|f| to_i64_d(d(x), *rm, f)), (w, NX), "{x} {rm:?}");
                assert_eq!(
                    run(|f| to_i32_d(d(x), *rm, f)),
                    (w as i32, NX),
                    "{x} {rm:?}"
                );
                assert_eq!(
                    run(|f| to_i32_s(s(x as f32), *rm, f)),
                    (w as i32, NX),
                    "{x} {rm:?}"
                );
                assert_eq!(
                    run(|f| to_i64_s(s(x as f32), *rm, f)),
                    (w, NX),
                    "{x} {rm:?}"
                );
            }
        }
        // Exact integral values: no flags, also -0.0 -> 0.
        for rm in ALL {
            assert_eq!(run(|f| to_i32_s(s(-7.0), rm, f)), (-7, 0));
            assert_eq!(run(|f| to_u64_d(d(12345.0), rm, f)), (12345, 0));
            assert_eq!(run(|f| to_u32_s(S_NZERO, rm, f)), (0, 0));
            assert_eq!(run(|f| to_i64_d(D_NZERO, rm, f)), (0, 0));
            // Tiny values round to 0 or ±1.
            let (r, fl) = run(|f| to_i32_d(D_MIN_SUB, rm, f));
            assert_eq!((r, fl), (if rm == Rm::Rup { 1 } else { 0 }, NX));
        }
    }

    #[test]
    fn to_unsigned_negative_inputs() {
        // -0.5 → unsigned: the rounded integer is 0 (in range, NX) or -1 (out of range: NV,
        // result 0, and NX is not raised).
        let want = [(0, NX), (0, NX), (0, NV), (0, NX), (0, NV)];
        for (rm, w) in ALL.iter().zip(want) {
            assert_eq!(run(|f| to_u32_s(S_NHALF, *rm, f)), w, "{rm:?}");
            assert_eq!(
                run(|f| to_u64_s(S_NHALF, *rm, f)),
                (w.0 as u64, w.1),
                "{rm:?}"
            );
            assert_eq!(run(|f| to_u32_d(d(-0.5), *rm, f)), w, "{rm:?}");
            assert_eq!(
                run(|f| to_u64_d(d(-0.5), *rm, f)),
                (w.0 as u64, w.1),
                "{rm:?}"
            );
        }
        for rm in ALL {
            // -1.0 is out of range in every mode.
            assert_eq!(run(|f| to_u32_s(S_NONE, rm, f)), (0, NV));
            assert_eq!(run(|f| to_u64_d(D_NONE, rm, f)), (0, NV));
            assert_eq!(run(|f| to_u32_d(D_NINF, rm, f)), (0, NV));
            assert_eq!(run(|f| to_u64_s(S_NINF, rm, f)), (0, NV));
        }
    }

    #[test]
    fn to_int_boundaries_and_saturation() {
        for rm in ALL {
            // i32.
            assert_eq!(run(|f| to_i32_d(d(2147483647.0), rm, f)), (i32::MAX, 0));
            assert_eq!(run(|f| to_i32_d(d(2147483648.0), rm, f)), (i32::MAX, NV));
            assert_eq!(run(|f| to_i32_d(d(-2147483648.0), rm, f)), (i32::MIN, 0));
            assert_eq!(run(|f| to_i32_d(d(-2147483649.0), rm, f)), (i32::MIN, NV));
            assert_eq!(run(|f| to_i32_s(s(2147483648.0), rm, f)), (i32::MAX, NV));
            assert_eq!(run(|f| to_i32_s(s(-2147483648.0), rm, f)), (i32::MIN, 0));
            assert_eq!(run(|f| to_i32_s(S_MAX, rm, f)), (i32::MAX, NV));
            // u32.
            assert_eq!(run(|f| to_u32_d(d(4294967295.0), rm, f)), (u32::MAX, 0));
            assert_eq!(run(|f| to_u32_d(d(4294967296.0), rm, f)), (u32::MAX, NV));
            assert_eq!(run(|f| to_u32_s(s(4294967296.0), rm, f)), (u32::MAX, NV));
            // i64: 2^63 is out of range, -2^63 is the minimum, 2^63 - 1024 is the largest
            // double below 2^63.
            assert_eq!(
                run(|f| to_i64_d(d(9223372036854775808.0), rm, f)),
                (i64::MAX, NV)
            );
            assert_eq!(
                run(|f| to_i64_d(d(-9223372036854775808.0), rm, f)),
                (i64::MIN, 0)
            );
            assert_eq!(
                run(|f| to_i64_d(0x43df_ffff_ffff_ffff, rm, f)),
                (9223372036854774784, 0)
            );
            assert_eq!(
                run(|f| to_i64_d(0xc3e0_0000_0000_0001, rm, f)),
                (i64::MIN, NV)
            );
            assert_eq!(run(|f| to_i64_s(0x5f00_0000, rm, f)), (i64::MAX, NV)); // 2^63
            assert_eq!(run(|f| to_i64_s(0xdf00_0000, rm, f)), (i64::MIN, 0)); // -2^63
            assert_eq!(
                run(|f| to_i64_s(0x5eff_ffff, rm, f)),
                (0x7fff_ff80_0000_0000, 0)
            );
            // u64: 2^64 out of range; 2^64 - 2048 is the largest double below it.
            assert_eq!(
                run(|f| to_u64_d(d(18446744073709551616.0), rm, f)),
                (u64::MAX, NV)
            );
            assert_eq!(
                run(|f| to_u64_d(0x43ef_ffff_ffff_ffff, rm, f)),
                (18446744073709549568, 0)
            );
            assert_eq!(run(|f| to_u64_s(0x5f80_0000, rm, f)), (u64::MAX, NV)); // 2^64
                                                                               // Huge values and infinities saturate.
            assert_eq!(run(|f| to_i64_d(D_MAX, rm, f)), (i64::MAX, NV));
            assert_eq!(run(|f| to_i64_d(D_NMAX, rm, f)), (i64::MIN, NV));
            assert_eq!(run(|f| to_i32_d(D_INF, rm, f)), (i32::MAX, NV));
            assert_eq!(run(|f| to_i32_d(D_NINF, rm, f)), (i32::MIN, NV));
            assert_eq!(run(|f| to_u32_s(S_INF, rm, f)), (u32::MAX, NV));
            assert_eq!(run(|f| to_u64_d(D_INF, rm, f)), (u64::MAX, NV));
            // NaN (of either sign, quiet or signaling) gives the largest positive integer.
            for nan in [S_QNAN, S_NEG_QNAN, S_SNAN] {
                assert_eq!(run(|f| to_i32_s(nan, rm, f)), (i32::MAX, NV));
                assert_eq!(run(|f| to_u32_s(nan, rm, f)), (u32::MAX, NV));
                assert_eq!(run(|f| to_i64_s(nan, rm, f)), (i64::MAX, NV));
                assert_eq!(run(|f| to_u64_s(nan, rm, f)), (u64::MAX, NV));
            }
            for nan in [D_QNAN, D_QNAN | D_NZERO, D_SNAN] {
                assert_eq!(run(|f| to_i32_d(nan, rm, f)), (i32::MAX, NV));
                assert_eq!(run(|f| to_u32_d(nan, rm, f)), (u32::MAX, NV));
                assert_eq!(run(|f| to_i64_d(nan, rm, f)), (i64::MAX, NV));
                assert_eq!(run(|f| to_u64_d(nan, rm, f)), (u64::MAX, NV));
            }
        }
        // Values just outside the range that round back into it are valid (NX); values that
        // round out of it are invalid (NV only).
        // -2147483648.5: RNE → -2147483648 (even), RTZ/RUP → -2147483648, RDN/RMM → out.
        let x = d(-2147483648.5);
        let want = [
            (i32::MIN, NX),
            (i32::MIN, NX),
            (i32::MIN, NV),
            (i32::MIN, NX),
            (i32::MIN, NV),
        ];
        for (rm, w) in ALL.iter().zip(want) {
            assert_eq!(run(|f| to_i32_d(x, *rm, f)), w, "{rm:?}");
        }
        // 2147483647.5: RNE → 2147483648 (even, out), RTZ/RDN → 2147483647, RUP/RMM → out.
        let x = d(2147483647.5);
        let want = [
            (i32::MAX, NV),
            (i32::MAX, NX),
            (i32::MAX, NX),
            (i32::MAX, NV),
            (i32::MAX, NV),
        ];
        for (rm, w) in ALL.iter().zip(want) {
            assert_eq!(run(|f| to_i32_d(x, *rm, f)), w, "{rm:?}");
        }
        // 4294967295.5 → u32: only RTZ/RDN stay in range.
        let x = d(4294967295.5);
        let want = [
            (u32::MAX, NV),
            (u32::MAX, NX),
            (u32::MAX, NX),
            (u32::MAX, NV),
            (u32::MAX, NV),
        ];
        for (rm, w) in ALL.iter().zip(want) {
            assert_eq!(run(|f| to_u32_d(x, *rm, f)), w, "{rm:?}");
        }
    }

    #[test]
    fn from_int() {
        for rm in ALL {
            // Zero is +0 in every mode.
            assert_eq!(run(|f| from_i32_s(0, rm, f)), (S_ZERO, 0));
            assert_eq!(run(|f| from_u64_d(0, rm, f)), (D_ZERO, 0));
            assert_eq!(run(|f| from_i64_s(0, rm, f)), (S_ZERO, 0));
            // Exact conversions.
            assert_eq!(run(|f| from_i32_s(-1, rm, f)), (S_NONE, 0));
            assert_eq!(run(|f| from_i32_s(i32::MIN, rm, f)), (0xcf00_0000, 0));
            assert_eq!(run(|f| from_i64_s(i64::MIN, rm, f)), (0xdf00_0000, 0));
            assert_eq!(
                run(|f| from_i32_d(i32::MIN, rm, f)),
                (0xc1e0_0000_0000_0000, 0)
            );
            assert_eq!(
                run(|f| from_i32_d(i32::MAX, rm, f)),
                (0x41df_ffff_ffc0_0000, 0)
            );
            assert_eq!(
                run(|f| from_u32_d(u32::MAX, rm, f)),
                (0x41ef_ffff_ffe0_0000, 0)
            );
            assert_eq!(
                run(|f| from_i64_d(i64::MIN, rm, f)),
                (0xc3e0_0000_0000_0000, 0)
            );
            assert_eq!(run(|f| from_u32_s(3, rm, f)), (S_THREE, 0));
            assert_eq!(run(|f| from_u64_s(1 << 40, rm, f)), (0x5380_0000, 0));
        }
        // 2^24 + 1 is a tie between 2^24 (even) and 2^24 + 2.
        let want = [
            (0x4b80_0000, NX),
            (0x4b80_0000, NX),
            (0x4b80_0000, NX),
            (0x4b80_0001, NX),
            (0x4b80_0001, NX),
        ];
        for (rm, w) in ALL.iter().zip(want) {
            assert_eq!(run(|f| from_i32_s(16_777_217, *rm, f)), w, "{rm:?}");
            assert_eq!(run(|f| from_u32_s(16_777_217, *rm, f)), w, "{rm:?}");
            assert_eq!(run(|f| from_i64_s(16_777_217, *rm, f)), w, "{rm:?}");
            assert_eq!(run(|f| from_u64_s(16_777_217, *rm, f)), w, "{rm:?}");
        }
        // -(2^24 + 3): a tie between -(2^24 + 2) (odd significand) and -(2^24 + 4) (even).
        let want = [
            (0xcb80_0002, NX),
            (0xcb80_0001, NX),
            (0xcb80_0002, NX),
            (0xcb80_0001, NX),
            (0xcb80_0002, NX),
        ];
        for (rm, w) in ALL.iter().zip(want) {
            assert_eq!(run(|f| from_i32_s(-16_777_219, *rm, f)), w, "{rm:?}");
        }
        // u32::MAX = 2^32 - 1 → single: RNE/RUP/RMM 2^32, RTZ/RDN the largest value below.
        let want = [
            (0x4f80_0000, NX),
            (0x4f7f_ffff, NX),
            (0x4f7f_ffff, NX),
            (0x4f80_0000, NX),
            (0x4f80_0000, NX),
        ];
        for (rm, w) in ALL.iter().zip(want) {
            assert_eq!(run(|f| from_u32_s(u32::MAX, *rm, f)), w, "{rm:?}");
        }
        // i64::MAX = 2^63 - 1 → double.
        let want = [
            (0x43e0_0000_0000_0000, NX),
            (0x43df_ffff_ffff_ffff, NX),
            (0x43df_ffff_ffff_ffff, NX),
            (0x43e0_0000_0000_0000, NX),
            (0x43e0_0000_0000_0000, NX),
        ];
        for (rm, w) in ALL.iter().zip(want) {
            assert_eq!(run(|f| from_i64_d(i64::MAX, *rm, f)), w, "{rm:?}");
        }
        // -i64::MAX → double: directions swap.
        let want = [
            (0xc3e0_0000_0000_0000, NX),
            (0xc3df_ffff_ffff_ffff, NX),
            (0xc3e0_0000_0000_0000, NX),
            (0xc3df_ffff_ffff_ffff, NX),
            (0xc3e0_0000_0000_0000, NX),
        ];
        for (rm, w) in ALL.iter().zip(want) {
            assert_eq!(run(|f| from_i64_d(-i64::MAX, *rm, f)), w, "{rm:?}");
        }
        // u64::MAX → double and single.
        let want = [
            (0x43f0_0000_0000_0000, NX),
            (0x43ef_ffff_ffff_ffff, NX),
            (0x43ef_ffff_ffff_ffff, NX),
            (0x43f0_0000_0000_0000, NX),
            (0x43f0_0000_0000_0000, NX),
        ];
        for (rm, w) in ALL.iter().zip(want) {
            assert_eq!(run(|f| from_u64_d(u64::MAX, *rm, f)), w, "{rm:?}");
        }
        let want = [
            (0x5f80_0000, NX),
            (0x5f7f_ffff, NX),
            (0x5f7f_ffff, NX),
            (0x5f80_0000, NX),
            (0x5f80_0000, NX),
        ];
        for (rm, w) in ALL.iter().zip(want) {
            assert_eq!(run(|f| from_u64_s(u64::MAX, *rm, f)), w, "{rm:?}");
        }
    }

    #[test]
    fn single_double_conversions() {
        for rm in ALL {
            // Widening is exact, subnormals included.
            assert_eq!(run(|f| s_to_d(S_ONE, f)), (D_ONE, 0));
            assert_eq!(run(|f| s_to_d(S_NZERO, f)), (D_NZERO, 0));
            assert_eq!(run(|f| s_to_d(S_MIN_SUB, f)), (0x36a0_0000_0000_0000, 0)); // 2^-149
            assert_eq!(run(|f| s_to_d(S_MAX, f)), (0x47ef_ffff_e000_0000, 0));
            assert_eq!(run(|f| s_to_d(S_NINF, f)), (D_NINF, 0));
            assert_eq!(run(|f| s_to_d(S_QNAN_PAYLOAD, f)), (CANONICAL_NAN_D, 0));
            assert_eq!(run(|f| s_to_d(S_NEG_QNAN, f)), (CANONICAL_NAN_D, 0));
            assert_eq!(run(|f| s_to_d(S_SNAN, f)), (CANONICAL_NAN_D, NV));
            // Narrowing of exactly representable values and specials.
            assert_eq!(run(|f| d_to_s(D_ONE, rm, f)), (S_ONE, 0));
            assert_eq!(run(|f| d_to_s(D_NZERO, rm, f)), (S_NZERO, 0));
            assert_eq!(run(|f| d_to_s(0x47ef_ffff_e000_0000, rm, f)), (S_MAX, 0));
            assert_eq!(
                run(|f| d_to_s(0x36a0_0000_0000_0000, rm, f)),
                (S_MIN_SUB, 0)
            );
            assert_eq!(run(|f| d_to_s(D_NINF, rm, f)), (S_NINF, 0));
            assert_eq!(run(|f| d_to_s(D_QNAN_PAYLOAD, rm, f)), (CANONICAL_NAN_S, 0));
            assert_eq!(run(|f| d_to_s(D_SNAN, rm, f)), (CANONICAL_NAN_S, NV));
        }
        // Double 1/3 → single rounds like the single division.
        let third = 0x3fd5_5555_5555_5555;
        let want = [
            (0x3eaa_aaab, NX),
            (0x3eaa_aaaa, NX),
            (0x3eaa_aaaa, NX),
            (0x3eaa_aaab, NX),
            (0x3eaa_aaab, NX),
        ];
        for (rm, w) in ALL.iter().zip(want) {
            assert_eq!(run(|f| d_to_s(third, *rm, f)), w, "{rm:?}");
        }
        // 2^128 overflows single.
        let want = [
            (S_INF, OF | NX),
            (S_MAX, OF | NX),
            (S_MAX, OF | NX),
            (S_INF, OF | NX),
            (S_INF, OF | NX),
        ];
        for (rm, w) in ALL.iter().zip(want) {
            assert_eq!(run(|f| d_to_s(0x47f0_0000_0000_0000, *rm, f)), w, "{rm:?}");
        }
        // max + half an ulp: a tie that RNE/RMM/RUP round up into overflow; RTZ/RDN give max
        // with NX only.
        let want = [
            (S_INF, OF | NX),
            (S_MAX, NX),
            (S_MAX, NX),
            (S_INF, OF | NX),
            (S_INF, OF | NX),
        ];
        for (rm, w) in ALL.iter().zip(want) {
            assert_eq!(run(|f| d_to_s(0x47ef_ffff_f000_0000, *rm, f)), w, "{rm:?}");
        }
        // -(max + a hair): RDN overflows to -inf, RUP/RTZ give -max.
        let want = [
            (S_NMAX, NX),
            (S_NMAX, NX),
            (S_NINF, OF | NX),
            (S_NMAX, NX),
            (S_NMAX, NX),
        ];
        for (rm, w) in ALL.iter().zip(want) {
            assert_eq!(run(|f| d_to_s(0xc7ef_ffff_e000_0001, *rm, f)), w, "{rm:?}");
        }
        // A double far below the single subnormal range.
        let want = [
            (S_ZERO, UF | NX),
            (S_ZERO, UF | NX),
            (S_ZERO, UF | NX),
            (S_MIN_SUB, UF | NX),
            (S_ZERO, UF | NX),
        ];
        for (rm, w) in ALL.iter().zip(want) {
            assert_eq!(run(|f| d_to_s(D_MIN_NORMAL, *rm, f)), w, "{rm:?}");
        }
    }
}
