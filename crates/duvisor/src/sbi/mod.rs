//! The SBI (v2.0) as the guest sees it, implemented in the VM plane: a guest `ecall` from
//! VS-mode exits to the vthread, which handles it here without involving the driver.

use dvext::csr::{cause, HUVSIP, HUVSTIMECMP};
use dvext::{GuestAccessFault, Hart, RemoteFence};

use crate::vm::control::Outcome;
use crate::vm::VmShared;

pub mod ext {
    pub const LEGACY_SET_TIMER: u64 = 0;
    pub const LEGACY_PUTCHAR: u64 = 1;
    pub const LEGACY_GETCHAR: u64 = 2;
    pub const LEGACY_CLEAR_IPI: u64 = 3;
    pub const LEGACY_SEND_IPI: u64 = 4;
    pub const LEGACY_FENCE_I: u64 = 5;
    pub const LEGACY_SFENCE_VMA: u64 = 6;
    pub const LEGACY_SFENCE_VMA_ASID: u64 = 7;
    pub const LEGACY_SHUTDOWN: u64 = 8;
    pub const BASE: u64 = 0x10;
    pub const TIME: u64 = 0x5449_4D45;
    pub const IPI: u64 = 0x0073_5049;
    pub const RFENCE: u64 = 0x5246_4E43;
    pub const HSM: u64 = 0x0048_534D;
    pub const SRST: u64 = 0x5352_5354;
    pub const DBCN: u64 = 0x4442_434E;
}

pub const SUCCESS: i64 = 0;
pub const ERR_FAILED: i64 = -1;
pub const ERR_NOT_SUPPORTED: i64 = -2;
pub const ERR_INVALID_PARAM: i64 = -3;
pub const ERR_INVALID_ADDRESS: i64 = -5;
pub const ERR_ALREADY_AVAILABLE: i64 = -6;

/// SBI specification version implemented: 2.0.
const SPEC_VERSION: u64 = 2 << 24;
/// Implementation ID reported by sbi_get_impl_id (not a registered ID).
pub const IMPL_ID: u64 = 0xD0;

/// What the vthread does after an SBI call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SbiNext {
    Continue,
    /// The calling hart stopped itself (HSM hart_stop).
    HartStopped,
    /// The VM is stopping (system reset/shutdown).
    VmStop,
}

const SUPPORTED: [u64; 7] = [
    ext::BASE,
    ext::TIME,
    ext::IPI,
    ext::RFENCE,
    ext::HSM,
    ext::SRST,
    ext::DBCN,
];

/// Handle the `ecall` that exited on `hart`; on return the guest's a0/a1 hold the result and
/// uepc points past the ecall (unless the hart stopped).
pub fn handle(vm: &VmShared, hart: &mut Hart) -> SbiNext {
    let a = |i: usize| hart.gpr(10 + i);
    let (eid, fid) = (a(7), a(6));
    let args = [a(0), a(1), a(2), a(3), a(4), a(5)];
    if eid <= ext::LEGACY_SHUTDOWN {
        return legacy(vm, hart, eid, args);
    }
    let (err, val, next) = match eid {
        ext::BASE => base(fid, args),
        ext::TIME if fid == 0 => {
            set_timer(hart, args[0]);
            (SUCCESS, 0, SbiNext::Continue)
        }
        ext::IPI if fid == 0 => {
            let r = for_each_hart(vm, args[0], args[1], |h| vm.irq.send_ipi(h).is_ok());
            (r, 0, SbiNext::Continue)
        }
        ext::RFENCE => rfence(vm, fid, args),
        ext::HSM => hsm(vm, fid, args),
        ext::SRST if fid == 0 => srst(vm, args),
        ext::DBCN => dbcn(vm, fid, args),
        _ => (ERR_NOT_SUPPORTED, 0, SbiNext::Continue),
    };
    hart.set_gpr(10, err as u64);
    hart.set_gpr(11, val);
    next
}

fn base(fid: u64, args: [u64; 6]) -> (i64, u64, SbiNext) {
    let v = match fid {
        0 => SPEC_VERSION,
        1 => IMPL_ID,
        2 => env!("CARGO_PKG_VERSION_MINOR").parse::<u64>().unwrap_or(0),
        3 => SUPPORTED.contains(&args[0]) as u64 | (args[0] <= ext::LEGACY_SHUTDOWN) as u64,
        4..=6 => 0,
        _ => return (ERR_NOT_SUPPORTED, 0, SbiNext::Continue),
    };
    (SUCCESS, v, SbiNext::Continue)
}

fn set_timer(hart: &mut Hart, t: u64) {
    hart.csr_write(HUVSTIMECMP, t).expect("vstimecmp");
}

/// Apply `f` to every hart selected by an SBI hart mask. Invalid selections (a bit for a hart
/// that does not exist) are an SBI_ERR_INVALID_PARAM with nothing done.
fn for_each_hart(vm: &VmShared, mask: u64, base: u64, f: impl FnMut(u32) -> bool) -> i64 {
    let n = vm.ncpus as u64;
    let harts: Vec<u32> = if base == u64::MAX {
        (0..vm.ncpus).collect()
    } else {
        if mask == 0 {
            return SUCCESS;
        }
        let mut v = Vec::new();
        for bit in 0..64 {
            if mask & (1 << bit) != 0 {
                match base.checked_add(bit) {
                    Some(h) if h < n => v.push(h as u32),
                    _ => return ERR_INVALID_PARAM,
                }
            }
        }
        v
    };
    if harts.into_iter().all(f) {
        SUCCESS
    } else {
        ERR_FAILED
    }
}

fn rfence(vm: &VmShared, fid: u64, args: [u64; 6]) -> (i64, u64, SbiNext) {
    let kind = match fid {
        0 => RemoteFence::FenceI,
        1 | 2 => RemoteFence::Vvma,
        _ => return (ERR_NOT_SUPPORTED, 0, SbiNext::Continue),
    };
    let r = for_each_hart(vm, args[0], args[1], |h| {
        vm.irq.remote_fence(h, kind).is_ok()
    });
    (r, 0, SbiNext::Continue)
}

fn hsm(vm: &VmShared, fid: u64, args: [u64; 6]) -> (i64, u64, SbiNext) {
    let cont = SbiNext::Continue;
    match fid {
        0 => {
            let (id, addr, opaque) = (args[0], args[1], args[2]);
            let Some(slot) = vm.harts.get(id as usize) else {
                return (ERR_INVALID_PARAM, 0, cont);
            };
            if !vm.ram.contains(addr, 4) {
                return (ERR_INVALID_ADDRESS, 0, cont);
            }
            if slot.start(addr, opaque) {
                (SUCCESS, 0, cont)
            } else {
                (ERR_ALREADY_AVAILABLE, 0, cont)
            }
        }
        1 => (SUCCESS, 0, SbiNext::HartStopped),
        2 => match vm.harts.get(args[0] as usize) {
            Some(slot) => (SUCCESS, slot.state() as u64, cont),
            None => (ERR_INVALID_PARAM, 0, cont),
        },
        3 => {
            // Retentive suspend (type 0) behaves as WFI-then-return: returning at once is a
            // permitted early wake-up. Default non-retentive suspend is not offered; every
            // other type is reserved or platform-specific and unimplemented (SBI v2.0 §9.4).
            match args[0] as u32 {
                0 => (SUCCESS, 0, cont),
                0x8000_0000 => (ERR_NOT_SUPPORTED, 0, cont),
                _ => (ERR_INVALID_PARAM, 0, cont),
            }
        }
        _ => (ERR_NOT_SUPPORTED, 0, cont),
    }
}

fn srst(vm: &VmShared, args: [u64; 6]) -> (i64, u64, SbiNext) {
    let (ty, reason) = (args[0] as u32, args[1] as u32);
    let outcome = match ty {
        0 => Outcome::Shutdown,
        1 => Outcome::Reset {
            warm: false,
            reason: reason as u64,
        },
        2 => Outcome::Reset {
            warm: true,
            reason: reason as u64,
        },
        _ => return (ERR_INVALID_PARAM, 0, SbiNext::Continue),
    };
    if reason > 1 && reason < 0xE000_0000 {
        return (ERR_INVALID_PARAM, 0, SbiNext::Continue);
    }
    vm.stop(outcome);
    (SUCCESS, 0, SbiNext::VmStop)
}

fn dbcn(vm: &VmShared, fid: u64, args: [u64; 6]) -> (i64, u64, SbiNext) {
    let cont = SbiNext::Continue;
    match fid {
        0 => {
            // On RV64 the address is base_lo; base_hi holds bits above 64 and must be 0.
            let (n, addr, hi) = (args[0], args[1], args[2]);
            // Bound one call so a guest cannot make the host buffer gigabytes.
            let n = n.min(4096);
            let mut buf = vec![0u8; n as usize];
            if hi != 0 || vm.ram.read(addr, &mut buf).is_err() {
                return (ERR_INVALID_PARAM, 0, cont);
            }
            vm.console_write(&buf);
            (SUCCESS, n, cont)
        }
        1 => {
            // Console input goes to the UART; the SBI console has none to give.
            let (addr, hi) = (args[1], args[2]);
            if hi != 0 || !vm.ram.contains(addr, args[0].max(1)) {
                return (ERR_INVALID_PARAM, 0, cont);
            }
            (SUCCESS, 0, cont)
        }
        2 => {
            vm.console_write(&[args[0] as u8]);
            (SUCCESS, 0, cont)
        }
        _ => (ERR_NOT_SUPPORTED, 0, cont),
    }
}

/// Load the doubleword at guest virtual address `va` as the guest itself would. Guest RAM is
/// entered in the G-stage table on first touch, so RAM the guest has not touched yet faults at
/// the G-stage: it is mapped here, as the guest's own access would have been, and the load
/// retried (each retry maps one more page: the guest's own page tables, then one or two data
/// pages). Anything else (not RAM, a VS-stage fault) fails.
fn guest_load_u64(vm: &VmShared, hart: &mut Hart, va: u64) -> Result<u64, GuestAccessFault> {
    let mut tries = 0;
    loop {
        match hart.hlv(va, 8) {
            Err(f)
                if tries < 8
                    && f.cause == cause::LOAD_GUEST_PAGE_FAULT
                    && vm.ram.contains(f.gpa, 1) =>
            {
                vm.map_ram(f.gpa).map_err(|_| f)?;
                hart.hufence_gvma(None, Some(f.gpa));
                tries += 1;
            }
            r => return r,
        }
    }
}

/// SBI v0.1 calls: a0 carries the result only.
fn legacy(vm: &VmShared, hart: &mut Hart, eid: u64, args: [u64; 6]) -> SbiNext {
    let mut next = SbiNext::Continue;
    let ret: i64 = match eid {
        ext::LEGACY_SET_TIMER => {
            set_timer(hart, args[0]);
            0
        }
        ext::LEGACY_PUTCHAR => {
            vm.console_write(&[args[0] as u8]);
            0
        }
        ext::LEGACY_GETCHAR => -1,
        ext::LEGACY_CLEAR_IPI => {
            let _ = hart.csr_write(HUVSIP, 0);
            0
        }
        ext::LEGACY_SEND_IPI
        | ext::LEGACY_FENCE_I
        | ext::LEGACY_SFENCE_VMA
        | ext::LEGACY_SFENCE_VMA_ASID => {
            // The hart mask is passed by (guest virtual) address.
            let mask = if args[0] == 0 {
                Ok(u64::MAX)
            } else {
                guest_load_u64(vm, hart, args[0])
            };
            match mask {
                Err(_) => ERR_INVALID_ADDRESS,
                Ok(m) => {
                    let base = if args[0] == 0 { u64::MAX } else { 0 };
                    let m = if base == 0 {
                        m & (u64::MAX >> (64 - vm.ncpus.min(64)))
                    } else {
                        m
                    };
                    for_each_hart(vm, m, base, |h| match eid {
                        ext::LEGACY_SEND_IPI => vm.irq.send_ipi(h).is_ok(),
                        ext::LEGACY_FENCE_I => vm.irq.remote_fence(h, RemoteFence::FenceI).is_ok(),
                        _ => vm.irq.remote_fence(h, RemoteFence::Vvma).is_ok(),
                    })
                }
            }
        }
        ext::LEGACY_SHUTDOWN => {
            vm.stop(Outcome::Shutdown);
            next = SbiNext::VmStop;
            0
        }
        _ => ERR_NOT_SUPPORTED,
    };
    hart.set_gpr(10, ret as u64);
    next
}
