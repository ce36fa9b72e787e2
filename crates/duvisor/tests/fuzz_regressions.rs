//! Fuzz regressions: every input saved under `fuzz/regressions/<target>/` (crashes libFuzzer
//! found, kept after the fix) runs through the same library function as the cargo-fuzz target,
//! together with hand-written seeds that pin down what the harnesses actually exercise.

use duvisor::fuzzing;
use duvisor::loader::{LoaderError, IMAGE_MAGIC2};
use duvisor::sbi::{self, SbiNext};
use duvisor::vcpu::mmio::MmioResult;

macro_rules! regression_test {
    ($name:ident, $target:literal, $f:path) => {
        #[test]
        fn $name() {
            for (path, data) in dvext::fuzzing::saved_inputs($target) {
                eprintln!("{}: {}", $target, path.display());
                let _ = $f(&data);
            }
        }
    };
}

regression_test!(mmio_decode_regressions, "mmio_decode", fuzzing::mmio_decode);
regression_test!(sbi_regressions, "sbi", fuzzing::sbi);
regression_test!(
    virtio_queue_regressions,
    "virtio_queue",
    fuzzing::virtio_queue
);
regression_test!(loader_regressions, "loader", fuzzing::loader);
regression_test!(cli_regressions, "cli", fuzzing::cli);
regression_test!(qcow2_regressions, "qcow2", fuzzing::qcow2);

// ---------------------------------------------------------------------------------------------
// mmio_decode
// ---------------------------------------------------------------------------------------------

/// An mmio_decode input: flags, instruction word, raw hutinst, raw pc, device offset, utval,
/// device reply (no RAM image: the harness places the instruction itself).
fn mmio_input(flags: u8, word: u32, pc: u64, off: u16, reply: u64) -> Vec<u8> {
    let mut v = vec![flags];
    v.extend(word.to_le_bytes());
    v.extend(0u32.to_le_bytes());
    v.extend(pc.to_le_bytes());
    v.extend(off.to_le_bytes());
    v.extend(0x1000_1000u64.to_le_bytes());
    v.extend(reply.to_le_bytes());
    v
}

const LW_A0_A1: u32 = 0x0005_a503;
const SW_A0_A1: u32 = 0x00a5_a023;
const C_LW_A0_A1: u32 = 0x4188;
/// flags: hutinst as the hardware writes it (transformed instruction).
const HTINST_HW: u8 = 1 << 3;
const STORE: u8 = 1;
/// flags: hutinst is a page-table pseudoinstruction (0x2000 with the raw hutinst 0 here).
const HTINST_PSEUDO: u8 = 2 << 3;

#[test]
fn mmio_seeds() {
    // Load decoded from hutinst, store and compressed load fetched with hlvx.
    let r = fuzzing::mmio_decode(&mmio_input(HTINST_HW, LW_A0_A1, 0x100, 0x10, 0x8433_2211));
    assert_eq!(r, MmioResult::Read);
    let r = fuzzing::mmio_decode(&mmio_input(STORE, SW_A0_A1, 0x100, 0x20, 0));
    assert_eq!(r, MmioResult::Write);
    let r = fuzzing::mmio_decode(&mmio_input(0, C_LW_A0_A1, 0x202, 0x4, 7));
    assert_eq!(r, MmioResult::Read);
    // A misaligned device access, and a load reported as a store, are access faults.
    let r = fuzzing::mmio_decode(&mmio_input(HTINST_HW, LW_A0_A1, 0x100, 0x2, 0));
    assert_eq!(r, MmioResult::Faulted);
    let r = fuzzing::mmio_decode(&mmio_input(HTINST_HW | STORE, LW_A0_A1, 0x100, 0x4, 0));
    assert_eq!(r, MmioResult::Faulted);
    // A 32-bit load in the last two bytes of the address space, its second half at VA 0
    // (VS paging on, pc at the very top).
    let r = fuzzing::mmio_decode(&mmio_input(0x84, LW_A0_A1, 0, 0x8, 1));
    assert_eq!(r, MmioResult::Read);
    // A page-table walk's fault with a load at the pc: faulted, never emulated (it was
    // emulated as a 2-byte `ld x0` for 0x3000).
    for flags in [HTINST_PSEUDO, HTINST_PSEUDO | STORE] {
        let r = fuzzing::mmio_decode(&mmio_input(flags, LW_A0_A1, 0x100, 0x8, 1));
        assert_eq!(r, MmioResult::Faulted);
    }
    let _ = fuzzing::mmio_decode(&[]);
}

// ---------------------------------------------------------------------------------------------
// sbi
// ---------------------------------------------------------------------------------------------

/// EID selectors (indices into the harness's table).
const BASE: u8 = 9;
const HSM: u8 = 13;
const SRST: u8 = 14;
const DBCN: u8 = 15;
const LEGACY_SEND_IPI: u8 = 4;

#[derive(Clone, Copy)]
enum Arg {
    Zero,
    Raw(u64),
    /// RAM base + offset.
    Ram(u32),
}

fn call(eid: u8, fid: u8, args: &[Arg]) -> Vec<u8> {
    let mut v = vec![eid, fid];
    for i in 0..6 {
        match args.get(i).copied().unwrap_or(Arg::Zero) {
            Arg::Zero => v.push(7),
            Arg::Raw(x) => {
                v.push(0);
                v.extend(x.to_le_bytes());
            }
            Arg::Ram(off) => {
                v.push(2);
                v.extend(off.to_le_bytes());
            }
        }
    }
    v
}

fn sbi_run(cfg: u8, calls: &[Vec<u8>]) -> Vec<(i64, u64, SbiNext)> {
    let mut v = vec![cfg];
    for c in calls {
        v.extend(c);
    }
    fuzzing::sbi(&v)
}

const OK: SbiNext = SbiNext::Continue;

#[test]
fn sbi_seeds() {
    let r = sbi_run(
        0,
        &[
            call(BASE, 0, &[]),
            call(BASE, 3, &[Arg::Raw(0x0048_534D)]),
            call(BASE, 3, &[Arg::Raw(0x1234_5678)]),
        ],
    );
    assert_eq!(
        r,
        vec![(0, 2 << 24, OK), (0, 1, OK), (0, 0, OK)],
        "spec version, probes"
    );

    // Two vCPUs: start hart 1, again (already started), its status, a hart that does not exist.
    let r = sbi_run(
        1,
        &[
            call(HSM, 0, &[Arg::Raw(1), Arg::Ram(0x1000)]),
            call(HSM, 0, &[Arg::Raw(1), Arg::Ram(0x1000)]),
            call(HSM, 2, &[Arg::Raw(1)]),
            call(HSM, 0, &[Arg::Raw(5), Arg::Ram(0x1000)]),
        ],
    );
    assert_eq!(
        r,
        vec![
            (sbi::SUCCESS, 0, OK),
            (sbi::ERR_ALREADY_AVAILABLE, 0, OK),
            (sbi::SUCCESS, 2, OK),
            (sbi::ERR_INVALID_PARAM, 0, OK),
        ]
    );

    // Debug console: a write from RAM, one with base_hi set; then shutdown, and a call after it.
    let r = sbi_run(
        0,
        &[
            call(DBCN, 0, &[Arg::Raw(5), Arg::Ram(0x100)]),
            call(DBCN, 0, &[Arg::Raw(5), Arg::Ram(0x100), Arg::Raw(1)]),
            call(SRST, 0, &[]),
            call(BASE, 0, &[]),
        ],
    );
    assert_eq!(
        r,
        vec![
            (sbi::SUCCESS, 5, OK),
            (sbi::ERR_INVALID_PARAM, 0, OK),
            (sbi::SUCCESS, 0, SbiNext::VmStop),
            (sbi::SUCCESS, 2 << 24, OK),
        ]
    );

    // Legacy IPI with the hart mask read from guest memory (zero there), or from a hole.
    let r = sbi_run(
        0,
        &[
            call(LEGACY_SEND_IPI, 0, &[Arg::Ram(0x100)]),
            call(LEGACY_SEND_IPI, 0, &[Arg::Raw(0x1000)]),
        ],
    );
    assert_eq!(r[0].0, sbi::SUCCESS);
    assert_eq!(r[1].0, sbi::ERR_INVALID_ADDRESS);
}

// ---------------------------------------------------------------------------------------------
// virtio_queue
// ---------------------------------------------------------------------------------------------

const BLK_RO: u8 = 0;
const RNG: u8 = 2;
/// cfg: standard queue set-up before the operations.
const SETUP: u8 = 4;
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;

/// Guest RAM for the standard set-up: available ring at 0 (ring entries = `heads`, idx
/// `avail_idx`), descriptor table at 0x200, used ring at 0x1000, buffers from 0x4000.
fn ring_image(descs: &[(u32, u32, u16, u16)], heads: &[u16], avail_idx: u16) -> Vec<u8> {
    let mut m = vec![0u8; 0x8000];
    for (i, &(off, len, flags, next)) in descs.iter().enumerate() {
        let d = &mut m[0x200 + 16 * i..0x210 + 16 * i];
        d[0..8].copy_from_slice(&(0x8000_0000u64 + off as u64).to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..16].copy_from_slice(&next.to_le_bytes());
    }
    m[2..4].copy_from_slice(&avail_idx.to_le_bytes());
    for (i, h) in heads.iter().enumerate() {
        m[4 + 2 * i..6 + 2 * i].copy_from_slice(&h.to_le_bytes());
    }
    m
}

fn virtio_run(cfg: u8, image: &[u8]) -> fuzzing::VirtioRun {
    // Queue size 16, no register operations.
    let mut v = vec![cfg, 4, 0];
    v.extend(image);
    fuzzing::virtio_queue(&v)
}

/// (used.idx, used[0].id, used[0].len) of the standard queue.
fn used(run: &fuzzing::VirtioRun) -> (u16, u32, u32) {
    let r = run.ram(0x1002, 10);
    let u = |o: usize| u32::from_le_bytes(r[o..o + 4].try_into().unwrap());
    (u16::from_le_bytes([r[0], r[1]]), u(2), u(6))
}

/// A block request: header at 0x4000, data at 0x5000 (`len` bytes, device-writable for reads),
/// status byte at 0x6000.
fn blk_request(kind: u32, sector: u64, data_writable: bool, len: u32) -> Vec<u8> {
    let dflags = F_NEXT | if data_writable { F_WRITE } else { 0 };
    let mut m = ring_image(
        &[
            (0x4000, 16, F_NEXT, 1),
            (0x5000, len, dflags, 2),
            (0x6000, 1, F_WRITE, 0),
        ],
        &[0],
        1,
    );
    m[0x4000..0x4004].copy_from_slice(&kind.to_le_bytes());
    m[0x4008..0x4010].copy_from_slice(&sector.to_le_bytes());
    m[0x6000] = 0xff;
    m
}

#[test]
fn virtio_seeds() {
    // virtio-rng fills a 16-byte buffer.
    let run = virtio_run(
        RNG | SETUP,
        &ring_image(&[(0x4000, 16, F_WRITE, 0)], &[0], 1),
    );
    assert_eq!(used(&run), (1, 0, 16));
    assert!(run.ram(0x4000, 16).iter().any(|&b| b != 0));
    assert!(!run.needs_reset);

    // virtio-blk (read-only) reads sector 1 of the scratch image (byte i is i * 7 + 1).
    let run = virtio_run(BLK_RO | SETUP, &blk_request(0, 1, true, 512));
    assert_eq!(used(&run), (1, 0, 513));
    assert_eq!(run.ram(0x6000, 1)[0], 0, "status OK");
    let want: Vec<u8> = (512..1024).map(|i| (i * 7 + 1) as u8).collect();
    assert_eq!(run.ram(0x5000, 512), want);

    // A write to the read-only disk fails (and the harness checks the image is unchanged).
    let run = virtio_run(BLK_RO | SETUP, &blk_request(1, 0, false, 512));
    assert_eq!(used(&run), (1, 0, 1));
    assert_eq!(run.ram(0x6000, 1)[0], 1, "status IOERR");

    // A writable disk takes it.
    let run = virtio_run(1 | SETUP, &blk_request(1, 0, false, 512));
    assert_eq!(run.ram(0x6000, 1)[0], 0, "status OK");

    // A chain pointing outside guest RAM breaks the queue (DEVICE_NEEDS_RESET).
    let mut m = ring_image(&[(0x4000, 16, F_WRITE, 0)], &[0], 1);
    m[0x200..0x208].copy_from_slice(&0x1000_0000u64.to_le_bytes());
    let run = virtio_run(RNG | SETUP, &m);
    assert!(run.needs_reset);
    assert_eq!(used(&run).0, 0);

    // An available index more than a queue's worth ahead (found by the fuzzer: the I/O thread
    // used to spin forever, and the reset joining it hung) breaks the queue instead.
    let run = virtio_run(
        RNG | SETUP,
        &ring_image(&[(0x4000, 16, F_WRITE, 0)], &[0], 0x100),
    );
    assert!(run.needs_reset);
    assert_eq!(used(&run).0, 0);

    let _ = fuzzing::virtio_queue(&[]);
}

// ---------------------------------------------------------------------------------------------
// loader
// ---------------------------------------------------------------------------------------------

fn loader_input(ram_size: u64, initrd: Option<u64>, fdt: u64, kernel: &[u8]) -> Vec<u8> {
    // mode: RAM at 0x8000_0000, raw sizes, initrd or not.
    let mut v = vec![2 | if initrd.is_none() { 4 } else { 0 }];
    v.extend(0u64.to_le_bytes());
    v.extend(ram_size.to_le_bytes());
    v.extend(initrd.unwrap_or(0).to_le_bytes());
    v.extend(fdt.to_le_bytes());
    v.extend(kernel);
    v
}

fn image(text_offset: u64, image_size: u64) -> Vec<u8> {
    let mut k = vec![0u8; 4096];
    k[8..16].copy_from_slice(&text_offset.to_le_bytes());
    k[16..24].copy_from_slice(&image_size.to_le_bytes());
    k[56..60].copy_from_slice(IMAGE_MAGIC2);
    k
}

#[test]
fn loader_seeds() {
    let l = fuzzing::loader(&loader_input(
        64 << 20,
        Some(0x12345),
        0x10000,
        &image(0x20_0000, 8 << 20),
    ))
    .unwrap();
    assert_eq!(l.kernel_addr, 0x8020_0000);
    assert_eq!(l.kernel_end, 0x80a0_0000);
    let r = fuzzing::loader(&loader_input(64 << 20, None, 0, &image(0x20_0000, 0)));
    assert_eq!(r, Err(LoaderError::InvalidFdtWindow(0)));
    let r = fuzzing::loader(&loader_input(
        16 << 20,
        None,
        0x1000,
        &image(0x20_0000, 15 << 20),
    ));
    assert!(matches!(r, Err(LoaderError::KernelTooBig { .. })), "{r:?}");
    let r = fuzzing::loader(&loader_input(16 << 20, None, 0x1000, b"\x7fELF"));
    assert!(matches!(r, Err(LoaderError::NotAnImage(_))), "{r:?}");
    let _ = fuzzing::loader(&[]);
}

// ---------------------------------------------------------------------------------------------
// cli
// ---------------------------------------------------------------------------------------------

/// A cli input: the arguments joined with NUL bytes.
fn argv(args: &[&[u8]]) -> Vec<u8> {
    args.join(&0u8)
}

#[test]
fn cli_seeds() {
    assert!(fuzzing::cli(&argv(&[
        b"run",
        b"--kernel",
        b"k",
        b"--memory",
        b"2G",
        b"--disk",
        b"path=/x.img,ro",
        b"--net",
        b"tap=t0,mac=02:00:00:00:00:01",
        b"--rng",
    ])));
    assert!(fuzzing::cli(&argv(&[b"demo", b"--cpus", b"4"])));
    assert!(!fuzzing::cli(&argv(&[
        b"run",
        b"--kernel",
        b"k",
        b"--memory",
        b"99999999999T",
    ])));
    assert!(!fuzzing::cli(&argv(&[
        b"run",
        b"--kernel",
        b"\xff\xfe",
        b"--net",
        b"mac=01:00:00:00:00:00",
    ])));
    assert!(!fuzzing::cli(b""));
    assert!(!fuzzing::cli(b"--help"));
}

// ---------------------------------------------------------------------------------------------
// qcow2
// ---------------------------------------------------------------------------------------------

/// A qcow2 input over the template: mode, XOR patches (offset, byte), requests (kind, offset,
/// length - 1).
fn qcow2_input(mode: u8, patches: &[(u16, u8)], reqs: &[(u8, u32, u16)]) -> Vec<u8> {
    let mut v = vec![mode | 2, patches.len() as u8];
    for &(at, x) in patches {
        v.extend(at.to_le_bytes());
        v.push(x);
    }
    for &(k, off, len) in reqs {
        v.push(k);
        v.extend(off.to_le_bytes());
        v.extend(len.to_le_bytes());
    }
    v
}

#[test]
fn qcow2_seeds() {
    // The template opens and every kind of request succeeds on it: reads of the data, the
    // compressed and the zero cluster; writes into them and far away (new L2 table, new
    // clusters); zeroing; flushes.
    let reqs = [
        (0, 0, 2047),
        (1, 100, 999),
        (1, 40_000, 4095),
        (2, 512, 511),
        (3, 0, 0),
        (0, 0, 65535),
        (2, 0, 65535),
        (3, 0, 0),
    ];
    let r = fuzzing::qcow2(&qcow2_input(1, &[], &reqs));
    assert_eq!(
        r,
        fuzzing::Qcow2Run {
            opened: true,
            ok: 8,
            failed: 0
        }
    );
    // Read-only: reads succeed, writes fail, the file is unchanged (checked inside).
    let r = fuzzing::qcow2(&qcow2_input(0, &[], &reqs));
    assert!(r.opened && r.failed == 4, "{r:?}");
    // The template's layout, for the patches below.
    let t = fuzzing::qcow2_template();
    assert_eq!(&t[0..4], b"QFI\xfb");
    // The L2 entry of guest cluster 0 pointed past the end: reads there fail, the rest works.
    let r = fuzzing::qcow2(&qcow2_input(1, &[(4 * 512 + 1, 0x40)], &reqs));
    assert!(r.opened && r.failed > 0 && r.ok > 0, "{r:?}");
    // An unknown incompatible feature bit: refused at open.
    let r = fuzzing::qcow2(&qcow2_input(1, &[(72, 0x80)], &reqs));
    assert!(!r.opened);
    // Garbage in the compressed cluster: that read fails.
    let r = fuzzing::qcow2(&qcow2_input(
        0,
        &[(6 * 512, 0xff), (6 * 512 + 1, 0xff)],
        &[(0, 512, 511)],
    ));
    assert_eq!(r.failed, 1, "{r:?}");
    // The refcount block claims the clusters after the file: allocating there fails (no
    // skipping ahead: the file would grow as far as the claim goes).
    let claim: Vec<(u16, u8)> = (7..200).map(|c| (3 * 512 + 2 * c, 0xff)).collect();
    let r = fuzzing::qcow2(&qcow2_input(1, &claim, &reqs));
    assert!(r.opened && r.failed > 0, "{r:?}");
    // Not qcow2 at all, and nothing.
    assert!(!fuzzing::qcow2(&[1, 4, 0, 1, 2, 3, 4]).opened);
    assert!(!fuzzing::qcow2(&[]).opened);
}
