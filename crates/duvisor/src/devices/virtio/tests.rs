//! The virtio-mmio transport driven the way a guest driver does: registers, feature
//! negotiation, the status machine, queue set-up, and requests through real rings in guest
//! memory (with the entropy and block devices behind it), including malformed ones.

use super::*;
use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

use vm_memory::{Address, Bytes, GuestAddress};

pub const RAM: u64 = 0x8000_0000;
pub const RAM_SIZE: usize = 1 << 20;
const DESC: u64 = RAM + 0x1000;
const AVAIL: u64 = RAM + 0x2000;
const USED: u64 = RAM + 0x3000;
const BUF: u64 = RAM + 0x10000;

/// A PLIC input that remembers its level and counts rising edges.
#[derive(Default)]
pub struct TestLine {
    pub level: AtomicBool,
    pub raises: AtomicU32,
}

impl IrqLine for TestLine {
    fn set_level(&self, level: bool) {
        if level && !self.level.swap(true, Ordering::SeqCst) {
            self.raises.fetch_add(1, Ordering::SeqCst);
        }
        if !level {
            self.level.store(false, Ordering::SeqCst);
        }
    }
}

pub struct Harness {
    pub t: VirtioMmio,
    pub mem: Arc<GuestMem>,
    pub line: Arc<TestLine>,
    pub avail_idx: u16,
    pub qsize: u16,
}

impl Harness {
    pub fn new(dev: Arc<dyn VirtioDevice>) -> Harness {
        Harness::with_mem(dev, GuestMem::anonymous(RAM, RAM_SIZE))
    }

    /// A harness on guest RAM the caller made (it must start at [`RAM`]).
    pub fn with_mem(dev: Arc<dyn VirtioDevice>, mem: GuestMem) -> Harness {
        let mem = Arc::new(mem);
        let line = Arc::new(TestLine::default());
        let t = VirtioMmio::new(dev, mem.clone(), line.clone()).unwrap();
        Harness {
            t,
            mem,
            line,
            avail_idx: 0,
            qsize: 16,
        }
    }

    pub fn r(&self, off: u64) -> u32 {
        let mut b = [0u8; 4];
        self.t.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    pub fn w(&self, off: u64, v: u32) {
        self.t.write(off, &v.to_le_bytes());
    }

    /// ACKNOWLEDGE, DRIVER, write `features`, FEATURES_OK; returns the status read back.
    pub fn negotiate(&self, features: u64) -> u32 {
        self.w(reg::STATUS, STATUS_ACKNOWLEDGE);
        self.w(reg::STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        self.w(reg::DRIVER_FEATURES_SEL, 0);
        self.w(reg::DRIVER_FEATURES, features as u32);
        self.w(reg::DRIVER_FEATURES_SEL, 1);
        self.w(reg::DRIVER_FEATURES, (features >> 32) as u32);
        self.w(
            reg::STATUS,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
        );
        self.r(reg::STATUS)
    }

    pub fn setup_queue(&self, idx: u32, size: u32, desc: u64, avail: u64, used: u64) {
        self.w(reg::QUEUE_SEL, idx);
        self.w(reg::QUEUE_NUM, size);
        self.w(reg::QUEUE_DESC_LOW, desc as u32);
        self.w(reg::QUEUE_DESC_HIGH, (desc >> 32) as u32);
        self.w(reg::QUEUE_DRIVER_LOW, avail as u32);
        self.w(reg::QUEUE_DRIVER_HIGH, (avail >> 32) as u32);
        self.w(reg::QUEUE_DEVICE_LOW, used as u32);
        self.w(reg::QUEUE_DEVICE_HIGH, (used >> 32) as u32);
        self.w(reg::QUEUE_READY, 1);
    }

    /// Negotiate VERSION_1, set up queue 0 at the standard addresses, DRIVER_OK.
    pub fn start(&self) {
        assert_ne!(self.negotiate(F_VERSION_1) & STATUS_FEATURES_OK, 0);
        self.setup_queue(0, self.qsize as u32, DESC, AVAIL, USED);
        self.w(
            reg::STATUS,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK,
        );
        assert_eq!(self.r(reg::STATUS) & STATUS_NEEDS_RESET, 0);
    }

    /// Write descriptor `i`.
    pub fn desc(&self, i: u16, addr: u64, len: u32, write: bool, next: Option<u16>) {
        let mut flags = 0u16;
        if next.is_some() {
            flags |= 1;
        }
        if write {
            flags |= 2;
        }
        let a = GuestAddress(DESC + 16 * i as u64);
        self.mem.write_obj(addr, a).unwrap();
        self.mem.write_obj(len, a.unchecked_add(8)).unwrap();
        self.mem.write_obj(flags, a.unchecked_add(12)).unwrap();
        self.mem
            .write_obj(next.unwrap_or(0), a.unchecked_add(14))
            .unwrap();
    }

    /// Make chain `head` available and notify queue 0.
    pub fn submit(&mut self, head: u16) {
        let slot = self.avail_idx % self.qsize;
        self.mem
            .write_obj(head, GuestAddress(AVAIL + 4 + 2 * slot as u64))
            .unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.mem
            .write_obj(self.avail_idx, GuestAddress(AVAIL + 2))
            .unwrap();
        self.w(reg::QUEUE_NOTIFY, 0);
    }

    pub fn used_idx(&self) -> u16 {
        self.mem.read_obj(GuestAddress(USED + 2)).unwrap()
    }

    /// Used element `i`: (id, len).
    pub fn used(&self, i: u16) -> (u32, u32) {
        let a = USED + 4 + 8 * (i % self.qsize) as u64;
        (
            self.mem.read_obj(GuestAddress(a)).unwrap(),
            self.mem.read_obj(GuestAddress(a + 4)).unwrap(),
        )
    }

    /// Wait until `cond` holds (the device works on its own thread).
    pub fn wait(&self, what: &str, cond: impl Fn(&Harness) -> bool) {
        let t0 = Instant::now();
        while !cond(self) {
            assert!(t0.elapsed() < Duration::from_secs(5), "timed out: {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    pub fn needs_reset(&self) -> bool {
        self.r(reg::STATUS) & STATUS_NEEDS_RESET != 0
    }
}

fn rng() -> Harness {
    Harness::new(Arc::new(rng::Rng))
}

#[test]
fn identification_registers() {
    let h = rng();
    assert_eq!(h.r(reg::MAGIC), 0x7472_6976);
    assert_eq!(h.r(reg::VERSION), 2);
    assert_eq!(h.r(reg::DEVICE_ID), 4);
    assert_eq!(h.r(reg::VENDOR_ID), VENDOR);
    h.w(reg::DEVICE_FEATURES_SEL, 1);
    assert_eq!(h.r(reg::DEVICE_FEATURES), 1, "VERSION_1 is bit 32");
    h.w(reg::DEVICE_FEATURES_SEL, 0);
    assert_eq!(h.r(reg::DEVICE_FEATURES), (1 << 28) | (1 << 29));
    h.w(reg::DEVICE_FEATURES_SEL, 2);
    assert_eq!(h.r(reg::DEVICE_FEATURES), 0);
    h.w(reg::QUEUE_SEL, 0);
    assert_eq!(h.r(reg::QUEUE_NUM_MAX), 64);
    h.w(reg::QUEUE_SEL, 1);
    assert_eq!(h.r(reg::QUEUE_NUM_MAX), 0, "no queue 1");
    assert_eq!(h.r(reg::SHM_LEN_LOW), u32::MAX, "no shared memory");
    // Sub-word register reads give zero, not garbage.
    let mut b = [0xffu8; 2];
    h.t.read(reg::MAGIC, &mut b);
    assert_eq!(b, [0, 0]);
}

#[test]
fn feature_negotiation() {
    let h = rng();
    // A legacy driver (no VERSION_1) is refused.
    assert_eq!(h.negotiate(0) & STATUS_FEATURES_OK, 0);
    h.w(reg::STATUS, 0);
    // Features the device did not offer are refused.
    assert_eq!(h.negotiate(F_VERSION_1 | 1 << 5) & STATUS_FEATURES_OK, 0);
    h.w(reg::STATUS, 0);
    assert_eq!(h.r(reg::STATUS), 0, "reset clears the status");
    let s = h.negotiate(F_VERSION_1 | F_RING_EVENT_IDX);
    assert_eq!(s, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
    // After FEATURES_OK, the feature set is frozen.
    h.w(reg::DRIVER_FEATURES_SEL, 0);
    h.w(reg::DRIVER_FEATURES, 1 << 5);
    assert_eq!(h.t.lock().driver_features, F_VERSION_1 | F_RING_EVENT_IDX);
}

#[test]
fn status_machine() {
    let h = rng();
    // DRIVER_OK without FEATURES_OK: the device needs a reset.
    h.w(reg::STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    h.w(
        reg::STATUS,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_DRIVER_OK,
    );
    assert!(h.needs_reset());
    assert_eq!(h.r(reg::INTERRUPT_STATUS), INT_CONFIG);
    assert!(h.line.level.load(Ordering::SeqCst));
    h.w(reg::INTERRUPT_ACK, INT_CONFIG);
    assert!(!h.line.level.load(Ordering::SeqCst));
    h.w(reg::STATUS, 0);
    assert_eq!(h.r(reg::STATUS), 0);
    // Clearing a bit without a reset is ignored.
    h.w(reg::STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    h.w(reg::STATUS, STATUS_ACKNOWLEDGE);
    assert_eq!(h.r(reg::STATUS), STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    // The driver cannot set NEEDS_RESET itself.
    h.w(
        reg::STATUS,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_NEEDS_RESET,
    );
    assert!(!h.needs_reset());
    // FAILED is recorded.
    h.w(
        reg::STATUS,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FAILED,
    );
    assert_eq!(h.r(reg::STATUS) & STATUS_FAILED, STATUS_FAILED);
}

#[test]
fn queue_setup_is_validated() {
    for (size, desc, ok) in [
        (16, DESC, true),
        (3, DESC, false),                       // not a power of two
        (0, DESC, false),                       // zero
        (128, DESC, false),                     // above QueueNumMax (64)
        (16, 0x1000_1000, false),               // descriptor table in MMIO space
        (16, RAM + RAM_SIZE as u64 - 8, false), // runs past the end of RAM
        (16, DESC + 1, false),                  // misaligned
    ] {
        let h = rng();
        assert_ne!(h.negotiate(F_VERSION_1) & STATUS_FEATURES_OK, 0);
        h.setup_queue(0, size, desc, AVAIL, USED);
        h.w(
            reg::STATUS,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK,
        );
        assert_eq!(
            h.needs_reset(),
            !ok,
            "size {size} desc {desc:#x}: needs reset should be {}",
            !ok
        );
    }
}

#[test]
fn queue_layout_is_frozen_while_ready_and_after_driver_ok() {
    let h = rng();
    h.negotiate(F_VERSION_1);
    h.setup_queue(0, 16, DESC, AVAIL, USED);
    assert_eq!(h.r(reg::QUEUE_READY), 1);
    h.w(reg::QUEUE_DESC_LOW, 0x1234_0000);
    assert_eq!(h.t.lock().queues[0].desc_table(), DESC);
    h.w(
        reg::STATUS,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK,
    );
    h.w(reg::QUEUE_READY, 0);
    assert_eq!(h.r(reg::QUEUE_READY), 1, "no changes after DRIVER_OK");
    // Reset makes the queue configurable again.
    h.w(reg::STATUS, 0);
    assert_eq!(h.r(reg::QUEUE_READY), 0);
}

#[test]
fn rng_request_through_the_ring() {
    let mut h = rng();
    h.start();
    h.mem.write_slice(&[0u8; 96], GuestAddress(BUF)).unwrap();
    h.desc(0, BUF, 32, true, Some(1));
    h.desc(1, BUF + 64, 32, true, None);
    h.submit(0);
    h.wait("rng request", |h| h.used_idx() == 1);
    assert_eq!(h.used(0), (0, 64));
    let mut b = [0u8; 96];
    h.mem.read_slice(&mut b, GuestAddress(BUF)).unwrap();
    assert!(b[..32].iter().any(|&x| x != 0) && b[64..].iter().any(|&x| x != 0));
    assert_eq!(
        &b[32..64],
        &[0u8; 32],
        "nothing written between the buffers"
    );
    h.wait("interrupt", |h| h.r(reg::INTERRUPT_STATUS) == INT_VRING);
    assert!(h.line.level.load(Ordering::SeqCst));
    h.w(reg::INTERRUPT_ACK, INT_VRING);
    assert!(!h.line.level.load(Ordering::SeqCst));
    assert_eq!(h.r(reg::INTERRUPT_STATUS), 0);
    // A second request on the same queue.
    h.desc(2, BUF, 16, true, None);
    h.submit(2);
    h.wait("second request", |h| h.used_idx() == 2);
    assert_eq!(h.used(1), (2, 16));
    assert!(!h.needs_reset());
    // A reset stops the I/O thread; the device can be brought up again.
    h.w(reg::STATUS, 0);
    assert_eq!(h.r(reg::INTERRUPT_STATUS), 0);
    assert!(!h.line.level.load(Ordering::SeqCst));
}

/// Once quiesced for VM teardown the device touches guest memory no more: a request notified
/// afterwards is not served (the driver scrubs the memory next).
#[test]
fn a_quiesced_device_leaves_guest_memory_alone() {
    let mut h = rng();
    h.start();
    h.desc(0, BUF, 32, true, None);
    h.submit(0);
    h.wait("rng request", |h| h.used_idx() == 1);
    h.t.quiesce();
    h.mem.write_slice(&[0u8; 32], GuestAddress(BUF)).unwrap();
    h.desc(1, BUF, 32, true, None);
    h.submit(1);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(h.used_idx(), 1, "served after quiesce");
    let mut b = [0xffu8; 32];
    h.mem.read_slice(&mut b, GuestAddress(BUF)).unwrap();
    assert_eq!(b, [0u8; 32], "written after quiesce");
}

/// Submit one malformed chain (written by `build`) and expect DEVICE_NEEDS_RESET with a
/// configuration interrupt, no used entry, and no write outside the named buffers.
fn expect_broken(build: impl Fn(&Harness)) {
    let mut h = rng();
    h.start();
    build(&h);
    h.submit(0);
    h.wait("needs reset", |h| h.needs_reset());
    assert_eq!(h.used_idx(), 0);
    assert_ne!(h.r(reg::INTERRUPT_STATUS) & INT_CONFIG, 0);
    // The queue is dead until reset: more requests are ignored.
    h.desc(5, BUF, 8, true, None);
    h.submit(5);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(h.used_idx(), 0);
    // Reset clears it.
    h.w(reg::STATUS, 0);
    assert!(!h.needs_reset());
}

#[test]
fn descriptor_loop_is_rejected() {
    expect_broken(|h| {
        h.desc(0, BUF, 8, true, Some(1));
        h.desc(1, BUF + 8, 8, true, Some(0));
    });
}

#[test]
fn self_loop_is_rejected() {
    expect_broken(|h| h.desc(0, BUF, 8, true, Some(0)));
}

#[test]
fn next_index_past_the_table_is_rejected() {
    expect_broken(|h| h.desc(0, BUF, 8, true, Some(200)));
}

#[test]
fn buffer_in_mmio_space_is_rejected() {
    expect_broken(|h| h.desc(0, 0x1000_1000, 8, true, None));
}

#[test]
fn buffer_past_the_end_of_ram_is_rejected() {
    expect_broken(|h| h.desc(0, RAM + RAM_SIZE as u64 - 4, 8, true, None));
}

#[test]
fn huge_length_is_rejected() {
    expect_broken(|h| h.desc(0, BUF, u32::MAX, true, None));
}

#[test]
fn readable_after_writable_is_rejected() {
    expect_broken(|h| {
        h.desc(0, BUF, 8, true, Some(1));
        h.desc(1, BUF + 8, 8, false, None);
    });
}

#[test]
fn head_index_past_the_table_is_rejected() {
    let mut h = rng();
    h.start();
    h.submit(40);
    h.wait("needs reset", |h| h.needs_reset());
    assert_eq!(h.used_idx(), 0);
}

#[test]
fn indirect_table_in_mmio_space_is_rejected() {
    expect_broken(|h| {
        let a = GuestAddress(DESC);
        h.mem.write_obj(0x1000_1000u64, a).unwrap();
        h.mem.write_obj(64u32, a.unchecked_add(8)).unwrap();
        h.mem.write_obj(4u16, a.unchecked_add(12)).unwrap(); // INDIRECT
        h.mem.write_obj(0u16, a.unchecked_add(14)).unwrap();
    });
}

#[test]
fn notify_of_unknown_queue_is_ignored() {
    let h = rng();
    h.start();
    h.w(reg::QUEUE_NOTIFY, 7);
    h.w(reg::QUEUE_NOTIFY, u32::MAX);
    assert!(!h.needs_reset());
}

#[test]
fn config_space_reads() {
    let mut src = [0u8; 8];
    src[0] = 0x11;
    src[7] = 0x88;
    let mut d = [0u8; 4];
    read_config_bytes(&src, 4, &mut d);
    assert_eq!(d, [0, 0, 0, 0x88]);
    read_config_bytes(&src, 6, &mut d);
    assert_eq!(d, [0, 0x88, 0, 0], "past the end reads zero");
    read_config_bytes(&src, u64::MAX, &mut d);
    assert_eq!(d, [0; 4]);
}
