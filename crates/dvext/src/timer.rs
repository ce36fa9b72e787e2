//! The platform timebase: `time` counts at a fixed frequency from the host monotonic clock.

use std::time::{Duration, Instant};

/// Timebase frequency advertised to guests (same as QEMU `virt`).
pub const TIMEBASE_HZ: u64 = 10_000_000;
const NANOS_PER_TICK: u64 = 1_000_000_000 / TIMEBASE_HZ;

#[derive(Clone, Copy, Debug)]
pub struct Timebase {
    epoch: Instant,
}

impl Default for Timebase {
    fn default() -> Self {
        Self::new()
    }
}

impl Timebase {
    pub fn new() -> Self {
        Timebase {
            epoch: Instant::now(),
        }
    }

    /// Host ticks since the platform was created.
    #[inline]
    pub fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64 / NANOS_PER_TICK
    }

    /// Host time until tick `t` (zero if already passed).
    pub fn until(&self, t: u64) -> Duration {
        let target = Duration::from_nanos(t.saturating_mul(NANOS_PER_TICK));
        target.saturating_sub(self.epoch.elapsed())
    }
}
