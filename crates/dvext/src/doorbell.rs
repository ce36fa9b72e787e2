//! User-level interrupt doorbells (vIPI / vEXT), kicks and remote TLB shootdowns.
//!
//! Every request is an atomic on the target hart's [`HartShared`], seen at its next block
//! boundary (and waking it if it sleeps in WFI). Nothing here involves the hypervisor plane
//! unless the target is invalid, which is reported to it as an emergency.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::Thread;

use crate::csr::{MIP_VSEIP, MIP_VSSIP};
use crate::exit::Emergency;
use crate::platform::PlatformInner;
use crate::pmc::Vmid;

/// Request bits in [`HartShared::req`].
pub(crate) mod req {
    /// huvip changed (interrupt state must be re-evaluated).
    pub const IRQ: u32 = 1 << 0;
    /// Return from `huret` with `Exit::Kicked`.
    pub const KICK: u32 = 1 << 1;
    /// Flush VS-stage translations (remote sfence.vma).
    pub const FLUSH_VVMA: u32 = 1 << 2;
    /// Flush G-stage translations (remote hfence.gvma).
    pub const FLUSH_GVMA: u32 = 1 << 3;
    /// Drop decoded blocks (remote fence.i).
    pub const FENCE_I: u32 = 1 << 4;
    /// The hypervisor plane halted the VM.
    pub const HALT: u32 = 1 << 5;
}

/// The part of a hart that other threads may touch.
#[derive(Debug)]
pub struct HartShared {
    pub(crate) vmid: Vmid,
    pub(crate) vcpu_id: u32,
    /// Virtual interrupt pending bits (huvip): VSSIP, VSTIP, VSEIP.
    pub(crate) hvip: AtomicU64,
    pub(crate) req: AtomicU32,
    /// The hart is inside `huret` and may run guest code before it next looks at `req` (false
    /// while it sleeps in WFI).
    pub(crate) in_guest: AtomicBool,
    /// Remote-fence handshake: requests issued / requests completed.
    pub(crate) fence_seq: AtomicU64,
    pub(crate) fence_done: AtomicU64,
    pub(crate) thread: Mutex<Option<Thread>>,
}

impl HartShared {
    pub(crate) fn new(vmid: Vmid, vcpu_id: u32) -> Self {
        HartShared {
            vmid,
            vcpu_id,
            hvip: AtomicU64::new(0),
            req: AtomicU32::new(0),
            in_guest: AtomicBool::new(false),
            fence_seq: AtomicU64::new(0),
            fence_done: AtomicU64::new(0),
            thread: Mutex::new(None),
        }
    }

    pub(crate) fn post(&self, bits: u32) {
        self.req.fetch_or(bits, Ordering::SeqCst);
        self.wake();
    }

    pub(crate) fn wake(&self) {
        if let Some(t) = self
            .thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            t.unpark();
        }
    }
}

/// Which translations a remote fence flushes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoteFence {
    /// VS-stage (guest sfence.vma on another hart).
    Vvma,
    /// G-stage (the hypervisor changed its G-stage table).
    Gvma,
    /// Instruction-fetch coherence (guest fence.i on another hart).
    FenceI,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DoorbellError {
    #[error("vCPU {target} is not registered in VM {vmid}")]
    NoSuchVcpu { vmid: Vmid, target: u32 },
}

/// A VM's doorbell port: what a vthread or an I/O thread of that VM uses to interrupt, kick or
/// fence one of the VM's vCPUs. Bound to one VMID; a target outside it is never reached.
#[derive(Clone)]
pub struct Interrupter {
    pub(crate) vmid: Vmid,
    pub(crate) platform: Arc<PlatformInner>,
}

impl std::fmt::Debug for Interrupter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interrupter")
            .field("vmid", &self.vmid)
            .finish()
    }
}

impl Interrupter {
    fn target(&self, vcpu: u32) -> Result<Arc<HartShared>, DoorbellError> {
        match self.platform.hart(self.vmid, vcpu) {
            Some(h) => Ok(h),
            None => {
                self.platform.emergency(Emergency::BadDoorbell {
                    vmid: self.vmid,
                    target: vcpu,
                });
                Err(DoorbellError::NoSuchVcpu {
                    vmid: self.vmid,
                    target: vcpu,
                })
            }
        }
    }

    /// vIPI: set VSSIP on `vcpu`.
    pub fn send_ipi(&self, vcpu: u32) -> Result<(), DoorbellError> {
        let h = self.target(vcpu)?;
        h.hvip.fetch_or(MIP_VSSIP, Ordering::SeqCst);
        h.post(req::IRQ);
        Ok(())
    }

    /// vEXT: drive the VSEIP line of `vcpu` (level-sensitive, as a PLIC output is).
    pub fn set_external(&self, vcpu: u32, level: bool) -> Result<(), DoorbellError> {
        let h = self.target(vcpu)?;
        if level {
            h.hvip.fetch_or(MIP_VSEIP, Ordering::SeqCst);
        } else {
            h.hvip.fetch_and(!MIP_VSEIP, Ordering::SeqCst);
        }
        h.post(req::IRQ);
        Ok(())
    }

    /// Make `vcpu`'s `huret` return [`crate::Exit::Kicked`] at its next block boundary.
    pub fn kick(&self, vcpu: u32) -> Result<(), DoorbellError> {
        self.target(vcpu)?.post(req::KICK);
        Ok(())
    }

    /// Flush translations (or decoded code) on `vcpu`. For translations, wait until it no
    /// longer runs guest code that could use stale ones. A fence.i is posted without waiting:
    /// the target re-checks its decoded blocks before starting its next block, and blocking a
    /// sender on a descheduled target (overcommitted hosts) costs milliseconds per fence.
    pub fn remote_fence(&self, vcpu: u32, kind: RemoteFence) -> Result<(), DoorbellError> {
        let h = self.target(vcpu)?;
        if kind == RemoteFence::FenceI {
            h.post(req::FENCE_I);
            return Ok(());
        }
        let bit = match kind {
            RemoteFence::Vvma => req::FLUSH_VVMA,
            RemoteFence::Gvma => req::FLUSH_GVMA,
            RemoteFence::FenceI => req::FENCE_I,
        };
        let seq = h.fence_seq.fetch_add(1, Ordering::SeqCst) + 1;
        h.post(bit);
        // A hart outside the guest or asleep in WFI applies pending requests before it next
        // runs guest code, so only a hart that may be running guest code is waited for
        // (SeqCst pairs with its entry and its wake-up).
        let mut spins = 0u32;
        while h.in_guest.load(Ordering::SeqCst) && h.fence_done.load(Ordering::SeqCst) < seq {
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        Ok(())
    }

    pub fn vmid(&self) -> Vmid {
        self.vmid
    }
}
