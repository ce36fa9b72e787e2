//! Engine benchmarks (plain `main`, no harness):
//!
//! (a) guest MIPS on a CPU-bound loop of ALU, branch, load and store instructions;
//! (b) the cost of one VM exit round trip: guest `ecall` -> `huret()` returns -> the host
//!     steps uepc over it -> `huret()` again.
//!
//! Run with `cargo bench -p dvext --bench engine`. `DVEXT_BENCH_INSTS` (default 500e6) and
//! `DVEXT_BENCH_EXITS` (default 2e6) scale the two parts.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::*;
use dvext::csr::UEPC;
use dvext::Exit;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// 10 instructions per iteration: 6 ALU, 1 load, 1 store, 1 counter update, 1 branch. The
/// data lives on its own page, away from the code.
fn cpu_loop(iterations: u64) -> String {
    format!(
        "
        .option norvc
        li s0, {DATA:#x}
        li s1, {iterations}
        li a0, 0
        li a1, 0x9e3779b9
    loop:
        add a0, a0, a1
        xor a2, a0, s1
        slli a3, a2, 3
        ld a4, 0(s0)
        add a4, a4, a3
        sd a4, 0(s0)
        srli a5, a4, 7
        or a1, a1, a5
        addi s1, s1, -1
        bnez s1, loop
        ecall
        "
    )
}

/// The same loop body, but with compressed encodings wherever the assembler can use them.
fn cpu_loop_rvc(iterations: u64) -> String {
    cpu_loop(iterations).replace(".option norvc", "")
}

/// CPU time consumed by the calling thread, in seconds. The machine may be shared, so rates
/// are reported against both wall time and this.
fn thread_cpu_secs() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID is always available
    // on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn run_mips(label: &str, src: &str, insts_per_iter: u64, iterations: u64) -> f64 {
    let mut vm = TestVm::with_program(src);
    vm.timeout = std::time::Duration::from_secs(3600);
    let before = vm.hart.stats().instret;
    let t = Instant::now();
    let cpu0 = thread_cpu_secs();
    // No watchdog thread here: call huret directly so the run is measured alone.
    let e = vm.hart.huret();
    let cpu = thread_cpu_secs() - cpu0;
    let secs = t.elapsed().as_secs_f64();
    vm.expect_ecall(e);
    let retired = vm.hart.stats().instret - before;
    // 4 set-up instructions (some `li`s expand to two) + the loop; the ecall does not retire.
    let min = insts_per_iter * iterations;
    assert!(
        (min..min + 16).contains(&retired),
        "retired {retired}, expected about {min}"
    );
    let mips = retired as f64 / secs / 1e6;
    let cpu_mips = retired as f64 / cpu / 1e6;
    println!(
        "  {label:<28} {retired:>11} insts  {secs:>7.3} s wall = {mips:>7.1} MIPS   \
         {cpu:>7.3} s CPU = {cpu_mips:>7.1} MIPS"
    );
    cpu_mips
}

fn exits(n: u64) -> f64 {
    let mut vm = TestVm::with_program(
        "
        .option norvc
    1:  ecall
        j 1b
        ",
    );
    // Warm up: build the blocks and fill the TLB.
    for _ in 0..1000 {
        round_trip(&mut vm);
    }
    let t = Instant::now();
    let cpu0 = thread_cpu_secs();
    for _ in 0..n {
        round_trip(&mut vm);
    }
    let cpu = thread_cpu_secs() - cpu0;
    let wall = t.elapsed().as_secs_f64();
    let ns = wall * 1e9 / n as f64;
    let cpu_ns = cpu * 1e9 / n as f64;
    println!(
        "  {:<28} {n:>11} exits  {wall:>7.3} s wall = {ns:>7.1} ns each  \
         {cpu:>7.3} s CPU = {cpu_ns:>7.1} ns each",
        "ecall exit -> huret"
    );
    cpu_ns
}

#[inline(always)]
fn round_trip(vm: &mut TestVm) {
    match vm.hart.huret() {
        Exit::Trap { cause: 10, .. } => {}
        e => panic!("unexpected exit {e:?}"),
    }
    let pc = vm.hart.csr_read(UEPC).unwrap();
    vm.hart.csr_write(UEPC, pc + 4).unwrap();
}

fn main() {
    // `cargo bench` passes `--bench`; accept and ignore harness-style arguments.
    let insts = env_u64("DVEXT_BENCH_INSTS", 500_000_000);
    let n_exits = env_u64("DVEXT_BENCH_EXITS", 2_000_000);
    let reps = env_u64("DVEXT_BENCH_REPS", 3);
    let iterations = insts / 10;
    println!("dvext engine benchmark ({reps} runs each; the best is summarised, as the host may be shared)");
    println!("(a) CPU-bound guest loop (10 instructions/iteration: ALU, load, store, branch)");
    let mut mips: f64 = 0.0;
    let mut mips_c: f64 = 0.0;
    for _ in 0..reps {
        mips = mips.max(run_mips(
            "32-bit encodings",
            &cpu_loop(iterations),
            10,
            iterations,
        ));
        mips_c = mips_c.max(run_mips(
            "with compressed encodings",
            &cpu_loop_rvc(iterations),
            10,
            iterations,
        ));
    }
    println!("(b) VM exit round trip (guest ecall, host uepc += 4, huret)");
    let mut ns = f64::INFINITY;
    for _ in 0..reps {
        ns = ns.min(exits(n_exits));
    }
    println!();
    println!(
        "summary (best run, per CPU-second of the running thread): {mips:.0} guest MIPS \
         ({mips_c:.0} with compressed code), {ns:.0} ns per exit round trip"
    );
}
