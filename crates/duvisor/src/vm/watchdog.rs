//! The optional hang watchdog (`--watchdog SECS`). Once a second (or every SECS/4 if shorter)
//! it kicks every running vCPU out of the guest with a probe request; the vthread then looks
//! at its hart: a hart in VS-mode with interrupts globally disabled while an interrupt it has
//! enabled is pending cannot make progress towards taking it. If every sample over SECS seconds
//! finds the hart like that, and it took no interrupt between them, the guest kernel is locked
//! up and the VM ends with [`Outcome::Hung`]. A hart idle in WFI, running with interrupts
//! enabled, or taking interrupts between samples is never "hung" (on a loaded host a busy
//! guest's vCPU thread is mostly preempted inside its short masked sections, with the timer
//! due, so a sample alone cannot tell it from a hung one).
//!
//! The probe is an ordinary kick (a user-level doorbell): no driver call, and one exit per vCPU
//! per period.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dvext::csr::{HSTATUS_SPVP, HUSTATUS, HUVSIE, HUVSIP, HUVSSTATUS, SSTATUS_SIE};
use dvext::Hart;

use super::control::HsmState;
use super::VmShared;
use crate::sandbox::ThreadClass;

/// Time between probes for a watchdog limit of `limit`.
pub fn period(limit: Duration) -> Duration {
    (limit / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// Run the probing thread until the VM stops.
pub fn spawn(vm: Arc<VmShared>, limit: Duration) -> std::io::Result<std::thread::JoinHandle<()>> {
    crate::sandbox::spawn(ThreadClass::Watchdog, "watchdog", move || {
        let period = period(limit);
        let step = Duration::from_millis(50).min(period);
        let mut next = Instant::now() + period;
        while !vm.control.stopping() {
            std::thread::sleep(step);
            if Instant::now() < next {
                continue;
            }
            next += period;
            for (v, slot) in vm.harts.iter().enumerate() {
                if slot.state() == HsmState::Started {
                    slot.request_probe();
                    let _ = vm.irq.kick(v as u32);
                }
            }
        }
    })
}

/// A vthread's view of its hart across probes.
#[derive(Debug, Default)]
pub struct HangCheck {
    stuck_since: Option<Instant>,
    /// The hart's count of interrupts taken at the last sample.
    irqs: u64,
}

impl HangCheck {
    /// Sample `hart` (just kicked out of the guest). Returns how long it has been stuck when
    /// that reaches `limit`.
    pub fn sample(&mut self, hart: &mut Hart, limit: Duration) -> Option<Duration> {
        let read = |h: &mut Hart, n| h.csr_read(n).unwrap_or(0);
        let in_vs = read(hart, HUSTATUS) & HSTATUS_SPVP != 0;
        let masked = read(hart, HUVSSTATUS) & SSTATUS_SIE == 0;
        let waiting = read(hart, HUVSIP) & read(hart, HUVSIE) != 0;
        let irqs = hart.interrupts_taken();
        let took_one = std::mem::replace(&mut self.irqs, irqs) != irqs;
        if took_one || !(in_vs && masked && waiting) {
            self.stuck_since = None;
            return None;
        }
        let since = *self.stuck_since.get_or_insert_with(Instant::now);
        let stuck = since.elapsed();
        (stuck >= limit).then_some(stuck)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_period() {
        assert_eq!(period(Duration::from_secs(30)), Duration::from_secs(1));
        assert_eq!(period(Duration::from_secs(2)), Duration::from_millis(500));
        assert_eq!(period(Duration::from_millis(10)), Duration::from_millis(50));
    }
}
