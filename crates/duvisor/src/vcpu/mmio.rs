//! MMIO emulation from a guest-page-fault exit: the access is decoded from hutinst (the
//! transformed trapping instruction), or read from guest memory with `hlvx` when the
//! hardware gave none, then performed on the device and the guest advanced past it.

use dvext::csr::{cause, UEPC};
use dvext::hart::decode::decode;
use dvext::hart::inst::{Inst, Op};
use dvext::Hart;

use super::inject::{inject_exception, skip_instruction};
use crate::devices::MmioDevice;

/// What happened to an MMIO access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MmioResult {
    Read,
    Write,
    /// The access was not a plain load/store of 1–8 naturally aligned bytes (AMO, misaligned,
    /// undecodable): the guest got an access fault.
    Faulted,
}

/// The trapping instruction and its length.
fn trapping_instruction(hart: &mut Hart, htinst: u64) -> Option<(Inst, u64)> {
    if dvext::hart::mmu::is_pte_pseudoinstruction(htinst) {
        // An implicit page-table access of the walk, not an instruction (see vcpu::handle_exit).
        return None;
    }
    if htinst != 0 {
        // Transformed instructions are 32-bit encodings with bit 1 cleared when the original
        // was compressed.
        let len = if htinst & 2 != 0 { 4 } else { 2 };
        return Some((decode(htinst as u32 | 3), len));
    }
    let pc = hart.csr_read(UEPC).ok()?;
    let lo = hart.hlvx(pc, 2).ok()? as u32;
    let raw = if lo & 3 == 3 {
        // The second parcel of an instruction in the last two bytes of the address space is at
        // address 0.
        lo | (hart.hlvx(pc.wrapping_add(2), 2).ok()? as u32) << 16
    } else {
        lo
    };
    let inst = decode(raw);
    Some((inst, inst.len()))
}

/// Emulate the access at `gpa` (offset `off` into `dev`) that raised a load or store
/// guest-page fault with `tval`/`htinst`.
pub fn emulate(
    hart: &mut Hart,
    dev: &dyn MmioDevice,
    off: u64,
    gpa: u64,
    is_store: bool,
    tval: u64,
    htinst: u64,
) -> MmioResult {
    let fault = |hart: &mut Hart| {
        let c = if is_store {
            cause::STORE_ACCESS
        } else {
            cause::LOAD_ACCESS
        };
        inject_exception(hart, c, tval);
        MmioResult::Faulted
    };
    let Some((inst, len)) = trapping_instruction(hart, htinst) else {
        return fault(hart);
    };
    use Op::*;
    let (width, store, signed, fp) = match inst.op {
        Lb => (1, false, true, false),
        Lh => (2, false, true, false),
        Lw => (4, false, true, false),
        Ld => (8, false, false, false),
        Lbu => (1, false, false, false),
        Lhu => (2, false, false, false),
        Lwu => (4, false, false, false),
        Flw => (4, false, false, true),
        Fld => (8, false, false, true),
        Sb => (1, true, false, false),
        Sh => (2, true, false, false),
        Sw => (4, true, false, false),
        Sd => (8, true, false, false),
        Fsw => (4, true, false, true),
        Fsd => (8, true, false, true),
        _ => return fault(hart),
    };
    if store != is_store || gpa % width != 0 {
        return fault(hart);
    }
    let w = width as usize;
    if store {
        let v = if fp {
            hart.fpr(inst.rs2 as usize)
        } else {
            hart.gpr(inst.rs2 as usize)
        };
        dev.write(off, &v.to_le_bytes()[..w]);
    } else {
        let mut buf = [0u8; 8];
        dev.read(off, &mut buf[..w]);
        let mut v = u64::from_le_bytes(buf);
        if signed {
            let shift = 64 - 8 * width;
            v = (((v << shift) as i64) >> shift) as u64;
        }
        if fp {
            let v = if width == 4 {
                v | 0xffff_ffff_0000_0000
            } else {
                v
            };
            hart.set_fpr(inst.rd as usize, v);
        } else {
            hart.set_gpr(inst.rd_arch() as usize, v);
        }
    }
    skip_instruction(hart, len);
    if store {
        MmioResult::Write
    } else {
        MmioResult::Read
    }
}
