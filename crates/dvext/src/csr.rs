//! CSR numbers and bit fields of the DV-Ext interface and of the guest-visible (VS) CSRs.
//!
//! HU CSRs mirror the H-extension's HS CSRs at +0x200 (hstatus 0x600 -> hustatus 0x800) and the
//! VS CSRs likewise (vsstatus 0x200 -> huvsstatus 0x400). A guest running in VS mode names its
//! supervisor CSRs with the ordinary S numbers (sstatus 0x100, ...) and the hart redirects them to
//! the VS copies, as the H extension specifies.

// ---- User trap registers through which an exit reaches HU-mode ----
pub const USTATUS: u16 = 0x000;
pub const UTVEC: u16 = 0x005;
pub const UEPC: u16 = 0x041;
pub const UCAUSE: u16 = 0x042;
pub const UTVAL: u16 = 0x043;

// ---- HU CSRs (hypervisor CSRs delegated to user mode) ----
pub const HUSTATUS: u16 = 0x800;
pub const HUEDELEG: u16 = 0x802;
pub const HUIDELEG: u16 = 0x803;
pub const HUIE: u16 = 0x804;
pub const HUTIMEDELTA: u16 = 0x805;
pub const HUCOUNTEREN: u16 = 0x806;
pub const HUENVCFG: u16 = 0x80A;
pub const HUTVAL: u16 = 0x843;
pub const HUIP: u16 = 0x844;
pub const HUVIP: u16 = 0x845;
pub const HUTINST: u16 = 0x84A;
pub const HUGATP: u16 = 0x880;
/// This hart's vCPU ID as registered by the driver (read-only).
pub const HUVCPUID: u16 = 0x881;
/// VMID of the VM this hart belongs to (read-only from HU-mode; set by the driver).
pub const HUVMID: u16 = 0x882;

// ---- VS CSRs as seen from HU-mode ----
pub const HUVSSTATUS: u16 = 0x400;
pub const HUVSIE: u16 = 0x404;
pub const HUVSTVEC: u16 = 0x405;
/// The guest's scounteren. The H extension does not bank scounteren (an HS hypervisor swaps
/// it itself); a user-level hypervisor cannot, so DV-Ext gives it this copy, which is what
/// the guest's own `scounteren` reads and writes when V=1.
pub const HUVSCOUNTEREN: u16 = 0x406;
pub const HUVSSCRATCH: u16 = 0x440;
pub const HUVSEPC: u16 = 0x441;
pub const HUVSCAUSE: u16 = 0x442;
pub const HUVSTVAL: u16 = 0x443;
pub const HUVSIP: u16 = 0x444;
pub const HUVSTIMECMP: u16 = 0x44D;
pub const HUVSATP: u16 = 0x480;

// ---- Supervisor CSR numbers the guest uses (redirected to VS copies when V=1) ----
pub const SSTATUS: u16 = 0x100;
pub const SIE: u16 = 0x104;
pub const STVEC: u16 = 0x105;
pub const SCOUNTEREN: u16 = 0x106;
pub const SENVCFG: u16 = 0x10A;
pub const SSCRATCH: u16 = 0x140;
pub const SEPC: u16 = 0x141;
pub const SCAUSE: u16 = 0x142;
pub const STVAL: u16 = 0x143;
pub const SIP: u16 = 0x144;
pub const STIMECMP: u16 = 0x14D;
pub const SATP: u16 = 0x180;

// ---- Unprivileged CSRs ----
pub const FFLAGS: u16 = 0x001;
pub const FRM: u16 = 0x002;
pub const FCSR: u16 = 0x003;
pub const CYCLE: u16 = 0xC00;
pub const TIME: u16 = 0xC01;
pub const INSTRET: u16 = 0xC02;

// ---- sstatus / vsstatus fields ----
pub const SSTATUS_SIE: u64 = 1 << 1;
pub const SSTATUS_SPIE: u64 = 1 << 5;
pub const SSTATUS_UBE: u64 = 1 << 6;
pub const SSTATUS_SPP: u64 = 1 << 8;
pub const SSTATUS_VS: u64 = 3 << 9;
pub const SSTATUS_FS: u64 = 3 << 13;
pub const SSTATUS_FS_SHIFT: u32 = 13;
pub const SSTATUS_XS: u64 = 3 << 15;
pub const SSTATUS_SUM: u64 = 1 << 18;
pub const SSTATUS_MXR: u64 = 1 << 19;
pub const SSTATUS_UXL: u64 = 3 << 32;
pub const SSTATUS_SD: u64 = 1 << 63;
/// Fields of vsstatus a guest can write (UXL is fixed to 64-bit, SD is derived).
pub const SSTATUS_WRITABLE: u64 =
    SSTATUS_SIE | SSTATUS_SPIE | SSTATUS_SPP | SSTATUS_FS | SSTATUS_SUM | SSTATUS_MXR;
pub const UXL_64: u64 = 2 << 32;

pub const FS_OFF: u64 = 0;
pub const FS_DIRTY: u64 = 3;

// ---- hustatus fields (as hstatus) ----
pub const HSTATUS_VSBE: u64 = 1 << 5;
pub const HSTATUS_GVA: u64 = 1 << 6;
pub const HSTATUS_SPV: u64 = 1 << 7;
pub const HSTATUS_SPVP: u64 = 1 << 8;
pub const HSTATUS_HU: u64 = 1 << 9;
pub const HSTATUS_VTVM: u64 = 1 << 20;
pub const HSTATUS_VTW: u64 = 1 << 21;
pub const HSTATUS_VTSR: u64 = 1 << 22;
pub const HSTATUS_VSXL_64: u64 = 2 << 32;
pub const HSTATUS_WRITABLE: u64 = HSTATUS_GVA
    | HSTATUS_SPV
    | HSTATUS_SPVP
    | HSTATUS_HU
    | HSTATUS_VTVM
    | HSTATUS_VTW
    | HSTATUS_VTSR;

// ---- Interrupt bits ----
/// Supervisor-level bit positions as the guest sees them in sip/sie.
pub const IRQ_S_SOFT: u64 = 1;
pub const IRQ_S_TIMER: u64 = 5;
pub const IRQ_S_EXT: u64 = 9;
/// VS-level bit positions in huvip/huip/huie/huideleg.
pub const IRQ_VS_SOFT: u64 = 2;
pub const IRQ_VS_TIMER: u64 = 6;
pub const IRQ_VS_EXT: u64 = 10;
pub const MIP_VSSIP: u64 = 1 << IRQ_VS_SOFT;
pub const MIP_VSTIP: u64 = 1 << IRQ_VS_TIMER;
pub const MIP_VSEIP: u64 = 1 << IRQ_VS_EXT;
pub const VS_IRQS: u64 = MIP_VSSIP | MIP_VSTIP | MIP_VSEIP;

// ---- satp / hgatp ----
pub const SATP_MODE_BARE: u64 = 0;
pub const SATP_MODE_SV39: u64 = 8;
pub const SATP_MODE_SV48: u64 = 9;
pub const SATP_MODE_SV57: u64 = 10;
pub const HGATP_MODE_SV39X4: u64 = 8;
pub const HGATP_MODE_SV48X4: u64 = 9;
pub const ATP_PPN_MASK: u64 = (1 << 44) - 1;
pub const SATP_ASID_SHIFT: u32 = 44;
pub const HGATP_VMID_SHIFT: u32 = 44;
pub const HGATP_VMID_BITS: u32 = 14;

// ---- henvcfg ----
pub const ENVCFG_STCE: u64 = 1 << 63;

/// Exception cause codes (scause/ucause values without the interrupt bit).
pub mod cause {
    pub const INST_MISALIGNED: u64 = 0;
    pub const INST_ACCESS: u64 = 1;
    pub const ILLEGAL_INST: u64 = 2;
    pub const BREAKPOINT: u64 = 3;
    pub const LOAD_MISALIGNED: u64 = 4;
    pub const LOAD_ACCESS: u64 = 5;
    pub const STORE_MISALIGNED: u64 = 6;
    pub const STORE_ACCESS: u64 = 7;
    pub const ECALL_U: u64 = 8;
    pub const ECALL_VS: u64 = 10;
    pub const INST_PAGE_FAULT: u64 = 12;
    pub const LOAD_PAGE_FAULT: u64 = 13;
    pub const STORE_PAGE_FAULT: u64 = 15;
    pub const INST_GUEST_PAGE_FAULT: u64 = 20;
    pub const LOAD_GUEST_PAGE_FAULT: u64 = 21;
    pub const VIRTUAL_INST: u64 = 22;
    pub const STORE_GUEST_PAGE_FAULT: u64 = 23;
    /// Interrupt flag in a cause register.
    pub const INTERRUPT: u64 = 1 << 63;
}
