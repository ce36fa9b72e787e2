//! virtio-mmio transport, version 2 ("modern", virtio 1.x §4.2.2), and the plumbing its
//! devices share.
//!
//! The transport is an [`MmioDevice`] driven from vthreads. It keeps the registers, negotiates
//! features, runs the device-status state machine and collects the queue configuration. When
//! the driver sets DRIVER_OK it hands the queues to the device, which serves them on its own
//! I/O thread. A QueueNotify write on a vthread only writes the queue's eventfd: no I/O is
//! ever done on a vCPU thread. The I/O thread raises interrupts through an [`IrqLine`] into the
//! PLIC, which rings the target vCPU's vEXT doorbell: no driver call, no vCPU stopped.
//!
//! Bad guest input never reaches the host: buffers are checked against guest RAM by
//! `vm-memory`, malformed chains stop the queue with DEVICE_NEEDS_RESET (plus a
//! configuration-change interrupt), as the spec asks.

pub mod blk;
pub mod chain;
pub mod memory;
pub mod net;
pub mod rng;

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{IrqLine, MmioDevice};
use chain::{Buffers, ChainError};
pub use memory::GuestMem;

/// "virt" in little-endian.
pub const MAGIC: u32 = 0x7472_6976;
pub const VERSION: u32 = 2;
/// Vendor ID reported to the guest ("DUVI").
pub const VENDOR: u32 = 0x4956_5544;

pub const ID_NET: u32 = 1;
pub const ID_BLOCK: u32 = 2;
pub const ID_RNG: u32 = 4;

// Device status bits.
pub const STATUS_ACKNOWLEDGE: u32 = 1;
pub const STATUS_DRIVER: u32 = 2;
pub const STATUS_DRIVER_OK: u32 = 4;
pub const STATUS_FEATURES_OK: u32 = 8;
pub const STATUS_NEEDS_RESET: u32 = 0x40;
pub const STATUS_FAILED: u32 = 0x80;

// Transport feature bits.
pub const F_RING_INDIRECT_DESC: u64 = 1 << 28;
pub const F_RING_EVENT_IDX: u64 = 1 << 29;
pub const F_VERSION_1: u64 = 1 << 32;

// Interrupt status bits.
pub const INT_VRING: u32 = 1;
pub const INT_CONFIG: u32 = 2;

// Register offsets.
pub mod reg {
    pub const MAGIC: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub const SHM_SEL: u64 = 0x0ac;
    pub const SHM_LEN_LOW: u64 = 0x0b0;
    pub const SHM_LEN_HIGH: u64 = 0x0b4;
    pub const SHM_BASE_LOW: u64 = 0x0b8;
    pub const SHM_BASE_HIGH: u64 = 0x0bc;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    pub const CONFIG: u64 = 0x100;
}

/// A device's interrupt: the virtio-mmio InterruptStatus bits and the level of its PLIC line,
/// changed together under one lock so a raise racing an acknowledge is never lost.
pub struct Interrupt {
    status: Mutex<u32>,
    line: Arc<dyn IrqLine>,
    needs_reset: AtomicBool,
}

impl Interrupt {
    pub fn new(line: Arc<dyn IrqLine>) -> Interrupt {
        Interrupt {
            status: Mutex::new(0),
            line,
            needs_reset: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, u32> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Set `bits` in InterruptStatus and raise the line (called from I/O threads).
    pub fn raise(&self, bits: u32) {
        let mut s = self.lock();
        *s |= bits;
        self.line.set_level(true);
    }

    pub fn status(&self) -> u32 {
        *self.lock()
    }

    /// InterruptACK: clear `bits`; lower the line once nothing is pending.
    pub fn ack(&self, bits: u32) {
        let mut s = self.lock();
        *s &= !bits;
        self.line.set_level(*s != 0);
    }

    /// The device hit an error it cannot report per request: set DEVICE_NEEDS_RESET and tell
    /// the driver with a configuration-change interrupt.
    pub fn needs_reset(&self, why: &dyn std::fmt::Display) {
        tracing::warn!("virtio device needs reset: {why}");
        self.needs_reset.store(true, Ordering::Release);
        self.raise(INT_CONFIG);
    }

    pub fn is_needs_reset(&self) -> bool {
        self.needs_reset.load(Ordering::Acquire)
    }

    fn reset(&self) {
        self.needs_reset.store(false, Ordering::Release);
        let mut s = self.lock();
        *s = 0;
        self.line.set_level(false);
    }
}

/// What a device gets when the driver sets DRIVER_OK.
pub struct Activation {
    pub mem: Arc<GuestMem>,
    /// The queues as the driver configured them (not-ready ones included, unused).
    pub queues: Vec<Queue>,
    /// Written (by the transport) when the driver notifies queue `i`.
    pub kicks: Vec<Arc<EventFd>>,
    /// Written when the device must stop (reset); the I/O thread then returns.
    pub stop: Arc<EventFd>,
    pub irq: Arc<Interrupt>,
    /// Negotiated features.
    pub features: u64,
}

/// A virtio device type (the part behind the transport).
pub trait VirtioDevice: Send + Sync + 'static {
    /// Virtio device ID (1 net, 2 block, 4 entropy).
    fn device_id(&self) -> u32;
    /// Device-specific feature bits offered (the transport adds VERSION_1 and ring features).
    fn features(&self) -> u64;
    /// Maximum size of each queue (the number of queues is the length).
    fn queue_max_sizes(&self) -> Vec<u16>;
    /// Read the device configuration space at `offset`.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Write the device configuration space (most devices ignore it).
    fn write_config(&self, _offset: u64, _data: &[u8]) {}
    /// Start serving the queues on an I/O thread.
    fn activate(&self, act: Activation) -> std::io::Result<JoinHandle<()>>;
}

struct State {
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    queues: Vec<Queue>,
    /// The driver wrote an invalid QueueNum (zero, not a power of two, above the maximum).
    bad_size: Vec<bool>,
    worker: Option<(JoinHandle<()>, Arc<EventFd>)>,
}

/// One virtio-mmio window with its device.
pub struct VirtioMmio {
    device: Arc<dyn VirtioDevice>,
    mem: Arc<GuestMem>,
    irq: Arc<Interrupt>,
    kicks: Vec<Arc<EventFd>>,
    offered: u64,
    state: Mutex<State>,
}

fn le32(data: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(data.try_into().ok()?))
}

impl VirtioMmio {
    pub fn new(
        device: Arc<dyn VirtioDevice>,
        mem: Arc<GuestMem>,
        line: Arc<dyn IrqLine>,
    ) -> std::io::Result<VirtioMmio> {
        let sizes = device.queue_max_sizes();
        let queues = sizes
            .iter()
            .map(|&n| Queue::new(n).map_err(|e| std::io::Error::other(format!("queue: {e}"))))
            .collect::<std::io::Result<Vec<_>>>()?;
        let kicks = sizes
            .iter()
            .map(|_| EventFd::new(EFD_NONBLOCK).map(Arc::new))
            .collect::<std::io::Result<Vec<_>>>()?;
        let offered = device.features() | F_VERSION_1 | F_RING_EVENT_IDX | F_RING_INDIRECT_DESC;
        Ok(VirtioMmio {
            device,
            mem,
            irq: Arc::new(Interrupt::new(line)),
            kicks,
            offered,
            state: Mutex::new(State {
                status: 0,
                device_features_sel: 0,
                driver_features_sel: 0,
                driver_features: 0,
                queue_sel: 0,
                bad_size: vec![false; queues.len()],
                queues,
                worker: None,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn device(&self) -> &Arc<dyn VirtioDevice> {
        &self.device
    }

    /// The device status as the driver reads it.
    pub fn status(&self) -> u32 {
        let s = self.lock().status;
        if self.irq.is_needs_reset() {
            s | STATUS_NEEDS_RESET
        } else {
            s
        }
    }

    fn read_reg(&self, off: u64) -> u32 {
        let st = self.lock();
        let q = st.queues.get(st.queue_sel as usize);
        match off {
            reg::MAGIC => MAGIC,
            reg::VERSION => VERSION,
            reg::DEVICE_ID => self.device.device_id(),
            reg::VENDOR_ID => VENDOR,
            reg::DEVICE_FEATURES => match st.device_features_sel {
                0 => self.offered as u32,
                1 => (self.offered >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => q.map_or(0, |q| q.max_size() as u32),
            reg::QUEUE_READY => q.map_or(0, |q| q.ready() as u32),
            reg::INTERRUPT_STATUS => self.irq.status(),
            reg::STATUS => {
                drop(st);
                self.status()
            }
            // No shared-memory regions: length -1.
            reg::SHM_LEN_LOW | reg::SHM_LEN_HIGH | reg::SHM_BASE_LOW | reg::SHM_BASE_HIGH => {
                u32::MAX
            }
            reg::CONFIG_GENERATION => 0,
            _ => 0,
        }
    }

    fn write_reg(&self, off: u64, v: u32) {
        if off == reg::QUEUE_NOTIFY {
            // The only work done on the vCPU thread: wake the device's I/O thread.
            if let Some(k) = self.kicks.get(v as usize) {
                let _ = k.write(1);
            }
            return;
        }
        if off == reg::INTERRUPT_ACK {
            self.irq.ack(v);
            return;
        }
        let mut st = self.lock();
        let features_open = st.status & STATUS_FEATURES_OK == 0;
        // Queues may be configured after FEATURES_OK and until DRIVER_OK.
        let queues_open = st.status & STATUS_DRIVER_OK == 0;
        let sel = st.queue_sel as usize;
        match off {
            reg::DEVICE_FEATURES_SEL => st.device_features_sel = v,
            reg::DRIVER_FEATURES_SEL => st.driver_features_sel = v,
            reg::DRIVER_FEATURES if features_open => {
                let shift = match st.driver_features_sel {
                    0 => 0,
                    1 => 32,
                    _ => return,
                };
                st.driver_features =
                    (st.driver_features & !(0xffff_ffffu64 << shift)) | (v as u64) << shift;
            }
            reg::QUEUE_SEL => st.queue_sel = v,
            reg::STATUS => self.write_status(&mut st, v),
            reg::QUEUE_NUM
            | reg::QUEUE_READY
            | reg::QUEUE_DESC_LOW
            | reg::QUEUE_DESC_HIGH
            | reg::QUEUE_DRIVER_LOW
            | reg::QUEUE_DRIVER_HIGH
            | reg::QUEUE_DEVICE_LOW
            | reg::QUEUE_DEVICE_HIGH
                if queues_open =>
            {
                let State {
                    queues, bad_size, ..
                } = &mut *st;
                let (Some(q), Some(bad)) = (queues.get_mut(sel), bad_size.get_mut(sel)) else {
                    return;
                };
                // A queue's layout may not change while it is ready.
                if q.ready() && off != reg::QUEUE_READY {
                    return;
                }
                match off {
                    // Invalid sizes (zero, not a power of two, above the maximum) are refused
                    // and leave the queue invalid so DRIVER_OK fails cleanly.
                    reg::QUEUE_NUM => {
                        *bad = v > u16::MAX as u32 || q.try_set_size(v as u16).is_err();
                    }
                    reg::QUEUE_READY => q.set_ready(v == 1),
                    reg::QUEUE_DESC_LOW => q.set_desc_table_address(Some(v), None),
                    reg::QUEUE_DESC_HIGH => q.set_desc_table_address(None, Some(v)),
                    reg::QUEUE_DRIVER_LOW => q.set_avail_ring_address(Some(v), None),
                    reg::QUEUE_DRIVER_HIGH => q.set_avail_ring_address(None, Some(v)),
                    reg::QUEUE_DEVICE_LOW => q.set_used_ring_address(Some(v), None),
                    reg::QUEUE_DEVICE_HIGH => q.set_used_ring_address(None, Some(v)),
                    _ => unreachable!(),
                }
            }
            _ => {}
        }
    }

    fn write_status(&self, st: &mut State, v: u32) {
        if v == 0 {
            self.reset(st);
            return;
        }
        let old = st.status;
        if v & old != old {
            // Clearing bits other than by a reset is not allowed: ignore.
            return;
        }
        let mut v = v & !STATUS_NEEDS_RESET;
        let new = v & !old;
        if new & STATUS_FEATURES_OK != 0 {
            let f = st.driver_features;
            if f & !self.offered != 0 || f & F_VERSION_1 == 0 {
                // Refuse the feature set: the driver reads FEATURES_OK back as clear.
                v &= !STATUS_FEATURES_OK;
            }
        }
        if new & STATUS_DRIVER_OK != 0 {
            if v & STATUS_FEATURES_OK == 0 {
                self.irq.needs_reset(&"DRIVER_OK before FEATURES_OK");
            } else if let Err(e) = self.activate(st) {
                self.irq.needs_reset(&e);
            }
        }
        st.status = v;
    }

    fn activate(&self, st: &mut State) -> Result<(), String> {
        let event_idx = st.driver_features & F_RING_EVENT_IDX != 0;
        let mut queues = Vec::new();
        for (i, q) in st.queues.iter_mut().enumerate() {
            if q.ready() {
                if st.bad_size[i] || !q.is_valid(&**self.mem) {
                    return Err(format!(
                        "queue {i} is not valid (bad size, or rings outside RAM)"
                    ));
                }
                q.set_event_idx(event_idx);
                queues.push(Queue::try_from(q.state()).map_err(|e| format!("queue {i}: {e}"))?);
            } else {
                queues.push(Queue::new(q.max_size()).map_err(|e| format!("queue {i}: {e}"))?);
            }
        }
        let stop = Arc::new(EventFd::new(EFD_NONBLOCK).map_err(|e| e.to_string())?);
        let h = self
            .device
            .activate(Activation {
                mem: self.mem.clone(),
                queues,
                kicks: self.kicks.clone(),
                stop: stop.clone(),
                irq: self.irq.clone(),
                features: st.driver_features,
            })
            .map_err(|e| format!("starting the device's I/O thread: {e}"))?;
        st.worker = Some((h, stop));
        Ok(())
    }

    fn reset(&self, st: &mut State) {
        if let Some((h, stop)) = st.worker.take() {
            let _ = stop.write(1);
            let _ = h.join();
        }
        for q in &mut st.queues {
            q.reset();
        }
        st.bad_size.fill(false);
        for k in &self.kicks {
            let _ = k.read();
        }
        st.status = 0;
        st.driver_features = 0;
        st.device_features_sel = 0;
        st.driver_features_sel = 0;
        st.queue_sel = 0;
        self.irq.reset();
    }

    /// Stop the I/O thread (VM teardown).
    pub fn shutdown(&self) {
        let mut st = self.lock();
        if let Some((h, stop)) = st.worker.take() {
            let _ = stop.write(1);
            let _ = h.join();
        }
    }
}

impl MmioDevice for VirtioMmio {
    fn read(&self, offset: u64, data: &mut [u8]) {
        if offset >= reg::CONFIG {
            self.device.read_config(offset - reg::CONFIG, data);
            return;
        }
        // Registers are 32-bit wide and accessed as such; anything else reads as zero.
        if data.len() == 4 && offset % 4 == 0 {
            data.copy_from_slice(&self.read_reg(offset).to_le_bytes());
        } else {
            data.fill(0);
        }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        if offset >= reg::CONFIG {
            self.device.write_config(offset - reg::CONFIG, data);
            return;
        }
        if offset % 4 == 0 {
            if let Some(v) = le32(data) {
                self.write_reg(offset, v);
            }
        }
    }

    fn quiesce(&self) {
        self.shutdown();
    }
}

impl Drop for VirtioMmio {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Copy `src` into a device configuration space read at `offset`; bytes past it read as zero.
pub fn read_config_bytes(src: &[u8], offset: u64, data: &mut [u8]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(i))
            .and_then(|o| src.get(o))
            .copied()
            .unwrap_or(0);
    }
}

/// Wait until one of `fds` is readable (or hung up); returns which ones. Retries on EINTR.
pub fn wait_readable(fds: &[RawFd]) -> std::io::Result<Vec<bool>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    loop {
        // SAFETY: `pfds` is a valid array of `pfds.len()` pollfd structs owned by us.
        let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, -1) };
        if n >= 0 {
            return Ok(pfds.iter().map(|p| p.revents != 0).collect());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// What a request handler did with one chain.
pub enum Handled {
    /// Completed: put it on the used ring with this many bytes written to guest memory.
    Used(u32),
    /// The chain (or the guest memory it names) is unusable: stop the queue.
    Broken(String),
}

/// Serve every available chain of `q` with `handle`, with notification suppression done
/// right (re-check after enabling notifications), and interrupt the driver if it asked.
/// Returns false when the queue broke (DEVICE_NEEDS_RESET has been set).
pub fn serve_queue(
    q: &mut Queue,
    mem: &GuestMem,
    irq: &Interrupt,
    mut handle: impl FnMut(Buffers) -> Handled,
) -> bool {
    let m: &vm_memory::GuestMemoryMmap = mem;
    let mut used_any = false;
    let ok = loop {
        if q.disable_notification(m).is_err() {
            break false;
        }
        let mut broken = None;
        loop {
            let chain = match pop_chain(q, m) {
                Ok(Some(chain)) => chain,
                Ok(None) => break,
                Err(e) => {
                    broken = Some(e);
                    break;
                }
            };
            let head = chain.head_index();
            let res = match Buffers::gather(chain) {
                Ok(b) => handle(b),
                Err(e) => Handled::Broken(e.to_string()),
            };
            match res {
                Handled::Used(n) => {
                    if q.add_used(m, head, n).is_err() {
                        broken = Some(format!("cannot complete chain {head}"));
                        break;
                    }
                    used_any = true;
                }
                Handled::Broken(e) => {
                    broken = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = broken {
            irq.needs_reset(&e);
            break false;
        }
        match q.enable_notification(m) {
            Ok(true) => continue,
            Ok(false) => break true,
            Err(_) => break false,
        }
    };
    if used_any && q.needs_notification(m).unwrap_or(true) {
        irq.raise(INT_VRING);
    }
    ok
}

/// The next available chain of `q`, if any. An available index more than a queue's worth
/// ahead of the device is a driver error: `pop_descriptor_chain` would report it only as "no
/// chain" while `enable_notification` keeps seeing a non-empty ring, so a loop over the two
/// would spin forever (and a reset, which joins the I/O thread, would hang).
pub fn pop_chain<'m>(
    q: &mut Queue,
    m: &'m vm_memory::GuestMemoryMmap,
) -> Result<Option<virtio_queue::DescriptorChain<&'m vm_memory::GuestMemoryMmap>>, String> {
    q.iter(m)
        .map(|mut avail| avail.next())
        .map_err(|e| format!("available ring: {e}"))
}

/// Map a chain-parsing error for handlers that build their own chains.
pub fn broken(e: impl std::fmt::Display) -> Handled {
    Handled::Broken(e.to_string())
}

/// Run a simple device's I/O thread: wait for kicks on any queue (or stop), then let
/// `serve(i, queue)` drain queue `i`. A queue that broke is left alone until reset.
pub fn run_queues(
    act: Activation,
    mut serve: impl FnMut(usize, &mut Queue, &GuestMem, &Interrupt) -> bool,
) {
    let Activation {
        mem,
        mut queues,
        kicks,
        stop,
        irq,
        ..
    } = act;
    let mut fds = vec![stop.as_raw_fd()];
    fds.extend(kicks.iter().map(|k| k.as_raw_fd()));
    let mut live: Vec<bool> = queues.iter().map(|q| q.ready()).collect();
    // Requests may already be waiting (a driver may notify before DRIVER_OK is seen).
    for (i, q) in queues.iter_mut().enumerate() {
        if live[i] {
            live[i] = serve(i, q, &mem, &irq);
        }
    }
    loop {
        let Ok(ready) = wait_readable(&fds) else {
            return;
        };
        if ready[0] {
            return;
        }
        for (i, q) in queues.iter_mut().enumerate() {
            if ready[i + 1] {
                let _ = kicks[i].read();
                if live[i] {
                    live[i] = serve(i, q, &mem, &irq);
                }
            }
        }
    }
}

/// Ignore a chain parsing failure type in signatures.
pub type ChainResult<T> = Result<T, ChainError>;

#[cfg(test)]
mod tests;
