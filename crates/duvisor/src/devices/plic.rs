//! A SiFive-style platform-level interrupt controller (`riscv,plic0` / `sifive,plic-1.0.0`), laid
//! out as on QEMU's `virt` machine.
//!
//! # Register map (offsets from the PLIC base, 32-bit registers)
//!
//! | offset                        | register                                         |
//! |-------------------------------|--------------------------------------------------|
//! | `0x00_0000 + 4*src`           | priority of source `src` (0..=7; source 0: RAZ/WI) |
//! | `0x00_1000 + 4*word`          | pending bits, sources `32*word..` (read-only)    |
//! | `0x00_2000 + 0x80*ctx + 4*word` | enable bits of context `ctx`                   |
//! | `0x20_0000 + 0x1000*ctx`      | priority threshold of context `ctx` (0..=7)      |
//! | `0x20_0004 + 0x1000*ctx`      | claim (read) / complete (write) of context `ctx` |
//!
//! Only naturally aligned 32-bit accesses reach the registers; any other width or a misaligned
//! access reads as zero and writes are ignored. Unimplemented offsets read as zero.
//!
//! # Contexts
//!
//! DuVisor runs guests in (virtual) supervisor mode only and emulates no M-mode, so there is
//! exactly **one context per hart: context `i` is hart `i`'s S-mode context** (QEMU's `virt` has
//! two per hart, M then S). The device tree must describe the same mapping: the PLIC node's
//! `interrupts-extended` lists, for each hart `i` in order, `<&cpu{i}_intc 9>` (9 = supervisor
//! external interrupt), which is what [`crate::fdt`] emits. A context's output drives
//! [`ExternalInterruptSink::set_external`] for the hart of the same index.
//!
//! # Semantics
//!
//! Sources are level-triggered ([`IrqLine::set_level`]). The gateway of a source latches a
//! request (sets the pending bit) while its line is high and the source is not in service; a
//! line going low before the source is claimed withdraws the request (clears the pending bit), so
//! a device that has already been serviced by other means causes no spurious interrupt. A claim
//! returns the highest-priority pending source enabled for the context whose priority exceeds the
//! context's threshold (ties: the lowest ID; none: 0), clears its pending bit and puts it in
//! service; the gateway forwards no new request for it until a completion for it arrives from a
//! context that has it enabled (other completions are ignored, as the specification requires). On
//! completion the source is pending again at once if its line is still high.
//!
//! After every state change each context's output level is recomputed, and the sink is called
//! only for the contexts whose level changed. The sink is called with the PLIC's lock held (which
//! keeps level changes in order); it must not call back into the PLIC.

use std::sync::{Arc, Mutex, MutexGuard};

use super::{ExternalInterruptSink, IrqLine, MmioDevice};

/// Guest-physical base of the PLIC on the `virt` layout.
pub const PLIC_BASE: u64 = 0x0c00_0000;
/// Size of the PLIC's MMIO window on the `virt` layout.
pub const PLIC_SIZE: u64 = 0x60_0000;
/// Default number of interrupt sources, counting the reserved source 0 (QEMU `virt`: 96, which the
/// device tree advertises as `riscv,ndev = 95`).
pub const PLIC_DEFAULT_NUM_SOURCES: u32 = 96;
/// Largest number of sources the register layout allows (IDs 0..=1023).
pub const PLIC_MAX_NUM_SOURCES: u32 = 1024;
/// Highest priority (3 priority bits, as on QEMU `virt`).
pub const PLIC_MAX_PRIORITY: u32 = 7;
/// Largest number of contexts (= harts) that fit in the 0x60_0000-byte window.
pub const PLIC_MAX_CONTEXTS: usize = ((PLIC_SIZE - CONTEXT_BASE) / CONTEXT_STRIDE) as usize;

const PRIORITY_BASE: u64 = 0x0;
const PENDING_BASE: u64 = 0x1000;
const ENABLE_BASE: u64 = 0x2000;
const ENABLE_STRIDE: u64 = 0x80;
const CONTEXT_BASE: u64 = 0x20_0000;
const CONTEXT_STRIDE: u64 = 0x1000;
const CONTEXT_THRESHOLD: u64 = 0x0;
const CONTEXT_CLAIM: u64 = 0x4;

/// The PLIC. Create with [`Plic::new`] (or [`Plic::with_sources`]), hand out source wires with
/// [`Plic::irq_line`], and place it on the MMIO bus at [`PLIC_BASE`].
pub struct Plic {
    num_sources: u32,
    num_contexts: usize,
    sink: Arc<dyn ExternalInterruptSink>,
    state: Mutex<State>,
}

/// A bitmap with one bit per source.
#[derive(Clone)]
struct Bits(Vec<u32>);

impl Bits {
    fn new(num_sources: u32) -> Self {
        Bits(vec![0; num_sources.div_ceil(32) as usize])
    }
    fn get(&self, src: u32) -> bool {
        self.0[(src / 32) as usize] & (1 << (src % 32)) != 0
    }
    fn set(&mut self, src: u32, on: bool) {
        let word = &mut self.0[(src / 32) as usize];
        if on {
            *word |= 1 << (src % 32);
        } else {
            *word &= !(1 << (src % 32));
        }
    }
}

struct State {
    priority: Vec<u32>,
    /// The level of each source's wire.
    line: Bits,
    pending: Bits,
    /// Claimed and not yet completed.
    in_service: Bits,
    enable: Vec<Bits>,
    threshold: Vec<u32>,
    /// The level last reported to the sink, per context.
    output: Vec<bool>,
}

impl Plic {
    /// A PLIC with [`PLIC_DEFAULT_NUM_SOURCES`] sources and one S-mode context per hart.
    ///
    /// # Panics
    /// If `num_harts` is 0 or above [`PLIC_MAX_CONTEXTS`].
    pub fn new(num_harts: usize, sink: Arc<dyn ExternalInterruptSink>) -> Arc<Plic> {
        Self::with_sources(num_harts, PLIC_DEFAULT_NUM_SOURCES, sink)
    }

    /// A PLIC with `num_sources` sources counting the reserved source 0 (so IDs
    /// `1..num_sources` are usable and `riscv,ndev` is `num_sources - 1`).
    ///
    /// # Panics
    /// If `num_harts` is 0 or above [`PLIC_MAX_CONTEXTS`], or `num_sources` is not in
    /// `2..=PLIC_MAX_NUM_SOURCES`.
    pub fn with_sources(
        num_harts: usize,
        num_sources: u32,
        sink: Arc<dyn ExternalInterruptSink>,
    ) -> Arc<Plic> {
        assert!(
            (1..=PLIC_MAX_CONTEXTS).contains(&num_harts),
            "PLIC: {num_harts} harts (contexts) is outside 1..={PLIC_MAX_CONTEXTS}"
        );
        assert!(
            (2..=PLIC_MAX_NUM_SOURCES).contains(&num_sources),
            "PLIC: {num_sources} sources is outside 2..={PLIC_MAX_NUM_SOURCES}"
        );
        Arc::new(Plic {
            num_sources,
            num_contexts: num_harts,
            sink,
            state: Mutex::new(State {
                priority: vec![0; num_sources as usize],
                line: Bits::new(num_sources),
                pending: Bits::new(num_sources),
                in_service: Bits::new(num_sources),
                enable: vec![Bits::new(num_sources); num_harts],
                threshold: vec![0; num_harts],
                output: vec![false; num_harts],
            }),
        })
    }

    /// Number of sources including the reserved source 0.
    pub fn num_sources(&self) -> u32 {
        self.num_sources
    }

    /// The highest usable source ID, the device tree's `riscv,ndev`.
    pub fn ndev(&self) -> u32 {
        self.num_sources - 1
    }

    /// Number of contexts, equal to the number of harts.
    pub fn num_contexts(&self) -> usize {
        self.num_contexts
    }

    /// The wire of source `irq`, for a device to drive.
    ///
    /// # Panics
    /// If `irq` is 0 or not below [`Plic::num_sources`] (a platform configuration bug).
    pub fn irq_line(self: &Arc<Self>, irq: u32) -> Arc<dyn IrqLine> {
        assert!(
            irq != 0 && irq < self.num_sources,
            "PLIC: interrupt source {irq} is outside 1..={}",
            self.ndev()
        );
        Arc::new(PlicIrqLine {
            plic: Arc::clone(self),
            irq,
        })
    }

    /// Drive the wire of source `irq` (what [`Plic::irq_line`]'s lines call). Out-of-range IDs
    /// are ignored.
    pub fn set_level(&self, irq: u32, level: bool) {
        if irq == 0 || irq >= self.num_sources {
            return;
        }
        let mut st = self.lock();
        st.line.set(irq, level);
        if !level {
            st.pending.set(irq, false);
        } else if !st.in_service.get(irq) {
            st.pending.set(irq, true);
        }
        self.update(&mut st);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state half-updated in a way that
        // matters more than stopping the VM would, so keep going with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn valid_mask(&self, word: usize) -> u32 {
        let first = word as u32 * 32;
        let mut mask = if self.num_sources >= first + 32 {
            u32::MAX
        } else {
            (1u32 << (self.num_sources - first)) - 1
        };
        if word == 0 {
            mask &= !1; // source 0 does not exist
        }
        mask
    }

    /// The best claimable source for `ctx`: pending, enabled, priority above the threshold;
    /// highest priority first, then lowest ID.
    fn best(&self, st: &State, ctx: usize) -> Option<u32> {
        let threshold = st.threshold[ctx];
        let enable = &st.enable[ctx];
        let mut best: Option<(u32, u32)> = None;
        for (w, (&pend, &en)) in st.pending.0.iter().zip(&enable.0).enumerate() {
            let mut bits = pend & en;
            while bits != 0 {
                let src = w as u32 * 32 + bits.trailing_zeros();
                bits &= bits - 1;
                let prio = st.priority[src as usize];
                if prio > threshold && best.is_none_or(|(_, p)| prio > p) {
                    best = Some((src, prio));
                }
            }
        }
        best.map(|(src, _)| src)
    }

    fn update(&self, st: &mut State) {
        for ctx in 0..self.num_contexts {
            let level = self.best(st, ctx).is_some();
            if st.output[ctx] != level {
                st.output[ctx] = level;
                self.sink.set_external(ctx, level);
            }
        }
    }

    fn claim(&self, ctx: usize) -> u32 {
        let mut st = self.lock();
        let Some(src) = self.best(&st, ctx) else {
            return 0;
        };
        st.pending.set(src, false);
        st.in_service.set(src, true);
        self.update(&mut st);
        src
    }

    fn complete(&self, ctx: usize, src: u32) {
        if src == 0 || src >= self.num_sources {
            return;
        }
        let mut st = self.lock();
        if !st.enable[ctx].get(src) || !st.in_service.get(src) {
            return;
        }
        st.in_service.set(src, false);
        if st.line.get(src) {
            st.pending.set(src, true);
        }
        self.update(&mut st);
    }

    fn read_reg(&self, offset: u64) -> u32 {
        let words = self.num_sources.div_ceil(32) as u64;
        match offset {
            PRIORITY_BASE..PENDING_BASE => {
                let src = (offset - PRIORITY_BASE) / 4;
                if src == 0 || src >= u64::from(self.num_sources) {
                    0
                } else {
                    self.lock().priority[src as usize]
                }
            }
            PENDING_BASE..ENABLE_BASE => {
                let word = (offset - PENDING_BASE) / 4;
                if word < words {
                    self.lock().pending.0[word as usize]
                } else {
                    0
                }
            }
            ENABLE_BASE..CONTEXT_BASE => {
                let ctx = ((offset - ENABLE_BASE) / ENABLE_STRIDE) as usize;
                let word = (offset - ENABLE_BASE) % ENABLE_STRIDE / 4;
                if ctx < self.num_contexts && word < words {
                    self.lock().enable[ctx].0[word as usize]
                } else {
                    0
                }
            }
            CONTEXT_BASE..PLIC_SIZE => {
                let ctx = ((offset - CONTEXT_BASE) / CONTEXT_STRIDE) as usize;
                if ctx >= self.num_contexts {
                    return 0;
                }
                match (offset - CONTEXT_BASE) % CONTEXT_STRIDE {
                    CONTEXT_THRESHOLD => self.lock().threshold[ctx],
                    CONTEXT_CLAIM => self.claim(ctx),
                    _ => 0,
                }
            }
            _ => 0,
        }
    }

    fn write_reg(&self, offset: u64, value: u32) {
        let words = self.num_sources.div_ceil(32) as u64;
        match offset {
            PRIORITY_BASE..PENDING_BASE => {
                let src = (offset - PRIORITY_BASE) / 4;
                if src != 0 && src < u64::from(self.num_sources) {
                    let mut st = self.lock();
                    st.priority[src as usize] = value & PLIC_MAX_PRIORITY;
                    self.update(&mut st);
                }
            }
            // Pending bits are read-only.
            PENDING_BASE..ENABLE_BASE => {}
            ENABLE_BASE..CONTEXT_BASE => {
                let ctx = ((offset - ENABLE_BASE) / ENABLE_STRIDE) as usize;
                let word = ((offset - ENABLE_BASE) % ENABLE_STRIDE / 4) as usize;
                if ctx < self.num_contexts && (word as u64) < words {
                    let mut st = self.lock();
                    st.enable[ctx].0[word] = value & self.valid_mask(word);
                    self.update(&mut st);
                }
            }
            CONTEXT_BASE..PLIC_SIZE => {
                let ctx = ((offset - CONTEXT_BASE) / CONTEXT_STRIDE) as usize;
                if ctx >= self.num_contexts {
                    return;
                }
                match (offset - CONTEXT_BASE) % CONTEXT_STRIDE {
                    CONTEXT_THRESHOLD => {
                        let mut st = self.lock();
                        st.threshold[ctx] = value & PLIC_MAX_PRIORITY;
                        self.update(&mut st);
                    }
                    CONTEXT_CLAIM => self.complete(ctx, value),
                    _ => {}
                }
            }
            _ => {}
        }
    }
}

impl MmioDevice for Plic {
    fn read(&self, offset: u64, data: &mut [u8]) {
        if data.len() != 4 || offset % 4 != 0 {
            data.fill(0);
            return;
        }
        data.copy_from_slice(&self.read_reg(offset).to_le_bytes());
    }

    fn write(&self, offset: u64, data: &[u8]) {
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            return;
        };
        if offset % 4 != 0 {
            return;
        }
        self.write_reg(offset, u32::from_le_bytes(bytes));
    }
}

/// One source's wire into the PLIC.
struct PlicIrqLine {
    plic: Arc<Plic>,
    irq: u32,
}

impl IrqLine for PlicIrqLine {
    fn set_level(&self, level: bool) {
        self.plic.set_level(self.irq, level);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records every call to the sink.
    #[derive(Default)]
    struct RecSink(Mutex<Vec<(usize, bool)>>);

    impl ExternalInterruptSink for RecSink {
        fn set_external(&self, hart: usize, level: bool) {
            self.0.lock().unwrap().push((hart, level));
        }
    }

    impl RecSink {
        fn take(&self) -> Vec<(usize, bool)> {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
    }

    fn setup(harts: usize) -> (Arc<Plic>, Arc<RecSink>) {
        let sink = Arc::new(RecSink::default());
        let plic = Plic::new(harts, sink.clone());
        (plic, sink)
    }

    fn rd(p: &Plic, off: u64) -> u32 {
        let mut b = [0u8; 4];
        p.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    fn wr(p: &Plic, off: u64, v: u32) {
        p.write(off, &v.to_le_bytes());
    }

    fn prio(p: &Plic, src: u32, v: u32) {
        wr(p, 4 * u64::from(src), v);
    }

    fn enable(p: &Plic, ctx: u64, src: u32) {
        let off = ENABLE_BASE + ENABLE_STRIDE * ctx + 4 * u64::from(src / 32);
        let cur = rd(p, off);
        wr(p, off, cur | 1 << (src % 32));
    }

    fn threshold(p: &Plic, ctx: u64, v: u32) {
        wr(p, CONTEXT_BASE + CONTEXT_STRIDE * ctx, v);
    }

    fn claim(p: &Plic, ctx: u64) -> u32 {
        rd(p, CONTEXT_BASE + CONTEXT_STRIDE * ctx + 4)
    }

    fn complete(p: &Plic, ctx: u64, src: u32) {
        wr(p, CONTEXT_BASE + CONTEXT_STRIDE * ctx + 4, src);
    }

    fn pending(p: &Plic, src: u32) -> bool {
        rd(p, PENDING_BASE + 4 * u64::from(src / 32)) & (1 << (src % 32)) != 0
    }

    #[test]
    fn registers_read_back_with_masks() {
        let (p, _) = setup(2);
        assert_eq!(p.ndev(), 95);
        assert_eq!(p.num_contexts(), 2);
        prio(&p, 1, 0xffff_ffff);
        assert_eq!(rd(&p, 4), 7);
        prio(&p, 95, 3);
        assert_eq!(rd(&p, 95 * 4), 3);
        // Source 0 and sources past ndev are RAZ/WI.
        prio(&p, 0, 5);
        assert_eq!(rd(&p, 0), 0);
        prio(&p, 96, 5);
        assert_eq!(rd(&p, 96 * 4), 0);
        // Enables: bit 0 and bits beyond source 95 cannot be set.
        wr(&p, ENABLE_BASE, u32::MAX);
        assert_eq!(rd(&p, ENABLE_BASE), !1);
        wr(&p, ENABLE_BASE + 8, u32::MAX);
        assert_eq!(rd(&p, ENABLE_BASE + 8), u32::MAX);
        wr(&p, ENABLE_BASE + 12, u32::MAX);
        assert_eq!(rd(&p, ENABLE_BASE + 12), 0);
        // Context 1's enables are separate.
        assert_eq!(rd(&p, ENABLE_BASE + ENABLE_STRIDE), 0);
        // A context that does not exist.
        wr(&p, ENABLE_BASE + 2 * ENABLE_STRIDE, u32::MAX);
        assert_eq!(rd(&p, ENABLE_BASE + 2 * ENABLE_STRIDE), 0);
        threshold(&p, 1, 0xff);
        assert_eq!(rd(&p, CONTEXT_BASE + CONTEXT_STRIDE), 7);
        threshold(&p, 2, 1);
        assert_eq!(rd(&p, CONTEXT_BASE + 2 * CONTEXT_STRIDE), 0);
        // Pending is read-only.
        wr(&p, PENDING_BASE, u32::MAX);
        assert_eq!(rd(&p, PENDING_BASE), 0);
    }

    #[test]
    fn bad_widths_and_alignment_are_harmless() {
        let (p, sink) = setup(1);
        prio(&p, 1, 5);
        // Misaligned and non-32-bit reads return zero.
        let mut b = [0xffu8; 4];
        p.read(6, &mut b);
        assert_eq!(b, [0; 4]);
        let mut b = [0xffu8; 1];
        p.read(4, &mut b);
        assert_eq!(b, [0]);
        let mut b = [0xffu8; 8];
        p.read(0, &mut b);
        assert_eq!(b, [0; 8]);
        // Such writes are ignored.
        p.write(4, &[1]);
        p.write(4, &[1, 0, 0, 0, 0, 0, 0, 0]);
        p.write(5, &[1, 0, 0, 0]);
        assert_eq!(rd(&p, 4), 5);
        // Offsets past the window or in holes.
        assert_eq!(rd(&p, PLIC_SIZE), 0);
        assert_eq!(rd(&p, u64::MAX - 3), 0);
        assert_eq!(rd(&p, CONTEXT_BASE + 8), 0);
        wr(&p, u64::MAX - 3, 1);
        // A byte-wide read of the claim register must not claim.
        p.set_level(1, true);
        enable(&p, 0, 1);
        let mut b = [0u8; 1];
        p.read(CONTEXT_BASE + 4, &mut b);
        assert!(pending(&p, 1));
        assert_eq!(sink.take(), vec![(0, true)]);
    }

    #[test]
    fn claim_picks_highest_priority_then_lowest_id() {
        let (p, _) = setup(1);
        for (src, pr) in [(3, 2), (5, 6), (7, 6), (40, 1), (90, 7)] {
            prio(&p, src, pr);
            enable(&p, 0, src);
        }
        for src in [3, 5, 7, 40] {
            p.set_level(src, true);
        }
        assert_eq!(claim(&p, 0), 5);
        assert!(!pending(&p, 5));
        assert_eq!(claim(&p, 0), 7);
        assert_eq!(claim(&p, 0), 3);
        assert_eq!(claim(&p, 0), 40);
        assert_eq!(claim(&p, 0), 0);
        // A late, higher-priority source jumps the queue.
        p.set_level(90, true);
        assert_eq!(claim(&p, 0), 90);
    }

    #[test]
    fn threshold_and_zero_priority_mask_sources() {
        let (p, sink) = setup(1);
        enable(&p, 0, 4);
        p.set_level(4, true);
        // Priority 0 never interrupts.
        assert!(pending(&p, 4));
        assert_eq!(claim(&p, 0), 0);
        assert!(sink.take().is_empty());
        prio(&p, 4, 3);
        assert_eq!(sink.take(), vec![(0, true)]);
        threshold(&p, 0, 3);
        assert_eq!(sink.take(), vec![(0, false)]);
        assert_eq!(claim(&p, 0), 0);
        threshold(&p, 0, 2);
        assert_eq!(sink.take(), vec![(0, true)]);
        assert_eq!(claim(&p, 0), 4);
        assert_eq!(sink.take(), vec![(0, false)]);
    }

    #[test]
    fn level_sources_repend_on_complete_while_high() {
        let (p, sink) = setup(1);
        prio(&p, 10, 1);
        enable(&p, 0, 10);
        p.set_level(10, true);
        assert_eq!(sink.take(), vec![(0, true)]);
        assert_eq!(claim(&p, 0), 10);
        assert_eq!(sink.take(), vec![(0, false)]);
        // Still high while in service: not pending, no interrupt.
        p.set_level(10, true);
        assert!(!pending(&p, 10));
        assert!(sink.take().is_empty());
        assert_eq!(claim(&p, 0), 0);
        // Completion with the line still high re-pends it.
        complete(&p, 0, 10);
        assert!(pending(&p, 10));
        assert_eq!(sink.take(), vec![(0, true)]);
        assert_eq!(claim(&p, 0), 10);
        assert_eq!(sink.take(), vec![(0, false)]);
        // The device drops its line, then the handler completes: nothing more.
        p.set_level(10, false);
        complete(&p, 0, 10);
        assert!(!pending(&p, 10));
        assert!(sink.take().is_empty());
        // Raising it again interrupts again.
        p.set_level(10, true);
        assert_eq!(sink.take(), vec![(0, true)]);
    }

    #[test]
    fn line_dropping_before_claim_withdraws_request() {
        let (p, sink) = setup(1);
        prio(&p, 2, 1);
        enable(&p, 0, 2);
        p.set_level(2, true);
        p.set_level(2, false);
        assert!(!pending(&p, 2));
        assert_eq!(claim(&p, 0), 0);
        assert_eq!(sink.take(), vec![(0, true), (0, false)]);
    }

    #[test]
    fn complete_is_ignored_unless_enabled_and_in_service() {
        let (p, sink) = setup(2);
        prio(&p, 6, 1);
        enable(&p, 0, 6);
        p.set_level(6, true);
        assert_eq!(claim(&p, 0), 6);
        // Not claimed/in service: ignored.
        complete(&p, 0, 7);
        complete(&p, 0, 0);
        complete(&p, 0, 5000);
        // Context 1 does not have source 6 enabled: ignored.
        complete(&p, 1, 6);
        assert!(!pending(&p, 6));
        assert_eq!(claim(&p, 0), 0);
        complete(&p, 0, 6);
        assert!(pending(&p, 6));
        assert_eq!(sink.take(), vec![(0, true), (0, false), (0, true)]);
        // A second completion does nothing.
        assert_eq!(claim(&p, 0), 6);
        p.set_level(6, false);
        complete(&p, 0, 6);
        p.set_level(6, true);
        assert_eq!(sink.take(), vec![(0, false), (0, true)]);
        complete(&p, 0, 6);
        assert!(pending(&p, 6));
        assert!(sink.take().is_empty());
        assert_eq!(claim(&p, 0), 6);
        assert_eq!(sink.take(), vec![(0, false)]);
    }

    #[test]
    fn per_hart_enables_route_interrupts() {
        let (p, sink) = setup(3);
        for src in 1..=3 {
            prio(&p, src, 1);
        }
        enable(&p, 0, 1);
        enable(&p, 1, 2);
        enable(&p, 2, 2);
        enable(&p, 2, 3);
        p.set_level(1, true);
        assert_eq!(sink.take(), vec![(0, true)]);
        p.set_level(2, true);
        assert_eq!(sink.take(), vec![(1, true), (2, true)]);
        // Hart 0 cannot claim source 2.
        assert_eq!(claim(&p, 0), 1);
        assert_eq!(sink.take(), vec![(0, false)]);
        assert_eq!(claim(&p, 0), 0);
        // Hart 2 claims it first; hart 1's output drops with it.
        assert_eq!(claim(&p, 2), 2);
        assert_eq!(sink.take(), vec![(1, false), (2, false)]);
        assert_eq!(claim(&p, 1), 0);
        p.set_level(3, true);
        assert_eq!(sink.take(), vec![(2, true)]);
        // Disabling source 3 on hart 2 lowers its output.
        wr(&p, ENABLE_BASE + 2 * ENABLE_STRIDE, 1 << 2);
        assert_eq!(sink.take(), vec![(2, false)]);
        // Hart 1 may complete source 2 (it has it enabled), which re-pends it.
        complete(&p, 1, 2);
        assert_eq!(sink.take(), vec![(1, true), (2, true)]);
    }

    #[test]
    fn sink_is_told_only_about_changes() {
        let (p, sink) = setup(1);
        prio(&p, 1, 1);
        prio(&p, 2, 1);
        enable(&p, 0, 1);
        enable(&p, 0, 2);
        p.set_level(1, true);
        p.set_level(1, true);
        p.set_level(2, true);
        prio(&p, 2, 5);
        threshold(&p, 0, 0);
        assert_eq!(sink.take(), vec![(0, true)]);
        assert_eq!(claim(&p, 0), 2);
        // Source 1 is still pending: the output stays high, no call.
        assert!(sink.take().is_empty());
        assert_eq!(claim(&p, 0), 1);
        assert_eq!(sink.take(), vec![(0, false)]);
        p.set_level(1, false);
        p.set_level(2, false);
        complete(&p, 0, 1);
        complete(&p, 0, 2);
        assert!(sink.take().is_empty());
    }

    #[test]
    fn irq_lines_and_configurable_source_count() {
        let sink = Arc::new(RecSink::default());
        let p = Plic::with_sources(1, 33, sink.clone());
        assert_eq!(p.ndev(), 32);
        let line = p.irq_line(32);
        prio(&p, 32, 2);
        enable(&p, 0, 32);
        // Word 1 holds only source 32.
        wr(&p, ENABLE_BASE + 4, u32::MAX);
        assert_eq!(rd(&p, ENABLE_BASE + 4), 1);
        line.set_level(true);
        assert_eq!(rd(&p, PENDING_BASE + 4), 1);
        assert_eq!(sink.take(), vec![(0, true)]);
        assert_eq!(claim(&p, 0), 32);
        line.set_level(false);
        complete(&p, 0, 32);
        assert_eq!(sink.take(), vec![(0, false)]);
        // Out-of-range sources driven directly are ignored.
        p.set_level(33, true);
        p.set_level(0, true);
        assert!(sink.take().is_empty());
    }

    #[test]
    #[should_panic(expected = "outside 1..=95")]
    fn irq_line_rejects_source_zero() {
        let (p, _) = setup(1);
        let _ = p.irq_line(0);
    }

    #[test]
    fn concurrent_lines_and_claims_do_not_lose_interrupts() {
        let (p, _) = setup(2);
        for src in 1..=8 {
            prio(&p, src, 1);
            enable(&p, 0, src);
            enable(&p, 1, src);
        }
        let claimed: Arc<Mutex<Vec<u32>>> = Arc::default();
        std::thread::scope(|s| {
            for src in 1..=8u32 {
                let line = p.irq_line(src);
                s.spawn(move || line.set_level(true));
            }
            for ctx in 0..2u64 {
                let (p, claimed) = (&p, &claimed);
                s.spawn(move || {
                    for _ in 0..10_000 {
                        let src = claim(p, ctx);
                        if src != 0 {
                            claimed.lock().unwrap().push(src);
                        }
                    }
                });
            }
        });
        // Whatever was not claimed by the racing harts is still pending now.
        let mut all = claimed.lock().unwrap().clone();
        loop {
            let src = claim(&p, 0);
            if src == 0 {
                break;
            }
            all.push(src);
        }
        all.sort_unstable();
        assert_eq!(all, (1..=8).collect::<Vec<_>>());
    }
}
