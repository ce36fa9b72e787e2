//! Fuzz target `mmio_decode`: the MMIO exit path (`vcpu::mmio::emulate`) with an arbitrary
//! trapping instruction, hutinst, guest pc, device offset and device reply.

use std::sync::Mutex;

use dv_driver::DvDriver;
use dvext::csr::*;
use dvext::Hart;

use super::Input;
use crate::devices::MmioDevice;
use crate::vcpu::init_hart;
use crate::vcpu::mmio::{emulate, MmioResult};
use crate::vm::gstage::{GStage, RAM_PERMS};

const RAM_BASE: u64 = 0x8000_0000;
const RAM_SIZE: u64 = 0x1_0000;
/// The device sits where the first virtio-mmio slot is.
const DEV_BASE: u64 = 0x1000_1000;
const DEV_SIZE: u64 = 0x1000;
const VSTVEC: u64 = RAM_BASE + 0x101;

/// VS-stage (Sv39) tables the harness builds when asked: guest RAM identity-mapped with a
/// 1 GiB leaf, plus the last page of the address space and page 0 (so an instruction can
/// straddle the wrap-around), backed by RAM pages 1 and 2.
const VS_ROOT: u64 = RAM_BASE + 0xa000;
const TOP_L1: u64 = RAM_BASE + 0xb000;
const TOP_L0: u64 = RAM_BASE + 0xc000;
const LOW_L1: u64 = RAM_BASE + 0xd000;
const LOW_L0: u64 = RAM_BASE + 0xe000;
const TOP_PAGE: u64 = RAM_BASE + 0x1000;
const LOW_PAGE: u64 = RAM_BASE + 0x2000;

const PTE_V: u64 = 1;
const PTE_RWX: u64 = 0b1110;
const PTE_U: u64 = 1 << 4;
const PTE_AD: u64 = 0b11 << 6;

/// A device that answers reads with the fuzzer's bytes and records every access.
struct Recorder {
    reply: [u8; 8],
    log: Mutex<Vec<(bool, u64, Vec<u8>)>>,
}

impl MmioDevice for Recorder {
    fn read(&self, offset: u64, data: &mut [u8]) {
        let n = data.len().min(8);
        data[..n].copy_from_slice(&self.reply[..n]);
        self.log
            .lock()
            .unwrap()
            .push((false, offset, data.to_vec()));
    }

    fn write(&self, offset: u64, data: &[u8]) {
        self.log.lock().unwrap().push((true, offset, data.to_vec()));
    }
}

/// Guest-physical address of `va` under the harness's translation (None: not mapped).
fn va_to_gpa(va: u64, paged: bool) -> Option<u64> {
    let ram = |a: u64| (RAM_BASE..RAM_BASE + RAM_SIZE).contains(&a).then_some(a);
    if !paged {
        return ram(va);
    }
    match va >> 12 {
        0xf_ffff_ffff_ffff => Some(TOP_PAGE + (va & 0xfff)),
        0 => Some(LOW_PAGE + (va & 0xfff)),
        _ => ram(va),
    }
}

fn regs(h: &Hart) -> ([u64; 32], [u64; 32]) {
    (
        std::array::from_fn(|r| h.gpr(r)),
        std::array::from_fn(|r| h.fpr(r)),
    )
}

/// Input: a flags byte (bit 0 store, bit 1 VU-mode, bit 2 VS paging, bits 3-4 where hutinst
/// comes from, bits 5-7 where pc is), the instruction word, a raw hutinst, a raw pc, the device
/// offset, utval, 8 bytes of device reply, then guest RAM.
///
/// Checks: no panic; a fault touches no device and no register and enters the guest's handler
/// with an access fault; a completed access is exactly one device access of 1, 2, 4 or 8
/// naturally aligned bytes at the right offset and in the right direction, the guest advances
/// by the trapping instruction's length (2 or 4, consistent with hutinst or the fetched
/// parcel), a load changes at most one register (with the device's bytes), a store none and
/// sends a register's bytes. Returns what `emulate` reported (for tests).
pub fn mmio_decode(data: &[u8]) -> MmioResult {
    let mut inp = Input::new(data);
    let flags = inp.u8();
    let is_store = flags & 1 != 0;
    let user = flags & 2 != 0;
    let paged = flags & 4 != 0;
    let word = inp.u32();
    let htinst_raw = inp.u32() as u64;
    let pc_raw = inp.u64();
    let off = inp.u16() as u64 % DEV_SIZE;
    let tval = inp.u64();
    let mut reply = [0u8; 8];
    reply.copy_from_slice(&{
        let mut b = inp.bytes(8).to_vec();
        b.resize(8, 0);
        b
    });
    let image = inp.rest();

    let htinst = match (flags >> 3) & 3 {
        0 => 0,
        // The hardware's form: a 32-bit encoding with bit 1 cleared for a compressed original.
        1 => {
            let inst = dvext::hart::decode::decode(word);
            dvext::hart::transformed_inst(&inst)
        }
        // The pseudoinstructions of an implicit VS-stage page-table access.
        2 => [0x2000, 0x2020, 0x3000, 0x3020][htinst_raw as usize % 4],
        _ => htinst_raw,
    };
    let pc = match flags >> 5 {
        0..=2 => RAM_BASE + (pc_raw % RAM_SIZE),
        3 => RAM_BASE + 0xffe + 0x1000 * (pc_raw % 16),
        4 | 5 => u64::MAX - (pc_raw & 0xfff),
        _ => pc_raw,
    } & !1;

    let driver = DvDriver::load(1 << 20).expect("driver");
    let vm = driver.create_vm().expect("vm");
    let tables = driver.grant_memory(vm, 0x1_0000).expect("tables");
    let ram = driver.grant_memory(vm, RAM_SIZE).expect("ram");
    let mut gstage = GStage::new(tables).expect("G-stage");
    for page in (0..RAM_SIZE).step_by(0x1000) {
        gstage
            .map(RAM_BASE + page, ram.hpa_base() + page, 0x1000, RAM_PERMS)
            .expect("map");
    }
    let n = image.len().min(RAM_SIZE as usize);
    assert!(ram.write(0, &image[..n]));
    let put = |gpa: u64, bytes: &[u8]| assert!(ram.write(gpa - RAM_BASE, bytes));
    let u = if user { PTE_U } else { 0 };
    if paged {
        let table = |t: u64| ((t >> 12) << 10) | PTE_V;
        let leaf = |g: u64| ((g >> 12) << 10) | PTE_V | PTE_RWX | PTE_AD | u;
        put(VS_ROOT + 2 * 8, &leaf(RAM_BASE).to_le_bytes());
        put(VS_ROOT + 511 * 8, &table(TOP_L1).to_le_bytes());
        put(TOP_L1 + 511 * 8, &table(TOP_L0).to_le_bytes());
        put(TOP_L0 + 511 * 8, &leaf(TOP_PAGE).to_le_bytes());
        put(VS_ROOT, &table(LOW_L1).to_le_bytes());
        put(LOW_L1, &table(LOW_L0).to_le_bytes());
        put(LOW_L0, &leaf(LOW_PAGE).to_le_bytes());
    }
    // The trapping instruction where the guest's pc points (both halves, wherever they land).
    if let Some(g) = va_to_gpa(pc, paged) {
        put(g, &word.to_le_bytes()[..2]);
    }
    if let Some(g) = va_to_gpa(pc.wrapping_add(2), paged) {
        put(g, &word.to_le_bytes()[2..]);
    }

    let mut hart = driver.register_vcpu(vm, 0).expect("hart");
    init_hart(&mut hart, gstage.hugatp());
    let w = |h: &mut Hart, n: u16, v: u64| h.csr_write(n, v).expect("HU CSR");
    let hs = hart.csr_read(HUSTATUS).unwrap() & !HSTATUS_SPVP;
    w(
        &mut hart,
        HUSTATUS,
        hs | if user { 0 } else { HSTATUS_SPVP },
    );
    w(&mut hart, HUVSSTATUS, 1 << SSTATUS_FS_SHIFT);
    let satp = if paged {
        (SATP_MODE_SV39 << 60) | (VS_ROOT >> 12)
    } else {
        0
    };
    w(&mut hart, HUVSATP, satp);
    w(&mut hart, HUVSTVEC, VSTVEC);
    w(&mut hart, UEPC, pc);
    for r in 0..32 {
        let v = (r as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        hart.set_gpr(r, v);
        hart.set_fpr(r, !v);
    }
    let (gpr0, fpr0) = regs(&hart);
    // The parcel the guest's pc really reaches (the instruction may overwrite a VS PTE).
    let fetched = hart.hlvx(pc, 2).ok();

    let dev = Recorder {
        reply,
        log: Mutex::new(Vec::new()),
    };
    let gpa = DEV_BASE + off;
    let res = emulate(&mut hart, &dev, off, gpa, is_store, tval, htinst);

    let log = dev.log.into_inner().unwrap();
    let (gpr1, fpr1) = regs(&hart);
    let uepc = hart.csr_read(UEPC).unwrap();
    let ctx = format!(
        "{res:?}: word {word:#x} htinst {htinst:#x} pc {pc:#x} off {off:#x} store {is_store} log {log:?}"
    );
    if dvext::hart::mmu::is_pte_pseudoinstruction(htinst) {
        // A page-table walk's access is never an instruction to emulate.
        assert_eq!(res, MmioResult::Faulted, "{ctx}");
    }
    if res == MmioResult::Faulted {
        assert!(log.is_empty(), "{ctx}");
        assert_eq!((gpr1, fpr1), (gpr0, fpr0), "{ctx}");
        let want = if is_store {
            cause::STORE_ACCESS
        } else {
            cause::LOAD_ACCESS
        };
        assert_eq!(hart.csr_read(HUVSCAUSE).unwrap(), want, "{ctx}");
        assert_eq!(hart.csr_read(HUVSTVAL).unwrap(), tval, "{ctx}");
        assert_eq!(hart.csr_read(HUVSEPC).unwrap(), pc, "{ctx}");
        assert_eq!(uepc, VSTVEC & !3, "{ctx}");
        assert_ne!(hart.csr_read(HUSTATUS).unwrap() & HSTATUS_SPVP, 0, "{ctx}");
        return res;
    }
    assert_eq!(res == MmioResult::Write, is_store, "{ctx}");
    let [(wrote, at, bytes)] = log.as_slice() else {
        panic!("not exactly one device access: {ctx}");
    };
    assert_eq!(*wrote, is_store, "{ctx}");
    assert_eq!(*at, off, "{ctx}");
    let width = bytes.len() as u64;
    assert!(matches!(width, 1 | 2 | 4 | 8), "{ctx}");
    assert_eq!(gpa % width, 0, "misaligned access emulated: {ctx}");
    let len = uepc.wrapping_sub(pc);
    let want_len = if htinst != 0 {
        if htinst & 2 != 0 {
            4
        } else {
            2
        }
    } else {
        match fetched {
            Some(p) if p & 3 == 3 => 4,
            Some(_) => 2,
            None => panic!("emulated an instruction that cannot be fetched: {ctx}"),
        }
    };
    assert_eq!(
        len, want_len,
        "guest not advanced past the instruction: {ctx}"
    );
    let low = |v: u64| v.to_le_bytes()[..width as usize].to_vec();
    if is_store {
        assert_eq!((gpr1, fpr1), (gpr0, fpr0), "{ctx}");
        assert!(
            gpr0.iter().chain(fpr0.iter()).any(|&v| low(v) == *bytes),
            "stored bytes are no register's: {ctx}"
        );
    } else {
        let changed: Vec<u64> = (0..32)
            .filter(|&r| gpr1[r] != gpr0[r])
            .map(|r| gpr1[r])
            .chain((0..32).filter(|&r| fpr1[r] != fpr0[r]).map(|r| fpr1[r]))
            .collect();
        assert!(changed.len() <= 1, "load changed {changed:x?}: {ctx}");
        for v in changed {
            assert_eq!(low(v), *bytes, "loaded value is not the device's: {ctx}");
        }
    }
    res
}
