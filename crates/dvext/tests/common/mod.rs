//! Shared test harness: assemble a guest program with GNU binutils and run it on a dvext hart.
//!
//! Memory layout of a [`TestVm`] (VM 1, vCPU 0):
//!
//! | host-physical            | what                                        | PMC  |
//! | ------------------------ | ------------------------------------------- | ---- |
//! | `GTABLES_HPA` (1 MiB)    | G-stage tables (bump-allocated)             | yes  |
//! | `RAM_HPA` (16 MiB)       | guest RAM, GPA `RAM_GPA` = 0x8000_0000      | yes  |
//! | `FORBIDDEN_HPA`          | a page outside every grant (PMC tests)      | no   |
//!
//! The guest starts at `RAM_GPA` in VS-mode with vsatp Bare (so VA = GPA), vsstatus.FS =
//! Initial, and nothing delegated. `DATA` is a scratch area well away from the code.

#![allow(dead_code)]

use std::sync::mpsc;
use std::time::Duration;

use dvext::csr::*;
use dvext::{Exit, Hart, HypervisorControl, Interrupter, Platform};

pub const ARENA: u64 = 64 << 20;
pub const GTABLES_HPA: u64 = 0x0010_0000;
pub const GTABLES_SIZE: u64 = 0x0010_0000;
pub const RAM_HPA: u64 = 0x0100_0000;
pub const RAM_SIZE: u64 = 16 << 20;
pub const RAM_GPA: u64 = 0x8000_0000;
/// Guest scratch data (1 MiB into RAM: far from any test program).
pub const DATA: u64 = 0x8010_0000;
/// A host-physical page no grant covers.
pub const FORBIDDEN_HPA: u64 = 0x0300_0000;
pub const VMID: u16 = 1;

/// PTE bits (both stages).
pub const PTE_V: u64 = 1 << 0;
pub const PTE_R: u64 = 1 << 1;
pub const PTE_W: u64 = 1 << 2;
pub const PTE_X: u64 = 1 << 3;
pub const PTE_U: u64 = 1 << 4;
pub const PTE_G: u64 = 1 << 5;
pub const PTE_A: u64 = 1 << 6;
pub const PTE_D: u64 = 1 << 7;
/// A G-stage leaf granting everything.
pub const G_RWX: u64 = PTE_V | PTE_R | PTE_W | PTE_X | PTE_U | PTE_A | PTE_D;

/// Integer register numbers by ABI name.
pub mod r {
    pub const ZERO: usize = 0;
    pub const RA: usize = 1;
    pub const SP: usize = 2;
    pub const GP: usize = 3;
    pub const TP: usize = 4;
    pub const T0: usize = 5;
    pub const T1: usize = 6;
    pub const T2: usize = 7;
    pub const S0: usize = 8;
    pub const S1: usize = 9;
    pub const A0: usize = 10;
    pub const A1: usize = 11;
    pub const A2: usize = 12;
    pub const A3: usize = 13;
    pub const A4: usize = 14;
    pub const A5: usize = 15;
    pub const A6: usize = 16;
    pub const A7: usize = 17;
    pub const S2: usize = 18;
    pub const S3: usize = 19;
    pub const S4: usize = 20;
    pub const S5: usize = 21;
    pub const S6: usize = 22;
    pub const S7: usize = 23;
    pub const S8: usize = 24;
    pub const S9: usize = 25;
    pub const S10: usize = 26;
    pub const S11: usize = 27;
    pub const T3: usize = 28;
    pub const T4: usize = 29;
    pub const T5: usize = 30;
    pub const T6: usize = 31;
}

// ---------------------------------------------------------------------------------------------
// Assembler
// ---------------------------------------------------------------------------------------------

#[path = "asm.rs"]
mod asm;

/// Assemble `src` (GNU as syntax, rv64gc: the assembler compresses where it can unless the
/// source says `.option norvc`), link it at `RAM_GPA` and return the flat binary.
pub fn assemble(src: &str) -> Vec<u8> {
    asm::assemble_at(src, RAM_GPA)
}

// ---------------------------------------------------------------------------------------------
// The VM
// ---------------------------------------------------------------------------------------------

/// How the G-stage maps guest RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leaves {
    /// 2 MiB superpages.
    Huge,
    /// 4 KiB pages.
    Small,
}

pub struct TestVm {
    pub platform: Platform,
    pub hv: HypervisorControl,
    pub hart: Hart,
    pub intr: Interrupter,
    /// Host-physical address of the G-stage root.
    pub g_root: u64,
    next_table: u64,
    /// Watchdog for `run`: a guest that runs longer than this fails the test.
    pub timeout: Duration,
}

impl TestVm {
    /// A VM with 2 MiB G-stage leaves and no program loaded.
    pub fn new() -> TestVm {
        TestVm::with_leaves(Leaves::Huge)
    }

    pub fn with_leaves(leaves: Leaves) -> TestVm {
        let (platform, hv) = Platform::new(ARENA).expect("platform");
        hv.pmc_grant(VMID, GTABLES_HPA, GTABLES_SIZE);
        hv.pmc_grant(VMID, RAM_HPA, RAM_SIZE);
        let hart = hv.create_hart(VMID, 0).expect("hart");
        let intr = hv.interrupter(VMID);
        let mut vm = TestVm {
            platform,
            hv,
            hart,
            intr,
            g_root: 0,
            next_table: GTABLES_HPA,
            timeout: Duration::from_secs(60),
        };
        vm.g_root = vm.alloc_table(16 << 10);
        match leaves {
            Leaves::Huge => {
                for off in (0..RAM_SIZE).step_by(2 << 20) {
                    vm.g_map(RAM_GPA + off, RAM_HPA + off, 1, G_RWX);
                }
            }
            Leaves::Small => {
                for off in (0..RAM_SIZE).step_by(4096) {
                    vm.g_map(RAM_GPA + off, RAM_HPA + off, 0, G_RWX);
                }
            }
        }
        let hgatp = vm.hgatp();
        vm.hart.csr_write(HUGATP, hgatp).unwrap();
        vm.configure_hart_common(0);
        vm
    }

    /// A VM (2 MiB leaves) with `src` assembled and loaded at `RAM_GPA`, ready to run.
    pub fn with_program(src: &str) -> TestVm {
        let mut vm = TestVm::new();
        vm.load_program(src);
        vm
    }

    /// hugatp value for the G-stage table (Sv39x4).
    pub fn hgatp(&self) -> u64 {
        (HGATP_MODE_SV39X4 << 60) | (self.g_root >> 12)
    }

    /// Reset state a fresh test expects on hart `idx`: VS-mode, FS=Initial, entry at RAM_GPA.
    fn configure_hart_common(&mut self, _idx: u32) {
        let hgatp = self.hgatp();
        configure_hart(&mut self.hart, hgatp);
    }

    /// Create another hart of the same VM, configured like vCPU 0 (same G-stage, VS-mode,
    /// FS=Initial, entry `RAM_GPA`).
    pub fn add_hart(&self, vcpu: u32) -> Hart {
        let mut h = self.hv.create_hart(VMID, vcpu).expect("hart");
        configure_hart(&mut h, self.hgatp());
        h
    }

    fn alloc_table(&mut self, size: u64) -> u64 {
        let a = self.next_table.next_multiple_of(size);
        assert!(
            a + size <= GTABLES_HPA + GTABLES_SIZE,
            "G-stage table area full"
        );
        self.next_table = a + size;
        // Tables come from a fresh arena: already zero.
        a
    }

    /// Map `gpa` -> `hpa` in the G-stage (Sv39x4) with a leaf at `level` (0: 4 KiB, 1: 2 MiB,
    /// 2: 1 GiB) and PTE `flags`, allocating intermediate tables. Returns the leaf PTE's HPA.
    pub fn g_map(&mut self, gpa: u64, hpa: u64, level: u32, flags: u64) -> u64 {
        let mem = self.hv.phys_mem().clone();
        let mut table = self.g_root;
        let mut lvl = 2;
        loop {
            let bits = if lvl == 2 { 11 } else { 9 };
            let idx = (gpa >> (12 + 9 * lvl)) & ((1 << bits) - 1);
            let slot = table + idx * 8;
            if lvl == level {
                mem.store_u64(slot, ((hpa >> 12) << 10) | flags);
                return slot;
            }
            let cur = mem.load_u64(slot);
            table = if cur & PTE_V != 0 {
                assert!(
                    cur & (PTE_R | PTE_X) == 0,
                    "g_map: a superpage is in the way"
                );
                ((cur >> 10) & ((1 << 44) - 1)) << 12
            } else {
                let t = self.alloc_table(4096);
                mem.store_u64(slot, ((t >> 12) << 10) | PTE_V);
                t
            };
            lvl -= 1;
        }
    }

    /// Host-physical address of guest RAM address `gpa`.
    pub fn hpa(gpa: u64) -> u64 {
        assert!(
            (RAM_GPA..RAM_GPA + RAM_SIZE).contains(&gpa),
            "{gpa:#x} is not guest RAM"
        );
        gpa - RAM_GPA + RAM_HPA
    }

    /// Assemble `src`, copy it to `RAM_GPA` and point uepc at it.
    pub fn load_program(&mut self, src: &str) {
        let bin = assemble(src);
        self.write(RAM_GPA, &bin);
        self.hart.csr_write(UEPC, RAM_GPA).unwrap();
    }

    // ---- guest memory (RAM only) ----

    pub fn write(&self, gpa: u64, bytes: &[u8]) {
        assert!(self.hv.phys_mem().write(Self::hpa(gpa), bytes));
    }

    pub fn read(&self, gpa: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0; len];
        assert!(self.hv.phys_mem().read(Self::hpa(gpa), &mut b));
        b
    }

    pub fn write_u64(&self, gpa: u64, v: u64) {
        self.write(gpa, &v.to_le_bytes());
    }

    pub fn write_u32(&self, gpa: u64, v: u32) {
        self.write(gpa, &v.to_le_bytes());
    }

    pub fn read_u64(&self, gpa: u64) -> u64 {
        u64::from_le_bytes(self.read(gpa, 8).try_into().unwrap())
    }

    pub fn read_u32(&self, gpa: u64) -> u32 {
        u32::from_le_bytes(self.read(gpa, 4).try_into().unwrap())
    }

    pub fn read_u8(&self, gpa: u64) -> u8 {
        self.read(gpa, 1)[0]
    }

    // ---- registers ----

    pub fn x(&self, r: usize) -> u64 {
        self.hart.gpr(r)
    }

    pub fn f(&self, r: usize) -> u64 {
        self.hart.fpr(r)
    }

    pub fn csr(&mut self, n: u16) -> u64 {
        self.hart.csr_read(n).unwrap()
    }

    pub fn set_csr(&mut self, n: u16, v: u64) {
        self.hart.csr_write(n, v).unwrap()
    }

    // ---- running ----

    /// `huret()` once, under a watchdog: the guest must reach an exit within `self.timeout`.
    pub fn run(&mut self) -> Exit {
        run_with_watchdog(&mut self.hart, &self.intr, self.timeout)
    }

    /// Run to the first exit, compiling every block on its first run if `jit`, for comparing
    /// compiled code with the interpreter.
    pub fn run_recorded(&mut self, jit: bool) -> Recorded {
        if jit {
            self.hart.enable_jit(1, None).unwrap();
        }
        let exit = self.run();
        let s = self.hart.stats();
        Recorded {
            exit,
            uepc: self.csr(UEPC),
            regs: (0..32).map(|r| self.x(r)).collect(),
            retired: s.instret,
            compiled: s.jit.compiled,
        }
    }

    /// Run and require an `ecall` from VS-mode (cause 10); returns with uepc still at the ecall.
    pub fn run_to_ecall(&mut self) {
        let e = self.run();
        self.expect_ecall(e);
    }

    /// Assert that `e` is an ecall from VS-mode exit.
    pub fn expect_ecall(&mut self, e: Exit) {
        match e {
            Exit::Trap {
                cause: cause::ECALL_VS,
                tval: 0,
                ..
            } => {}
            other => panic!(
                "expected an ecall exit, got {other:?} at uepc {:#x} (a0={:#x})",
                self.csr(UEPC),
                self.x(r::A0)
            ),
        }
    }

    /// Step uepc over the 4-byte instruction that exited (an ecall) so `run` resumes after it.
    pub fn skip(&mut self) {
        let pc = self.csr(UEPC);
        self.set_csr(UEPC, pc + 4);
    }

    /// Unwrap an `Exit::Trap` into (cause, tval, htval, htinst).
    pub fn trap(e: Exit) -> (u64, u64, u64, u64) {
        match e {
            Exit::Trap {
                cause,
                tval,
                htval,
                htinst,
            } => (cause, tval, htval, htinst),
            other => panic!("expected a trap exit, got {other:?}"),
        }
    }
}

impl Default for TestVm {
    fn default() -> Self {
        Self::new()
    }
}

/// Put `h` in the state a test program expects: G-stage on, VS-mode, FS=Initial, entry
/// `RAM_GPA`.
///
/// With `DVEXT_TEST_JIT` set (`scripts/test.sh` runs the suite once more that way), every block
/// is compiled on its first run, so the same programs check the compiling tier.
pub fn configure_hart(h: &mut Hart, hgatp: u64) {
    if std::env::var_os("DVEXT_TEST_JIT").is_some() {
        h.enable_jit(1, None).expect("compiling tier");
    }
    h.csr_write(HUGATP, hgatp).unwrap();
    let hs = h.csr_read(HUSTATUS).unwrap();
    h.csr_write(HUSTATUS, hs | HSTATUS_SPVP).unwrap();
    h.csr_write(HUVSSTATUS, 1 << SSTATUS_FS_SHIFT).unwrap();
    h.csr_write(UEPC, RAM_GPA).unwrap();
}

/// How a run of [`TestVm::run_recorded`] ended.
pub struct Recorded {
    pub exit: Exit,
    pub uepc: u64,
    /// x0..x31.
    pub regs: Vec<u64>,
    /// Instructions retired.
    pub retired: u64,
    /// Regions compiled.
    pub compiled: u64,
}

/// A compiled run `jit` ended exactly as the interpreted run `interp` (exit, pc, retired count,
/// registers), with at least `min_compiled` regions compiled.
pub fn assert_matches_interpreter(interp: &Recorded, jit: &Recorded, min_compiled: u64) {
    assert_eq!(format!("{:?}", interp.exit), format!("{:?}", jit.exit));
    assert_eq!(interp.uepc, jit.uepc, "uepc");
    assert_eq!(interp.retired, jit.retired, "retired instructions");
    assert_eq!(interp.regs, jit.regs, "registers");
    assert!(
        jit.compiled >= min_compiled,
        "{} regions compiled",
        jit.compiled
    );
}

/// `huret()` on `hart`, kicking it (and failing) if it runs for longer than `timeout`.
pub fn run_with_watchdog(hart: &mut Hart, intr: &Interrupter, timeout: Duration) -> Exit {
    let (tx, rx) = mpsc::channel::<()>();
    let intr2 = intr.clone();
    let vcpu = hart.vcpu_id();
    let dog = std::thread::spawn(move || match rx.recv_timeout(timeout) {
        Err(mpsc::RecvTimeoutError::Timeout) => {
            let _ = intr2.kick(vcpu);
            true
        }
        _ => false,
    });
    let e = hart.huret();
    drop(tx);
    let fired = dog.join().expect("watchdog thread");
    assert!(
        !fired,
        "guest ran for more than {timeout:?} without an exit (last exit {e:?}, pc {:#x})",
        hart.csr_read(UEPC).unwrap()
    );
    e
}

/// Run a list of `(asm, expected)` cases in one program: each snippet leaves its result in
/// a0; the harness stores it and compares every result, reporting all mismatches at once.
pub fn check_cases(prelude: &str, cases: &[(&str, u64)]) {
    let mut src = String::new();
    src.push_str(prelude);
    src.push_str(&format!("\n    li s11, {DATA:#x}\n"));
    for (i, (snippet, _)) in cases.iter().enumerate() {
        src.push_str(&format!(
            "    li a0, 0x5a5a5a5a\n    {snippet}\n    sd a0, {}(s11)\n",
            8 * (i % 200)
        ));
        // keep the store offsets within a 12-bit immediate
        if (i + 1) % 200 == 0 {
            src.push_str("    addi s11, s11, 1600\n");
        }
    }
    src.push_str("    ecall\n");
    let mut vm = TestVm::with_program(&src);
    vm.run_to_ecall();
    let mut bad = Vec::new();
    for (i, (snippet, want)) in cases.iter().enumerate() {
        let got = vm.read_u64(DATA + 8 * i as u64);
        if got != *want {
            bad.push(format!("  `{snippet}`: got {got:#x}, want {want:#x}"));
        }
    }
    assert!(
        bad.is_empty(),
        "{} case(s) wrong:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// VS-stage page tables
// ---------------------------------------------------------------------------------------------

/// VS-stage tables live in guest RAM from this GPA up.
pub const VS_TABLES: u64 = 0x8040_0000;
pub const VS_RWX: u64 = PTE_V | PTE_R | PTE_W | PTE_X | PTE_A | PTE_D;
pub const SV39: u64 = SATP_MODE_SV39;
pub const SV48: u64 = SATP_MODE_SV48;

/// A VS-stage page table the test writes into guest memory.
pub struct VsPt {
    pub root: u64,
    pub levels: u32,
    next: u64,
}

impl VsPt {
    pub fn new(levels: u32) -> VsPt {
        VsPt {
            root: VS_TABLES,
            levels,
            next: VS_TABLES + 0x1000,
        }
    }

    pub fn satp(&self) -> u64 {
        let mode = if self.levels == 3 { SV39 } else { SV48 };
        (mode << 60) | (self.root >> 12)
    }

    /// Map `va` -> `gpa` with a leaf at `level`; returns the GPA of the leaf PTE.
    pub fn map(&mut self, vm: &TestVm, va: u64, gpa: u64, level: u32, flags: u64) -> u64 {
        let mut table = self.root;
        let mut lvl = self.levels - 1;
        loop {
            let slot = table + ((va >> (12 + 9 * lvl)) & 511) * 8;
            if lvl == level {
                vm.write_u64(slot, ((gpa >> 12) << 10) | flags);
                return slot;
            }
            let cur = vm.read_u64(slot);
            table = if cur & PTE_V != 0 {
                ((cur >> 10) & ((1 << 44) - 1)) << 12
            } else {
                let t = self.next;
                self.next += 0x1000;
                vm.write_u64(slot, ((t >> 12) << 10) | PTE_V);
                t
            };
            lvl -= 1;
        }
    }

    /// The standard guest view: code and RAM identity-mapped with a 1 GiB leaf (no U).
    pub fn with_identity(levels: u32, vm: &TestVm) -> VsPt {
        let mut pt = VsPt::new(levels);
        pt.map(vm, RAM_GPA, RAM_GPA, 2, VS_RWX);
        pt
    }
}
