//! Two-stage address translation: VS-stage (vsatp: Bare/Sv39/Sv48/Sv57) then G-stage
//! (hugatp: Bare/Sv39x4/Sv48x4), with every host-physical address checked by the PMC.
//! This is the slow path behind the software TLB.
//!
//! The walker follows the privileged spec's two-stage algorithm with Svadu semantics: A/D bits
//! are set by hardware with an atomic compare-and-swap (the step is retried if the PTE changed
//! under it), never reported as faults. Every host-physical address is checked against the PMC
//! before it is read or written: each G-stage PTE, each VS-stage PTE (after its own G-stage
//! translation) and the page holding the final address. A G-stage leaf's A/D bits are only
//! updated once the address it yields has passed those checks, so a PMC violation leaves both
//! the offending target and the G-stage tables untouched.

use crate::csr::{self, cause};
use crate::phys_mem::{PhysMemory, PAGE_SIZE};
use crate::pmc::{Pmc, Vmid};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    Exec,
}

/// Everything a walk depends on.
#[derive(Clone, Copy, Debug)]
pub struct WalkCtx {
    pub vsatp: u64,
    pub hgatp: u64,
    /// VMID for PMC checks (the VM the hart belongs to).
    pub vmid: Vmid,
    /// Effective privilege is VU (else VS).
    pub user: bool,
    /// vsstatus.SUM
    pub sum: bool,
    /// vsstatus.MXR
    pub mxr: bool,
    /// HLVX: a read that requires execute permission instead of read permission.
    pub hlvx: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    pub gpa: u64,
    /// Exact host-physical address of the byte at `va`.
    pub hpa: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// VS-stage page fault: cause 12/13/15; tval is the faulting VA.
    Page { cause: u64 },
    /// G-stage fault: cause 20/21/23. `gpa` is the faulting guest-physical address (the caller
    /// writes htval = gpa >> 2). `htinst` is the pseudoinstruction for a fault on an implicit
    /// VS-stage page-table access (0x3000 read, 0x3020 for an A/D write), 0 for the explicit access.
    GuestPage { cause: u64, gpa: u64, htinst: u32 },
    /// Access fault: cause 1/5/7.
    Access { cause: u64 },
    /// PMC violation: `hpa` is not granted to the VMID. No memory was touched.
    Pmc { hpa: u64 },
}

/// htinst for a guest-page fault on the implicit read of a VS-stage PTE.
pub const HTINST_PTE_READ: u32 = 0x3000;
/// htinst for a guest-page fault on the implicit A/D update of a VS-stage PTE.
pub const HTINST_PTE_WRITE: u32 = 0x3020;

/// Whether `htinst` is one of the privileged spec's pseudoinstructions (32- or 64-bit read or
/// write of a VS-stage PTE): the guest-page fault was taken by an implicit access of the
/// VS-stage walk, not by the instruction at the trapping pc, so there is nothing to emulate.
pub const fn is_pte_pseudoinstruction(htinst: u64) -> bool {
    matches!(htinst, 0x2000 | 0x2020 | 0x3000 | 0x3020)
}

// ---- PTE fields (shared by both stages) ----
const PTE_V: u64 = 1 << 0;
const PTE_R: u64 = 1 << 1;
const PTE_W: u64 = 1 << 2;
const PTE_X: u64 = 1 << 3;
const PTE_U: u64 = 1 << 4;
const PTE_A: u64 = 1 << 6;
const PTE_D: u64 = 1 << 7;
const PTE_PPN_SHIFT: u32 = 10;
const PTE_PPN_MASK: u64 = (1 << 44) - 1;
/// Bits 63:54: N (Svnapot), PBMT (Svpbmt) and the reserved field. None is supported.
const PTE_RESERVED: u64 = 0x3ff << 54;
/// Bits that must be clear in a non-leaf PTE (reserved for non-leaf PTEs by the spec).
const PTE_NONLEAF_RESERVED: u64 = PTE_A | PTE_D | PTE_U;

const PTE_SIZE: u64 = 8;
const LEVEL_BITS: u32 = 9;
/// The G-stage root index has two extra bits (the "x4" of Sv39x4/Sv48x4).
const GSTAGE_ROOT_EXTRA_BITS: u32 = 2;

/// The permission a leaf must grant for the access being translated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Perm {
    Read,
    Write,
    Exec,
    /// HLVX: a read that needs X instead of R.
    ReadExec,
}

impl Perm {
    fn of(access: Access, hlvx: bool) -> Self {
        match access {
            Access::Read if hlvx => Perm::ReadExec,
            Access::Read => Perm::Read,
            Access::Write => Perm::Write,
            Access::Exec => Perm::Exec,
        }
    }

    fn is_write(self) -> bool {
        self == Perm::Write
    }
}

/// What the address produced by a G-stage walk is about to be used for; it is PMC- and
/// bounds-checked accordingly before any A/D update commits the translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// A VS-stage PTE: the 8 bytes at the address.
    Pte,
    /// The final access: the whole 4 KiB page containing the address (the caller caches it).
    Page,
}

fn page_fault(access: Access) -> Fault {
    Fault::Page {
        cause: match access {
            Access::Exec => cause::INST_PAGE_FAULT,
            Access::Read => cause::LOAD_PAGE_FAULT,
            Access::Write => cause::STORE_PAGE_FAULT,
        },
    }
}

fn guest_page_fault(access: Access, gpa: u64, htinst: u32) -> Fault {
    Fault::GuestPage {
        cause: match access {
            Access::Exec => cause::INST_GUEST_PAGE_FAULT,
            Access::Read => cause::LOAD_GUEST_PAGE_FAULT,
            Access::Write => cause::STORE_GUEST_PAGE_FAULT,
        },
        gpa,
        htinst,
    }
}

fn access_fault(access: Access) -> Fault {
    Fault::Access {
        cause: match access {
            Access::Exec => cause::INST_ACCESS,
            Access::Read => cause::LOAD_ACCESS,
            Access::Write => cause::STORE_ACCESS,
        },
    }
}

/// PMC check, then bounds check, of `[hpa, hpa + len)` before it is touched.
fn check_hpa(
    mem: &PhysMemory,
    pmc: &Pmc,
    vmid: Vmid,
    hpa: u64,
    len: u64,
    access: Access,
) -> Result<(), Fault> {
    if !pmc.check(vmid, hpa, len) {
        return Err(Fault::Pmc { hpa });
    }
    if !mem.contains(hpa, len) {
        return Err(access_fault(access));
    }
    Ok(())
}

fn check_target(
    mem: &PhysMemory,
    pmc: &Pmc,
    vmid: Vmid,
    hpa: u64,
    target: Target,
    access: Access,
) -> Result<(), Fault> {
    match target {
        Target::Pte => check_hpa(mem, pmc, vmid, hpa, PTE_SIZE, access),
        Target::Page => check_hpa(mem, pmc, vmid, hpa & !(PAGE_SIZE - 1), PAGE_SIZE, access),
    }
}

/// A PTE as the walker sees it.
enum Pte {
    /// Walk on to the table at this address (in the stage's input address space's target).
    Table(u64),
    Leaf,
}

/// Classify `pte` found at `level`; `None` means a page fault at this stage.
fn decode_pte(pte: u64, level: u32) -> Option<Pte> {
    if pte & PTE_V == 0 || pte & PTE_RESERVED != 0 {
        return None;
    }
    // W without R is reserved.
    if pte & (PTE_R | PTE_W) == PTE_W {
        return None;
    }
    if pte & (PTE_R | PTE_X) == 0 {
        // Non-leaf: there must be a next level, and A/D/U are reserved here.
        if level == 0 || pte & PTE_NONLEAF_RESERVED != 0 {
            return None;
        }
        return Some(Pte::Table(pte_base(pte)));
    }
    Some(Pte::Leaf)
}

fn pte_base(pte: u64) -> u64 {
    ((pte >> PTE_PPN_SHIFT) & PTE_PPN_MASK) << 12
}

/// Output address of a leaf at `level` for input address `addr`; `None` if the superpage is
/// misaligned (its PPN has nonzero bits below the page size).
fn leaf_address(pte: u64, level: u32, addr: u64) -> Option<u64> {
    let base = pte_base(pte);
    let offset_mask = (1u64 << (12 + LEVEL_BITS * level)) - 1;
    (base & offset_mask == 0).then_some(base | (addr & offset_mask))
}

/// The PTE value with A (and D for a write) set, if that differs from `pte`.
fn ad_update(pte: u64, write: bool) -> Option<u64> {
    let new = pte | PTE_A | if write { PTE_D } else { 0 };
    (new != pte).then_some(new)
}

/// Leaf permission check for the G-stage (every access is treated as user-level).
fn gstage_allows(pte: u64, perm: Perm) -> bool {
    if pte & PTE_U == 0 {
        return false;
    }
    let need = match perm {
        Perm::Read => PTE_R,
        Perm::Write => PTE_W,
        Perm::Exec | Perm::ReadExec => PTE_X,
    };
    pte & need != 0
}

/// Leaf permission check for the VS-stage.
fn vs_allows(pte: u64, perm: Perm, ctx: &WalkCtx) -> bool {
    if ctx.user {
        if pte & PTE_U == 0 {
            return false;
        }
    } else if pte & PTE_U != 0 {
        // Supervisor access to a user page: never for fetches, loads/stores only with SUM.
        if perm == Perm::Exec || !ctx.sum {
            return false;
        }
    }
    match perm {
        Perm::Read => pte & PTE_R != 0 || (ctx.mxr && pte & PTE_X != 0),
        Perm::ReadExec | Perm::Exec => pte & PTE_X != 0,
        Perm::Write => pte & PTE_W != 0,
    }
}

/// The G-stage walk. `perm` is what the leaf must grant; `access` (the original access type)
/// selects the fault causes; `htinst` is reported with a guest-page fault. The resulting address
/// is checked as `target` before the leaf's A/D bits are updated.
#[allow(clippy::too_many_arguments)]
fn gstage_walk(
    mem: &PhysMemory,
    pmc: &Pmc,
    ctx: &WalkCtx,
    gpa: u64,
    perm: Perm,
    access: Access,
    htinst: u32,
    target: Target,
) -> Result<u64, Fault> {
    let gpf = || guest_page_fault(access, gpa, htinst);
    let levels: u32 = match ctx.hgatp >> 60 {
        0 => {
            check_target(mem, pmc, ctx.vmid, gpa, target, access)?;
            return Ok(gpa);
        }
        csr::HGATP_MODE_SV39X4 => 3,
        csr::HGATP_MODE_SV48X4 => 4,
        // Unsupported modes cannot be written to hgatp; refuse rather than guess.
        _ => return Err(gpf()),
    };
    let gpa_bits = 12 + LEVEL_BITS * levels + GSTAGE_ROOT_EXTRA_BITS;
    if gpa >> gpa_bits != 0 {
        return Err(gpf());
    }
    // The root is 16 KiB: the low two bits of the PPN are ignored.
    let mut table = (ctx.hgatp & csr::ATP_PPN_MASK & !3) << 12;
    let mut level = levels - 1;
    loop {
        let index_bits = if level == levels - 1 {
            LEVEL_BITS + GSTAGE_ROOT_EXTRA_BITS
        } else {
            LEVEL_BITS
        };
        let index = (gpa >> (12 + LEVEL_BITS * level)) & ((1 << index_bits) - 1);
        let pte_hpa = table + index * PTE_SIZE;
        check_hpa(mem, pmc, ctx.vmid, pte_hpa, PTE_SIZE, access)?;
        let pte = mem.load_u64(pte_hpa);
        match decode_pte(pte, level).ok_or_else(gpf)? {
            Pte::Table(next) => {
                table = next;
                level -= 1;
            }
            Pte::Leaf => {
                if !gstage_allows(pte, perm) {
                    return Err(gpf());
                }
                let hpa = leaf_address(pte, level, gpa).ok_or_else(gpf)?;
                check_target(mem, pmc, ctx.vmid, hpa, target, access)?;
                if let Some(new) = ad_update(pte, perm.is_write()) {
                    if mem.cas_u64(pte_hpa, pte, new) != pte {
                        // The PTE changed under us: redo this step with its new value.
                        continue;
                    }
                }
                return Ok(hpa);
            }
        }
    }
}

/// The VS-stage walk: `va` to a guest-physical address. Every PTE access goes through the
/// G-stage as an implicit access.
fn vs_walk(
    mem: &PhysMemory,
    pmc: &Pmc,
    ctx: &WalkCtx,
    va: u64,
    access: Access,
) -> Result<u64, Fault> {
    let pf = || page_fault(access);
    let levels: u32 = match ctx.vsatp >> 60 {
        csr::SATP_MODE_BARE => return Ok(va),
        csr::SATP_MODE_SV39 => 3,
        csr::SATP_MODE_SV48 => 4,
        csr::SATP_MODE_SV57 => 5,
        // Unsupported modes cannot be written to vsatp; refuse rather than guess.
        _ => return Err(pf()),
    };
    let va_bits = 12 + LEVEL_BITS * levels;
    let unused = 64 - va_bits;
    // Canonical: bits 63:va_bits-1 all equal.
    if (((va << unused) as i64) >> unused) as u64 != va {
        return Err(pf());
    }
    let perm = Perm::of(access, ctx.hlvx);
    let mut table = (ctx.vsatp & csr::ATP_PPN_MASK) << 12;
    let mut level = levels - 1;
    loop {
        let index = (va >> (12 + LEVEL_BITS * level)) & ((1 << LEVEL_BITS) - 1);
        let pte_gpa = table + index * PTE_SIZE;
        let pte_hpa = gstage_walk(
            mem,
            pmc,
            ctx,
            pte_gpa,
            Perm::Read,
            access,
            HTINST_PTE_READ,
            Target::Pte,
        )?;
        let pte = mem.load_u64(pte_hpa);
        match decode_pte(pte, level).ok_or_else(pf)? {
            Pte::Table(next) => {
                table = next;
                level -= 1;
            }
            Pte::Leaf => {
                if !vs_allows(pte, perm, ctx) {
                    return Err(pf());
                }
                let gpa = leaf_address(pte, level, va).ok_or_else(pf)?;
                if let Some(new) = ad_update(pte, perm.is_write()) {
                    let w_hpa = gstage_walk(
                        mem,
                        pmc,
                        ctx,
                        pte_gpa,
                        Perm::Write,
                        access,
                        HTINST_PTE_WRITE,
                        Target::Pte,
                    )?;
                    if mem.cas_u64(w_hpa, pte, new) != pte {
                        // The PTE changed under us: redo this step with its new value.
                        continue;
                    }
                }
                return Ok(gpa);
            }
        }
    }
}

/// Full two-stage translation of `va` for an access made with V=1.
pub fn translate(
    mem: &PhysMemory,
    pmc: &Pmc,
    ctx: &WalkCtx,
    va: u64,
    access: Access,
) -> Result<Translation, Fault> {
    let gpa = vs_walk(mem, pmc, ctx, va, access)?;
    let hpa = translate_gstage(mem, pmc, ctx, gpa, access)?;
    Ok(Translation { gpa, hpa })
}

/// G-stage translation of `gpa` alone, as an explicit access (a guest-page fault reports
/// htinst 0; `ctx.hlvx` makes a read need X). The page containing the result has passed the
/// PMC and lies inside the arena. Returns the exact host-physical address.
pub fn translate_gstage(
    mem: &PhysMemory,
    pmc: &Pmc,
    ctx: &WalkCtx,
    gpa: u64,
    access: Access,
) -> Result<u64, Fault> {
    gstage_walk(
        mem,
        pmc,
        ctx,
        gpa,
        Perm::of(access, ctx.hlvx),
        access,
        0,
        Target::Page,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    const VMID: Vmid = 5;
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    /// Arena size; `[0, GRANTED)` is granted to `VMID`, the rest is not.
    const ARENA: u64 = 16 * MIB;
    const GRANTED: u64 = 8 * MIB;
    /// Page tables are allocated from here up; data pages live at 4 MiB and above.
    const TABLES: u64 = MIB;
    /// Guest-physical offset of the linear G-stage map built by [`Env::linear_gstage`].
    const GOFF: u64 = 0x8000_0000;

    const V: u64 = PTE_V;
    const R: u64 = PTE_R;
    const W: u64 = PTE_W;
    const X: u64 = PTE_X;
    const U: u64 = PTE_U;
    const A: u64 = PTE_A;
    const D: u64 = PTE_D;
    const RWX_AD: u64 = V | R | W | X | A | D;
    const G_RWXU: u64 = V | R | W | X | U;

    struct Env {
        mem: PhysMemory,
        pmc: Pmc,
        next: Cell<u64>,
    }

    impl Env {
        fn new() -> Self {
            let pmc = Pmc::new();
            pmc.grant(VMID, 0, GRANTED);
            Env {
                mem: PhysMemory::new(ARENA).unwrap(),
                pmc,
                next: Cell::new(TABLES),
            }
        }

        /// A zeroed, `size`-aligned table in granted memory.
        fn alloc(&self, size: u64) -> u64 {
            let a = self.next.get().next_multiple_of(size);
            self.next.set(a + size);
            assert!(a + size <= 4 * MIB, "table area exhausted");
            a
        }

        fn ctx(&self, vsatp: u64, hgatp: u64) -> WalkCtx {
            WalkCtx {
                vsatp,
                hgatp,
                vmid: VMID,
                user: false,
                sum: false,
                mxr: false,
                hlvx: false,
            }
        }

        fn load(&self, hpa: u64) -> u64 {
            self.mem.load_u64(hpa)
        }

        fn store(&self, hpa: u64, v: u64) {
            self.mem.store_u64(hpa, v)
        }

        /// Map `addr` to `pa` with a leaf at `leaf_level` in the `levels`-level table at host
        /// address `root` (whose index has `root_bits` bits). Tables are allocated as needed;
        /// a table at host address `t` is named `t + off` in the PTEs (the table's address in
        /// the stage's output space). Returns the host address of the leaf PTE.
        #[allow(clippy::too_many_arguments)]
        fn map(
            &self,
            root: u64,
            levels: u32,
            root_bits: u32,
            off: u64,
            addr: u64,
            pa: u64,
            leaf_level: u32,
            flags: u64,
        ) -> u64 {
            let mut table = root;
            let mut level = levels - 1;
            loop {
                let bits = if level == levels - 1 { root_bits } else { 9 };
                let slot = table + ((addr >> (12 + 9 * level)) & ((1 << bits) - 1)) * 8;
                if level == leaf_level {
                    self.store(slot, pte(pa, flags));
                    return slot;
                }
                let cur = self.load(slot);
                table = if cur & V != 0 {
                    pte_base(cur) - off
                } else {
                    let t = self.alloc(PAGE_SIZE);
                    self.store(slot, pte(t + off, V));
                    t
                };
                level -= 1;
            }
        }

        fn vs_map(&self, root: u64, levels: u32, va: u64, gpa: u64, level: u32, flags: u64) -> u64 {
            self.map(root, levels, 9, 0, va, gpa, level, flags)
        }

        fn g_map(&self, root: u64, levels: u32, gpa: u64, hpa: u64, level: u32, flags: u64) -> u64 {
            self.map(root, levels, 11, 0, gpa, hpa, level, flags)
        }

        /// A G-stage root (16 KiB).
        fn g_root(&self) -> u64 {
            self.alloc(4 * PAGE_SIZE)
        }

        /// Sv39x4 G-stage mapping `[GOFF, GOFF + GRANTED)` to `[0, GRANTED)` with 2 MiB leaves
        /// (A/D clear). Returns (hgatp, root).
        fn linear_gstage(&self) -> (u64, u64) {
            let root = self.g_root();
            for hpa in (0..GRANTED).step_by(2 * MIB as usize) {
                self.g_map(root, 3, GOFF + hpa, hpa, 1, G_RWXU);
            }
            (atp(HGATP_SV39X4, root), root)
        }

        fn tr(&self, ctx: &WalkCtx, va: u64, access: Access) -> Result<Translation, Fault> {
            translate(&self.mem, &self.pmc, ctx, va, access)
        }

        fn hpa(&self, ctx: &WalkCtx, va: u64, access: Access) -> u64 {
            match self.tr(ctx, va, access) {
                Ok(t) => t.hpa,
                Err(f) => panic!("translate({va:#x}, {access:?}) faulted: {f:?}"),
            }
        }

        fn gst(&self, ctx: &WalkCtx, gpa: u64, access: Access) -> Result<u64, Fault> {
            translate_gstage(&self.mem, &self.pmc, ctx, gpa, access)
        }
    }

    const SV39: u64 = csr::SATP_MODE_SV39;
    const SV48: u64 = csr::SATP_MODE_SV48;
    const SV57: u64 = csr::SATP_MODE_SV57;
    const HGATP_SV39X4: u64 = csr::HGATP_MODE_SV39X4;
    const HGATP_SV48X4: u64 = csr::HGATP_MODE_SV48X4;

    fn pte(pa: u64, flags: u64) -> u64 {
        ((pa >> 12) << 10) | flags
    }

    fn atp(mode: u64, root: u64) -> u64 {
        (mode << 60) | (root >> 12)
    }

    fn pf(cause: u64) -> Result<Translation, Fault> {
        Err(Fault::Page { cause })
    }

    fn gpf(cause: u64, gpa: u64, htinst: u32) -> Result<Translation, Fault> {
        Err(Fault::GuestPage { cause, gpa, htinst })
    }

    const ALL: [Access; 3] = [Access::Read, Access::Write, Access::Exec];

    /// Sv39 VS-stage over a Bare G-stage: (env, VS root, ctx).
    fn sv39_bare() -> (Env, u64, WalkCtx) {
        let e = Env::new();
        let root = e.alloc(PAGE_SIZE);
        let ctx = e.ctx(atp(SV39, root), 0);
        (e, root, ctx)
    }

    // ---------------- successful translations ----------------

    #[test]
    fn bare_bare_is_identity() {
        let e = Env::new();
        let ctx = e.ctx(0, 0);
        for a in ALL {
            assert_eq!(
                e.tr(&ctx, 0x40_1234, a),
                Ok(Translation {
                    gpa: 0x40_1234,
                    hpa: 0x40_1234
                })
            );
        }
        assert_eq!(e.gst(&ctx, 0x7f_fff8, Access::Write), Ok(0x7f_fff8));
    }

    #[test]
    fn sv39_pages_4k_2m_1g() {
        let (e, root, ctx) = sv39_bare();
        e.vs_map(root, 3, 0x1000_0000, 0x40_3000, 0, RWX_AD);
        e.vs_map(root, 3, 0x4020_0000, 0x60_0000, 1, RWX_AD);
        e.vs_map(root, 3, 0x8000_0000, 0, 2, RWX_AD);
        // Top half of the address space (VPN[2] = 511).
        e.vs_map(root, 3, 0xffff_ffff_c000_1000, 0x40_5000, 0, RWX_AD);
        for a in ALL {
            assert_eq!(
                e.tr(&ctx, 0x1000_0123, a),
                Ok(Translation {
                    gpa: 0x40_3123,
                    hpa: 0x40_3123
                })
            );
            assert_eq!(e.hpa(&ctx, 0x4021_2345, a), 0x61_2345);
            assert_eq!(e.hpa(&ctx, 0x8050_0077, a), 0x50_0077);
            assert_eq!(e.hpa(&ctx, 0xffff_ffff_c000_1ff8, a), 0x40_5ff8);
        }
        // Neighbouring pages are unmapped.
        assert_eq!(e.tr(&ctx, 0x1000_1000, Access::Read), pf(13));
        assert_eq!(e.tr(&ctx, 0x4040_0000, Access::Read), pf(13));
    }

    #[test]
    fn sv48_pages_4k_2m_1g_512g() {
        let e = Env::new();
        let root = e.alloc(PAGE_SIZE);
        let ctx = e.ctx(atp(SV48, root), 0);
        e.vs_map(root, 4, 0x12_3456_7000, 0x40_7000, 0, RWX_AD);
        e.vs_map(root, 4, 0x12_0020_0000, 0x40_0000, 1, RWX_AD);
        e.vs_map(root, 4, 0x13_4000_0000, 0, 2, RWX_AD);
        e.vs_map(root, 4, 0x80_0000_0000, 0, 3, RWX_AD);
        e.vs_map(root, 4, 0xffff_8000_0000_0000, 0, 3, RWX_AD);
        assert_eq!(
            e.tr(&ctx, 0x12_3456_7abc, Access::Read),
            Ok(Translation {
                gpa: 0x40_7abc,
                hpa: 0x40_7abc
            })
        );
        assert_eq!(e.hpa(&ctx, 0x12_0021_0008, Access::Write), 0x41_0008);
        assert_eq!(e.hpa(&ctx, 0x13_4070_0001, Access::Exec), 0x70_0001);
        assert_eq!(e.hpa(&ctx, 0x80_0040_0010, Access::Read), 0x40_0010);
        assert_eq!(e.hpa(&ctx, 0xffff_8000_0060_0000, Access::Write), 0x60_0000);
    }

    #[test]
    fn sv57_page() {
        let e = Env::new();
        let root = e.alloc(PAGE_SIZE);
        let ctx = e.ctx(atp(SV57, root), 0);
        e.vs_map(root, 5, 0x00ff_0000_0000_1000, 0x40_1000, 0, RWX_AD);
        e.vs_map(root, 5, 0xff00_0000_0000_0000, 0x40_2000, 0, RWX_AD);
        assert_eq!(e.hpa(&ctx, 0x00ff_0000_0000_1010, Access::Read), 0x40_1010);
        assert_eq!(e.hpa(&ctx, 0xff00_0000_0000_0020, Access::Read), 0x40_2020);
        // Bit 56 set but bit 57 clear: not canonical for Sv57.
        assert_eq!(e.tr(&ctx, 0x0100_0000_0000_1000, Access::Read), pf(13));
    }

    #[test]
    fn sv39x4_gstage_pages_and_wide_root() {
        let e = Env::new();
        let root = e.g_root();
        let hgatp = atp(HGATP_SV39X4, root);
        let ctx = e.ctx(0, hgatp);
        e.g_map(root, 3, 0x1000, 0x40_1000, 0, G_RWXU);
        e.g_map(root, 3, 0x4020_0000, 0x60_0000, 1, G_RWXU);
        e.g_map(root, 3, 0x1_0000_0000, 0, 2, G_RWXU);
        // Root indices beyond 511: only reachable through the 16 KiB root.
        let wide_1g = 1500 * GIB;
        let wide_4k = 1900 * GIB + 0x5000;
        assert!(wide_4k < 1 << 41);
        e.g_map(root, 3, wide_1g, 0, 2, G_RWXU);
        e.g_map(root, 3, wide_4k, 0x40_6000, 0, G_RWXU);
        assert_eq!(
            e.tr(&ctx, 0x1abc, Access::Read),
            Ok(Translation {
                gpa: 0x1abc,
                hpa: 0x40_1abc
            })
        );
        assert_eq!(e.hpa(&ctx, 0x4021_2345, Access::Write), 0x61_2345);
        assert_eq!(e.hpa(&ctx, 0x1_0050_0077, Access::Exec), 0x50_0077);
        assert_eq!(e.hpa(&ctx, wide_1g + 0x70_0008, Access::Read), 0x70_0008);
        assert_eq!(e.hpa(&ctx, wide_4k + 0xff0, Access::Write), 0x40_6ff0);
        assert_eq!(e.gst(&ctx, wide_4k + 4, Access::Exec), Ok(0x40_6004));
        // Same index modulo 512 but a different root entry: unmapped.
        assert_eq!(
            e.tr(&ctx, (1500 - 1024) * GIB, Access::Read),
            gpf(21, (1500 - 1024) * GIB, 0)
        );
        // The low two bits of the hgatp PPN are ignored (the root is 16 KiB aligned).
        let ctx3 = e.ctx(0, hgatp | 3);
        assert_eq!(e.hpa(&ctx3, wide_4k, Access::Read), 0x40_6000);
    }

    #[test]
    fn sv48x4_gstage_pages_and_wide_root() {
        let e = Env::new();
        let root = e.g_root();
        let ctx = e.ctx(0, atp(HGATP_SV48X4, root));
        e.g_map(root, 4, 0x12_3456_7000, 0x40_7000, 0, G_RWXU);
        e.g_map(root, 4, 0x12_0020_0000, 0x40_0000, 1, G_RWXU);
        e.g_map(root, 4, 0x13_4000_0000, 0, 2, G_RWXU);
        e.g_map(root, 4, 3 << 39, 0, 3, G_RWXU);
        let wide = (1800u64 << 39) + 0x3000;
        assert!(wide < 1 << 50);
        e.g_map(root, 4, wide, 0x40_9000, 0, G_RWXU);
        assert_eq!(e.hpa(&ctx, 0x12_3456_7abc, Access::Read), 0x40_7abc);
        assert_eq!(e.hpa(&ctx, 0x12_0021_0008, Access::Write), 0x41_0008);
        assert_eq!(e.hpa(&ctx, 0x13_4070_0001, Access::Exec), 0x70_0001);
        assert_eq!(e.hpa(&ctx, (3 << 39) + 0x40_0010, Access::Read), 0x40_0010);
        assert_eq!(e.hpa(&ctx, wide + 0x10, Access::Read), 0x40_9010);
        let beyond = (1u64 << 50) | 0x10;
        assert_eq!(e.tr(&ctx, beyond, Access::Write), gpf(23, beyond, 0));
    }

    #[test]
    fn two_stage_sv48_over_sv39x4() {
        let e = Env::new();
        let (hgatp, groot) = e.linear_gstage();
        let vroot = e.alloc(PAGE_SIZE);
        let ctx = e.ctx(atp(SV48, vroot + GOFF), hgatp);
        let leaf = e.map(vroot, 4, 9, GOFF, 0x7000_1000, GOFF + 0x40_3000, 0, RWX_AD);
        e.map(
            vroot,
            4,
            9,
            GOFF,
            0x20_0000_0000,
            GOFF + 0x60_0000,
            1,
            RWX_AD,
        );
        assert_eq!(
            e.tr(&ctx, 0x7000_1123, Access::Read),
            Ok(Translation {
                gpa: GOFF + 0x40_3123,
                hpa: 0x40_3123
            })
        );
        assert_eq!(
            e.tr(&ctx, 0x20_0001_0008, Access::Write),
            Ok(Translation {
                gpa: GOFF + 0x61_0008,
                hpa: 0x61_0008
            })
        );
        // A VS leaf pointing at an unmapped GPA: fault on the final GPA, htinst 0.
        e.store(leaf, pte(0x4000_0000, RWX_AD));
        assert_eq!(
            e.tr(&ctx, 0x7000_1ff0, Access::Write),
            gpf(23, 0x4000_0ff0, 0)
        );
        assert_eq!(
            e.tr(&ctx, 0x7000_1002, Access::Exec),
            gpf(20, 0x4000_0002, 0)
        );
        // A final GPA beyond Sv39x4's 41 bits.
        e.store(leaf, pte(1 << 41, RWX_AD));
        assert_eq!(
            e.tr(&ctx, 0x7000_1008, Access::Read),
            gpf(21, (1 << 41) + 8, 0)
        );
        let _ = groot;
    }

    // ---------------- VS-stage faults ----------------

    #[test]
    fn vs_invalid_pte_and_causes() {
        let (e, root, ctx) = sv39_bare();
        assert_eq!(e.tr(&ctx, 0x1000, Access::Read), pf(13));
        assert_eq!(e.tr(&ctx, 0x1000, Access::Write), pf(15));
        assert_eq!(e.tr(&ctx, 0x1000, Access::Exec), pf(12));
        // A leaf with every permission but V clear.
        e.vs_map(root, 3, 0x1000, 0x40_1000, 0, RWX_AD & !V);
        assert_eq!(e.tr(&ctx, 0x1000, Access::Read), pf(13));
    }

    #[test]
    fn vs_write_without_read_is_reserved() {
        let (e, root, ctx) = sv39_bare();
        e.vs_map(root, 3, 0x1000, 0x40_1000, 0, V | W | A | D);
        e.vs_map(root, 3, 0x2000, 0x40_2000, 0, V | W | X | A | D);
        for va in [0x1000, 0x2000] {
            assert_eq!(e.tr(&ctx, va, Access::Read), pf(13));
            assert_eq!(e.tr(&ctx, va, Access::Write), pf(15));
            assert_eq!(e.tr(&ctx, va, Access::Exec), pf(12));
        }
    }

    #[test]
    fn vs_reserved_bits() {
        let (e, root, ctx) = sv39_bare();
        let leaf = e.vs_map(root, 3, 0x1000, 0x40_1000, 0, RWX_AD);
        assert_eq!(e.hpa(&ctx, 0x1000, Access::Read), 0x40_1000);
        for bit in [54, 60, 61, 62, 63] {
            e.store(leaf, pte(0x40_1000, RWX_AD) | 1 << bit);
            assert_eq!(e.tr(&ctx, 0x1000, Access::Read), pf(13), "bit {bit}");
        }
        e.store(leaf, pte(0x40_1000, RWX_AD));
        // Reserved bits in a non-leaf PTE.
        let l1 = root; // VPN[2] of 0x1000 is 0
        let good = e.load(l1);
        for bad in [1 << 54, 1 << 63, A, D, U] {
            e.store(l1, good | bad);
            assert_eq!(e.tr(&ctx, 0x1000, Access::Write), pf(15), "{bad:#x}");
        }
        e.store(l1, good);
        assert_eq!(e.hpa(&ctx, 0x1000, Access::Write), 0x40_1000);
    }

    #[test]
    fn vs_non_leaf_at_last_level() {
        let (e, root, ctx) = sv39_bare();
        e.vs_map(root, 3, 0x1000, 0x40_1000, 0, V);
        assert_eq!(e.tr(&ctx, 0x1000, Access::Exec), pf(12));
    }

    #[test]
    fn vs_misaligned_superpages() {
        let (e, root, ctx) = sv39_bare();
        e.vs_map(root, 3, 0x4020_0000, 0x40_1000, 1, RWX_AD);
        e.vs_map(root, 3, 0x8000_0000, 0x20_0000, 2, RWX_AD);
        assert_eq!(e.tr(&ctx, 0x4020_0000, Access::Read), pf(13));
        assert_eq!(e.tr(&ctx, 0x8000_0000, Access::Write), pf(15));
    }

    #[test]
    fn vs_non_canonical_va() {
        let (e, root, ctx) = sv39_bare();
        e.vs_map(root, 3, 0, 0, 2, RWX_AD);
        assert_eq!(e.hpa(&ctx, 0x40_0010, Access::Read), 0x40_0010);
        // Same VPNs as a mapped address, but bits 63:39 don't match bit 38.
        for va in [
            1u64 << 39 | 0x10,
            0x40_0000_0010,
            0xffff_ff80_0000_0010,
            1 << 63,
        ] {
            assert_eq!(e.tr(&ctx, va, Access::Read), pf(13), "{va:#x}");
            assert_eq!(e.tr(&ctx, va, Access::Exec), pf(12), "{va:#x}");
        }
        let root48 = e.alloc(PAGE_SIZE);
        let ctx48 = e.ctx(atp(SV48, root48), 0);
        assert_eq!(e.tr(&ctx48, 0x8000_0000_0000, Access::Write), pf(15));
        assert_eq!(e.tr(&ctx48, 0xffff_7fff_ffff_f000, Access::Write), pf(15));
    }

    #[test]
    fn vs_user_pages_and_sum() {
        let (e, root, mut ctx) = sv39_bare();
        e.vs_map(root, 3, 0x1000, 0x40_1000, 0, RWX_AD | U);
        // S-mode without SUM.
        assert_eq!(e.tr(&ctx, 0x1000, Access::Read), pf(13));
        assert_eq!(e.tr(&ctx, 0x1000, Access::Write), pf(15));
        assert_eq!(e.tr(&ctx, 0x1000, Access::Exec), pf(12));
        // S-mode with SUM: loads and stores only, never fetches.
        ctx.sum = true;
        assert_eq!(e.hpa(&ctx, 0x1000, Access::Read), 0x40_1000);
        assert_eq!(e.hpa(&ctx, 0x1000, Access::Write), 0x40_1000);
        assert_eq!(e.tr(&ctx, 0x1000, Access::Exec), pf(12));
        // U-mode.
        ctx.user = true;
        ctx.sum = false;
        for a in ALL {
            assert_eq!(e.hpa(&ctx, 0x1008, a), 0x40_1008);
        }
    }

    #[test]
    fn vs_supervisor_page_from_user() {
        let (e, root, mut ctx) = sv39_bare();
        e.vs_map(root, 3, 0x1000, 0x40_1000, 0, RWX_AD);
        ctx.user = true;
        ctx.sum = true;
        assert_eq!(e.tr(&ctx, 0x1000, Access::Read), pf(13));
        assert_eq!(e.tr(&ctx, 0x1000, Access::Write), pf(15));
        assert_eq!(e.tr(&ctx, 0x1000, Access::Exec), pf(12));
    }

    #[test]
    fn vs_mxr_and_hlvx() {
        let (e, root, mut ctx) = sv39_bare();
        e.vs_map(root, 3, 0x1000, 0x40_1000, 0, V | X | A | D);
        e.vs_map(root, 3, 0x2000, 0x40_2000, 0, V | R | A | D);
        assert_eq!(e.hpa(&ctx, 0x1000, Access::Exec), 0x40_1000);
        assert_eq!(e.tr(&ctx, 0x1000, Access::Read), pf(13));
        ctx.mxr = true;
        assert_eq!(e.hpa(&ctx, 0x1000, Access::Read), 0x40_1000);
        assert_eq!(e.tr(&ctx, 0x1000, Access::Write), pf(15));
        ctx.mxr = false;
        // HLVX: X is needed, R is not.
        ctx.hlvx = true;
        assert_eq!(e.hpa(&ctx, 0x1004, Access::Read), 0x40_1004);
        assert_eq!(e.tr(&ctx, 0x2000, Access::Read), pf(13));
    }

    #[test]
    fn vs_write_to_read_only_and_exec_without_x() {
        let (e, root, ctx) = sv39_bare();
        let leaf = e.vs_map(root, 3, 0x1000, 0x40_1000, 0, V | R);
        assert_eq!(e.tr(&ctx, 0x1000, Access::Write), pf(15));
        assert_eq!(e.tr(&ctx, 0x1000, Access::Exec), pf(12));
        // Faulting walks leave the PTE alone.
        assert_eq!(e.load(leaf), pte(0x40_1000, V | R));
        assert_eq!(e.hpa(&ctx, 0x1000, Access::Read), 0x40_1000);
        assert_eq!(e.load(leaf), pte(0x40_1000, V | R | A));
    }

    #[test]
    fn unsupported_modes_fault() {
        let e = Env::new();
        let ctx = e.ctx(11 << 60, 0);
        assert_eq!(e.tr(&ctx, 0x1000, Access::Read), pf(13));
        let ctx = e.ctx(0, 10 << 60);
        assert_eq!(e.tr(&ctx, 0x1000, Access::Write), gpf(23, 0x1000, 0));
    }

    // ---------------- A/D ----------------

    #[test]
    fn vs_accessed_and_dirty() {
        let (e, root, ctx) = sv39_bare();
        let flags = V | R | W | X;
        let l4k = e.vs_map(root, 3, 0x1000, 0x40_1000, 0, flags);
        let l2m = e.vs_map(root, 3, 0x4020_0000, 0x60_0000, 1, flags);
        e.hpa(&ctx, 0x1000, Access::Read);
        assert_eq!(e.load(l4k), pte(0x40_1000, flags | A), "read sets A only");
        e.hpa(&ctx, 0x1000, Access::Write);
        assert_eq!(e.load(l4k), pte(0x40_1000, flags | A | D));
        e.hpa(&ctx, 0x4020_0000, Access::Exec);
        assert_eq!(e.load(l2m), pte(0x60_0000, flags | A), "exec sets A only");
        e.hpa(&ctx, 0x4020_0000, Access::Write);
        assert_eq!(e.load(l2m), pte(0x60_0000, flags | A | D));
        // A write to a clean, unaccessed page sets both at once.
        let l = e.vs_map(root, 3, 0x3000, 0x40_3000, 0, flags);
        e.hpa(&ctx, 0x3000, Access::Write);
        assert_eq!(e.load(l), pte(0x40_3000, flags | A | D));
        // Non-leaf PTEs are never touched.
        assert_eq!(e.load(root) & (A | D), 0);
    }

    #[test]
    fn gstage_accessed_and_dirty_for_data_and_tables() {
        let e = Env::new();
        let (hgatp, groot) = e.linear_gstage();
        let vroot = e.alloc(PAGE_SIZE);
        let ctx = e.ctx(atp(SV39, vroot + GOFF), hgatp);
        let vleaf = e.map(vroot, 3, 9, GOFF, 0x1000, GOFF + 0x40_1000, 0, V | R | W);
        // G-stage leaves: the 2 MiB page holding the VS tables, and the one holding the data.
        let g_tables = groot + ((GOFF >> 30) * 8);
        let g_tables = pte_base(e.load(g_tables)) + ((GOFF + TABLES) >> 21 & 511) * 8;
        let g_data =
            pte_base(e.load(groot + (GOFF >> 30) * 8)) + ((GOFF + 0x40_1000) >> 21 & 511) * 8;
        assert_eq!(e.load(g_tables), pte(0, G_RWXU));
        assert_eq!(e.load(g_data), pte(0x40_0000, G_RWXU));

        // Read walk: the VS leaf gets A, written through the G-stage (so the table page's
        // G-stage leaf gets A and D); the data page's G-stage leaf gets A only.
        assert_eq!(e.hpa(&ctx, 0x1010, Access::Read), 0x40_1010);
        assert_eq!(e.load(vleaf), pte(GOFF + 0x40_1000, V | R | W | A));
        assert_eq!(e.load(g_tables), pte(0, G_RWXU | A | D));
        assert_eq!(e.load(g_data), pte(0x40_0000, G_RWXU | A));
        // Write walk: D everywhere.
        assert_eq!(e.hpa(&ctx, 0x1010, Access::Write), 0x40_1010);
        assert_eq!(e.load(vleaf), pte(GOFF + 0x40_1000, V | R | W | A | D));
        assert_eq!(e.load(g_data), pte(0x40_0000, G_RWXU | A | D));

        // With the VS PTEs already accessed/dirty, the table page is only read: A, not D.
        e.store(g_tables, pte(0, G_RWXU));
        e.store(g_data, pte(0x40_0000, G_RWXU));
        assert_eq!(e.hpa(&ctx, 0x1020, Access::Write), 0x40_1020);
        assert_eq!(e.load(g_tables), pte(0, G_RWXU | A));
        assert_eq!(e.load(g_data), pte(0x40_0000, G_RWXU | A | D));
        // translate_gstage sets them too.
        e.store(g_data, pte(0x40_0000, G_RWXU));
        assert_eq!(e.gst(&ctx, GOFF + 0x40_0008, Access::Read), Ok(0x40_0008));
        assert_eq!(e.load(g_data), pte(0x40_0000, G_RWXU | A));
    }

    #[test]
    fn concurrent_pte_changes_are_retried() {
        let (e, root, ctx) = sv39_bare();
        let flags = V | R | W;
        let leaf = e.vs_map(root, 3, 0x1000, 0x40_1000, 0, flags);
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            // Another agent keeps clearing A/D and flipping a software bit (RSW).
            let mem = &e.mem;
            s.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let cur = mem.load_u64(leaf);
                    let new = (cur & !(A | D)) ^ (1 << 8);
                    mem.cas_u64(leaf, cur, new);
                }
            });
            for i in 0..20_000u64 {
                let a = if i % 2 == 0 {
                    Access::Read
                } else {
                    Access::Write
                };
                assert_eq!(e.hpa(&ctx, 0x1008, a), 0x40_1008);
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        // Whatever the interleaving, the PPN and permissions survive.
        assert_eq!(e.load(leaf) & !(A | D | 1 << 8), pte(0x40_1000, flags));
    }

    // ---------------- G-stage faults ----------------

    #[test]
    fn gstage_leaf_without_u() {
        let e = Env::new();
        let root = e.g_root();
        let ctx = e.ctx(0, atp(HGATP_SV39X4, root));
        let leaf = e.g_map(root, 3, 0x2000, 0x40_2000, 0, V | R | W | X);
        assert_eq!(e.tr(&ctx, 0x2123, Access::Read), gpf(21, 0x2123, 0));
        assert_eq!(e.tr(&ctx, 0x2123, Access::Write), gpf(23, 0x2123, 0));
        assert_eq!(e.tr(&ctx, 0x2122, Access::Exec), gpf(20, 0x2122, 0));
        assert_eq!(
            e.load(leaf),
            pte(0x40_2000, V | R | W | X),
            "no A/D on a fault"
        );
    }

    #[test]
    fn gstage_permissions() {
        let e = Env::new();
        let root = e.g_root();
        let mut ctx = e.ctx(0, atp(HGATP_SV39X4, root));
        e.g_map(root, 3, 0x1000, 0x40_1000, 0, V | R | U);
        e.g_map(root, 3, 0x2000, 0x40_2000, 0, V | X | U);
        assert_eq!(e.hpa(&ctx, 0x1000, Access::Read), 0x40_1000);
        assert_eq!(e.tr(&ctx, 0x1008, Access::Write), gpf(23, 0x1008, 0));
        assert_eq!(e.tr(&ctx, 0x1008, Access::Exec), gpf(20, 0x1008, 0));
        assert_eq!(e.hpa(&ctx, 0x2000, Access::Exec), 0x40_2000);
        // vsstatus.MXR does not apply to the G-stage.
        ctx.mxr = true;
        assert_eq!(e.tr(&ctx, 0x2010, Access::Read), gpf(21, 0x2010, 0));
        ctx.mxr = false;
        // HLVX needs X at the G-stage too.
        ctx.hlvx = true;
        assert_eq!(e.hpa(&ctx, 0x2010, Access::Read), 0x40_2010);
        assert_eq!(e.tr(&ctx, 0x1010, Access::Read), gpf(21, 0x1010, 0));
        assert_eq!(
            e.gst(&ctx, 0x1010, Access::Read),
            Err(Fault::GuestPage {
                cause: 21,
                gpa: 0x1010,
                htinst: 0
            })
        );
    }

    #[test]
    fn gstage_pte_format_faults() {
        let e = Env::new();
        let root = e.g_root();
        let ctx = e.ctx(0, atp(HGATP_SV39X4, root));
        let leaf = e.g_map(root, 3, 0x1000, 0x40_1000, 0, G_RWXU);
        let sp = e.g_map(root, 3, 0x4020_0000, 0x40_1000, 1, G_RWXU);
        assert_eq!(
            e.tr(&ctx, 0x4020_0000, Access::Read),
            gpf(21, 0x4020_0000, 0),
            "misaligned"
        );
        e.store(sp, pte(0x40_0000, V | U));
        assert_eq!(
            e.tr(&ctx, 0x4020_0000, Access::Read),
            gpf(21, 0x4020_0000, 0),
            "last-level table"
        );
        let _ = e.g_map(root, 3, 0x4020_0000, 0, 0, V);
        assert_eq!(
            e.tr(&ctx, 0x4020_0000, Access::Read),
            gpf(21, 0x4020_0000, 0),
            "non-leaf at level 0"
        );
        e.store(leaf, pte(0x40_1000, G_RWXU) | 1 << 55);
        assert_eq!(
            e.tr(&ctx, 0x1000, Access::Exec),
            gpf(20, 0x1000, 0),
            "reserved"
        );
        e.store(leaf, pte(0x40_1000, V | W | X | U));
        assert_eq!(
            e.tr(&ctx, 0x1000, Access::Exec),
            gpf(20, 0x1000, 0),
            "W without R"
        );
    }

    #[test]
    fn gpa_beyond_41_bits_under_sv39x4() {
        let e = Env::new();
        let root = e.g_root();
        let ctx = e.ctx(0, atp(HGATP_SV39X4, root));
        // Maps the GPA with bit 41 dropped, so only the width check can catch it.
        e.g_map(root, 3, 0x10, 0x40_0000, 0, G_RWXU);
        assert_eq!(e.hpa(&ctx, 0x10, Access::Read), 0x40_0010);
        let gpa = (1u64 << 41) | 0x10;
        assert_eq!(e.tr(&ctx, gpa, Access::Read), gpf(21, gpa, 0));
        assert_eq!(e.tr(&ctx, gpa, Access::Write), gpf(23, gpa, 0));
        assert_eq!(e.tr(&ctx, gpa, Access::Exec), gpf(20, gpa, 0));
        assert_eq!(e.tr(&ctx, 1 << 63, Access::Read), gpf(21, 1 << 63, 0));
    }

    #[test]
    fn gstage_fault_on_implicit_pte_read() {
        let e = Env::new();
        let (hgatp, _) = e.linear_gstage();
        // The VS root sits at an unmapped GPA.
        let vs_root_gpa = 0x7000_0000;
        let ctx = e.ctx(atp(SV39, vs_root_gpa), hgatp);
        let va = 0x4000_1000; // VPN[2] = 1
        assert_eq!(
            e.tr(&ctx, va, Access::Exec),
            gpf(20, vs_root_gpa + 8, HTINST_PTE_READ)
        );
        assert_eq!(
            e.tr(&ctx, va, Access::Read),
            gpf(21, vs_root_gpa + 8, HTINST_PTE_READ)
        );
        assert_eq!(
            e.tr(&ctx, va, Access::Write),
            gpf(23, vs_root_gpa + 8, HTINST_PTE_READ)
        );

        // The root is mapped but points at an unmapped second-level table.
        let vroot = e.alloc(PAGE_SIZE);
        let ctx = e.ctx(atp(SV39, vroot + GOFF), hgatp);
        e.store(vroot + 8, pte(0x7000_0000, V));
        let idx1 = (va >> 21) & 511;
        assert_eq!(
            e.tr(&ctx, va, Access::Read),
            gpf(21, 0x7000_0000 + idx1 * 8, HTINST_PTE_READ)
        );
        // Beyond 41 bits.
        e.store(vroot + 8, pte(1 << 45, V));
        assert_eq!(
            e.tr(&ctx, va, Access::Write),
            gpf(23, (1 << 45) + idx1 * 8, HTINST_PTE_READ)
        );
    }

    #[test]
    fn gstage_fault_on_implicit_ad_write() {
        let e = Env::new();
        let groot = e.g_root();
        let hgatp = atp(HGATP_SV39X4, groot);
        // Data: linear 2 MiB map at GOFF.
        e.g_map(groot, 3, GOFF + 0x40_0000, 0x40_0000, 1, G_RWXU);
        // VS tables: built first, then mapped read-only (4 KiB) at RO_OFF.
        const RO_OFF: u64 = 0x1_0000_0000;
        let start = e.next.get();
        let vroot = e.alloc(PAGE_SIZE);
        let leaf = e.map(
            vroot,
            3,
            9,
            RO_OFF,
            0x1000,
            GOFF + 0x40_1000,
            0,
            V | R | W | X,
        );
        let leaf2 = e.map(
            vroot,
            3,
            9,
            RO_OFF,
            0x2000,
            GOFF + 0x40_2000,
            0,
            V | R | W | A,
        );
        let end = e.next.get();
        for p in (start..end).step_by(PAGE_SIZE as usize) {
            e.g_map(groot, 3, p + RO_OFF, p, 0, V | R | U);
        }
        let ctx = e.ctx(atp(SV39, vroot + RO_OFF), hgatp);
        let leaf_gpa = leaf + RO_OFF;
        // Reading the PTEs works; setting A needs a write the G-stage refuses.
        assert_eq!(
            e.tr(&ctx, 0x1000, Access::Read),
            gpf(21, leaf_gpa, HTINST_PTE_WRITE)
        );
        assert_eq!(
            e.tr(&ctx, 0x1000, Access::Exec),
            gpf(20, leaf_gpa, HTINST_PTE_WRITE)
        );
        assert_eq!(e.load(leaf), pte(GOFF + 0x40_1000, V | R | W | X));
        // Already accessed: a read needs no update; a write needs D.
        assert_eq!(e.hpa(&ctx, 0x2008, Access::Read), 0x40_2008);
        assert_eq!(
            e.tr(&ctx, 0x2008, Access::Write),
            gpf(23, leaf2 + RO_OFF, HTINST_PTE_WRITE)
        );
        assert_eq!(e.load(leaf2), pte(GOFF + 0x40_2000, V | R | W | A));
    }

    // ---------------- PMC and access faults ----------------

    #[test]
    fn pmc_final_address_outside_grant() {
        let e = Env::new();
        // Bare/Bare: the page holding the address is checked.
        let ctx = e.ctx(0, 0);
        assert_eq!(
            e.tr(&ctx, GRANTED + 0x1234, Access::Read),
            Err(Fault::Pmc {
                hpa: GRANTED + 0x1000
            })
        );
        assert_eq!(e.gst(&ctx, GRANTED - 1, Access::Read), Ok(GRANTED - 1));
        // Another VMID has no grants at all.
        let other = WalkCtx {
            vmid: VMID + 1,
            ..ctx
        };
        assert_eq!(
            e.tr(&other, 0x40_0000, Access::Read),
            Err(Fault::Pmc { hpa: 0x40_0000 })
        );

        // A G-stage leaf pointing outside the grant: no A/D on the leaf, target untouched.
        let root = e.g_root();
        let ctx = e.ctx(0, atp(HGATP_SV39X4, root));
        let bad = 0xa0_0000;
        e.store(bad + 0x10, 0x1234_5678);
        let leaf = e.g_map(root, 3, 0x3000, bad, 0, G_RWXU);
        assert_eq!(
            e.tr(&ctx, 0x3010, Access::Write),
            Err(Fault::Pmc { hpa: bad })
        );
        assert_eq!(
            e.gst(&ctx, 0x3010, Access::Exec),
            Err(Fault::Pmc { hpa: bad })
        );
        assert_eq!(e.load(leaf), pte(bad, G_RWXU));
        assert_eq!(e.load(bad + 0x10), 0x1234_5678);
    }

    #[test]
    fn pmc_vs_pte_outside_grant_is_not_touched() {
        let e = Env::new();
        let root = e.g_root();
        let ctx = e.ctx(atp(SV39, 0x7000_0000), atp(HGATP_SV39X4, root));
        // The VS root's GPA maps to ungranted memory holding a fake (unaccessed) leaf.
        let bad = 0x90_0000;
        let g_leaf = e.g_map(root, 3, 0x7000_0000, bad, 0, G_RWXU);
        let fake = pte(0x40_0000, V | R | W | X);
        e.store(bad, fake);
        for a in ALL {
            assert_eq!(e.tr(&ctx, 0x10, a), Err(Fault::Pmc { hpa: bad }));
        }
        assert_eq!(e.load(bad), fake, "fake PTE's A/D untouched");
        assert_eq!(e.load(g_leaf), pte(bad, G_RWXU), "G-stage leaf untouched");
    }

    #[test]
    fn pmc_gstage_table_outside_grant() {
        let e = Env::new();
        let root = e.g_root();
        let ctx = e.ctx(0, atp(HGATP_SV39X4, root));
        // A second-level G-stage table in ungranted memory, with a plausible entry.
        let bad_table = 0xb0_0000;
        e.store(root + 8, pte(bad_table, V)); // GPA bits 40:30 = 1
        let gpa = GIB + (3 << 21) + 0x10;
        e.store(bad_table + 3 * 8, pte(0x40_0000, G_RWXU));
        assert_eq!(
            e.tr(&ctx, gpa, Access::Read),
            Err(Fault::Pmc {
                hpa: bad_table + 3 * 8
            })
        );
        assert_eq!(e.load(bad_table + 3 * 8), pte(0x40_0000, G_RWXU));
        // The root itself outside the grant.
        let ctx = e.ctx(0, atp(HGATP_SV39X4, 0xc0_0000));
        assert_eq!(
            e.tr(&ctx, gpa, Access::Exec),
            Err(Fault::Pmc { hpa: 0xc0_0000 + 8 })
        );
        // VS-stage tables outside the grant (Bare G-stage).
        let ctx = e.ctx(atp(SV39, 0xd0_0000), 0);
        assert_eq!(
            e.tr(&ctx, 0x4000_0000, Access::Read),
            Err(Fault::Pmc { hpa: 0xd0_0008 })
        );
    }

    #[test]
    fn granted_but_outside_arena_is_access_fault() {
        let e = Env::new();
        e.pmc.grant(VMID, ARENA, MIB);
        let ctx = e.ctx(0, 0);
        assert_eq!(
            e.tr(&ctx, ARENA + 0x10, Access::Exec),
            Err(Fault::Access { cause: 1 })
        );
        assert_eq!(
            e.tr(&ctx, ARENA + 0x10, Access::Read),
            Err(Fault::Access { cause: 5 })
        );
        assert_eq!(
            e.tr(&ctx, ARENA + 0x10, Access::Write),
            Err(Fault::Access { cause: 7 })
        );
        // A VS PTE out there.
        let ctx = e.ctx(atp(SV39, ARENA), 0);
        assert_eq!(
            e.tr(&ctx, 0x1000, Access::Write),
            Err(Fault::Access { cause: 7 })
        );
    }
}
