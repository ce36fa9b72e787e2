//! The machine: host-physical memory, the PMC, the registry of harts, and the privileged port
//! through which only the hypervisor plane configures them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use crate::doorbell::{req, HartShared, Interrupter};
use crate::exit::{Emergency, HaltReason};
use crate::hart::Hart;
use crate::phys_mem::PhysMemory;
use crate::pmc::{Pmc, Vmid};
use crate::timer::Timebase;

type EmergencyHandler = Arc<dyn Fn(&Emergency) + Send + Sync>;

pub(crate) struct PlatformInner {
    pub(crate) mem: Arc<PhysMemory>,
    pub(crate) pmc: Arc<Pmc>,
    pub(crate) timebase: Timebase,
    harts: RwLock<HashMap<(Vmid, u32), Arc<HartShared>>>,
    halted: Mutex<HashMap<Vmid, HaltReason>>,
    handler: RwLock<Option<EmergencyHandler>>,
}

impl PlatformInner {
    pub(crate) fn hart(&self, vmid: Vmid, vcpu: u32) -> Option<Arc<HartShared>> {
        self.harts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(vmid, vcpu))
            .cloned()
    }

    /// Raise an emergency to the hypervisor plane (the only path from a running VM to it).
    pub(crate) fn emergency(&self, e: Emergency) {
        let h = self
            .handler
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(h) = h {
            h(&e);
        }
    }

    /// Stop every vCPU of `vmid`: each returns `Exit::Halted` from `huret`. The first reason
    /// recorded wins.
    pub(crate) fn halt_vm(&self, vmid: Vmid, reason: HaltReason) {
        self.halted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(vmid)
            .or_insert(reason);
        let harts = self.harts.read().unwrap_or_else(|e| e.into_inner());
        for ((v, _), h) in harts.iter() {
            if *v == vmid {
                h.post(req::HALT);
            }
        }
    }

    pub(crate) fn halt_reason(&self, vmid: Vmid) -> Option<HaltReason> {
        self.halted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&vmid)
            .copied()
    }
}

/// The hardware: what exists whether or not any hypervisor runs.
#[derive(Clone)]
pub struct Platform {
    pub(crate) inner: Arc<PlatformInner>,
}

/// The privileged (HS-mode) side of DV-Ext. Exactly one exists per platform; it belongs to the
/// hypervisor plane (the DV-driver). Everything that can widen what a VM reaches goes through it.
pub struct HypervisorControl {
    inner: Arc<PlatformInner>,
}

impl Platform {
    /// Build a machine with `phys_mem_size` bytes of host-physical memory. Returns the platform
    /// and its one privileged port.
    pub fn new(phys_mem_size: u64) -> std::io::Result<(Platform, HypervisorControl)> {
        let inner = Arc::new(PlatformInner {
            mem: Arc::new(PhysMemory::new(phys_mem_size)?),
            pmc: Arc::new(Pmc::new()),
            timebase: Timebase::new(),
            harts: RwLock::new(HashMap::new()),
            halted: Mutex::new(HashMap::new()),
            handler: RwLock::new(None),
        });
        Ok((
            Platform {
                inner: inner.clone(),
            },
            HypervisorControl { inner },
        ))
    }

    pub fn phys_mem_size(&self) -> u64 {
        self.inner.mem.size()
    }

    pub fn timebase(&self) -> Timebase {
        self.inner.timebase
    }
}

impl HypervisorControl {
    /// The host-physical memory, for the driver's own use (zeroing grants, test set-ups).
    pub fn phys_mem(&self) -> &Arc<PhysMemory> {
        &self.inner.mem
    }

    /// Program the PMC: allow `vmid` to reach `[base, base + len)`.
    pub fn pmc_grant(&self, vmid: Vmid, base: u64, len: u64) {
        self.inner.pmc.grant(vmid, base, len);
    }

    /// Remove every PMC grant of `vmid`.
    pub fn pmc_revoke_all(&self, vmid: Vmid) {
        self.inner.pmc.revoke_all(vmid);
    }

    pub fn pmc_check(&self, vmid: Vmid, hpa: u64, len: u64) -> bool {
        self.inner.pmc.check(vmid, hpa, len)
    }

    /// Create and register the hart for vCPU `vcpu_id` of VM `vmid`, with delegation enabled.
    pub fn create_hart(&self, vmid: Vmid, vcpu_id: u32) -> Result<Hart, PlatformError> {
        let shared = Arc::new(HartShared::new(vmid, vcpu_id));
        {
            let mut harts = self.inner.harts.write().unwrap_or_else(|e| e.into_inner());
            if harts.contains_key(&(vmid, vcpu_id)) {
                return Err(PlatformError::VcpuExists {
                    vmid,
                    vcpu: vcpu_id,
                });
            }
            harts.insert((vmid, vcpu_id), shared.clone());
        }
        Ok(Hart::new(self.inner.clone(), shared))
    }

    /// Unregister a vCPU: doorbells aimed at it fail from now on.
    pub fn remove_hart(&self, vmid: Vmid, vcpu_id: u32) {
        self.inner
            .harts
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(vmid, vcpu_id));
    }

    /// The doorbell port of VM `vmid`.
    pub fn interrupter(&self, vmid: Vmid) -> Interrupter {
        Interrupter {
            vmid,
            platform: self.inner.clone(),
        }
    }

    /// Install the handler for emergencies (PMC violations, bad doorbells).
    pub fn set_emergency_handler(&self, h: impl Fn(&Emergency) + Send + Sync + 'static) {
        *self
            .inner
            .handler
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(h));
    }

    /// Stop every vCPU of `vmid`: each returns `Exit::Halted(reason)` from `huret`.
    pub fn halt_vm(&self, vmid: Vmid, reason: HaltReason) {
        self.inner.halt_vm(vmid, reason);
    }

    pub fn halt_reason(&self, vmid: Vmid) -> Option<HaltReason> {
        self.inner.halt_reason(vmid)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlatformError {
    #[error("vCPU {vcpu} of VM {vmid} is already registered")]
    VcpuExists { vmid: Vmid, vcpu: u32 },
}
