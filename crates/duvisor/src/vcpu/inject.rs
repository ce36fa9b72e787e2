//! Delivering a synchronous exception into the guest from HU-mode, as the guest's own
//! hardware would have: DuVisor writes the VS trap CSRs and resumes at the guest's vstvec.

use dvext::csr::*;
use dvext::Hart;

/// Make the guest take exception `cause` with `tval` at the instruction in uepc.
pub fn inject_exception(hart: &mut Hart, cause: u64, tval: u64) {
    let csr = |h: &mut Hart, n| h.csr_read(n).expect("HU CSR exists");
    let pc = csr(hart, UEPC);
    let hs = csr(hart, HUSTATUS);
    let vss = csr(hart, HUVSSTATUS);
    let mut n = vss & !(SSTATUS_SPP | SSTATUS_SPIE | SSTATUS_SIE);
    if hs & HSTATUS_SPVP != 0 {
        n |= SSTATUS_SPP;
    }
    if vss & SSTATUS_SIE != 0 {
        n |= SSTATUS_SPIE;
    }
    let vstvec = csr(hart, HUVSTVEC);
    let w = |h: &mut Hart, n, v| h.csr_write(n, v).expect("HU CSR exists");
    w(hart, HUVSEPC, pc);
    w(hart, HUVSCAUSE, cause);
    w(hart, HUVSTVAL, tval);
    w(hart, HUVSSTATUS, n);
    w(hart, UEPC, vstvec & !3);
    w(hart, HUSTATUS, hs | HSTATUS_SPVP);
}

/// Advance the guest past the trapping instruction of `len` bytes.
pub fn skip_instruction(hart: &mut Hart, len: u64) {
    let pc = hart.csr_read(UEPC).expect("uepc");
    hart.csr_write(UEPC, pc.wrapping_add(len)).expect("uepc");
}
