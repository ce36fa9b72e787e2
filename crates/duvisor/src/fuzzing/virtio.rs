//! Fuzz target `virtio_queue`: a virtio-mmio device (virtio-blk on a scratch image, read-only
//! or not, or virtio-rng) driven through its registers over guest RAM the input fills: queue
//! addresses and sizes, descriptor tables, available rings, notifications, resets.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use dv_driver::{DvDriver, MemoryGrant};

use super::{Input, ScratchFile};
use crate::devices::virtio::blk::{Blk, Disk, DiskSpec};
use crate::devices::virtio::rng::Rng;
use crate::devices::virtio::{
    reg, Activation, GuestMem, VirtioDevice, VirtioMmio, F_RING_EVENT_IDX, F_RING_INDIRECT_DESC,
    F_VERSION_1, INT_CONFIG, INT_VRING, STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_DRIVER_OK,
    STATUS_FEATURES_OK, STATUS_NEEDS_RESET,
};
use crate::devices::{IrqLine, MmioDevice};

const RAM_BASE: u64 = 0x8000_0000;
const RAM_SIZE: u64 = 0x1_0000;
/// Host memory on either side of guest RAM, granted to another VM: must never change.
const CANARY_SIZE: u64 = 0x1000;
/// Where the standard set-up puts queue 0: what the driver writes first, inside the first
/// 4 KiB that a default-sized fuzzer input fills (large queues make the rings overlap).
const AVAIL: u64 = RAM_BASE;
const DESC: u64 = RAM_BASE + 0x200;
const USED: u64 = RAM_BASE + 0x1000;
const DISK_BYTES: usize = 8 * 512;
const MAX_OPS: u8 = 24;

const REGS: [u64; 24] = [
    reg::MAGIC,
    reg::VERSION,
    reg::DEVICE_ID,
    reg::VENDOR_ID,
    reg::DEVICE_FEATURES,
    reg::DEVICE_FEATURES_SEL,
    reg::DRIVER_FEATURES,
    reg::DRIVER_FEATURES_SEL,
    reg::QUEUE_SEL,
    reg::QUEUE_NUM_MAX,
    reg::QUEUE_NUM,
    reg::QUEUE_READY,
    reg::QUEUE_NOTIFY,
    reg::INTERRUPT_STATUS,
    reg::INTERRUPT_ACK,
    reg::STATUS,
    reg::QUEUE_DESC_LOW,
    reg::QUEUE_DESC_HIGH,
    reg::QUEUE_DRIVER_LOW,
    reg::QUEUE_DRIVER_HIGH,
    reg::QUEUE_DEVICE_LOW,
    reg::QUEUE_DEVICE_HIGH,
    reg::SHM_SEL,
    reg::CONFIG_GENERATION,
];

/// What a `virtio_queue` run left behind.
pub struct VirtioRun {
    ram: MemoryGrant,
    /// The device's I/O thread had set DEVICE_NEEDS_RESET when it stopped.
    pub needs_reset: bool,
}

impl VirtioRun {
    /// `len` bytes of guest RAM at `offset` from its base (0x8000_0000), as the device left it.
    pub fn ram(&self, offset: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        assert!(self.ram.read(offset, &mut b), "outside guest RAM");
        b
    }
}

#[derive(Default)]
struct Line(AtomicBool);

impl IrqLine for Line {
    fn set_level(&self, level: bool) {
        self.0.store(level, Ordering::SeqCst);
    }
}

/// The device under test, with its I/O thread watched: a panic there (which the transport's
/// reset swallows when it joins the thread) is recorded and reported on the fuzzing thread, and
/// so is whether the device had asked for a reset when its thread ended.
struct Watched {
    inner: Arc<dyn VirtioDevice>,
    panicked: Arc<AtomicBool>,
    needs_reset: Arc<AtomicBool>,
}

impl VirtioDevice for Watched {
    fn device_id(&self) -> u32 {
        self.inner.device_id()
    }
    fn features(&self) -> u64 {
        self.inner.features()
    }
    fn queue_max_sizes(&self) -> Vec<u16> {
        self.inner.queue_max_sizes()
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        self.inner.read_config(offset, data)
    }
    fn write_config(&self, offset: u64, data: &[u8]) {
        self.inner.write_config(offset, data)
    }
    fn activate(&self, act: Activation) -> std::io::Result<JoinHandle<()>> {
        let irq = act.irq.clone();
        let worker = self.inner.activate(act)?;
        let (panicked, needs_reset) = (self.panicked.clone(), self.needs_reset.clone());
        std::thread::Builder::new()
            .name("virtio-watch".into())
            .spawn(move || {
                if worker.join().is_err() {
                    panicked.store(true, Ordering::SeqCst);
                }
                if irq.is_needs_reset() {
                    needs_reset.store(true, Ordering::SeqCst);
                }
            })
    }
}

struct Driver<'a> {
    t: &'a VirtioMmio,
}

impl Driver<'_> {
    fn r(&self, off: u64) -> u32 {
        let mut b = [0u8; 4];
        self.t.read(off, &mut b);
        let v = u32::from_le_bytes(b);
        match off {
            // The register keeps what the driver wrote (reserved bits included); but DRIVER_OK
            // without FEATURES_OK never runs the device: it must have asked for a reset.
            reg::STATUS => assert!(
                v & STATUS_DRIVER_OK == 0
                    || v & STATUS_FEATURES_OK != 0
                    || v & STATUS_NEEDS_RESET != 0,
                "status {v:#x}"
            ),
            reg::INTERRUPT_STATUS => {
                assert_eq!(v & !(INT_VRING | INT_CONFIG), 0, "interrupt status {v:#x}")
            }
            reg::MAGIC => assert_eq!(v, crate::devices::virtio::MAGIC),
            _ => {}
        }
        v
    }

    fn w(&self, off: u64, v: u32) {
        self.t.write(off, &v.to_le_bytes());
    }

    /// What a correct driver does: negotiate `features`, put queue 0 of `size` entries at the
    /// standard addresses, DRIVER_OK.
    fn standard_setup(&self, features: u64, size: u32) {
        self.w(reg::STATUS, 0);
        self.w(reg::STATUS, STATUS_ACKNOWLEDGE);
        self.w(reg::STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        self.w(reg::DRIVER_FEATURES_SEL, 0);
        self.w(reg::DRIVER_FEATURES, features as u32);
        self.w(reg::DRIVER_FEATURES_SEL, 1);
        self.w(reg::DRIVER_FEATURES, (features >> 32) as u32);
        let s = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK;
        self.w(reg::STATUS, s);
        self.w(reg::QUEUE_SEL, 0);
        self.w(reg::QUEUE_NUM, size);
        for (lo, a) in [
            (reg::QUEUE_DESC_LOW, DESC),
            (reg::QUEUE_DRIVER_LOW, AVAIL),
            (reg::QUEUE_DEVICE_LOW, USED),
        ] {
            self.w(lo, a as u32);
            self.w(lo + 4, (a >> 32) as u32);
        }
        self.w(reg::QUEUE_READY, 1);
        self.w(reg::STATUS, s | STATUS_DRIVER_OK);
    }
}

/// Input: byte 0 (bits 0-1 device: read-only blk, writable blk, rng; bit 2 standard set-up
/// first; bit 3 point every descriptor of the standard table into RAM; bits 4-5 offer
/// EVENT_IDX / INDIRECT_DESC; bit 6 take all device features), byte 1 queue size (log2), byte 2
/// number of register operations, 6 bytes per operation, then guest RAM.
///
/// Checks: no panic on any thread; status and interrupt registers only ever hold defined bits;
/// the host memory right below and above guest RAM is untouched; a read-only disk image is
/// byte-for-byte unchanged and no image changes size; after a reset the device is idle.
/// Returns guest RAM as the device left it and whether it asked for a reset (for tests).
pub fn virtio_queue(data: &[u8]) -> VirtioRun {
    let mut inp = Input::new(data);
    let cfg = inp.u8();
    let qsize = 1u32 << (inp.u8() % 9);
    let nops = inp.u8() % (MAX_OPS + 1);
    let ops: Vec<(u8, u8, u32)> = (0..nops).map(|_| (inp.u8(), inp.u8(), inp.u32())).collect();
    let mut image = inp.rest().to_vec();
    image.truncate(RAM_SIZE as usize);
    if cfg & 8 != 0 {
        // Descriptors of the standard table point into RAM, with modest lengths.
        let start = ((DESC - RAM_BASE) as usize).min(image.len());
        let end = image.len().min(start + 256 * 16);
        for d in image[start..end].chunks_exact_mut(16) {
            let addr = u64::from_le_bytes(d[0..8].try_into().unwrap());
            d[0..8].copy_from_slice(&(RAM_BASE + addr % RAM_SIZE).to_le_bytes());
            d[9] &= 0x1f;
            d[10] = 0;
            d[11] = 0;
        }
    }

    let driver = DvDriver::load(RAM_SIZE + 2 * CANARY_SIZE).expect("driver");
    let vm = driver.create_vm().expect("vm");
    let below = driver.grant_memory(vm, CANARY_SIZE).expect("grant");
    let ram = driver.grant_memory(vm, RAM_SIZE).expect("grant");
    let above = driver.grant_memory(vm, CANARY_SIZE).expect("grant");
    let pattern: Vec<u8> = (0..CANARY_SIZE as usize)
        .map(|i| (i as u8) ^ (i >> 8) as u8 ^ 0x3c)
        .collect();
    assert!(below.write(0, &pattern) && above.write(0, &pattern));
    assert!(ram.write(0, &image));

    let disk_data: Vec<u8> = (0..DISK_BYTES).map(|i| (i * 7 + 1) as u8).collect();
    let scratch;
    let dev: Arc<dyn VirtioDevice> = match cfg & 3 {
        d @ (0 | 1) => {
            scratch = Some(ScratchFile::new(&disk_data).expect("disk image"));
            let spec = DiskSpec {
                path: scratch.as_ref().unwrap().path().to_path_buf(),
                readonly: d == 0,
            };
            Arc::new(Blk::new(Disk::open(&spec).expect("disk")))
        }
        _ => {
            scratch = None;
            Arc::new(Rng)
        }
    };
    let offered = dev.features();
    let panicked = Arc::new(AtomicBool::new(false));
    let needs_reset = Arc::new(AtomicBool::new(false));
    let watched = Arc::new(Watched {
        inner: dev,
        panicked: panicked.clone(),
        needs_reset: needs_reset.clone(),
    });
    let mem = Arc::new(GuestMem::from_grant(ram.clone(), RAM_BASE).expect("guest memory"));
    let line = Arc::new(Line::default());
    let t = VirtioMmio::new(watched, mem, line.clone()).expect("transport");
    let drv = Driver { t: &t };

    let features = F_VERSION_1
        | if cfg & 0x10 != 0 { F_RING_EVENT_IDX } else { 0 }
        | if cfg & 0x20 != 0 {
            F_RING_INDIRECT_DESC
        } else {
            0
        }
        | if cfg & 0x40 != 0 { offered } else { 0 };
    if cfg & 4 != 0 {
        drv.standard_setup(features, qsize);
    }
    for (op, a, v) in ops {
        let value = match a >> 5 {
            0..=3 => v,
            4 | 5 => (RAM_BASE as u32).wrapping_add(v & 0xffff),
            6 => v & 0xff,
            _ => 0,
        };
        let width = [1usize, 2, 4, 8][(a & 3) as usize];
        match op % 10 {
            0 => drv.w(REGS[a as usize % REGS.len()], value),
            1 => {
                drv.r(REGS[a as usize % REGS.len()]);
            }
            2 => drv.w(reg::QUEUE_NOTIFY, v % 3),
            3 => drv.w(reg::STATUS, v & 0xff),
            4 => {
                let mut b = vec![0u8; width];
                t.read(reg::CONFIG + (v as u64 & 0x7f), &mut b);
            }
            5 => t.write(
                reg::CONFIG + (v as u64 & 0x7f),
                &v.to_le_bytes().repeat(2)[..width],
            ),
            6 => drv.standard_setup(
                F_VERSION_1 | (v as u64 & (offered | F_RING_EVENT_IDX | F_RING_INDIRECT_DESC)),
                1 << (a % 9),
            ),
            7 => drv.w(reg::STATUS, 0),
            8 => {
                let mut b = vec![0u8; width];
                t.read(v as u64 % 0x200, &mut b);
            }
            _ => t.write(v as u64 % 0x200, &v.to_le_bytes().repeat(2)[..width]),
        }
    }
    // A reset stops the I/O thread (joining it): everything the device did is done now.
    drv.w(reg::STATUS, 0);
    assert_eq!(drv.r(reg::STATUS), 0, "status after reset");
    assert_eq!(drv.r(reg::INTERRUPT_STATUS), 0, "interrupt after reset");
    assert!(!line.0.load(Ordering::SeqCst), "line up after reset");
    drop(t);
    assert!(
        !panicked.load(Ordering::SeqCst),
        "the device's I/O thread panicked"
    );

    let mut b = vec![0u8; CANARY_SIZE as usize];
    assert!(below.read(0, &mut b));
    assert!(b == pattern, "host memory below guest RAM changed");
    assert!(above.read(0, &mut b));
    assert!(b == pattern, "host memory above guest RAM changed");
    if let Some(s) = scratch {
        let now = s.contents();
        assert_eq!(now.len(), DISK_BYTES, "disk image changed size");
        if cfg & 3 == 0 {
            assert!(now == disk_data, "read-only disk image changed");
        }
    }
    VirtioRun {
        ram,
        needs_reset: needs_reset.load(Ordering::SeqCst),
    }
}
