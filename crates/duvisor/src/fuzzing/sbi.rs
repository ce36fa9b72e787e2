//! Fuzz target `sbi`: sequences of SBI calls with arbitrary a0-a7 into `sbi::handle`, on a
//! small VM built the ordinary way (`Vm::build` with a one-page Image, never started).

use std::sync::{Arc, OnceLock};

use dvext::csr::{HUVSTIMECMP, UEPC};
use dvext::Hart;

use super::{Input, ScratchFile};
use crate::loader::{IMAGE_HEADER_SIZE, IMAGE_MAGIC2};
use crate::sbi::{self, ext, SbiNext};
use crate::vm::layout::{MIN_RAM, RAM_BASE};
use crate::vm::{Boot, Vm, VmConfig, VmShared, DEFAULT_CMDLINE};

/// SBI calls made per input at most.
const MAX_CALLS: usize = 16;

const EIDS: [u64; 16] = [
    ext::LEGACY_SET_TIMER,
    ext::LEGACY_PUTCHAR,
    ext::LEGACY_GETCHAR,
    ext::LEGACY_CLEAR_IPI,
    ext::LEGACY_SEND_IPI,
    ext::LEGACY_FENCE_I,
    ext::LEGACY_SFENCE_VMA,
    ext::LEGACY_SFENCE_VMA_ASID,
    ext::LEGACY_SHUTDOWN,
    ext::BASE,
    ext::TIME,
    ext::IPI,
    ext::RFENCE,
    ext::HSM,
    ext::SRST,
    ext::DBCN,
];

/// A minimal Image (header plus `j .`), written once per process.
fn kernel() -> &'static ScratchFile {
    static K: OnceLock<ScratchFile> = OnceLock::new();
    K.get_or_init(|| {
        let mut k = vec![0u8; IMAGE_HEADER_SIZE + 4];
        k[0..4].copy_from_slice(&0x0400_006fu32.to_le_bytes()); // j 0x40
        k[8..16].copy_from_slice(&0x20_0000u64.to_le_bytes()); // text_offset
        k[16..24].copy_from_slice(&0x1000u64.to_le_bytes()); // image_size
        k[56..60].copy_from_slice(IMAGE_MAGIC2);
        k[64..68].copy_from_slice(&0x0000_006fu32.to_le_bytes()); // j .
        ScratchFile::new(&k).expect("kernel scratch file")
    })
}

/// A VM with `cpus` vCPUs and the smallest RAM, all of it mapped (so `hlv` reaches it).
pub(super) fn small_vm(cpus: u32) -> (Arc<VmShared>, Vec<Hart>) {
    let cfg = VmConfig {
        boot: Boot::Kernel {
            image: kernel().path().to_path_buf(),
            initrd: None,
            cmdline: DEFAULT_CMDLINE.into(),
        },
        cpus,
        memory: MIN_RAM,
        map_all: true,
        disks: Vec::new(),
        nets: Vec::new(),
        rng: false,
        watchdog: None,
        jit_threshold: None,
        drop_privileges: false,
        run_as: None,
    };
    Vm::build(&cfg, || Box::new(std::io::sink()))
        .expect("building the fuzzing VM")
        .into_parts()
}

fn pick(inp: &mut Input, table_or_raw: impl FnOnce(u8) -> u64) -> u64 {
    let s = inp.u8();
    if s & 0x80 != 0 {
        inp.u64()
    } else {
        table_or_raw(s)
    }
}

fn pick_arg(inp: &mut Input, vm: &VmShared) -> u64 {
    match inp.u8() % 8 {
        0 => inp.u64(),
        1 => inp.u8() as u64,
        2 => RAM_BASE + inp.u32() as u64 % vm.ram.size(),
        3 => u64::MAX,
        4 => vm.ram.end().wrapping_sub(inp.u16() as u64),
        5 => 1 << (inp.u8() % 64),
        6 => inp.u8() as i8 as i64 as u64,
        _ => 0,
    }
}

/// Input: byte 0 (bits 0-1: vCPUs - 1; bits 2-3: which vCPU calls), then per call: the EID
/// (a selector byte: bit 7 set = a raw u64 follows, else one of the implemented EIDs), the FID
/// (likewise, else 0-7) and six arguments (a selector byte each, see `pick_arg`).
///
/// Checks: no panic; a0 is an SBI error code the implementation defines; legacy calls leave a1
/// alone; no register other than a0/a1 and no uepc changes; results are in range (probe 0/1,
/// HSM states 0-2, DBCN byte counts); the timer calls program vstimecmp; only HSM stop stops
/// the hart and only a reset/shutdown stops the VM. Returns each call's (a0, a1, what next).
pub fn sbi(data: &[u8]) -> Vec<(i64, u64, SbiNext)> {
    let mut inp = Input::new(data);
    let cfg = inp.u8();
    let (vm, mut harts) = small_vm(1 + (cfg & 3) as u32);
    let me = (cfg >> 2) as usize % harts.len();
    let hart = &mut harts[me];
    let mut results = Vec::new();
    for _ in 0..MAX_CALLS {
        if inp.is_empty() {
            break;
        }
        let eid = pick(&mut inp, |s| EIDS[s as usize % EIDS.len()]);
        let fid = pick(&mut inp, |s| (s & 7) as u64);
        let args: [u64; 6] = std::array::from_fn(|_| pick_arg(&mut inp, &vm));
        for (i, a) in args.iter().enumerate() {
            hart.set_gpr(10 + i, *a);
        }
        hart.set_gpr(16, fid);
        hart.set_gpr(17, eid);
        let before: [u64; 32] = std::array::from_fn(|r| hart.gpr(r));
        let pc = hart.csr_read(UEPC).unwrap();
        let stopping = vm.control.stopping();

        let next = sbi::handle(&vm, hart);

        let ctx = format!("eid {eid:#x} fid {fid} args {args:x?} -> {next:?}");
        let after: [u64; 32] = std::array::from_fn(|r| hart.gpr(r));
        let legacy = eid <= ext::LEGACY_SHUTDOWN;
        for r in 1..32 {
            if r == 10 || (r == 11 && !legacy) {
                continue;
            }
            assert_eq!(after[r], before[r], "x{r} changed: {ctx}");
        }
        assert_eq!(hart.csr_read(UEPC).unwrap(), pc, "{ctx}");
        let err = after[10] as i64;
        let val = after[11];
        assert!(
            matches!(
                err,
                sbi::SUCCESS
                    | sbi::ERR_FAILED
                    | sbi::ERR_NOT_SUPPORTED
                    | sbi::ERR_INVALID_PARAM
                    | sbi::ERR_INVALID_ADDRESS
                    | sbi::ERR_ALREADY_AVAILABLE
            ),
            "bad error code {err}: {ctx}"
        );
        if matches!(eid, ext::LEGACY_SET_TIMER) || (eid == ext::TIME && fid == 0) {
            assert_eq!(hart.csr_read(HUVSTIMECMP).unwrap(), args[0], "{ctx}");
        }
        if err == sbi::SUCCESS && !legacy {
            match (eid, fid) {
                (ext::BASE, 3) => assert!(val <= 1, "{ctx}"),
                (ext::HSM, 2) => assert!(val <= 2, "{ctx}"),
                (ext::DBCN, 0) => assert!(val <= args[0].min(4096), "{ctx}"),
                _ => {}
            }
        }
        match next {
            SbiNext::Continue => {}
            SbiNext::HartStopped => assert!(eid == ext::HSM && fid == 1, "{ctx}"),
            SbiNext::VmStop => {
                assert!(
                    eid == ext::LEGACY_SHUTDOWN || (eid == ext::SRST && fid == 0),
                    "{ctx}"
                );
                assert!(vm.control.stopping(), "{ctx}");
            }
        }
        if !stopping && vm.control.stopping() {
            assert_eq!(next, SbiNext::VmStop, "VM stopped silently: {ctx}");
        }
        results.push((err, val, next));
    }
    results
}
