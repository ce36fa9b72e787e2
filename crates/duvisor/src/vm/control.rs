//! How a VM ends, and the per-vCPU HSM state that secondary harts wait on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};

use dvext::HaltReason;

/// Why the VM stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// SBI system shutdown (or the legacy shutdown call).
    Shutdown,
    /// SBI system reset: cold or warm reboot, with the SBI reset reason.
    Reset { warm: bool, reason: u64 },
    /// The user quit from the console (Ctrl-A x).
    Quit,
    /// The hypervisor plane stopped the VM.
    Halted(HaltReason),
    /// The guest kernel panicked (seen on its console), with the panic message.
    Panicked(String),
    /// The watchdog (`--watchdog`) found a vCPU that kept an interrupt pending with interrupts
    /// disabled for `secs` seconds.
    Hung { vcpu: u32, secs: u64 },
    /// DuVisor could not continue.
    Error(String),
}

impl Outcome {
    /// Process exit status for this outcome.
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Shutdown => 0,
            Outcome::Quit => 0,
            Outcome::Reset { .. } => 3,
            Outcome::Halted(_) => 4,
            Outcome::Panicked(_) => 5,
            Outcome::Hung { .. } => 6,
            Outcome::Error(_) => 1,
        }
    }

    /// One-line description.
    pub fn describe(&self) -> String {
        match self {
            Outcome::Shutdown => "guest powered off".into(),
            Outcome::Quit => "quit from the console".into(),
            Outcome::Reset { warm, reason } => format!(
                "guest requested a {} reset (reason {})",
                if *warm { "warm" } else { "cold" },
                match reason {
                    0 => "none".to_string(),
                    1 => "system failure".to_string(),
                    r => format!("{r:#x}"),
                }
            ),
            Outcome::Halted(r) => format!("VM stopped by the hypervisor plane: {r}"),
            Outcome::Panicked(m) => format!("guest kernel panicked: {m}"),
            Outcome::Hung { vcpu, secs } => format!(
                "watchdog: vCPU {vcpu} ran with interrupts disabled and an interrupt pending for \
                 {secs} s; the guest is hung"
            ),
            Outcome::Error(e) => format!("error: {e}"),
        }
    }
}

#[derive(Default)]
pub struct VmControl {
    stopping: AtomicBool,
    outcome: Mutex<Option<Outcome>>,
}

impl VmControl {
    /// Record how the VM ends (the first outcome wins). Returns whether this call stopped it.
    pub fn stop(&self, o: Outcome) -> bool {
        let mut g = self.outcome.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_none() {
            *g = Some(o);
        }
        !self.stopping.swap(true, Ordering::SeqCst)
    }

    #[inline]
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    pub fn outcome(&self) -> Option<Outcome> {
        self.outcome
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// SBI HSM hart states (values are the spec's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HsmState {
    Started = 0,
    Stopped = 1,
    StartPending = 2,
}

struct Slot {
    state: HsmState,
    start: Option<(u64, u64)>,
}

/// One vCPU's HSM state: its vthread parks here while the hart is stopped.
pub struct HartSlot {
    slot: Mutex<Slot>,
    cv: Condvar,
    /// The watchdog asks the vthread to sample its hart at the next kick.
    probe: AtomicBool,
}

impl Default for HartSlot {
    fn default() -> Self {
        HartSlot {
            slot: Mutex::new(Slot {
                state: HsmState::Stopped,
                start: None,
            }),
            cv: Condvar::new(),
            probe: AtomicBool::new(false),
        }
    }
}

impl HartSlot {
    /// Ask for a watchdog sample (the caller then kicks the vCPU).
    pub fn request_probe(&self) {
        self.probe.store(true, Ordering::Relaxed);
    }

    /// Whether a watchdog sample was asked for (clears the request).
    pub fn take_probe(&self) -> bool {
        self.probe.swap(false, Ordering::Relaxed)
    }

    pub fn state(&self) -> HsmState {
        self.slot.lock().unwrap_or_else(|e| e.into_inner()).state
    }

    /// Request a start at `addr` with `opaque` in a1. False if the hart is not stopped.
    pub fn start(&self, addr: u64, opaque: u64) -> bool {
        let mut s = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        if s.state != HsmState::Stopped {
            return false;
        }
        s.state = HsmState::StartPending;
        s.start = Some((addr, opaque));
        self.cv.notify_all();
        true
    }

    pub fn set_started(&self) {
        self.slot.lock().unwrap_or_else(|e| e.into_inner()).state = HsmState::Started;
    }

    pub fn set_stopped(&self) {
        let mut s = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        s.state = HsmState::Stopped;
        s.start = None;
    }

    /// Block until a start is requested (returns its address and opaque) or the VM stops.
    pub fn wait_start(&self, control: &VmControl) -> Option<(u64, u64)> {
        let mut s = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if control.stopping() {
                return None;
            }
            if let Some(st) = s.start.take() {
                return Some(st);
            }
            s = self
                .cv
                .wait_timeout(s, std::time::Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    pub fn wake(&self) {
        self.cv.notify_all();
    }
}
