//! Floating-point unit: the RISC-V F and D extension arithmetic as pure functions on bit
//! patterns.
//!
//! Every operation takes its operands as raw IEEE 754 binary32 (`u32`, suffix `_s`) or binary64
//! (`u64`, suffix `_d`) bit patterns and returns the raw result, OR-ing the RISC-V accrued
//! exception flags ([`NX`], [`UF`], [`OF`], [`DZ`], [`NV`]) into `flags`. NaN-boxing of single
//! precision values in the 64-bit `f` registers is the caller's business.
//!
//! Semantics follow the RISC-V unprivileged ISA (F and D chapters):
//! * every arithmetic result that is a NaN is the canonical NaN ([`CANONICAL_NAN_S`],
//!   [`CANONICAL_NAN_D`]); NaN payloads are never propagated;
//! * a signaling NaN operand raises NV, as does every invalid operation (∞−∞, 0×∞, 0/0, ∞/∞,
//!   √ of a negative number, and `fma(0, ∞, c)` even when `c` is a quiet NaN);
//! * tininess is detected *after* rounding, and UF is raised only for tiny *and* inexact results;
//! * subnormals are handled exactly (no flush to zero);
//! * `fmin`/`fmax` follow the version 2.2 rules (−0 < +0, a single NaN operand yields the other
//!   operand, two NaNs yield the canonical NaN, NV on any signaling NaN);
//! * float-to-integer conversions saturate and raise NV (never NX) on NaN or out-of-range input;
//!   a NaN converts to the largest positive integer.
//!
//! The implementation is a small software floating-point core written for this crate: operands
//! are unpacked into an integer significand and a binary exponent, the exact result (or the exact
//! result with a "sticky" bit jammed into its least significant bit) is formed in `u128`
//! arithmetic, and a single rounding routine rounds it to the destination format in any of the
//! five rounding modes. For the common case (round to nearest, finite operands, a result in the
//! normal range) add, sub, mul, div and sqrt take a fast path through the host's IEEE arithmetic,
//! with the inexact flag derived from an exact error check; anything the fast path cannot prove
//! goes through the software core.

use core::cmp::Ordering;

/// Inexact.
pub const NX: u8 = 1;
/// Underflow.
pub const UF: u8 = 2;
/// Overflow.
pub const OF: u8 = 4;
/// Divide by zero.
pub const DZ: u8 = 8;
/// Invalid operation.
pub const NV: u8 = 16;

/// The canonical single-precision NaN.
pub const CANONICAL_NAN_S: u32 = 0x7fc0_0000;
/// The canonical double-precision NaN.
pub const CANONICAL_NAN_D: u64 = 0x7ff8_0000_0000_0000;

/// A rounding mode (the static `rm` field of an instruction, or `frm`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rm {
    /// Round to nearest, ties to even.
    Rne = 0,
    /// Round towards zero.
    Rtz = 1,
    /// Round down (towards −∞).
    Rdn = 2,
    /// Round up (towards +∞).
    Rup = 3,
    /// Round to nearest, ties to max magnitude.
    Rmm = 4,
}

impl Rm {
    /// Decodes a rounding mode; `None` for the reserved encodings 5 and 6 and for 7 (`dyn`),
    /// which the caller resolves through `frm`.
    pub fn from_bits(b: u8) -> Option<Rm> {
        match b {
            0 => Some(Rm::Rne),
            1 => Some(Rm::Rtz),
            2 => Some(Rm::Rdn),
            3 => Some(Rm::Rup),
            4 => Some(Rm::Rmm),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Format description
// ---------------------------------------------------------------------------------------------

/// An IEEE 754 binary interchange format, with its bit pattern held in the low bits of a `u64`.
trait Format {
    /// Number of stored fraction bits.
    const FRAC: u32;
    /// Number of exponent bits.
    const EXP: u32;
    /// Exponent bias.
    const BIAS: i32 = (1 << (Self::EXP - 1)) - 1;
    /// Precision in bits (fraction plus the hidden bit).
    const PREC: u32 = Self::FRAC + 1;
    /// The sign bit.
    const SIGN: u64 = 1 << (Self::FRAC + Self::EXP);
    /// The largest biased exponent (all ones: infinities and NaNs).
    const EXP_MAX: u64 = (1 << Self::EXP) - 1;
    /// Positive infinity.
    const INF: u64 = Self::EXP_MAX << Self::FRAC;
    /// The largest finite magnitude.
    const MAX_FINITE: u64 = Self::INF - 1;
    /// Fraction mask.
    const FRAC_MASK: u64 = (1 << Self::FRAC) - 1;
    /// The quiet bit of a NaN.
    const QUIET: u64 = 1 << (Self::FRAC - 1);
    /// The canonical NaN.
    const CANON_NAN: u64 = Self::INF | Self::QUIET;
    /// Unbiased exponent of the smallest normal number.
    const EMIN: i32 = 1 - Self::BIAS;
}

/// binary32.
struct S;
/// binary64.
struct D;

impl Format for S {
    const FRAC: u32 = 23;
    const EXP: u32 = 8;
}

impl Format for D {
    const FRAC: u32 = 52;
    const EXP: u32 = 11;
}

/// An unpacked operand (its sign is kept apart).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Val {
    /// A NaN; `true` when signaling.
    Nan(bool),
    Inf,
    Zero,
    /// A finite non-zero value `sig · 2^exp`, with `sig` normalised so that its most
    /// significant set bit is bit `FRAC` (subnormals included).
    Fin {
        sig: u64,
        exp: i32,
    },
}

#[inline]
fn unpack<F: Format>(bits: u64) -> (bool, Val) {
    let sign = bits & F::SIGN != 0;
    let e = (bits >> F::FRAC) & F::EXP_MAX;
    let frac = bits & F::FRAC_MASK;
    let v = if e == F::EXP_MAX {
        if frac == 0 {
            Val::Inf
        } else {
            Val::Nan(frac & F::QUIET == 0)
        }
    } else if e == 0 {
        if frac == 0 {
            Val::Zero
        } else {
            // Normalise the subnormal so that its leading one sits at bit FRAC.
            let shift = frac.leading_zeros() - (63 - F::FRAC);
            Val::Fin {
                sig: frac << shift,
                exp: F::EMIN - F::FRAC as i32 - shift as i32,
            }
        }
    } else {
        Val::Fin {
            sig: frac | (1 << F::FRAC),
            exp: e as i32 - F::BIAS - F::FRAC as i32,
        }
    };
    (sign, v)
}

#[inline]
fn is_nan<F: Format>(bits: u64) -> bool {
    bits & !F::SIGN > F::INF
}

#[inline]
fn is_snan<F: Format>(bits: u64) -> bool {
    is_nan::<F>(bits) && bits & F::QUIET == 0
}

#[inline]
fn signed_zero<F: Format>(sign: bool) -> u64 {
    if sign {
        F::SIGN
    } else {
        0
    }
}

#[inline]
fn signed_inf<F: Format>(sign: bool) -> u64 {
    signed_zero::<F>(sign) | F::INF
}

/// The canonical NaN, raising NV when `invalid`.
#[inline]
fn nan_result<F: Format>(invalid: bool, flags: &mut u8) -> u64 {
    if invalid {
        *flags |= NV;
    }
    F::CANON_NAN
}

// ---------------------------------------------------------------------------------------------
// Rounding
// ---------------------------------------------------------------------------------------------

/// Drops the low `shift` (≥ 1) bits of `sig` and decides, for rounding mode `rm` and the sign
/// of the value, whether the kept part must be incremented. Returns `(kept, inexact, round_up)`.
#[inline]
fn round_bits(sig: u128, shift: u32, sign: bool, rm: Rm) -> (u128, bool, bool) {
    debug_assert!(shift >= 1);
    let (kept, half_cmp, inexact) = if shift >= 128 {
        let cmp = if shift == 128 {
            sig.cmp(&(1u128 << 127))
        } else {
            Ordering::Less
        };
        (0, cmp, sig != 0)
    } else {
        let rem = sig & ((1u128 << shift) - 1);
        (sig >> shift, rem.cmp(&(1u128 << (shift - 1))), rem != 0)
    };
    let up = match rm {
        Rm::Rne => half_cmp == Ordering::Greater || (half_cmp == Ordering::Equal && kept & 1 == 1),
        Rm::Rtz => false,
        Rm::Rdn => inexact && sign,
        Rm::Rup => inexact && !sign,
        Rm::Rmm => half_cmp != Ordering::Less,
    };
    (kept, inexact, up)
}

/// Whether an overflow in rounding mode `rm` produces infinity (otherwise the largest finite
/// number of the right sign).
#[inline]
fn overflow_to_inf(rm: Rm, sign: bool) -> bool {
    match rm {
        Rm::Rne | Rm::Rmm => true,
        Rm::Rtz => false,
        Rm::Rdn => sign,
        Rm::Rup => !sign,
    }
}

#[inline]
fn overflow<F: Format>(sign: bool, rm: Rm, flags: &mut u8) -> u64 {
    *flags |= OF | NX;
    let mag = if overflow_to_inf(rm, sign) {
        F::INF
    } else {
        F::MAX_FINITE
    };
    signed_zero::<F>(sign) | mag
}

/// Rounds the value `(-1)^sign · sig · 2^exp` (with `sig != 0`) to format `F` and packs it.
///
/// `sig` is either exact, or has a sticky bit jammed into its least significant bit (the true
/// value lies strictly between `sig − 1` and `sig + 1` and `sig` is odd); in the latter case
/// `sig` must have at least `PREC + 2` significant bits, so that the jammed bit lies at least two
/// places below the rounding position.
fn round_pack<F: Format>(sign: bool, sig: u128, exp: i32, rm: Rm, flags: &mut u8) -> u64 {
    debug_assert!(sig != 0);
    let frac = F::FRAC as i32;
    let n = 128 - sig.leading_zeros() as i32; // significant bits
    let e_top = exp + n - 1; // the value lies in [2^e_top, 2^(e_top+1))
    if e_top > F::BIAS {
        return overflow::<F>(sign, rm, flags);
    }
    let lsb_exp = (e_top - frac).max(F::EMIN - frac);
    let shift = lsb_exp - exp;
    let (kept, inexact) = if shift <= 0 {
        (sig << (-shift) as u32, false)
    } else {
        let (kept, inexact, up) = round_bits(sig, shift as u32, sign, rm);
        (kept + up as u128, inexact)
    };
    // `kept` includes the hidden bit, so adding it to the exponent field minus one packs both
    // normals and subnormals, and a carry out of the significand bumps the exponent.
    let field = (lsb_exp + frac + F::BIAS - 1) as u64;
    let mag = (field << F::FRAC) + kept as u64;
    if mag >= F::INF {
        return overflow::<F>(sign, rm, flags);
    }
    if inexact {
        *flags |= NX;
        if e_top < F::EMIN {
            // Tininess after rounding: the value is tiny unless rounding it to PREC bits with
            // an unbounded exponent range carries up to 2^EMIN.
            let escapes = e_top == F::EMIN - 1 && {
                let shift_p = n - F::PREC as i32;
                shift_p > 0 && {
                    let (kp, _, up) = round_bits(sig, shift_p as u32, sign, rm);
                    up && kp == (1u128 << F::PREC) - 1
                }
            };
            if !escapes {
                *flags |= UF;
            }
        }
    }
    signed_zero::<F>(sign) | mag
}

/// Shifts right by `d`, OR-ing every bit shifted out into the least significant bit.
#[inline]
fn shift_right_jam(x: u128, d: u32) -> u128 {
    if d == 0 {
        x
    } else if d >= 128 {
        (x != 0) as u128
    } else {
        (x >> d) | ((x & ((1u128 << d) - 1) != 0) as u128)
    }
}

/// Adds the non-zero finite values `(-1)^sx · mx · 2^ex` and `(-1)^sy · my · 2^ey`, where the
/// significands have at most 106 significant bits, and rounds the sum to `F`.
#[allow(clippy::too_many_arguments)]
fn add_core<F: Format>(
    sx: bool,
    mx: u128,
    ex: i32,
    sy: bool,
    my: u128,
    ey: i32,
    rm: Rm,
    flags: &mut u8,
) -> u64 {
    debug_assert!(mx != 0 && my != 0 && mx >> 106 == 0 && my >> 106 == 0);
    // Put both leading ones at bit 125: this leaves at least 20 zero bits at the bottom (so
    // alignment shifts of up to 20 places are exact) and room for a carry at the top.
    let lx = mx.leading_zeros() - 2;
    let ly = my.leading_zeros() - 2;
    let (mut sx, mut mx, mut ex) = (sx, mx << lx, ex - lx as i32);
    let (mut sy, mut my, mut ey) = (sy, my << ly, ey - ly as i32);
    if ey > ex || (ey == ex && my > mx) {
        core::mem::swap(&mut sx, &mut sy);
        core::mem::swap(&mut mx, &mut my);
        core::mem::swap(&mut ex, &mut ey);
    }
    // Now |x| ≥ |y|. When the shift below loses bits (d > 20), the sum or difference is at
    // least 2^124, far above the precondition of `round_pack`.
    let d = (ex - ey) as u32;
    let my = shift_right_jam(my, d);
    let sum = if sx == sy {
        mx + my
    } else {
        let diff = mx - my;
        if diff == 0 {
            // An exact zero sum of operands of opposite signs.
            return signed_zero::<F>(rm == Rm::Rdn);
        }
        diff
    };
    round_pack::<F>(sx, sum, ex, rm, flags)
}

// ---------------------------------------------------------------------------------------------
// Generic operations (software core)
// ---------------------------------------------------------------------------------------------

fn add_soft<F: Format>(a: u64, b: u64, rm: Rm, flags: &mut u8) -> u64 {
    let (sa, va) = unpack::<F>(a);
    let (sb, vb) = unpack::<F>(b);
    match (va, vb) {
        (Val::Nan(x), Val::Nan(y)) => nan_result::<F>(x || y, flags),
        (Val::Nan(x), _) | (_, Val::Nan(x)) => nan_result::<F>(x, flags),
        (Val::Inf, Val::Inf) => {
            if sa == sb {
                a
            } else {
                nan_result::<F>(true, flags)
            }
        }
        (Val::Inf, _) => a,
        (_, Val::Inf) => b,
        (Val::Zero, Val::Zero) => {
            if sa == sb {
                a
            } else {
                signed_zero::<F>(rm == Rm::Rdn)
            }
        }
        (Val::Zero, _) => b,
        (_, Val::Zero) => a,
        (Val::Fin { sig: ma, exp: ea }, Val::Fin { sig: mb, exp: eb }) => {
            add_core::<F>(sa, ma as u128, ea, sb, mb as u128, eb, rm, flags)
        }
    }
}

fn mul_soft<F: Format>(a: u64, b: u64, rm: Rm, flags: &mut u8) -> u64 {
    let (sa, va) = unpack::<F>(a);
    let (sb, vb) = unpack::<F>(b);
    let sign = sa ^ sb;
    match (va, vb) {
        (Val::Nan(x), Val::Nan(y)) => nan_result::<F>(x || y, flags),
        (Val::Nan(x), _) | (_, Val::Nan(x)) => nan_result::<F>(x, flags),
        (Val::Inf, Val::Zero) | (Val::Zero, Val::Inf) => nan_result::<F>(true, flags),
        (Val::Inf, _) | (_, Val::Inf) => signed_inf::<F>(sign),
        (Val::Zero, _) | (_, Val::Zero) => signed_zero::<F>(sign),
        (Val::Fin { sig: ma, exp: ea }, Val::Fin { sig: mb, exp: eb }) => {
            round_pack::<F>(sign, ma as u128 * mb as u128, ea + eb, rm, flags)
        }
    }
}

fn div_soft<F: Format>(a: u64, b: u64, rm: Rm, flags: &mut u8) -> u64 {
    let (sa, va) = unpack::<F>(a);
    let (sb, vb) = unpack::<F>(b);
    let sign = sa ^ sb;
    match (va, vb) {
        (Val::Nan(x), Val::Nan(y)) => nan_result::<F>(x || y, flags),
        (Val::Nan(x), _) | (_, Val::Nan(x)) => nan_result::<F>(x, flags),
        (Val::Inf, Val::Inf) | (Val::Zero, Val::Zero) => nan_result::<F>(true, flags),
        (Val::Inf, _) => signed_inf::<F>(sign),
        (_, Val::Inf) | (Val::Zero, _) => signed_zero::<F>(sign),
        (_, Val::Zero) => {
            *flags |= DZ;
            signed_inf::<F>(sign)
        }
        (Val::Fin { sig: ma, exp: ea }, Val::Fin { sig: mb, exp: eb }) => {
            // Both significands lie in [2^FRAC, 2^(FRAC+1)), so the quotient has at least
            // FRAC + 5 = PREC + 4 bits.
            let s = F::FRAC + 5;
            let num = (ma as u128) << s;
            let q = num / mb as u128;
            let r = num % mb as u128;
            round_pack::<F>(sign, q | (r != 0) as u128, ea - eb - s as i32, rm, flags)
        }
    }
}

/// Integer square root: `(⌊√m⌋, whether it is exact)`, for `m < 2^120`.
fn isqrt(m: u128) -> (u128, bool) {
    debug_assert!(m >> 120 == 0);
    let mut r = (m as f64).sqrt() as u128;
    if r > 0 {
        // One Newton step takes the (tiny) relative error of the estimate to below one unit.
        r = (r + m / r) / 2;
    }
    while r * r > m {
        r -= 1;
    }
    while (r + 1) * (r + 1) <= m {
        r += 1;
    }
    (r, r * r == m)
}

fn sqrt_soft<F: Format>(a: u64, rm: Rm, flags: &mut u8) -> u64 {
    let (sa, va) = unpack::<F>(a);
    match va {
        Val::Nan(x) => nan_result::<F>(x, flags),
        Val::Zero => a,
        _ if sa => nan_result::<F>(true, flags),
        Val::Inf => a,
        Val::Fin { sig, exp } => {
            let (mut m, mut e) = (sig as u128, exp);
            if e & 1 != 0 {
                m <<= 1;
                e -= 1;
            }
            // Scale so that the root has at least PREC + 2 bits.
            let k = F::FRAC / 2 + 3;
            m <<= 2 * k;
            e -= 2 * k as i32;
            let (r, exact) = isqrt(m);
            round_pack::<F>(false, r | (!exact) as u128, e / 2, rm, flags)
        }
    }
}

fn fma_soft<F: Format>(
    a: u64,
    b: u64,
    c: u64,
    neg_product: bool,
    neg_addend: bool,
    rm: Rm,
    flags: &mut u8,
) -> u64 {
    let (sa, va) = unpack::<F>(a);
    let (sb, vb) = unpack::<F>(b);
    let (sc, vc) = unpack::<F>(c);
    let sp = sa ^ sb ^ neg_product;
    let sc = sc ^ neg_addend;
    let zero_times_inf = matches!((va, vb), (Val::Zero, Val::Inf) | (Val::Inf, Val::Zero));
    if matches!(va, Val::Nan(_)) || matches!(vb, Val::Nan(_)) || matches!(vc, Val::Nan(_)) {
        let snan = matches!(va, Val::Nan(true))
            || matches!(vb, Val::Nan(true))
            || matches!(vc, Val::Nan(true));
        return nan_result::<F>(snan || zero_times_inf, flags);
    }
    if zero_times_inf {
        return nan_result::<F>(true, flags);
    }
    if va == Val::Inf || vb == Val::Inf {
        if vc == Val::Inf && sc != sp {
            return nan_result::<F>(true, flags);
        }
        return signed_inf::<F>(sp);
    }
    if vc == Val::Inf {
        return signed_inf::<F>(sc);
    }
    match (va, vb, vc) {
        (Val::Zero, _, Val::Zero) | (_, Val::Zero, Val::Zero) => {
            signed_zero::<F>(if sp == sc { sp } else { rm == Rm::Rdn })
        }
        // A zero product leaves the (non-zero, finite) addend exact.
        (Val::Zero, _, _) | (_, Val::Zero, _) => signed_zero::<F>(sc) | (c & !F::SIGN),
        (Val::Fin { sig: ma, exp: ea }, Val::Fin { sig: mb, exp: eb }, vc) => {
            let mp = ma as u128 * mb as u128;
            match vc {
                Val::Fin { sig: mc, exp: ec } => {
                    add_core::<F>(sp, mp, ea + eb, sc, mc as u128, ec, rm, flags)
                }
                _ => round_pack::<F>(sp, mp, ea + eb, rm, flags),
            }
        }
        _ => unreachable!("non-finite operands are handled above"),
    }
}

/// Converts to a `width`-bit integer (signed or not), returning the two's complement pattern.
fn to_int<F: Format>(a: u64, signed: bool, width: u32, rm: Rm, flags: &mut u8) -> u64 {
    let max: u128 = if signed {
        (1u128 << (width - 1)) - 1
    } else {
        (1u128 << width) - 1
    };
    // Magnitude limit for negative values.
    let neg_limit: u128 = if signed { 1u128 << (width - 1) } else { 0 };
    let min_pattern = if signed { 1u64 << (width - 1) } else { 0 };
    let (sign, v) = unpack::<F>(a);
    let invalid = |flags: &mut u8, negative: bool| -> u64 {
        *flags |= NV;
        if negative {
            min_pattern
        } else {
            max as u64
        }
    };
    let (mag, inexact) = match v {
        Val::Nan(_) => return invalid(flags, false),
        Val::Inf => return invalid(flags, sign),
        Val::Zero => return 0,
        Val::Fin { sig, exp } => {
            if exp >= 0 {
                if exp > 64 {
                    return invalid(flags, sign);
                }
                ((sig as u128) << exp, false)
            } else {
                let (kept, inexact, up) = round_bits(sig as u128, (-exp) as u32, sign, rm);
                (kept + up as u128, inexact)
            }
        }
    };
    let limit = if sign { neg_limit } else { max };
    if mag > limit {
        return invalid(flags, sign);
    }
    if inexact {
        *flags |= NX;
    }
    let value = if sign {
        (mag as i128).wrapping_neg()
    } else {
        mag as i128
    };
    value as u64
}

/// Converts the integer `(-1)^neg · mag` to `F`.
fn from_int<F: Format>(neg: bool, mag: u64, rm: Rm, flags: &mut u8) -> u64 {
    if mag == 0 {
        0
    } else {
        round_pack::<F>(neg, mag as u128, 0, rm, flags)
    }
}

/// Converts between formats (exact when widening).
fn convert<From: Format, To: Format>(a: u64, rm: Rm, flags: &mut u8) -> u64 {
    let (sign, v) = unpack::<From>(a);
    match v {
        Val::Nan(x) => nan_result::<To>(x, flags),
        Val::Inf => signed_inf::<To>(sign),
        Val::Zero => signed_zero::<To>(sign),
        Val::Fin { sig, exp } => round_pack::<To>(sign, sig as u128, exp, rm, flags),
    }
}

/// A key that orders non-NaN values numerically, with −0 and +0 equal.
#[inline]
fn order_key<F: Format>(bits: u64) -> i64 {
    let mag = (bits & !F::SIGN) as i64;
    if bits & F::SIGN != 0 {
        -mag
    } else {
        mag
    }
}

/// A key that orders non-NaN values numerically, with −0 below +0.
#[inline]
fn total_key<F: Format>(bits: u64) -> i64 {
    let mag = (bits & !F::SIGN) as i64;
    if bits & F::SIGN != 0 {
        -mag - 1
    } else {
        mag
    }
}

fn minmax<F: Format>(a: u64, b: u64, want_max: bool, flags: &mut u8) -> u64 {
    if is_snan::<F>(a) || is_snan::<F>(b) {
        *flags |= NV;
    }
    match (is_nan::<F>(a), is_nan::<F>(b)) {
        (true, true) => F::CANON_NAN,
        (true, false) => b,
        (false, true) => a,
        (false, false) => {
            let a_less = total_key::<F>(a) < total_key::<F>(b);
            if a_less != want_max {
                a
            } else {
                b
            }
        }
    }
}

fn eq<F: Format>(a: u64, b: u64, flags: &mut u8) -> bool {
    if is_snan::<F>(a) || is_snan::<F>(b) {
        *flags |= NV;
    }
    if is_nan::<F>(a) || is_nan::<F>(b) {
        return false;
    }
    order_key::<F>(a) == order_key::<F>(b)
}

fn compare<F: Format>(a: u64, b: u64, or_equal: bool, flags: &mut u8) -> bool {
    if is_nan::<F>(a) || is_nan::<F>(b) {
        *flags |= NV;
        return false;
    }
    let (ka, kb) = (order_key::<F>(a), order_key::<F>(b));
    ka < kb || (or_equal && ka == kb)
}

fn classify<F: Format>(a: u64) -> u64 {
    let (sign, v) = unpack::<F>(a);
    let bit = match v {
        Val::Nan(true) => 8,
        Val::Nan(false) => 9,
        _ => {
            let e = (a >> F::FRAC) & F::EXP_MAX;
            let pos = match v {
                Val::Inf => 7,
                Val::Zero => 4,
                _ if e == 0 => 5,
                _ => 6,
            };
            if sign {
                7 - pos
            } else {
                pos
            }
        }
    };
    1 << bit
}

// ---------------------------------------------------------------------------------------------
// Fast paths (round to nearest, finite operands, normal results)
// ---------------------------------------------------------------------------------------------
//
// The host's `f32`/`f64` arithmetic is IEEE 754 round-to-nearest-even, so for RNE the host
// result is the correctly rounded value. A fast path accepts it only when it can also prove the
// exact flags: the operands are finite and non-zero, the result is finite and strictly above
// the smallest normal number in magnitude (so no underflow is possible, and no overflow
// happened), and inexactness is decided exactly. Everything else falls back to the software
// core.

/// Whether `x` is finite with `|x|` strictly greater than the smallest normal number.
#[inline]
fn fast_ok_f32(x: f32) -> bool {
    x.is_finite() && x.abs() > f32::MIN_POSITIVE
}

#[inline]
fn fast_ok_f64(x: f64) -> bool {
    x.is_finite() && x.abs() > f64::MIN_POSITIVE
}

/// Finite and non-zero (normal or subnormal).
#[inline]
fn finite_nonzero_f32(x: f32) -> bool {
    x.is_finite() && x != 0.0
}

#[inline]
fn finite_nonzero_f64(x: f64) -> bool {
    x.is_finite() && x != 0.0
}

/// `a + b` for binary32 under RNE, or `None` when the fast path does not apply.
#[inline]
fn add_fast_s(a: f32, b: f32) -> Option<(f32, bool)> {
    if !(finite_nonzero_f32(a) && finite_nonzero_f32(b)) {
        return None;
    }
    let r = a + b;
    if !fast_ok_f32(r) {
        return None;
    }
    // In binary64 the sum of two binary32 values is exact unless their exponents are far
    // apart; TwoSum gives the exact sum as s + e either way (no overflow is possible).
    let (x, y) = (a as f64, b as f64);
    let s = x + y;
    let bb = s - x;
    let e = (x - (s - bb)) + (y - bb);
    Some((r, e != 0.0 || r as f64 != s))
}

#[inline]
fn mul_fast_s(a: f32, b: f32) -> Option<(f32, bool)> {
    if !(finite_nonzero_f32(a) && finite_nonzero_f32(b)) {
        return None;
    }
    let r = a * b;
    if !fast_ok_f32(r) {
        return None;
    }
    // The product of two 24-bit significands is exact in binary64.
    Some((r, r as f64 != a as f64 * b as f64))
}

#[inline]
fn div_fast_s(a: f32, b: f32) -> Option<(f32, bool)> {
    if !(finite_nonzero_f32(a) && finite_nonzero_f32(b)) {
        return None;
    }
    let q = a / b;
    if !fast_ok_f32(q) {
        return None;
    }
    // q is exact iff q · b == a; the product is exact in binary64.
    Some((q, q as f64 * b as f64 != a as f64))
}

#[inline]
fn sqrt_fast_s(a: f32) -> Option<(f32, bool)> {
    if !(a.is_finite() && a > 0.0) {
        return None;
    }
    let r = a.sqrt();
    // The root of a positive binary32 value is always a normal number.
    let r64 = r as f64;
    Some((r, r64 * r64 != a as f64))
}

/// Significand of a finite non-zero binary64 value with its trailing zeros removed.
#[inline]
fn odd_sig_f64(x: f64) -> u64 {
    let bits = x.to_bits();
    let frac = bits & D::FRAC_MASK;
    let sig = if (bits >> D::FRAC) & D::EXP_MAX == 0 {
        frac
    } else {
        frac | (1 << D::FRAC)
    };
    sig >> sig.trailing_zeros()
}

/// Whether the finite non-zero binary64 value `x` is at most `2^1021` in magnitude.
#[inline]
fn below_2_1021(x: f64) -> bool {
    x.abs() <= f64::from_bits(0x7fc0_0000_0000_0000)
}

#[inline]
fn add_fast_d(a: f64, b: f64) -> Option<(f64, bool)> {
    if !(finite_nonzero_f64(a) && finite_nonzero_f64(b) && below_2_1021(a) && below_2_1021(b)) {
        return None;
    }
    // With |a|, |b| ≤ 2^1021 no step of TwoSum can overflow, so s + e is exactly a + b.
    let s = a + b;
    if !fast_ok_f64(s) {
        return None;
    }
    let bb = s - a;
    let e = (a - (s - bb)) + (b - bb);
    Some((s, e != 0.0))
}

#[inline]
fn mul_fast_d(a: f64, b: f64) -> Option<(f64, bool)> {
    if !(finite_nonzero_f64(a) && finite_nonzero_f64(b)) {
        return None;
    }
    let r = a * b;
    if !fast_ok_f64(r) {
        return None;
    }
    // The exact product is (odd_a · odd_b) · 2^k; being in the normal range (r is normal and
    // above the smallest normal, so the exact product is too), it is representable iff its odd
    // part fits the 53-bit significand.
    let p = odd_sig_f64(a) as u128 * odd_sig_f64(b) as u128;
    Some((r, p >> 53 != 0))
}

#[inline]
fn div_fast_d(a: f64, b: f64) -> Option<(f64, bool)> {
    if !(finite_nonzero_f64(a) && finite_nonzero_f64(b)) {
        return None;
    }
    let q = a / b;
    if !fast_ok_f64(q) {
        return None;
    }
    // If a/b is exact then q · b = a, so odd(q) · odd(b) = odd(a). Conversely, if that holds
    // and the exponents agree, q · b = a exactly. Compare the exact integer products and the
    // binary exponents (taken from the unpacked forms, which handles subnormal operands).
    let exact = {
        let (_, vq) = unpack::<D>(q.to_bits());
        let (_, va) = unpack::<D>(a.to_bits());
        let (_, vb) = unpack::<D>(b.to_bits());
        match (vq, va, vb) {
            (
                Val::Fin { sig: mq, exp: eq },
                Val::Fin { sig: ma, exp: ea },
                Val::Fin { sig: mb, exp: eb },
            ) => {
                // q·b = mq·mb · 2^(eq+eb), a = ma · 2^ea, with ma, mb, mq in [2^52, 2^53):
                // mq·mb ∈ [2^104, 2^106), so equality needs mq·mb = ma · 2^(eq+eb−ea) with the
                // shift 52 or 53.
                let prod = mq as u128 * mb as u128;
                let shift = eq + eb - ea;
                (shift == -52 || shift == -53) && prod == (ma as u128) << (-shift) as u32
            }
            _ => false,
        }
    };
    Some((q, !exact))
}

#[inline]
fn sqrt_fast_d(a: f64) -> Option<(f64, bool)> {
    if !(a.is_finite() && a > 0.0) {
        return None;
    }
    let r = a.sqrt();
    // The root of a positive binary64 value is always normal; r is exact iff r² = a exactly,
    // i.e. mr² = ma · 2^(ea − 2·er) (compare exact integers).
    let (_, vr) = unpack::<D>(r.to_bits());
    let (_, va) = unpack::<D>(a.to_bits());
    let exact = match (vr, va) {
        (Val::Fin { sig: mr, exp: er }, Val::Fin { sig: ma, exp: ea }) => {
            let sq = mr as u128 * mr as u128;
            let shift = 2 * er - ea;
            (shift == -52 || shift == -53) && sq == (ma as u128) << (-shift) as u32
        }
        _ => false,
    };
    Some((r, !exact))
}

#[inline]
fn finish_fast<T>(r: (T, bool), flags: &mut u8) -> T {
    if r.1 {
        *flags |= NX;
    }
    r.0
}

// ---------------------------------------------------------------------------------------------
// Single precision
// ---------------------------------------------------------------------------------------------

/// `fadd.s`
pub fn add_s(a: u32, b: u32, rm: Rm, flags: &mut u8) -> u32 {
    if rm == Rm::Rne {
        if let Some(r) = add_fast_s(f32::from_bits(a), f32::from_bits(b)) {
            return finish_fast(r, flags).to_bits();
        }
    }
    add_soft::<S>(a as u64, b as u64, rm, flags) as u32
}

/// `fsub.s`
pub fn sub_s(a: u32, b: u32, rm: Rm, flags: &mut u8) -> u32 {
    add_s(a, b ^ S::SIGN as u32, rm, flags)
}

/// `fmul.s`
pub fn mul_s(a: u32, b: u32, rm: Rm, flags: &mut u8) -> u32 {
    if rm == Rm::Rne {
        if let Some(r) = mul_fast_s(f32::from_bits(a), f32::from_bits(b)) {
            return finish_fast(r, flags).to_bits();
        }
    }
    mul_soft::<S>(a as u64, b as u64, rm, flags) as u32
}

/// `fdiv.s`
pub fn div_s(a: u32, b: u32, rm: Rm, flags: &mut u8) -> u32 {
    if rm == Rm::Rne {
        if let Some(r) = div_fast_s(f32::from_bits(a), f32::from_bits(b)) {
            return finish_fast(r, flags).to_bits();
        }
    }
    div_soft::<S>(a as u64, b as u64, rm, flags) as u32
}

/// `fsqrt.s`
pub fn sqrt_s(a: u32, rm: Rm, flags: &mut u8) -> u32 {
    if rm == Rm::Rne {
        if let Some(r) = sqrt_fast_s(f32::from_bits(a)) {
            return finish_fast(r, flags).to_bits();
        }
    }
    sqrt_soft::<S>(a as u64, rm, flags) as u32
}

/// `(±a·b) ± c` with a single rounding: `fmadd.s` = (false, false), `fmsub.s` = (false, true),
/// `fnmsub.s` = (true, false), `fnmadd.s` = (true, true).
pub fn fma_s(
    a: u32,
    b: u32,
    c: u32,
    neg_product: bool,
    neg_addend: bool,
    rm: Rm,
    flags: &mut u8,
) -> u32 {
    fma_soft::<S>(
        a as u64,
        b as u64,
        c as u64,
        neg_product,
        neg_addend,
        rm,
        flags,
    ) as u32
}

/// `fmin.s`
pub fn min_s(a: u32, b: u32, flags: &mut u8) -> u32 {
    minmax::<S>(a as u64, b as u64, false, flags) as u32
}

/// `fmax.s`
pub fn max_s(a: u32, b: u32, flags: &mut u8) -> u32 {
    minmax::<S>(a as u64, b as u64, true, flags) as u32
}

/// `feq.s` (quiet: NV only for signaling NaNs).
pub fn eq_s(a: u32, b: u32, flags: &mut u8) -> bool {
    eq::<S>(a as u64, b as u64, flags)
}

/// `flt.s` (signaling: NV for any NaN).
pub fn lt_s(a: u32, b: u32, flags: &mut u8) -> bool {
    compare::<S>(a as u64, b as u64, false, flags)
}

/// `fle.s` (signaling: NV for any NaN).
pub fn le_s(a: u32, b: u32, flags: &mut u8) -> bool {
    compare::<S>(a as u64, b as u64, true, flags)
}

/// `fclass.s`: the 10-bit class mask.
pub fn classify_s(a: u32) -> u64 {
    classify::<S>(a as u64)
}

/// `fcvt.w.s`
pub fn to_i32_s(a: u32, rm: Rm, flags: &mut u8) -> i32 {
    to_int::<S>(a as u64, true, 32, rm, flags) as u32 as i32
}

/// `fcvt.wu.s`
pub fn to_u32_s(a: u32, rm: Rm, flags: &mut u8) -> u32 {
    to_int::<S>(a as u64, false, 32, rm, flags) as u32
}

/// `fcvt.l.s`
pub fn to_i64_s(a: u32, rm: Rm, flags: &mut u8) -> i64 {
    to_int::<S>(a as u64, true, 64, rm, flags) as i64
}

/// `fcvt.lu.s`
pub fn to_u64_s(a: u32, rm: Rm, flags: &mut u8) -> u64 {
    to_int::<S>(a as u64, false, 64, rm, flags)
}

/// `fcvt.s.w`
pub fn from_i32_s(v: i32, rm: Rm, flags: &mut u8) -> u32 {
    from_int::<S>(v < 0, v.unsigned_abs() as u64, rm, flags) as u32
}

/// `fcvt.s.wu`
pub fn from_u32_s(v: u32, rm: Rm, flags: &mut u8) -> u32 {
    from_int::<S>(false, v as u64, rm, flags) as u32
}

/// `fcvt.s.l`
pub fn from_i64_s(v: i64, rm: Rm, flags: &mut u8) -> u32 {
    from_int::<S>(v < 0, v.unsigned_abs(), rm, flags) as u32
}

/// `fcvt.s.lu`
pub fn from_u64_s(v: u64, rm: Rm, flags: &mut u8) -> u32 {
    from_int::<S>(false, v, rm, flags) as u32
}

/// `fcvt.d.s` (exact; a NaN becomes the canonical NaN, NV for a signaling NaN).
pub fn s_to_d(a: u32, flags: &mut u8) -> u64 {
    convert::<S, D>(a as u64, Rm::Rne, flags)
}

/// `fcvt.s.d`
pub fn d_to_s(a: u64, rm: Rm, flags: &mut u8) -> u32 {
    convert::<D, S>(a, rm, flags) as u32
}

// ---------------------------------------------------------------------------------------------
// Double precision
// ---------------------------------------------------------------------------------------------

/// `fadd.d`
pub fn add_d(a: u64, b: u64, rm: Rm, flags: &mut u8) -> u64 {
    if rm == Rm::Rne {
        if let Some(r) = add_fast_d(f64::from_bits(a), f64::from_bits(b)) {
            return finish_fast(r, flags).to_bits();
        }
    }
    add_soft::<D>(a, b, rm, flags)
}

/// `fsub.d`
pub fn sub_d(a: u64, b: u64, rm: Rm, flags: &mut u8) -> u64 {
    add_d(a, b ^ D::SIGN, rm, flags)
}

/// `fmul.d`
pub fn mul_d(a: u64, b: u64, rm: Rm, flags: &mut u8) -> u64 {
    if rm == Rm::Rne {
        if let Some(r) = mul_fast_d(f64::from_bits(a), f64::from_bits(b)) {
            return finish_fast(r, flags).to_bits();
        }
    }
    mul_soft::<D>(a, b, rm, flags)
}

/// `fdiv.d`
pub fn div_d(a: u64, b: u64, rm: Rm, flags: &mut u8) -> u64 {
    if rm == Rm::Rne {
        if let Some(r) = div_fast_d(f64::from_bits(a), f64::from_bits(b)) {
            return finish_fast(r, flags).to_bits();
        }
    }
    div_soft::<D>(a, b, rm, flags)
}

/// `fsqrt.d`
pub fn sqrt_d(a: u64, rm: Rm, flags: &mut u8) -> u64 {
    if rm == Rm::Rne {
        if let Some(r) = sqrt_fast_d(f64::from_bits(a)) {
            return finish_fast(r, flags).to_bits();
        }
    }
    sqrt_soft::<D>(a, rm, flags)
}

/// `(±a·b) ± c` with a single rounding: `fmadd.d` = (false, false), `fmsub.d` = (false, true),
/// `fnmsub.d` = (true, false), `fnmadd.d` = (true, true).
pub fn fma_d(
    a: u64,
    b: u64,
    c: u64,
    neg_product: bool,
    neg_addend: bool,
    rm: Rm,
    flags: &mut u8,
) -> u64 {
    fma_soft::<D>(a, b, c, neg_product, neg_addend, rm, flags)
}

/// `fmin.d`
pub fn min_d(a: u64, b: u64, flags: &mut u8) -> u64 {
    minmax::<D>(a, b, false, flags)
}

/// `fmax.d`
pub fn max_d(a: u64, b: u64, flags: &mut u8) -> u64 {
    minmax::<D>(a, b, true, flags)
}

/// `feq.d` (quiet: NV only for signaling NaNs).
pub fn eq_d(a: u64, b: u64, flags: &mut u8) -> bool {
    eq::<D>(a, b, flags)
}

/// `flt.d` (signaling: NV for any NaN).
pub fn lt_d(a: u64, b: u64, flags: &mut u8) -> bool {
    compare::<D>(a, b, false, flags)
}

/// `fle.d` (signaling: NV for any NaN).
pub fn le_d(a: u64, b: u64, flags: &mut u8) -> bool {
    compare::<D>(a, b, true, flags)
}

/// `fclass.d`: the 10-bit class mask.
pub fn classify_d(a: u64) -> u64 {
    classify::<D>(a)
}

/// `fcvt.w.d`
pub fn to_i32_d(a: u64, rm: Rm, flags: &mut u8) -> i32 {
    to_int::<D>(a, true, 32, rm, flags) as u32 as i32
}

/// `fcvt.wu.d`
pub fn to_u32_d(a: u64, rm: Rm, flags: &mut u8) -> u32 {
    to_int::<D>(a, false, 32, rm, flags) as u32
}

/// `fcvt.l.d`
pub fn to_i64_d(a: u64, rm: Rm, flags: &mut u8) -> i64 {
    to_int::<D>(a, true, 64, rm, flags) as i64
}

/// `fcvt.lu.d`
pub fn to_u64_d(a: u64, rm: Rm, flags: &mut u8) -> u64 {
    to_int::<D>(a, false, 64, rm, flags)
}

/// `fcvt.d.w` (always exact).
pub fn from_i32_d(v: i32, rm: Rm, flags: &mut u8) -> u64 {
    from_int::<D>(v < 0, v.unsigned_abs() as u64, rm, flags)
}

/// `fcvt.d.wu` (always exact).
pub fn from_u32_d(v: u32, rm: Rm, flags: &mut u8) -> u64 {
    from_int::<D>(false, v as u64, rm, flags)
}

/// `fcvt.d.l`
pub fn from_i64_d(v: i64, rm: Rm, flags: &mut u8) -> u64 {
    from_int::<D>(v < 0, v.unsigned_abs(), rm, flags)
}

/// `fcvt.d.lu`
pub fn from_u64_d(v: u64, rm: Rm, flags: &mut u8) -> u64 {
    from_int::<D>(false, v, rm, flags)
}
