//! The compiling tier against the interpreter: random programs of integer, multiply/divide,
//! load, store and branch instructions (the operations the tier compiles) and atomics (which
//! compiled regions hand to the interpreter on the spot), run in a loop so
//! that whole regions (several blocks, back edges) are compiled, must leave the same
//! registers, the same memory and the same retired-instruction count either way.

mod common;

use common::*;

/// xorshift64*: reproducible without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
}

/// Registers the generated code computes with (s0 = data pointer, s1 = loop counter).
const REGS: &[&str] = &[
    "t0", "t1", "t2", "t3", "t4", "t5", "t6", "a0", "a1", "a2", "a3", "a4", "a5", "a6", "a7",
];
const RR: &[&str] = &[
    "add", "sub", "sll", "slt", "sltu", "xor", "srl", "sra", "or", "and", "addw", "subw", "sllw",
    "srlw", "sraw", "mul", "mulh", "mulhsu", "mulhu", "div", "divu", "rem", "remu", "mulw", "divw",
    "divuw", "remw", "remuw",
];
const RI: &[&str] = &["addi", "slti", "sltiu", "xori", "ori", "andi", "addiw"];
const SHIFT64: &[&str] = &["slli", "srli", "srai"];
const SHIFT32: &[&str] = &["slliw", "srliw", "sraiw"];
const LOADS: &[&str] = &["lb", "lh", "lw", "ld", "lbu", "lhu", "lwu"];
const STORES: &[&str] = &["sb", "sh", "sw", "sd"];
const BRANCHES: &[&str] = &["beq", "bne", "blt", "bge", "bltu", "bgeu"];
/// Operands that exercise division's corner cases and sign extension.
const SPECIAL: &[u64] = &[
    0,
    1,
    u64::MAX,
    i64::MIN as u64,
    i32::MIN as i64 as u64,
    0x8000_0000,
    0xffff_ffff,
    0x7fff_ffff,
];

fn program(rng: &mut Rng, rvc: bool) -> String {
    let mut s = String::new();
    s.push_str(if rvc { "" } else { ".option norvc\n" });
    for r in REGS {
        let v = if rng.below(3) == 0 {
            SPECIAL[rng.below(SPECIAL.len() as u64) as usize]
        } else {
            rng.next()
        };
        s.push_str(&format!("li {r}, {:#x}\n", v));
    }
    s.push_str(&format!(
        "li s0, {DATA:#x}\nli s1, {}\n",
        20 + rng.below(40)
    ));
    s.push_str("loop:\n");
    let n = 10 + rng.below(40);
    let mut label = 0;
    for _ in 0..n {
        let rd = if rng.below(10) == 0 {
            "zero"
        } else {
            rng.pick(REGS)
        };
        let (a, b) = (rng.pick(REGS), rng.pick(REGS));
        let line = match rng.below(10) {
            0..=2 => format!("{} {rd}, {a}, {b}", rng.pick(RR)),
            3 => format!(
                "{} {rd}, {a}, {}",
                rng.pick(RI),
                rng.below(4096) as i64 - 2048
            ),
            4 => {
                if rng.below(2) == 0 {
                    format!("{} {rd}, {a}, {}", rng.pick(SHIFT64), rng.below(64))
                } else {
                    format!("{} {rd}, {a}, {}", rng.pick(SHIFT32), rng.below(32))
                }
            }
            5 => format!("{} {rd}, {}(s0)", rng.pick(LOADS), rng.below(2040)),
            6 => format!("{} {a}, {}(s0)", rng.pick(STORES), rng.below(2040)),
            7 => {
                if rng.below(2) == 0 {
                    format!("lui {rd}, {}", rng.below(1 << 20))
                } else {
                    format!("auipc {rd}, {}", rng.below(1 << 20))
                }
            }
            8 => {
                // Atomics have no compiled form: the region has the interpreter run them.
                let amo = rng.pick(&["amoadd.w", "amoxor.d", "amoswap.d", "amomaxu.w", "amomin.d"]);
                format!("{amo} {rd}, {a}, (s0)")
            }
            _ => {
                // A forward branch over one instruction: splits the loop into blocks.
                label += 1;
                format!(
                    "{} {a}, {b}, 1{label}f\nxor {rd}, {a}, {b}\n1{label}:",
                    rng.pick(BRANCHES)
                )
            }
        };
        s.push_str(&line);
        s.push('\n');
    }
    s.push_str("addi s1, s1, -1\nbnez s1, loop\necall\n");
    s
}

/// Run `src` to its ecall; the registers, the data page and the retired count.
fn run(src: &str, jit: bool, seed: u64) -> (Vec<u64>, Vec<u8>, u64) {
    let mut vm = TestVm::with_program(src);
    // The same starting data for both runs.
    let mut rng = Rng(seed ^ 0xdead_beef);
    let data: Vec<u8> = (0..4096).map(|_| rng.next() as u8).collect();
    vm.write(DATA, &data);
    if jit {
        vm.hart.enable_jit(1, None).unwrap();
    }
    vm.run_to_ecall();
    if jit {
        assert!(vm.hart.stats().jit.compiled > 0, "nothing was compiled");
    }
    let regs = (0..32).map(|r| vm.x(r)).collect();
    let instret = vm.hart.stats().instret;
    (regs, vm.read(DATA, 4096), instret)
}

#[test]
fn compiled_regions_match_the_interpreter() {
    for seed in 1..=120u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let src = program(&mut rng, seed % 2 == 0);
        let (ri, mi, ni) = run(&src, false, seed);
        let (rj, mj, nj) = run(&src, true, seed);
        for r in 0..32 {
            assert_eq!(
                ri[r], rj[r],
                "seed {seed}: x{r} differs (interpreter {:#x}, compiled {:#x})\n{src}",
                ri[r], rj[r]
            );
        }
        assert!(mi == mj, "seed {seed}: data memory differs\n{src}");
        assert_eq!(ni, nj, "seed {seed}: retired instructions differ\n{src}");
    }
}
