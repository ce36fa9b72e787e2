//! The console UART: a 16550A (`ns16550a`) at `0x1000_0000`, interrupt 10 on the PLIC, as on
//! QEMU's `virt` machine.
//!
//! The register model is `vm_superio::Serial`; this wrapper adds what a RISC-V platform needs:
//!
//! * **MMIO with byte registers** (`reg-shift = 0`, `reg-io-width = 1`): register `n` is at offset
//!   `n`. A wider access uses its lowest byte (reads return the register in byte 0, zeros above);
//!   offsets 8 and up read as zero and ignore writes.
//! * **A level interrupt output.** A real 16550's INTR pin is high while an enabled interrupt
//!   condition is pending. `vm_superio` models interrupts as events (its `Trigger`) and records
//!   them in the IIR, clearing them when the guest reads the IIR or the receive buffer. The
//!   `Trigger` here asserts the PLIC line, and after every register access or input the line is
//!   set from the recorded IIR bits masked with the IER: high while the IIR shows an enabled
//!   interrupt pending, low otherwise. The line is only driven when that level changes.
//! * **Lossless input.** The 64-byte receive FIFO is topped up from an unbounded host-side queue
//!   as the guest drains it, so [`Uart::enqueue_input`] never drops bytes.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use vm_superio::serial::{NoEvents, SerialState};
use vm_superio::{Serial, Trigger};

use super::{IrqLine, MmioDevice};

/// Guest-physical base of the UART on the `virt` layout.
pub const UART_BASE: u64 = 0x1000_0000;
/// Size of the UART's MMIO window.
pub const UART_SIZE: u64 = 0x100;
/// The UART's PLIC source.
pub const UART_IRQ: u32 = 10;
/// The input clock advertised in the device tree (`clock-frequency`).
pub const UART_CLOCK_HZ: u32 = 3_686_400;

const REG_DATA: u8 = 0;
const REG_IIR: u8 = 2;
const NUM_REGS: u64 = 8;

const IER_RDA: u8 = 0x01;
const IER_THRE: u8 = 0x02;
const IIR_NO_INT: u8 = 0x01;
const IIR_THRE: u8 = 0x02;
const IIR_RDA: u8 = 0x04;
const IIR_ID_MASK: u8 = 0x0f;

/// The UART's interrupt output: drives the line only on changes.
struct Output {
    line: Arc<dyn IrqLine>,
    level: AtomicBool,
}

impl Output {
    fn set(&self, level: bool) {
        // Callers hold the UART's lock, so changes are reported in order.
        if self.level.swap(level, Ordering::Relaxed) != level {
            self.line.set_level(level);
        }
    }
}

/// What `vm_superio` calls when it raises an interrupt: assert the line.
struct IrqTrigger(Arc<Output>);

impl Trigger for IrqTrigger {
    type E = Infallible;

    fn trigger(&self) -> Result<(), Infallible> {
        self.0.set(true);
        Ok(())
    }
}

type Serial16550 = Serial<IrqTrigger, NoEvents, Box<dyn Write + Send>>;

struct Inner {
    serial: Serial16550,
    /// Input that did not fit in the receive FIFO yet.
    backlog: VecDeque<u8>,
    /// Whether an output error has been reported already (reported once, not per byte).
    out_error_reported: bool,
}

/// The 16550A UART. Place it on the MMIO bus at [`UART_BASE`] with size [`UART_SIZE`].
pub struct Uart {
    inner: Mutex<Inner>,
    output: Arc<Output>,
}

impl Uart {
    /// A UART whose interrupt drives `irq` and whose transmitted bytes go to `out` (flushed per
    /// byte).
    pub fn new(irq: Arc<dyn IrqLine>, out: Box<dyn Write + Send>) -> Self {
        let output = Arc::new(Output {
            line: irq,
            level: AtomicBool::new(false),
        });
        Uart {
            inner: Mutex::new(Inner {
                serial: Serial::new(IrqTrigger(Arc::clone(&output)), out),
                backlog: VecDeque::new(),
                out_error_reported: false,
            }),
            output,
        }
    }

    /// Queue bytes typed on the host console for the guest to receive. Never drops bytes: what
    /// does not fit in the receive FIFO now is fed in as the guest reads.
    pub fn enqueue_input(&self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut inner = self.lock();
        inner.backlog.extend(bytes);
        inner.refill();
        self.update_level(&inner);
    }

    /// Bytes received from the host and not yet read by the guest (FIFO and backlog).
    pub fn pending_input(&self) -> usize {
        let inner = self.lock();
        inner.serial.state().in_buffer.len() + inner.backlog.len()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update_level(&self, inner: &Inner) {
        let SerialState {
            interrupt_enable: ier,
            interrupt_identification: iir,
            ..
        } = inner.serial.state();
        let level = (iir & IIR_RDA != 0 && ier & IER_RDA != 0)
            || (iir & IIR_THRE != 0 && ier & IER_THRE != 0);
        self.output.set(level);
    }

    fn read_reg(&self, reg: u8) -> u8 {
        let mut inner = self.lock();
        let mut value = inner.serial.read(reg);
        match reg {
            REG_DATA => inner.refill(),
            REG_IIR => {
                // vm_superio ORs the causes together; a 16550 reports the highest-priority one
                // (received data before THR empty), and 0x06 would mean "line status".
                let id = if value & IIR_RDA != 0 {
                    IIR_RDA
                } else if value & IIR_THRE != 0 {
                    IIR_THRE
                } else {
                    IIR_NO_INT
                };
                value = (value & !IIR_ID_MASK) | id;
            }
            _ => {}
        }
        self.update_level(&inner);
        value
    }

    fn write_reg(&self, reg: u8, value: u8) {
        let mut inner = self.lock();
        if let Err(e) = inner.serial.write(reg, value) {
            if !inner.out_error_reported {
                inner.out_error_reported = true;
                tracing::warn!("uart: guest output lost: {e}");
            }
        }
        // Leaving loopback mode (MCR) may let the backlog flow again.
        inner.refill();
        self.update_level(&inner);
    }
}

impl Inner {
    /// Move backlog bytes into the receive FIFO while it has room.
    fn refill(&mut self) {
        while !self.backlog.is_empty() && self.serial.fifo_capacity() > 0 {
            let (front, _) = self.backlog.as_slices();
            match self.serial.enqueue_raw_bytes(front) {
                Ok(0) | Err(_) => break, // loopback mode: the FIFO belongs to the transmitter
                Ok(n) => {
                    self.backlog.drain(..n);
                }
            }
        }
    }
}

impl MmioDevice for Uart {
    fn read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if data.is_empty() || offset >= NUM_REGS {
            return;
        }
        data[0] = self.read_reg(offset as u8);
    }

    fn write(&self, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else {
            return;
        };
        if offset < NUM_REGS {
            self.write_reg(offset as u8, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IER: u64 = 1;
    const IIR: u64 = 2;
    const LCR: u64 = 3;
    const MCR: u64 = 4;
    const LSR: u64 = 5;
    const SCR: u64 = 7;
    const LSR_DR: u8 = 0x01;
    const LSR_THRE: u8 = 0x20;

    #[derive(Default)]
    struct RecLine(Mutex<Vec<bool>>);

    impl IrqLine for RecLine {
        fn set_level(&self, level: bool) {
            self.0.lock().unwrap().push(level);
        }
    }

    impl RecLine {
        fn take(&self) -> Vec<bool> {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
    }

    #[derive(Clone, Default)]
    struct SharedOut(Arc<Mutex<Vec<u8>>>);

    impl Write for SharedOut {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn setup() -> (Uart, Arc<RecLine>, SharedOut) {
        let line = Arc::new(RecLine::default());
        let out = SharedOut::default();
        let uart = Uart::new(line.clone(), Box::new(out.clone()));
        (uart, line, out)
    }

    fn rd(u: &Uart, off: u64) -> u8 {
        let mut b = [0u8];
        u.read(off, &mut b);
        b[0]
    }

    fn wr(u: &Uart, off: u64, v: u8) {
        u.write(off, &[v]);
    }

    #[test]
    fn thr_writes_reach_the_output() {
        let (u, line, out) = setup();
        for &b in b"hello\r\n" {
            assert_ne!(rd(&u, LSR) & LSR_THRE, 0);
            wr(&u, 0, b);
        }
        assert_eq!(&*out.0.lock().unwrap(), b"hello\r\n");
        // No interrupt enabled: the line never moved.
        assert!(line.take().is_empty());
    }

    #[test]
    fn input_is_read_through_rbr_with_lsr_dr() {
        let (u, _, _) = setup();
        assert_eq!(rd(&u, LSR) & LSR_DR, 0);
        u.enqueue_input(b"ab");
        assert_eq!(u.pending_input(), 2);
        assert_ne!(rd(&u, LSR) & LSR_DR, 0);
        assert_eq!(rd(&u, 0), b'a');
        assert_ne!(rd(&u, LSR) & LSR_DR, 0);
        assert_eq!(rd(&u, 0), b'b');
        assert_eq!(rd(&u, LSR) & LSR_DR, 0);
        assert_eq!(u.pending_input(), 0);
    }

    #[test]
    fn input_beyond_the_fifo_is_not_lost() {
        let (u, _, _) = setup();
        let input: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        u.enqueue_input(&input[..300]);
        u.enqueue_input(&input[300..]);
        assert_eq!(u.pending_input(), 1000);
        let mut got = Vec::new();
        while rd(&u, LSR) & LSR_DR != 0 {
            got.push(rd(&u, 0));
        }
        assert_eq!(got, input);
    }

    #[test]
    fn rx_interrupt_level_follows_data_and_ier() {
        let (u, line, _) = setup();
        u.enqueue_input(b"x");
        assert!(line.take().is_empty()); // RDA not enabled
        wr(&u, IER, IER_RDA);
        assert_eq!(line.take(), vec![true]);
        assert_eq!(rd(&u, IIR) & 0x0f, IIR_RDA);
        // Reading the IIR acknowledges it (vm_superio's model).
        assert_eq!(line.take(), vec![false]);
        assert_eq!(rd(&u, 0), b'x');
        assert!(line.take().is_empty());
        // New input while enabled raises it; draining the data lowers it.
        u.enqueue_input(b"yz");
        assert_eq!(line.take(), vec![true]);
        assert_eq!(rd(&u, 0), b'y');
        assert_eq!(line.take(), vec![false]);
        // More input arrives while the guest reads: raised again.
        u.enqueue_input(b"w");
        assert_eq!(line.take(), vec![true]);
        assert_eq!(rd(&u, 0), b'z');
        assert_eq!(rd(&u, 0), b'w');
        assert_eq!(line.take(), vec![false]);
        assert_eq!(rd(&u, IIR) & 0x0f, IIR_NO_INT);
    }

    #[test]
    fn rx_backlog_keeps_the_interrupt_coming() {
        let (u, line, _) = setup();
        wr(&u, IER, IER_RDA);
        u.enqueue_input(&[b'q'; 100]);
        assert_eq!(line.take(), vec![true]);
        // A driver reads until LSR.DR clears; each refill re-raises RDA.
        let mut n = 0;
        while rd(&u, LSR) & LSR_DR != 0 {
            assert_eq!(rd(&u, 0), b'q');
            n += 1;
        }
        assert_eq!(n, 100);
        assert_eq!(line.take().last(), Some(&false));
    }

    #[test]
    fn thre_interrupt_level() {
        let (u, line, out) = setup();
        // Enabling THRE with the transmitter empty interrupts at once.
        wr(&u, IER, IER_THRE);
        assert_eq!(line.take(), vec![true]);
        assert_eq!(rd(&u, IER), IER_THRE);
        assert_eq!(rd(&u, IIR), 0xc0 | IIR_THRE);
        assert_eq!(line.take(), vec![false]);
        assert_eq!(rd(&u, IIR), 0xc0 | IIR_NO_INT);
        // Each transmitted byte empties the THR again.
        wr(&u, 0, b'!');
        assert_eq!(line.take(), vec![true]);
        // Masking the interrupt lowers the line even before the IIR is read.
        wr(&u, IER, 0);
        assert_eq!(line.take(), vec![false]);
        assert_eq!(&*out.0.lock().unwrap(), b"!");
    }

    #[test]
    fn both_causes_report_rx_first() {
        let (u, line, _) = setup();
        u.enqueue_input(b"k");
        wr(&u, IER, IER_RDA | IER_THRE);
        assert_eq!(line.take(), vec![true]);
        assert_eq!(rd(&u, IIR), 0xc0 | IIR_RDA);
    }

    #[test]
    fn wide_accesses_use_the_low_byte_and_high_offsets_are_ignored() {
        let (u, _, out) = setup();
        u.write(0, &[b'A', 0xff, 0xff, 0xff]);
        u.write(0, &[b'B', 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&*out.0.lock().unwrap(), b"AB");
        let mut d = [0xaau8; 4];
        u.read(LSR, &mut d);
        assert_eq!(d, [LSR_THRE | 0x40, 0, 0, 0]);
        // Beyond the eight registers.
        u.write(8, b"C");
        u.write(0xff, b"C");
        u.write(0, &[]);
        let mut d = [0xaau8; 2];
        u.read(0x10, &mut d);
        assert_eq!(d, [0, 0]);
        u.read(0, &mut []);
        assert_eq!(&*out.0.lock().unwrap(), b"AB");
    }

    #[test]
    fn divisor_latch_and_scratch() {
        let (u, _, out) = setup();
        wr(&u, LCR, 0x83);
        wr(&u, 0, 0x01);
        wr(&u, 1, 0x00);
        assert_eq!(rd(&u, 0), 0x01);
        wr(&u, LCR, 0x03);
        assert_eq!(rd(&u, LCR), 0x03);
        wr(&u, SCR, 0x5a);
        assert_eq!(rd(&u, SCR), 0x5a);
        assert!(out.0.lock().unwrap().is_empty());
    }

    #[test]
    fn loopback_holds_back_host_input() {
        let (u, _, out) = setup();
        wr(&u, MCR, 0x10 | 0x08);
        u.enqueue_input(b"h");
        wr(&u, 0, b'l');
        assert_eq!(rd(&u, 0), b'l');
        assert_eq!(rd(&u, LSR) & LSR_DR, 0);
        assert!(out.0.lock().unwrap().is_empty());
        // Leaving loopback delivers the held input.
        wr(&u, MCR, 0x08);
        assert_eq!(rd(&u, 0), b'h');
    }

    #[test]
    fn output_errors_do_not_stop_the_uart() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let line = Arc::new(RecLine::default());
        let u = Uart::new(line.clone(), Box::new(Broken));
        wr(&u, IER, IER_THRE);
        assert_eq!(rd(&u, IIR), 0xc0 | IIR_THRE);
        wr(&u, 0, b'x');
        wr(&u, 0, b'y');
        // The THRE interrupt still fires so the driver does not hang.
        assert_eq!(line.take(), vec![true, false, true]);
    }
}
