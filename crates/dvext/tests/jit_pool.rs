//! The VM's compiler thread and shared code: a region one hart compiled is installed by
//! another hart of the VM without compiling it again, and runs with the same results as the
//! interpreter; code written after it was compiled is never shared.

mod common;

use std::time::{Duration, Instant};

use common::*;
use dvext::csr::UEPC;
use dvext::{Exit, Hart, JitPool, JitPoolSettings, JitStats};

/// A loop long enough for the compiler thread to deliver its regions while it runs; `a0` is a
/// checksum of the work.
const WORK: &str = "
    .option norvc
    li s0, DATA
    li s1, 0
    li a0, 1
    li s2, 300000
loop:
    andi t0, s1, 255
    slli t0, t0, 3
    add t0, t0, s0
    ld t1, 0(t0)
    xor t1, t1, a0
    add t1, t1, s1
    sd t1, 0(t0)
    slli t2, a0, 7
    xor a0, a0, t2
    srli t2, a0, 9
    xor a0, a0, t2
    addi s1, s1, 1
    bne s1, s2, loop
    ecall
";

/// Run another hart of `vm` (set up to start at the program's entry) to its ecall.
fn run_to_ecall(vm: &TestVm, h: &mut Hart) {
    let e = run_with_watchdog(h, &vm.intr, Duration::from_secs(60));
    assert!(
        matches!(
            e,
            Exit::Trap {
                cause: dvext::csr::cause::ECALL_VS,
                ..
            }
        ),
        "{e:?}"
    );
}

fn src() -> String {
    WORK.replace("DATA", &format!("{DATA:#x}"))
}

/// Run hart 0 of `vm` to the program's ecall, and from the entry again (after `again`, which
/// puts back what a run changed) until the compiler thread has delivered code to it; its
/// compiling-tier counters. The compiler runs behind the vCPUs (`COMPILER_NICE`): on a busy
/// host, one run can end before the thread got the CPU for the queued region.
fn run_until_compiled(vm: &mut TestVm, again: impl Fn(&mut TestVm)) -> JitStats {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        vm.run_to_ecall();
        let s = vm.hart.stats().jit;
        if s.compiled > 0 || Instant::now() >= deadline {
            return s;
        }
        again(vm);
        vm.set_csr(UEPC, RAM_GPA);
    }
}

/// The interpreter's checksum and data page for one run of `src`.
fn reference(src: &str) -> (u64, Vec<u8>) {
    let mut vm = TestVm::with_program(src);
    vm.run_to_ecall();
    (vm.x(r::A0), vm.read(DATA, 2048))
}

/// The program in a VM with a compiler pool, run to its ecall on hart 0; and hart 1 of the same
/// VM, sharing the pool, ready to run it.
fn ran_on_hart0() -> (TestVm, Hart) {
    let mut vm = TestVm::with_program(&src());
    let pool = JitPool::new("test-jit").unwrap();
    vm.hart.enable_jit(100, Some(&pool)).unwrap();
    let mut h1 = vm.add_hart(1);
    h1.enable_jit(100, Some(&pool)).unwrap();
    let s0 = run_until_compiled(&mut vm, |vm| vm.write(DATA, &[0; 2048]));
    assert!(s0.compiled > 0, "hart 0 compiled nothing: {s0:?}");
    (vm, h1)
}

#[test]
fn a_second_hart_installs_the_first_harts_code() {
    let (want, want_data) = reference(&src());
    let (vm, mut h1) = ran_on_hart0();
    assert_eq!(vm.x(r::A0), want);
    assert_eq!(vm.read(DATA, 2048), want_data);

    // Hart 1 runs the same code, from fresh data: it copies hart 0's regions.
    vm.write(DATA, &[0; 2048]);
    let t = Instant::now();
    run_to_ecall(&vm, &mut h1);
    assert_eq!(h1.gpr(r::A0), want);
    assert_eq!(vm.read(DATA, 2048), want_data);
    let s1 = h1.stats().jit;
    assert!(s1.shared > 0, "hart 1 compiled everything again: {s1:?}");
    assert_eq!(
        s1.compile_ns,
        0,
        "hart 1 compiled: {s1:?} in {:?}",
        t.elapsed()
    );
}

#[test]
fn code_rewritten_after_it_was_compiled_is_not_shared() {
    let changed = src().replace("slli t2, a0, 7", "slli t2, a0, 5");
    let (want, _) = reference(&changed);
    let (vm, mut h1) = ran_on_hart0();

    // The host rewrites the loop (same length, one shift amount changed) before hart 1 runs.
    let bin = assemble(&changed);
    vm.write(RAM_GPA, &bin);
    vm.write(DATA, &[0; 2048]);
    run_to_ecall(&vm, &mut h1);
    assert_eq!(h1.gpr(r::A0), want, "hart 1 ran the old code");
    assert_eq!(h1.stats().jit.shared, 0);
}

#[test]
fn a_second_hart_takes_shared_code_before_its_own_threshold() {
    // Hart 0 runs the loop 300000 times and compiles it; hart 1 (sscratch = 1) runs it 40
    // times, fewer than the threshold of 100, and still runs hart 0's code: a block looks for
    // shared code at an eighth of the threshold.
    let mut vm = TestVm::with_program(
        "
        .option norvc
        csrr t0, sscratch
        li s2, 300000
        beqz t0, 1f
        li s2, 40
    1:  li s1, 0
        li a0, 1
    loop:
        add a0, a0, s1
        xori a0, a0, 5
        addi s1, s1, 1
        bne s1, s2, loop
        ecall
        ",
    );
    let pool = JitPool::new("test-jit").unwrap();
    vm.hart.enable_jit(100, Some(&pool)).unwrap();
    let mut h1 = vm.add_hart(1);
    h1.enable_jit(100, Some(&pool)).unwrap();
    h1.csr_write(dvext::csr::HUVSSCRATCH, 1).unwrap();
    let s0 = run_until_compiled(&mut vm, |_| {});
    assert!(s0.compiled > 0, "hart 0 compiled nothing: {s0:?}");
    run_to_ecall(&vm, &mut h1);
    assert_eq!(h1.gpr(r::S1), 40);
    let s1 = h1.stats().jit;
    assert!(s1.shared > 0, "hart 1 did not take hart 0's code: {s1:?}");
    assert_eq!(s1.compile_ns, 0, "hart 1 compiled: {s1:?}");
}

/// The compiler thread runs behind the vCPUs (see `COMPILER_NICE`), and has its priority by
/// the time the pool exists (the sandbox installed after set-up would refuse the call).
#[test]
fn the_compiler_thread_yields_to_the_vcpus() {
    let own_nice = || nice(std::path::Path::new("/proc/thread-self"));
    let before = own_nice();
    let _pool = JitPool::new("nice-jit").unwrap();
    let compiler: Vec<i32> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .map(|t| t.unwrap().path())
        .filter(|dir| {
            std::fs::read_to_string(dir.join("comm")).is_ok_and(|c| c.trim() == "nice-jit")
        })
        .map(|dir| nice(&dir))
        .collect();
    assert_eq!(compiler.len(), 1, "one compiler thread: {compiler:?}");
    // 10, or the caller's own if that is lower still (a thread may not raise its priority).
    assert!(
        compiler[0] >= 10 && compiler[0] >= before,
        "the compiler thread's nice value is {}",
        compiler[0]
    );
    assert_eq!(own_nice(), before, "the caller keeps its priority");
}

/// A loop through `PAGES` blocks, each on a page of its own and so a region of its own: more
/// hot regions at once than the compiler thread's queue holds. `s3` counts the blocks run.
fn pages_src() -> String {
    const PAGES: usize = 64;
    let mut s = String::from(
        "
    .option norvc
    csrr t0, sscratch
    bnez t0, idle
    li s1, 0
    li s2, 400
    li s3, 0
loop:
    j p0
# Another hart (sscratch != 0): says so at DATA, then sleeps.
idle:
    li t1, DATA
    sd t0, 0(t1)
1:  wfi
    j 1b
",
    );
    for p in 0..PAGES {
        s += &format!("    .balign 4096\np{p}:\n    addi s3, s3, 1\n");
        if p + 1 < PAGES {
            s += &format!("    j p{}\n", p + 1);
        }
    }
    s += "
    addi s1, s1, 1
    beq s1, s2, done
    j loop
done:
    ecall
";
    s.replace("DATA", &format!("{DATA:#x}"))
}

/// Run `pages_src` on hart 0 of a VM whose compiler pool has `settings`, with hart 1 asleep
/// in WFI meanwhile if `sleeper`; hart 0's compiling-tier counters.
fn run_pages_with(settings: JitPoolSettings, sleeper: bool) -> dvext::JitStats {
    let pool = JitPool::with_settings("pages-jit", settings).unwrap();
    let mut vm = TestVm::with_program(&pages_src());
    vm.hart.enable_jit(20, Some(&pool)).unwrap();
    let mut h1 = vm.add_hart(1);
    h1.enable_jit(20, Some(&pool)).unwrap();
    h1.csr_write(dvext::csr::HUVSSCRATCH, 1).unwrap();
    std::thread::scope(|s| {
        let intr = vm.intr.clone();
        let t = sleeper.then(|| {
            let h1 = &mut h1;
            let t = s.spawn(move || h1.huret());
            let start = Instant::now();
            while vm.read_u64(DATA) != 1 {
                assert!(
                    start.elapsed() < Duration::from_secs(60),
                    "hart 1 never ran"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            // It stored the flag just before its WFI.
            std::thread::sleep(Duration::from_millis(50));
            t
        });
        vm.run_to_ecall();
        if let Some(t) = t {
            intr.kick(1).unwrap();
            assert!(matches!(t.join().unwrap(), Exit::Kicked));
        }
    });
    assert_eq!(vm.x(r::S3), 64 * 400, "blocks run");
    vm.hart.stats().jit
}

/// [`run_pages_with`] hart 1 not running, on two host cores: hart 0 leaves one to the
/// compiler thread, whose `patience` decides when hart 0 compiles waiting regions itself.
fn run_pages(patience: Duration) -> dvext::JitStats {
    let settings = JitPoolSettings {
        patience,
        host_cores: 2,
        before_job: None,
    };
    run_pages_with(settings, false)
}

/// A pool on `host_cores` whose compiler thread never counts as stalled: a hart compiles a
/// region itself only because the running harts take every core.
fn patient(host_cores: u32) -> JitPoolSettings {
    JitPoolSettings {
        patience: Duration::from_secs(3600),
        host_cores,
        before_job: None,
    }
}

/// On one host core a running hart leaves the compiler thread none: it compiles what
/// becomes hot itself, at once, however patient the thread.
#[test]
fn a_hart_that_takes_the_last_host_core_compiles_itself() {
    let s = run_pages_with(patient(1), false);
    assert!(s.compiled > 0, "{s:?}");
    assert_eq!(
        s.inline, s.compiled,
        "regions left to the compiler thread: {s:?}"
    );
}

/// A hart asleep in WFI does not take a host core: on two cores, the other hart still leaves
/// its regions to the compiler thread.
#[test]
fn a_hart_asleep_in_wfi_leaves_its_core_to_the_compiler_thread() {
    // Whether the thread delivers before hart 0 is done depends on the host's load, so only
    // what hart 0 compiled itself is checked (all 65 regions when hart 1 counts as running).
    let s = run_pages_with(patient(2), true);
    assert_eq!(s.inline, 0, "hart 0 compiled regions itself: {s:?}");
}

/// A hart waits for a compiler thread that is getting through its queue, however long the
/// queue: it would only take host CPU from the guest to compile as well.
#[test]
fn a_hart_leaves_compiling_to_a_compiler_thread_that_keeps_up() {
    let s = run_pages(Duration::from_secs(3600));
    assert_eq!(s.inline, 0, "the hart compiled regions itself: {s:?}");
}

/// A hart whose blocks wait in front of a compiler thread that makes no progress (patience
/// zero: every moment counts as stalled) compiles them itself.
#[test]
fn a_hart_compiles_what_a_stalled_compiler_thread_leaves_waiting() {
    let s = run_pages(Duration::ZERO);
    assert!(s.inline > 0, "the hart compiled nothing itself: {s:?}");
}

/// A thread's nice value, from `/proc/.../stat` (field 19).
fn nice(task: &std::path::Path) -> i32 {
    let stat = std::fs::read_to_string(task.join("stat")).unwrap();
    // The command name is parenthesised and may hold spaces: count from after it (field 3).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split(' ').nth(16).unwrap().parse().unwrap()
}
