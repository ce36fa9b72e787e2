//! Two VMs through the real DV-driver: VM B's memory holds a secret, and VM A's G-stage table
//! (which the VM plane builds itself, in memory the driver granted A) carries a faulty entry
//! pointing at B's host-physical pages — what a buggy or compromised DuVisor could write.
//! The PMC must stop every access through it before any byte moves, the driver must report
//! it (emergency list, counters, halt reason), no byte of the secret may reach A's registers
//! or memory, B's memory must stay intact, and B must keep running.
//!
//! The "test-only path" that writes the bad entry is A's own page-table grant
//! ([`MemoryGrant::store_u64`], the same call DuVisor's G-stage builder uses): no product
//! hook is needed, because the PMC, not the table builder, is the security boundary.

#[path = "../../dvext/tests/common/asm.rs"]
mod asm;

use std::collections::HashSet;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use dv_driver::{DriverCall, DvDriver, MemoryGrant, VmHandle};
use dvext::csr::*;
use dvext::{Emergency, Exit, GuestAccessFault, HaltReason, Hart, Interrupter};

const RAM_GPA: u64 = 0x8000_0000;
const RAM_SIZE: u64 = 1 << 20;
const TABLES_SIZE: u64 = 256 << 10;
/// VM B's RAM, all of it secret.
const B_RAM_SIZE: u64 = 256 << 10;
/// Where A's faulty G-stage entries put B's pages.
const BAD_GPA: u64 = 0xc000_0000;
/// A region whose G-stage *table* (not leaf) is one of B's pages.
const BAD_TABLE_GPA: u64 = 0x1_0000_0000;

const V: u64 = 1;
const LEAF: u64 = V | (1 << 1) | (1 << 2) | (1 << 3) | (1 << 4) | (1 << 6) | (1 << 7);

/// A Sv39x4 G-stage table built by the test in a VM's page-table grant.
struct GTable {
    grant: MemoryGrant,
    root: u64,
    next: u64,
}

impl GTable {
    fn new(grant: MemoryGrant) -> GTable {
        // The root is 16 KiB, 16 KiB-aligned in host-physical memory.
        let root = grant.hpa_base().next_multiple_of(16 << 10) - grant.hpa_base();
        GTable {
            grant,
            root,
            next: root + (16 << 10),
        }
    }

    fn hugatp(&self) -> u64 {
        (HGATP_MODE_SV39X4 << 60) | ((self.grant.hpa_base() + self.root) >> 12)
    }

    fn alloc(&mut self) -> u64 {
        let t = self.next;
        assert!(t + 4096 <= self.grant.len(), "page-table grant full");
        self.next += 4096;
        t
    }

    /// Offset (in the grant) of the table at `level` 1 or 0 covering `gpa`, creating it.
    fn table(&mut self, gpa: u64, level: u32) -> u64 {
        let mut table = self.root;
        for lvl in (level + 1..=2).rev() {
            let bits = if lvl == 2 { 0x7ff } else { 0x1ff };
            let slot = table + ((gpa >> (12 + 9 * lvl)) & bits) * 8;
            let pte = self.grant.load_u64(slot).unwrap();
            table = if pte & V != 0 {
                ((pte >> 10) << 12) - self.grant.hpa_base()
            } else {
                let t = self.alloc();
                let hpa = self.grant.hpa_base() + t;
                assert!(self.grant.store_u64(slot, ((hpa >> 12) << 10) | V));
                t
            };
        }
        table
    }

    /// Map the 4 KiB page at `gpa` to host-physical `hpa`, whatever `hpa` is.
    fn map(&mut self, gpa: u64, hpa: u64) {
        let t = self.table(gpa, 0);
        let slot = t + ((gpa >> 12) & 0x1ff) * 8;
        assert!(self.grant.store_u64(slot, ((hpa >> 12) << 10) | LEAF));
    }

    /// Point the level-1 entry covering `gpa` at a "table" at host-physical `hpa`.
    fn map_table(&mut self, gpa: u64, hpa: u64) {
        let t = self.table(gpa, 1);
        let slot = t + ((gpa >> 21) & 0x1ff) * 8;
        assert!(self.grant.store_u64(slot, ((hpa >> 12) << 10) | V));
    }
}

/// One VM made through the driver: RAM at `RAM_GPA`, its G-stage table, vCPU 0.
struct Vm {
    handle: VmHandle,
    ram: MemoryGrant,
    g: GTable,
    hart: Hart,
    intr: Interrupter,
}

fn make_vm(d: &DvDriver, ram_size: u64) -> Vm {
    let handle = d.create_vm().unwrap();
    let g = GTable::new(d.grant_memory(handle, TABLES_SIZE).unwrap());
    let ram = d.grant_memory(handle, ram_size).unwrap();
    let mut g = g;
    for off in (0..ram_size).step_by(4096) {
        g.map(RAM_GPA + off, ram.hpa_base() + off);
    }
    let mut hart = d.register_vcpu(handle, 0).unwrap();
    hart.csr_write(HUGATP, g.hugatp()).unwrap();
    let hs = hart.csr_read(HUSTATUS).unwrap();
    hart.csr_write(HUSTATUS, hs | HSTATUS_SPVP).unwrap();
    hart.csr_write(HUVSSTATUS, 1 << 13).unwrap(); // FS = Initial
    hart.csr_write(UEPC, RAM_GPA).unwrap();
    let intr = d.interrupter(handle);
    Vm {
        handle,
        ram,
        g,
        hart,
        intr,
    }
}

impl Vm {
    fn load(&mut self, src: &str) {
        let code = asm::assemble_at(src, RAM_GPA);
        assert!(self.ram.write(0, &code));
        self.hart.csr_write(UEPC, RAM_GPA).unwrap();
    }

    /// `huret` once; a guest that does not exit within 30 s is kicked and fails the test.
    fn run(&mut self) -> Exit {
        let (tx, rx) = mpsc::channel::<()>();
        let intr = self.intr.clone();
        let dog = std::thread::spawn(move || {
            if rx.recv_timeout(Duration::from_secs(30)) == Err(mpsc::RecvTimeoutError::Timeout) {
                let _ = intr.kick(0);
                return true;
            }
            false
        });
        let e = self.hart.huret();
        drop(tx);
        assert!(
            !dog.join().unwrap(),
            "the guest ran for 30 s without an exit"
        );
        e
    }
}

/// A deterministic pseudo-random secret (xorshift64*), so no 8-byte window of it occurs by
/// chance in code or zeroed memory.
fn secret(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    v.truncate(len);
    v
}

struct Pair {
    d: Arc<DvDriver>,
    a: Vm,
    b: Vm,
    secret: Vec<u8>,
    windows: HashSet<[u8; 8]>,
}

/// Driver, VM A, VM B with its RAM full of the secret; A's G-stage maps `BAD_GPA..+B_RAM_SIZE`
/// onto B's RAM, and the region at `BAD_TABLE_GPA` through a level-0 "table" that is B's first
/// page.
fn pair() -> Pair {
    let d = DvDriver::load(8 << 20).unwrap();
    let mut a = make_vm(&d, RAM_SIZE);
    let b = make_vm(&d, B_RAM_SIZE);
    assert_ne!(a.handle.vmid(), b.handle.vmid());
    let secret = secret(B_RAM_SIZE as usize);
    assert!(b.ram.write(0, &secret));
    for off in (0..B_RAM_SIZE).step_by(4096) {
        a.g.map(BAD_GPA + off, b.ram.hpa_base() + off);
    }
    a.g.map_table(BAD_TABLE_GPA, b.ram.hpa_base());
    // The set-up is what we think: the PMC allows A its own memory only.
    assert!(d.pmc_allows(a.handle, a.ram.hpa_base(), RAM_SIZE));
    assert!(!d.pmc_allows(a.handle, b.ram.hpa_base(), 8));
    assert!(d.pmc_allows(b.handle, b.ram.hpa_base(), B_RAM_SIZE));
    let windows = secret
        .windows(8)
        .map(|w| <[u8; 8]>::try_from(w).unwrap())
        .collect();
    Pair {
        d,
        a,
        b,
        secret,
        windows,
    }
}

impl Pair {
    /// No register of A and no 8 bytes anywhere in A's RAM hold any 8 consecutive bytes of
    /// the secret; B's memory still holds exactly the secret.
    fn assert_nothing_leaked(&self) {
        for r in 1..32 {
            let x = self.a.hart.gpr(r).to_le_bytes();
            assert!(!self.windows.contains(&x), "x{r} holds secret bytes");
            let f = self.a.hart.fpr(r).to_le_bytes();
            assert!(!self.windows.contains(&f), "f{r} holds secret bytes");
        }
        let mut ram = vec![0u8; RAM_SIZE as usize];
        assert!(self.a.ram.read(0, &mut ram));
        if let Some(i) = ram
            .windows(8)
            .position(|w| self.windows.contains(&<[u8; 8]>::try_from(w).unwrap()))
        {
            panic!("A's RAM holds secret bytes at offset {i:#x}");
        }
        let mut b = vec![0u8; B_RAM_SIZE as usize];
        assert!(self.b.ram.read(0, &mut b));
        assert!(b == self.secret, "B's memory was modified");
    }

    /// A was halted for exactly one PMC violation at (`hpa`, `va`), reported by the driver
    /// and by the exit; B was not touched by the halt.
    fn assert_reported(&self, exit: Exit, hpa: u64, va: u64) {
        let reason = HaltReason::PmcViolation { hpa, va };
        assert_eq!(exit, Exit::Halted(reason));
        assert_eq!(
            self.d.emergencies(),
            [Emergency::PmcViolation {
                vmid: self.a.handle.vmid(),
                vcpu: 0,
                hpa,
                va,
            }]
        );
        assert_eq!(self.d.stats().get(DriverCall::Emergency), 1);
        assert_eq!(self.d.halt_reason(self.a.handle), Some(reason));
        assert_eq!(self.d.halt_reason(self.b.handle), None);
    }
}

/// Sentinels in every register the attack programs load into.
const SENTINELS: &str = "
    li a0, 0x1111
    li a1, 0x2222
    li a2, 0x3333
    li s0, 0x4444
    fmv.d.x fa0, a0
";

#[test]
fn load_through_a_mapping_of_another_vms_page_is_stopped_reported_and_reads_nothing() {
    let mut p = pair();
    let target = BAD_GPA + 0x1008;
    p.a.load(&format!(
        "{SENTINELS}
        li t0, {target:#x}
        ld a0, 0(t0)
        lbu a1, 1(t0)
        fld fa0, 8(t0)
        sd a0, 0x100(zero)
        ecall
        "
    ));
    let e = p.a.run();
    p.assert_reported(e, p.b.ram.hpa_base() + 0x1000, target);
    assert_eq!(p.a.hart.gpr(10), 0x1111, "a0: nothing was loaded");
    assert_eq!(p.a.hart.gpr(11), 0x2222);
    assert_eq!(p.a.hart.fpr(10), 0x1111);
    // The guest stopped at the load itself (`ld a0, 0(t0)`), not after it.
    let pc = p.a.hart.csr_read(UEPC).unwrap();
    let mut insn = [0u8; 4];
    assert!(p.a.ram.read(pc - RAM_GPA, &mut insn));
    assert_eq!(u32::from_le_bytes(insn), 0x0002_b503, "uepc {pc:#x}");
    p.assert_nothing_leaked();
    // A stays halted, and the violation is not reported twice.
    assert!(matches!(
        p.a.run(),
        Exit::Halted(HaltReason::PmcViolation { .. })
    ));
    assert_eq!(p.d.emergencies().len(), 1);
}

#[test]
fn stores_amos_and_fetches_through_the_faulty_mapping_change_nothing() {
    for (name, insn) in [
        ("sd", "sd a2, 0(t0)"),
        ("sb", "sb a2, 5(t0)"),
        ("amoswap", "amoswap.d a0, a2, (t0)"),
        ("lr/sc", "lr.d a0, (t0)\n        sc.d a1, a2, (t0)"),
        ("fsd", "fsd fa0, 16(t0)"),
        // Fetch: B's page does not hold code, but whatever is there must not run.
        ("fetch", "jalr ra, 0(t0)"),
    ] {
        let mut p = pair();
        let target = BAD_GPA + 0x3000;
        p.a.load(&format!(
            "{SENTINELS}
            li t0, {target:#x}
            {insn}
            li a0, 0x5555
            ecall
            "
        ));
        let e = p.a.run();
        match e {
            Exit::Halted(HaltReason::PmcViolation { hpa, va }) => {
                // The exact address tried, and B's page it reached (checked per page).
                assert!((target..target + 24).contains(&va), "{name}: {va:#x}");
                assert_eq!(hpa & !0xfff, p.b.ram.hpa_base() + 0x3000, "{name}");
            }
            other => panic!("{name}: {other:?}"),
        }
        assert_eq!(p.d.emergencies().len(), 1, "{name}");
        assert_eq!(p.a.hart.gpr(10), 0x1111, "{name}: a0");
        p.assert_nothing_leaked();
    }
}

#[test]
fn a_gstage_table_in_another_vms_page_is_caught_on_the_walk() {
    let mut p = pair();
    let target = BAD_TABLE_GPA + 0x2000;
    p.a.load(&format!(
        "{SENTINELS}
        li t0, {target:#x}
        ld a0, 0(t0)
        ecall
        "
    ));
    let e = p.a.run();
    // The walk reads the level-0 entry for the page from B's first page: refused there.
    p.assert_reported(e, p.b.ram.hpa_base() + 2 * 8, target);
    assert_eq!(p.a.hart.gpr(10), 0x1111);
    p.assert_nothing_leaked();
}

#[test]
fn the_vm_plane_cannot_read_through_the_faulty_mapping_either() {
    // DuVisor's own guest accesses (hlv/hsv, used for MMIO decoding and legacy SBI) go
    // through the same G-stage table and the same check: an access fault, no data.
    let mut p = pair();
    let f = p.a.hart.hlv(BAD_GPA + 8, 8);
    assert_eq!(
        f,
        Err(GuestAccessFault {
            cause: cause::LOAD_ACCESS,
            tval: BAD_GPA + 8,
            gpa: 0
        })
    );
    assert_eq!(
        p.a.hart.hlvx(BAD_GPA, 4).map_err(|e| e.cause),
        Err(cause::LOAD_ACCESS)
    );
    assert_eq!(
        p.a.hart.hsv(BAD_GPA + 16, 8, 0x5a5a_5a5a_5a5a_5a5a),
        Err(GuestAccessFault {
            cause: cause::STORE_ACCESS,
            tval: BAD_GPA + 16,
            gpa: 0
        })
    );
    p.assert_nothing_leaked();
    // Each refused access is reported to the driver, and VM A (whose tables are corrupt) is
    // halted; B is not.
    assert_eq!(p.d.emergencies().len(), 3);
    assert!(p.d.emergencies().iter().all(|e| matches!(
        e,
        Emergency::PmcViolation { vmid, .. } if *vmid == p.a.handle.vmid()
    )));
    assert!(p.d.halt_reason(p.a.handle).is_some());
    assert!(p.d.halt_reason(p.b.handle).is_none());
    // A's own RAM works through the same path.
    assert!(p.a.hart.hsv(RAM_GPA + 0x800, 8, 0x77).is_ok());
    assert_eq!(p.a.hart.hlv(RAM_GPA + 0x800, 8), Ok(0x77));
}

#[test]
fn vm_b_keeps_running_while_and_after_vm_a_is_stopped() {
    let mut p = pair();
    // B sums its secret, doubleword by doubleword, on its own thread; A attacks meanwhile.
    let words = B_RAM_SIZE / 8;
    p.b.load(&format!(
        "
        li t0, {RAM_GPA:#x}
        li t1, {words}
        li a0, 0
    1:  ld t2, 0(t0)
        add a0, a0, t2
        addi t0, t0, 8
        addi t1, t1, -1
        bnez t1, 1b
        ecall
        "
    ));
    // B's program overwrote the start of its RAM: that is B's own data now.
    let mut b_now = vec![0u8; B_RAM_SIZE as usize];
    assert!(p.b.ram.read(0, &mut b_now));
    let want = b_now
        .chunks(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .fold(0u64, |s, w| s.wrapping_add(w));
    let Pair {
        d, mut a, mut b, ..
    } = p;
    let b_thread = std::thread::spawn(move || {
        let e = b.run();
        (e, b)
    });
    a.load(&format!("li t0, {BAD_GPA:#x}\nld a0, 0(t0)\necall\n"));
    let ea = a.run();
    assert!(
        matches!(ea, Exit::Halted(HaltReason::PmcViolation { .. })),
        "{ea:?}"
    );
    let (eb, mut b) = b_thread.join().unwrap();
    assert!(
        matches!(
            eb,
            Exit::Trap {
                cause: cause::ECALL_VS,
                ..
            }
        ),
        "B: {eb:?}"
    );
    assert_eq!(b.hart.gpr(10), want, "B computed over its own memory");
    assert_eq!(d.halt_reason(b.handle), None);
    // Tearing A down leaves B able to run on.
    d.destroy_vm(a.handle);
    b.hart.csr_write(UEPC, RAM_GPA).unwrap();
    let eb = b.run();
    assert!(
        matches!(
            eb,
            Exit::Trap {
                cause: cause::ECALL_VS,
                ..
            }
        ),
        "B after A's teardown: {eb:?}"
    );
    assert_eq!(b.hart.gpr(10), want);
    assert_eq!(d.emergencies().len(), 1);
}
