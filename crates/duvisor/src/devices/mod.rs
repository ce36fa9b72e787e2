//! Emulated devices of the guest platform (QEMU `virt` layout) and the traits that connect them
//! to the MMIO exit path and to interrupt delivery.

pub mod bus;
pub mod plic;
pub mod rtc;
pub mod uart;
pub mod virtio;

pub use bus::{BusError, MmioBus};
pub use plic::Plic;
pub use rtc::Rtc;
pub use uart::Uart;

/// A device reached through MMIO exits. Called from vthreads (and tests) concurrently, so
/// implementations synchronise internally.
pub trait MmioDevice: Send + Sync {
    /// Read `data.len()` bytes (1, 2, 4 or 8) at `offset` from the device's base, little-endian.
    fn read(&self, offset: u64, data: &mut [u8]);
    /// Write `data.len()` bytes (1, 2, 4 or 8) at `offset` from the device's base, little-endian.
    fn write(&self, offset: u64, data: &[u8]);
    /// The VM is going away: stop every thread of the device that touches guest memory, and
    /// return once they have stopped (the driver scrubs the memory next).
    fn quiesce(&self) {}
}

/// A device's interrupt wire into the interrupt controller (level-triggered).
pub trait IrqLine: Send + Sync {
    fn set_level(&self, level: bool);
}

/// Where the PLIC drives each hart's supervisor external interrupt (VSEIP) line: DuVisor rings
/// the target vCPU's user-level vEXT doorbell, never stopping the vCPU or calling the driver.
pub trait ExternalInterruptSink: Send + Sync {
    fn set_external(&self, hart: usize, level: bool);
}
