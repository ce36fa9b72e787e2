//! The guest-physical memory map (QEMU `virt`-compatible, so stock kernels need no changes).

pub use crate::devices::plic::{PLIC_BASE, PLIC_SIZE};
pub use crate::devices::rtc::{RTC_BASE, RTC_IRQ, RTC_SIZE};
pub use crate::devices::uart::{UART_BASE, UART_IRQ, UART_SIZE};

/// Guest RAM starts here.
pub const RAM_BASE: u64 = 0x8000_0000;
/// First virtio-mmio slot; slots are `VIRTIO_STRIDE` apart, slot `i` uses IRQ `VIRTIO_IRQ0 + i`.
pub const VIRTIO_BASE: u64 = 0x1000_1000;
pub const VIRTIO_STRIDE: u64 = 0x1000;
pub const VIRTIO_SLOTS: u32 = 8;
pub const VIRTIO_IRQ0: u32 = 1;

/// Smallest guest RAM we accept (a kernel, initrd and device tree must fit).
pub const MIN_RAM: u64 = 16 << 20;
/// Largest guest RAM: what Sv39x4 G-stage mapping above RAM_BASE can cover with margin.
pub const MAX_RAM: u64 = 256 << 30;
/// Most vCPUs: one PLIC S-mode context each.
pub const MAX_CPUS: u32 = 64;
