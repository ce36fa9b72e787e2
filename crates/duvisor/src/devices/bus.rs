//! The MMIO bus: maps guest-physical address ranges to emulated devices.
//!
//! The bus is filled once while the VM is assembled (`register` takes `&mut self`) and then shared
//! read-only by every vthread, so lookups need no lock. Ranges are kept in a `BTreeMap` keyed by
//! base address; a lookup takes the last range starting at or below the address and checks that
//! the address falls inside it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use super::MmioDevice;

/// Why a device could not be placed on the bus.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    #[error("MMIO range at {base:#x} has size zero")]
    ZeroSize { base: u64 },
    #[error("MMIO range {base:#x}+{size:#x} wraps around the address space")]
    Overflow { base: u64, size: u64 },
    #[error(
        "MMIO range {base:#x}..{end:#x} overlaps the device at {other_base:#x}..{other_end:#x}",
        end = base.wrapping_add(*size),
        other_end = other_base.wrapping_add(*other_size)
    )]
    Overlap {
        base: u64,
        size: u64,
        other_base: u64,
        other_size: u64,
    },
}

struct Entry {
    size: u64,
    device: Arc<dyn MmioDevice>,
}

/// A set of non-overlapping MMIO ranges, each served by one device.
#[derive(Default)]
pub struct MmioBus {
    ranges: BTreeMap<u64, Entry>,
}

impl fmt::Debug for MmioBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(
                self.ranges
                    .iter()
                    .map(|(base, e)| format!("{base:#x}+{:#x}", e.size)),
            )
            .finish()
    }
}

impl MmioBus {
    pub fn new() -> Self {
        Self::default()
    }

    /// Place `device` at `[base, base + size)`. Fails if the range is empty, wraps around, or
    /// overlaps a range already registered.
    pub fn register(
        &mut self,
        base: u64,
        size: u64,
        device: Arc<dyn MmioDevice>,
    ) -> Result<(), BusError> {
        if size == 0 {
            return Err(BusError::ZeroSize { base });
        }
        let last = base
            .checked_add(size - 1)
            .ok_or(BusError::Overflow { base, size })?;
        // The closest range starting at or below `base` must end before it...
        if let Some((&other_base, e)) = self.ranges.range(..=base).next_back() {
            if other_base + (e.size - 1) >= base {
                return Err(BusError::Overlap {
                    base,
                    size,
                    other_base,
                    other_size: e.size,
                });
            }
        }
        // ...and no range may start inside the new one.
        if let Some((&other_base, e)) = self.ranges.range(base..=last).next() {
            return Err(BusError::Overlap {
                base,
                size,
                other_base,
                other_size: e.size,
            });
        }
        self.ranges.insert(base, Entry { size, device });
        Ok(())
    }

    /// Stop every device's threads (see [`MmioDevice::quiesce`]).
    pub fn quiesce_all(&self) {
        for e in self.ranges.values() {
            e.device.quiesce();
        }
    }

    /// The device whose range contains `addr`, and `addr`'s offset from that range's base.
    pub fn find(&self, addr: u64) -> Option<(Arc<dyn MmioDevice>, u64)> {
        self.find_ref(addr).map(|(d, off)| (Arc::clone(d), off))
    }

    fn find_ref(&self, addr: u64) -> Option<(&Arc<dyn MmioDevice>, u64)> {
        let (&base, e) = self.ranges.range(..=addr).next_back()?;
        let offset = addr - base;
        (offset < e.size).then_some((&e.device, offset))
    }

    /// Dispatch a read to the device at `addr`. Returns `false` (leaving `data` untouched) when
    /// no device claims the address.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find_ref(addr) {
            Some((dev, offset)) => {
                dev.read(offset, data);
                true
            }
            None => false,
        }
    }

    /// Dispatch a write to the device at `addr`. Returns `false` when no device claims it.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find_ref(addr) {
            Some((dev, offset)) => {
                dev.write(offset, data);
                true
            }
            None => false,
        }
    }

    /// The registered ranges as `(base, size)`, in ascending address order.
    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().map(|(&b, e)| (b, e.size))
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Remembers the last access; reads return a fixed tag byte.
    struct Probe {
        tag: u8,
        last: Mutex<Option<(u64, Vec<u8>)>>,
    }

    impl Probe {
        fn new(tag: u8) -> Arc<Self> {
            Arc::new(Self {
                tag,
                last: Mutex::new(None),
            })
        }
    }

    impl MmioDevice for Probe {
        fn read(&self, offset: u64, data: &mut [u8]) {
            data.fill(self.tag);
            *self.last.lock().unwrap() = Some((offset, Vec::new()));
        }
        fn write(&self, offset: u64, data: &[u8]) {
            *self.last.lock().unwrap() = Some((offset, data.to_vec()));
        }
    }

    fn tag_at(bus: &MmioBus, addr: u64) -> Option<(u8, u64)> {
        let (dev, off) = bus.find(addr)?;
        let mut b = [0u8];
        dev.read(off, &mut b);
        Some((b[0], off))
    }

    #[test]
    fn find_maps_addresses_to_devices_and_offsets() {
        let mut bus = MmioBus::new();
        bus.register(0x1000_0000, 0x100, Probe::new(1)).unwrap();
        bus.register(0x0c00_0000, 0x60_0000, Probe::new(2)).unwrap();
        bus.register(0x1000_1000, 0x1000, Probe::new(3)).unwrap();
        assert_eq!(bus.len(), 3);

        assert_eq!(tag_at(&bus, 0x1000_0000), Some((1, 0)));
        assert_eq!(tag_at(&bus, 0x1000_00ff), Some((1, 0xff)));
        assert_eq!(tag_at(&bus, 0x1000_0100), None);
        assert_eq!(tag_at(&bus, 0x0c20_0004), Some((2, 0x20_0004)));
        assert_eq!(tag_at(&bus, 0x0c5f_ffff), Some((2, 0x5f_ffff)));
        assert_eq!(tag_at(&bus, 0x0c60_0000), None);
        assert_eq!(tag_at(&bus, 0x0bff_ffff), None);
        assert_eq!(tag_at(&bus, 0x1000_1ffc), Some((3, 0xffc)));
        assert_eq!(tag_at(&bus, 0x1000_2000), None);
        assert_eq!(tag_at(&bus, 0), None);
        assert_eq!(tag_at(&bus, u64::MAX), None);

        let ranges: Vec<_> = bus.ranges().collect();
        assert_eq!(
            ranges,
            vec![
                (0x0c00_0000, 0x60_0000),
                (0x1000_0000, 0x100),
                (0x1000_1000, 0x1000)
            ]
        );
    }

    #[test]
    fn overlapping_ranges_are_rejected() {
        let mut bus = MmioBus::new();
        bus.register(0x1000, 0x1000, Probe::new(1)).unwrap();
        // Starts inside.
        assert!(matches!(
            bus.register(0x1fff, 0x10, Probe::new(2)),
            Err(BusError::Overlap {
                other_base: 0x1000,
                ..
            })
        ));
        // Ends inside.
        assert!(bus.register(0x0800, 0x801, Probe::new(2)).is_err());
        // Covers it.
        assert!(bus.register(0x0, 0x10_0000, Probe::new(2)).is_err());
        // Same range.
        assert!(bus.register(0x1000, 0x1000, Probe::new(2)).is_err());
        // Inside it.
        assert!(bus.register(0x1100, 0x10, Probe::new(2)).is_err());
        // Adjacent on both sides is fine.
        bus.register(0x0800, 0x800, Probe::new(2)).unwrap();
        bus.register(0x2000, 0x800, Probe::new(3)).unwrap();
        assert_eq!(tag_at(&bus, 0x0fff), Some((2, 0x7ff)));
        assert_eq!(tag_at(&bus, 0x1000), Some((1, 0)));
        assert_eq!(tag_at(&bus, 0x2000), Some((3, 0)));
        assert_eq!(bus.len(), 3);
    }

    #[test]
    fn degenerate_ranges_are_rejected() {
        let mut bus = MmioBus::new();
        assert_eq!(
            bus.register(0x1000, 0, Probe::new(1)),
            Err(BusError::ZeroSize { base: 0x1000 })
        );
        assert!(matches!(
            bus.register(u64::MAX - 0xf, 0x11, Probe::new(1)),
            Err(BusError::Overflow { .. })
        ));
        // Reaching exactly the top of the address space is fine.
        bus.register(u64::MAX - 0xf, 0x10, Probe::new(1)).unwrap();
        assert_eq!(tag_at(&bus, u64::MAX), Some((1, 0xf)));
        assert!(!bus.is_empty());
    }

    #[test]
    fn read_and_write_dispatch() {
        let mut bus = MmioBus::new();
        let p = Probe::new(0xab);
        bus.register(0x4000, 0x100, p.clone()).unwrap();
        assert!(bus.write(0x4010, &[1, 2, 3, 4]));
        assert_eq!(*p.last.lock().unwrap(), Some((0x10, vec![1, 2, 3, 4])));
        let mut data = [0u8; 4];
        assert!(bus.read(0x4020, &mut data));
        assert_eq!(data, [0xab; 4]);
        let mut data = [0u8; 4];
        assert!(!bus.read(0x4100, &mut data));
        assert_eq!(data, [0; 4]);
        assert!(!bus.write(0x3fff, &[0]));
    }
}
