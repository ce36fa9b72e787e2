//! Two-stage address translation: VS-stage (vsatp: Bare/Sv39/Sv48/Sv57) then G-stage
//! (hugatp: Bare/Sv39x4/Sv48x4), with every host-physical address checked by the PMC.
//! This is the slow path behind the software TLB.

use crate::phys_mem::PhysMemory;
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

pub fn translate(
    mem: &PhysMemory,
    pmc: &Pmc,
    ctx: &WalkCtx,
    va: u64,
    access: Access,
) -> Result<Translation, Fault> {
    let _ = (mem, pmc, ctx, va, access);
    todo!("two-stage walker")
}
