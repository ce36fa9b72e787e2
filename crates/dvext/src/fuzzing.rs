//! Fuzzing entry points for the hardware model.
//!
//! The cargo-fuzz targets in `fuzz/` are one-line wrappers around these functions, and the
//! regression tests (`tests/fuzz_regressions.rs`) run saved inputs through the very same code,
//! so a crash found by libFuzzer stays fixed under a plain `cargo test`. Every function accepts
//! any byte string; a failed `assert!` (or any other panic) is a bug in the model.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use crate::csr::*;
use crate::hart::decode::decode as decode_word;
use crate::hart::inst::{Inst, Op, X0_SINK};
use crate::hart::transformed_inst;
use crate::pmc::Vmid;
use crate::{Exit, HaltReason, Hart, HypervisorControl, Platform};

/// A cursor over fuzzer bytes: reads past the end give zeros, so every input is usable.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        head
    }

    fn le(&mut self, n: usize) -> u64 {
        self.bytes(n)
            .iter()
            .enumerate()
            .fold(0, |v, (i, &b)| v | (b as u64) << (8 * i))
    }

    pub fn u8(&mut self) -> u8 {
        self.le(1) as u8
    }

    pub fn u16(&mut self) -> u16 {
        self.le(2) as u16
    }

    pub fn u32(&mut self) -> u32 {
        self.le(4) as u32
    }

    pub fn u64(&mut self) -> u64 {
        self.le(8)
    }

    pub fn bool(&mut self) -> bool {
        self.u8() & 1 != 0
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        self.bytes(usize::MAX)
    }
}

// ---------------------------------------------------------------------------------------------
// decode
// ---------------------------------------------------------------------------------------------

/// What a decoded instruction's `rd` field names.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Dest {
    /// An integer register: x0 must have become the sink, never slot 0.
    Int,
    /// An FP register (f0 is a real register).
    Fp,
    /// No destination: `rd` must be 0.
    None,
    /// `hlv`/`hsv`/`hfence`: raw fields kept (only executed to raise a virtual-instruction trap).
    Raw,
}

/// Exhaustive on purpose: a new `Op` must be classified here.
fn dest(op: Op) -> Dest {
    use Op::*;
    match op {
        Illegal | Beq | Bne | Blt | Bge | Bltu | Bgeu | Sb | Sh | Sw | Sd | Fence | Pause
        | FenceI | Ecall | Ebreak | Sret | Mret | Wfi | SfenceVma | Fsw | Fsd => Dest::None,
        HypervisorOnly => Dest::Raw,
        Lui | Auipc | Jal | Jalr | Lb | Lh | Lw | Ld | Lbu | Lhu | Lwu | Addi | Slti | Sltiu
        | Xori | Ori | Andi | Slli | Srli | Srai | Add | Sub | Sll | Slt | Sltu | Xor | Srl
        | Sra | Or | And | Addiw | Slliw | Srliw | Sraiw | Addw | Subw | Sllw | Srlw | Sraw
        | Csrrw | Csrrs | Csrrc | Csrrwi | Csrrsi | Csrrci | Mul | Mulh | Mulhsu | Mulhu | Div
        | Divu | Rem | Remu | Mulw | Divw | Divuw | Remw | Remuw | LrW | ScW | AmoswapW
        | AmoaddW | AmoxorW | AmoandW | AmoorW | AmominW | AmomaxW | AmominuW | AmomaxuW | LrD
        | ScD | AmoswapD | AmoaddD | AmoxorD | AmoandD | AmoorD | AmominD | AmomaxD | AmominuD
        | AmomaxuD | FcvtWS | FcvtWuS | FcvtLS | FcvtLuS | FmvXW | FeqS | FltS | FleS | FclassS
        | FcvtWD | FcvtWuD | FcvtLD | FcvtLuD | FmvXD | FeqD | FltD | FleD | FclassD => Dest::Int,
        Flw | Fld | FmaddS | FmsubS | FnmsubS | FnmaddS | FaddS | FsubS | FmulS | FdivS
        | FsqrtS | FsgnjS | FsgnjnS | FsgnjxS | FminS | FmaxS | FcvtSW | FcvtSWu | FcvtSL
        | FcvtSLu | FmvWX | FmaddD | FmsubD | FnmsubD | FnmaddD | FaddD | FsubD | FmulD | FdivD
        | FsqrtD | FsgnjD | FsgnjnD | FsgnjxD | FminD | FmaxD | FcvtSD | FcvtDS | FcvtDW
        | FcvtDWu | FcvtDL | FcvtDLu | FmvDX => Dest::Fp,
    }
}

fn is_load(op: Op) -> bool {
    use Op::*;
    matches!(op, Lb | Lh | Lw | Ld | Lbu | Lhu | Lwu | Flw | Fld)
}

fn is_store(op: Op) -> bool {
    use Op::*;
    matches!(op, Sb | Sh | Sw | Sd | Fsw | Fsd)
}

/// The inputs saved for fuzz target `target` under `fuzz/regressions/<target>/` (crashes
/// libFuzzer found, kept after the fix), in name order; none yet is fine. For the regression
/// tests of this crate and of the VM plane.
pub fn saved_inputs(target: &str) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/regressions")
        .join(target);
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v.into_iter()
        .filter(|p| p.is_file())
        .map(|p| {
            let data = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, data)
        })
        .collect()
}

/// Decode one fetched word and check the decoder's contract (see `hart::decode`).
pub fn check_decode(raw: u32) -> Inst {
    let inst = decode_word(raw);
    let compressed = raw & 3 != 3;
    let ctx = || format!("{raw:#010x} -> {inst:?}");
    // The length follows from the low two bits alone.
    assert_eq!(inst.len(), if compressed { 2 } else { 4 }, "{}", ctx());
    if compressed {
        assert_eq!(inst.raw, raw & 0xffff, "{}", ctx());
        // The upper half of a compressed fetch is ignored.
        assert_eq!(decode_word(raw ^ 0xffff_0000), inst, "{}", ctx());
    } else {
        assert_eq!(inst.raw, raw, "{}", ctx());
    }
    assert_eq!(inst.off, 0, "{}", ctx());
    assert!(inst.rs1 < 32 && inst.rs2 < 32 && inst.rs3 < 32, "{}", ctx());
    match dest(inst.op) {
        Dest::Int => {
            assert!(inst.rd != 0 && inst.rd <= X0_SINK, "x0 not sunk: {}", ctx());
            if !compressed {
                assert_eq!(inst.rd_arch() as u32, (raw >> 7) & 31, "{}", ctx());
            }
        }
        Dest::Fp => {
            assert!(inst.rd < 32, "{}", ctx());
            if !compressed {
                assert_eq!(inst.rd as u32, (raw >> 7) & 31, "{}", ctx());
            }
        }
        Dest::None => assert_eq!(inst.rd, 0, "{}", ctx()),
        Dest::Raw => assert!(inst.rd <= X0_SINK, "{}", ctx()),
    }
    if inst.op == Op::Illegal {
        let raw_kept = if compressed { raw & 0xffff } else { raw };
        assert_eq!(
            inst,
            Inst {
                raw: raw_kept,
                ..Inst::ILLEGAL
            },
            "{}",
            ctx()
        );
    }
    if inst.is_atomic() {
        assert!(inst.rm <= 3, "{}", ctx());
    } else {
        assert!(inst.rm <= 7 && inst.rm != 5 && inst.rm != 6, "{}", ctx());
    }
    if matches!(
        inst.op,
        Op::Jal | Op::Beq | Op::Bne | Op::Blt | Op::Bge | Op::Bltu | Op::Bgeu
    ) {
        assert_eq!(inst.imm & 1, 0, "odd branch offset: {}", ctx());
    }
    // `ends_block` is total.
    let _ = inst.ends_block();

    // The transformed instruction reported in hutinst for a memory access must decode back to
    // the same access on the same register (DuVisor's MMIO path relies on it).
    let t = transformed_inst(&inst);
    if is_load(inst.op) || is_store(inst.op) {
        assert_eq!(t & 1, 1, "{}", ctx());
        assert_eq!(t & 2 == 0, compressed, "transformed length bit: {}", ctx());
        let back = decode_word(t as u32 | 3);
        assert_eq!(back.op, inst.op, "transformed {t:#x}: {}", ctx());
        assert_eq!(
            (back.rs1, back.imm),
            (0, 0),
            "transformed {t:#x}: {}",
            ctx()
        );
        if is_load(inst.op) {
            assert_eq!(back.rd, inst.rd, "transformed {t:#x}: {}", ctx());
        } else {
            assert_eq!(back.rs2, inst.rs2, "transformed {t:#x}: {}", ctx());
        }
    } else if inst.is_atomic() {
        let back = decode_word(t as u32);
        assert_eq!(back.op, inst.op, "transformed {t:#x}: {}", ctx());
        assert_eq!(back.rs1, 0, "transformed {t:#x}: {}", ctx());
    } else {
        assert_eq!(t, 0, "{}", ctx());
    }
    inst
}

/// Fuzz target `decode`: every 32-bit word and every 16-bit parcel of the input (at every
/// 2-byte offset, as a fetch would see them) decodes within the contract.
pub fn decode(data: &[u8]) {
    let mut words = Input::new(data);
    while !words.is_empty() {
        check_decode(words.u32());
    }
    for off in (0..data.len()).step_by(2) {
        let mut p = Input::new(&data[off..]);
        check_decode(p.u16() as u32);
        let mut w = Input::new(&data[off..]);
        check_decode(w.u32());
    }
}

// ---------------------------------------------------------------------------------------------
// engine
// ---------------------------------------------------------------------------------------------

const VMID: Vmid = 1;
const PAGE: u64 = 4096;
/// Host-physical layout of the engine target's machine. Everything outside `RAM_HPA` is
/// checked byte for byte after the run: the guest may only ever write its RAM.
const GT_HPA: u64 = 0;
const GT_SIZE: u64 = 0x8000;
/// Not granted: a canary page between the G-stage tables and RAM.
const RAM_HPA: u64 = 0x9000;
const RAM_PAGES: u64 = 16;
const RAM_SIZE: u64 = RAM_PAGES * PAGE;
/// Not granted, but mapped by the G-stage right after RAM: any access is a PMC violation.
const FORBIDDEN_HPA: u64 = RAM_HPA + RAM_SIZE;
/// Granted, mapped read/execute only: the probe that checks x0 after the run.
const PROBE_HPA: u64 = FORBIDDEN_HPA + PAGE;
/// One more canary page after the probe.
const ARENA: u64 = PROBE_HPA + 2 * PAGE;

const RAM_GPA: u64 = 0x8000_0000;
const FORBIDDEN_GPA: u64 = RAM_GPA + RAM_SIZE;
const PROBE_GPA: u64 = 0x9000_0000;

const PTE_V: u64 = 1;
const PTE_R: u64 = 1 << 1;
const PTE_W: u64 = 1 << 2;
const PTE_X: u64 = 1 << 3;
const PTE_U: u64 = 1 << 4;
const PTE_A: u64 = 1 << 6;
const PTE_D: u64 = 1 << 7;

/// Bytes of configuration in front of the guest RAM image (see [`engine`]).
pub const ENGINE_CONFIG_LEN: usize = 18;

/// How long one input may run the guest before the watchdog kicks it out.
const RUN_BUDGET: Duration = Duration::from_millis(1);
/// Exits handled per input before giving up.
const MAX_EXITS: usize = 8;

/// `add a0, zero, zero; ecall`.
const PROBE_CODE: [u32; 2] = [0x0000_0533, 0x0000_0073];

/// A minimal G-stage (Sv39x4) builder over `[GT_HPA, GT_HPA + GT_SIZE)`.
struct GTables<'a> {
    hv: &'a HypervisorControl,
    next: u64,
}

impl GTables<'_> {
    fn map_4k(&mut self, gpa: u64, hpa: u64, flags: u64) {
        let mem = self.hv.phys_mem();
        let mut table = GT_HPA;
        for lvl in [2u32, 1] {
            let mask = if lvl == 2 { 0x7ff } else { 0x1ff };
            let slot = table + ((gpa >> (12 + 9 * lvl)) & mask) * 8;
            let pte = mem.load_u64(slot);
            table = if pte & PTE_V != 0 {
                (pte >> 10) << 12
            } else {
                let t = self.next;
                self.next += PAGE;
                assert!(self.next <= GT_HPA + GT_SIZE, "G-stage area full");
                mem.store_u64(slot, ((t >> 12) << 10) | PTE_V);
                t
            };
        }
        let slot = table + ((gpa >> 12) & 0x1ff) * 8;
        mem.store_u64(slot, ((hpa >> 12) << 10) | flags);
    }
}

fn canary_byte(hpa: u64) -> u8 {
    (hpa as u8) ^ (hpa >> 8) as u8 ^ 0xa5
}

/// The arena outside guest RAM (what the guest must never change), in 64-bit words.
fn outside_ram(hv: &HypervisorControl) -> Vec<u64> {
    let mem = hv.phys_mem();
    (0..RAM_HPA)
        .step_by(8)
        .chain((RAM_HPA + RAM_SIZE..ARENA).step_by(8))
        .map(|a| mem.load_u64(a))
        .collect()
}

/// Engine configuration taken from the head of the input.
struct EngineConfig {
    user: bool,
    fs_initial: bool,
    map_forbidden: bool,
    hedeleg: u64,
    hideleg: u64,
    hie: u64,
    hvip: u64,
    vstimecmp: u64,
    vstvec: u64,
    vsatp: u64,
    entry: u64,
    page_flags: [u64; RAM_PAGES as usize],
}

impl EngineConfig {
    fn parse(inp: &mut Input) -> EngineConfig {
        let flags = inp.u8();
        let hedeleg = inp.u16() as u64;
        let irq = inp.u16();
        let spread = |b: u16| -> u64 {
            (b as u64 & 1) << IRQ_VS_SOFT
                | ((b as u64 >> 1) & 1) << IRQ_VS_TIMER
                | ((b as u64 >> 2) & 1) << IRQ_VS_EXT
        };
        let mut page_flags = [0u64; RAM_PAGES as usize];
        for pair in page_flags.chunks_mut(2) {
            let b = inp.u8();
            for (i, f) in pair.iter_mut().enumerate() {
                let nib = (b >> (4 * i)) as u64;
                // Mostly fully mapped pages; the odd ones with reduced permissions (including
                // the reserved W-without-R) or invalid.
                *f = if nib & 8 == 0 {
                    PTE_V | PTE_R | PTE_W | PTE_X | PTE_U
                } else {
                    let mut f = ((nib & 1) * PTE_R) | ((nib >> 1 & 1) * PTE_W) | PTE_X | PTE_U;
                    if nib & 4 == 0 {
                        f &= !PTE_X;
                    }
                    if nib & 7 != 7 {
                        f |= PTE_V;
                    }
                    f
                } | PTE_A
                    | PTE_D;
            }
        }
        let vec_off = inp.u16() as u64 % RAM_SIZE;
        let satp_sel = inp.u8();
        let vsatp = match satp_sel & 3 {
            0 | 1 => 0,
            2 => (SATP_MODE_SV39 << 60) | ((RAM_GPA >> 12) + (satp_sel >> 2) as u64 % RAM_PAGES),
            _ => (SATP_MODE_SV48 << 60) | ((RAM_GPA >> 12) + (satp_sel >> 2) as u64 % RAM_PAGES),
        };
        let entry = RAM_GPA + ((inp.u16() as u64 % RAM_SIZE) & !1);
        EngineConfig {
            user: flags & 1 != 0,
            fs_initial: flags & 2 == 0,
            map_forbidden: flags & 4 != 0,
            hedeleg: if flags & 8 != 0 { hedeleg } else { 0 },
            hideleg: spread(irq >> 3),
            hie: spread(irq),
            hvip: spread(irq >> 6),
            vstimecmp: if flags & 16 != 0 { 0 } else { u64::MAX },
            vstvec: (RAM_GPA + vec_off) | ((flags as u64 >> 5) & 1),
            vsatp,
            entry,
            page_flags,
        }
    }
}

/// Check one exit against the architectural rules of the DV-Ext interface.
fn check_exit(hart: &mut Hart, exit: Exit, cfg: &EngineConfig, kicked: bool) {
    let uepc = hart.csr_read(UEPC).unwrap();
    assert_eq!(uepc & 1, 0, "uepc {uepc:#x} misaligned after {exit:?}");
    let vsepc = hart.csr_read(HUVSEPC).unwrap();
    assert_eq!(vsepc & 1, 0, "vsepc {vsepc:#x} misaligned after {exit:?}");
    match exit {
        Exit::Trap {
            cause: c,
            tval,
            htval,
            htinst,
        } => {
            assert_eq!(hart.csr_read(UCAUSE).unwrap(), c);
            assert_eq!(hart.csr_read(UTVAL).unwrap(), tval);
            assert_eq!(hart.csr_read(HUTVAL).unwrap(), htval);
            assert_eq!(hart.csr_read(HUTINST).unwrap(), htinst);
            assert_ne!(hart.csr_read(HUSTATUS).unwrap() & HSTATUS_SPV, 0);
            if c & cause::INTERRUPT != 0 {
                let code = c & !cause::INTERRUPT;
                assert!(
                    matches!(code, IRQ_VS_SOFT | IRQ_VS_TIMER | IRQ_VS_EXT),
                    "{exit:?}"
                );
                assert_eq!(cfg.hideleg >> code & 1, 0, "delegated interrupt exited");
                assert_eq!((tval, htval, htinst), (0, 0, 0), "{exit:?}");
                return;
            }
            assert!(
                matches!(c, 0..=8 | 10 | 12 | 13 | 15 | 20..=23),
                "impossible exit cause: {exit:?}"
            );
            let hedeleg = hart.csr_read(HUEDELEG).unwrap();
            assert_eq!(hedeleg >> c & 1, 0, "delegated exception exited: {exit:?}");
            if matches!(
                c,
                cause::INST_GUEST_PAGE_FAULT
                    | cause::LOAD_GUEST_PAGE_FAULT
                    | cause::STORE_GUEST_PAGE_FAULT
            ) {
                // 0, a transformed instruction (bit 0 set), or the pseudoinstruction of a
                // VS-stage page-table read or write (64-bit PTEs).
                assert!(
                    htinst == 0 || htinst & 1 == 1 || matches!(htinst, 0x3000 | 0x3020),
                    "{exit:?}"
                );
            } else {
                assert_eq!((htval, htinst), (0, 0), "{exit:?}");
            }
        }
        Exit::Kicked => assert!(kicked, "kicked without a kick"),
        Exit::Halted(HaltReason::PmcViolation { hpa, .. }) => {
            assert!(cfg.map_forbidden, "PMC violation without a bad mapping");
            assert!(
                (FORBIDDEN_HPA..FORBIDDEN_HPA + PAGE).contains(&hpa),
                "PMC violation at {hpa:#x}"
            );
        }
        Exit::Halted(r) => panic!("unexpected halt: {r:?}"),
    }
}

/// Fuzz target `engine`: run the input as a guest (configuration bytes, then the contents of
/// a 64 KiB guest RAM) on a fresh machine, for a bounded time and number of exits.
///
/// Checks: no panic; every exit is well formed (cause, CSR copies, delegation respected, uepc
/// and vsepc 2-byte aligned); a PMC halt only for the deliberately unbacked page; nothing
/// outside guest RAM changed (G-stage tables, probe code, unbacked and ungranted pages); and
/// afterwards x0 still reads as zero from guest code. Returns the exits seen (for tests).
///
/// Input layout: byte 0 flags (bit 0 VU-mode, bit 1 FS off, bit 2 map an unbacked page right
/// after RAM, bit 3 use the huedeleg bytes, bit 4 timer pending, bit 5 vectored vstvec);
/// bytes 1-2 huedeleg; 3-4 interrupt bits (huie, huideleg, huvip: 3 bits each); 5-12 G-stage
/// permissions per RAM page (a nibble each, bit 3 clear = full access); 13-14 vstvec offset;
/// 15 vsatp choice; 16-17 entry offset; then guest RAM from `0x8000_0000`
/// ([`ENGINE_CONFIG_LEN`] bytes of configuration in all).
pub fn engine(data: &[u8]) -> Vec<Exit> {
    engine_with_budget(data, RUN_BUDGET)
}

/// [`engine`] with `budget` of run time before the watchdog kicks the guest out. The fuzzer
/// uses 1 ms; a test that expects a particular first exit gives more, since with every block
/// compiled on its first run (and a busy host) reaching it can take longer.
pub fn engine_with_budget(data: &[u8], budget: Duration) -> Vec<Exit> {
    let mut inp = Input::new(data);
    let cfg = EngineConfig::parse(&mut inp);
    let image = inp.rest();

    let (_platform, hv) = Platform::new(ARENA).expect("platform");
    hv.pmc_grant(VMID, GT_HPA, GT_SIZE);
    hv.pmc_grant(VMID, RAM_HPA, RAM_SIZE);
    hv.pmc_grant(VMID, PROBE_HPA, PAGE);
    let mem = hv.phys_mem().clone();
    let canary: Vec<u8> = (0..ARENA).map(canary_byte).collect();
    for (start, end) in [
        (GT_HPA + GT_SIZE, RAM_HPA),
        (FORBIDDEN_HPA, PROBE_HPA),
        (PROBE_HPA + PAGE, ARENA),
    ] {
        assert!(mem.write(start, &canary[start as usize..end as usize]));
    }
    let probe: Vec<u8> = PROBE_CODE.iter().flat_map(|w| w.to_le_bytes()).collect();
    assert!(mem.write(PROBE_HPA, &probe));
    let n = image.len().min(RAM_SIZE as usize);
    assert!(mem.write(RAM_HPA, &image[..n]));

    let mut g = GTables {
        hv: &hv,
        next: GT_HPA + 0x4000,
    };
    for (i, &flags) in cfg.page_flags.iter().enumerate() {
        let off = i as u64 * PAGE;
        g.map_4k(RAM_GPA + off, RAM_HPA + off, flags);
    }
    if cfg.map_forbidden {
        g.map_4k(
            FORBIDDEN_GPA,
            FORBIDDEN_HPA,
            PTE_V | PTE_R | PTE_W | PTE_X | PTE_U | PTE_A | PTE_D,
        );
    }
    g.map_4k(
        PROBE_GPA,
        PROBE_HPA,
        PTE_V | PTE_R | PTE_X | PTE_U | PTE_A | PTE_D,
    );

    let mut hart = hv.create_hart(VMID, 0).expect("hart");
    let intr = hv.interrupter(VMID);
    let w = |h: &mut Hart, n: u16, v: u64| h.csr_write(n, v).expect("HU CSR");
    w(
        &mut hart,
        HUGATP,
        (HGATP_MODE_SV39X4 << 60) | (GT_HPA >> 12),
    );
    let hs = hart.csr_read(HUSTATUS).unwrap();
    let spvp = if cfg.user { 0 } else { HSTATUS_SPVP };
    w(&mut hart, HUSTATUS, (hs & !HSTATUS_SPVP) | spvp);
    let fs = if cfg.fs_initial {
        1 << SSTATUS_FS_SHIFT
    } else {
        0
    };
    w(&mut hart, HUVSSTATUS, fs);
    w(&mut hart, HUEDELEG, cfg.hedeleg);
    w(&mut hart, HUIDELEG, cfg.hideleg);
    w(&mut hart, HUIE, cfg.hie);
    w(&mut hart, HUVIP, cfg.hvip);
    w(&mut hart, HUCOUNTEREN, 0b111);
    w(&mut hart, HUVSTVEC, cfg.vstvec);
    w(&mut hart, HUVSATP, cfg.vsatp);
    w(&mut hart, HUVSTIMECMP, cfg.vstimecmp);
    w(&mut hart, UEPC, cfg.entry);
    for r in 1..32 {
        hart.set_gpr(r, RAM_GPA + 0x208 * r as u64);
    }
    let before = outside_ram(&hv);

    let fired = Arc::new(AtomicBool::new(false));
    let mut halted = false;
    let mut exits = Vec::new();
    // The watchdog is joined (not a scoped thread, which may still be exiting when the scope
    // ends, and LeakSanitizer then reports its thread-exit bookkeeping as a leak).
    let (tx, rx) = mpsc::channel::<()>();
    let watchdog = {
        let (fired, intr) = (fired.clone(), intr.clone());
        std::thread::spawn(move || {
            if rx.recv_timeout(budget) == Err(mpsc::RecvTimeoutError::Timeout) {
                fired.store(true, Ordering::SeqCst);
                let _ = intr.kick(0);
            }
        })
    };
    let mut instret = 0;
    for _ in 0..MAX_EXITS {
        let exit = hart.huret();
        check_exit(&mut hart, exit, &cfg, fired.load(Ordering::SeqCst));
        let now = hart.stats().instret;
        assert!(now >= instret, "instret went backwards");
        instret = now;
        exits.push(exit);
        match exit {
            Exit::Trap { cause: c, .. } if c & cause::INTERRUPT != 0 => {
                // Take the line down so the guest can make progress.
                let bit = 1 << (c & !cause::INTERRUPT);
                let (vip, ie) = (hart.csr_read(HUVIP).unwrap(), hart.csr_read(HUIE).unwrap());
                w(&mut hart, HUVIP, vip & !bit);
                w(&mut hart, HUIE, ie & !bit);
            }
            Exit::Trap { cause: c, .. } => {
                let skip = if matches!(c, cause::ECALL_VS | cause::ECALL_U) {
                    4
                } else {
                    2
                };
                let pc = hart.csr_read(UEPC).unwrap();
                w(&mut hart, UEPC, pc.wrapping_add(skip));
            }
            Exit::Kicked => break,
            Exit::Halted(_) => {
                halted = true;
                break;
            }
        }
    }
    drop(tx);
    watchdog.join().expect("watchdog");

    assert!(
        outside_ram(&hv) == before,
        "memory outside guest RAM changed"
    );
    if halted {
        // A halted VM never runs again: the x0 probe cannot run.
        return exits;
    }

    // Probe: guest code reads x0 (a kick the watchdog posted late is consumed first).
    w(&mut hart, HUEDELEG, 0);
    w(&mut hart, HUIE, 0);
    w(&mut hart, HUVIP, 0);
    w(&mut hart, HUVSATP, 0);
    let hs = hart.csr_read(HUSTATUS).unwrap();
    w(&mut hart, HUSTATUS, hs | HSTATUS_SPVP);
    hart.set_gpr(10, 0x5a5a);
    let mut exit = Exit::Kicked;
    for _ in 0..2 {
        w(&mut hart, UEPC, PROBE_GPA);
        exit = hart.huret();
        if exit != Exit::Kicked {
            break;
        }
    }
    assert!(
        matches!(
            exit,
            Exit::Trap {
                cause: cause::ECALL_VS,
                tval: 0,
                ..
            }
        ),
        "probe: {exit:?}"
    );
    assert_eq!(hart.csr_read(UEPC).unwrap(), PROBE_GPA + 4);
    assert_eq!(hart.gpr(10), 0, "x0 reads as nonzero after the run");
    exits
}
