//! # dv-driver — the hypervisor plane
//!
//! The only privileged component. It owns the platform's [`HypervisorControl`] and acts at VM
//! set-up and in emergencies only: it enables delegation for a VM and allocates its VMID,
//! grants host-physical memory from its pool and programs the PMC to bound it, registers vCPUs,
//! and handles the faults only it may see (PMC violations, doorbells aimed at vCPUs that do not
//! exist) by stopping the VM with a report. Every call into it is counted, so a running VM can
//! show that its exit path makes none.

#![forbid(unsafe_code)]

mod grant;
mod pool;
mod stats;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use dvext::{Emergency, HaltReason, Hart, HypervisorControl, Interrupter, Platform, Vmid};

pub use grant::MemoryGrant;
pub use stats::{DriverCall, DriverStats};

use pool::PagePool;
use stats::Counters;

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("cannot create {size} bytes of host-physical memory: {source}")]
    NoMemory { size: u64, source: std::io::Error },
    #[error("host-physical memory pool exhausted: asked for {asked} bytes, {free} free")]
    PoolExhausted { asked: u64, free: u64 },
    #[error("no free VMID")]
    NoVmid,
    #[error("VM {0} does not exist")]
    NoSuchVm(Vmid),
    #[error("vCPU {vcpu} already registered in VM {vmid}")]
    VcpuExists { vmid: Vmid, vcpu: u32 },
    #[error("grant size must be a non-zero multiple of 4096 bytes, got {0}")]
    BadGrantSize(u64),
}

struct VmRecord {
    grants: Vec<(u64, u64)>,
    vcpus: Vec<u32>,
}

struct Shared {
    counters: Counters,
    emergencies: Mutex<Vec<Emergency>>,
}

/// The DV-driver instance for one platform.
pub struct DvDriver {
    hv: HypervisorControl,
    platform: Platform,
    pool: Mutex<PagePool>,
    vms: Mutex<HashMap<Vmid, VmRecord>>,
    shared: Arc<Shared>,
}

/// A VM with delegation enabled: the handle DuVisor holds for its VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmHandle {
    vmid: Vmid,
}

impl VmHandle {
    pub fn vmid(&self) -> Vmid {
        self.vmid
    }
}

impl DvDriver {
    /// Bring up the platform with `phys_mem_size` bytes of host-physical memory and load the
    /// driver on it.
    pub fn load(phys_mem_size: u64) -> Result<Arc<DvDriver>, DriverError> {
        let (platform, hv) =
            Platform::new(phys_mem_size).map_err(|source| DriverError::NoMemory {
                size: phys_mem_size,
                source,
            })?;
        let shared = Arc::new(Shared {
            counters: Counters::default(),
            emergencies: Mutex::new(Vec::new()),
        });
        let s2 = shared.clone();
        // The emergency path: the hart traps here; the VM is stopped by the hardware model
        // (PMC) or here (doorbells), and the report is kept for the operator.
        hv.set_emergency_handler(move |e| {
            s2.counters.count(DriverCall::Emergency);
            tracing::error!(?e, "dv-driver: emergency");
            s2.emergencies
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(e.clone());
        });
        let pool = PagePool::new(hv.phys_mem().size());
        Ok(Arc::new(DvDriver {
            hv,
            platform,
            pool: Mutex::new(pool),
            vms: Mutex::new(HashMap::new()),
            shared,
        }))
    }

    pub fn platform(&self) -> &Platform {
        &self.platform
    }

    /// Enable delegated virtualization for a new VM: allocate its VMID.
    pub fn create_vm(&self) -> Result<VmHandle, DriverError> {
        self.shared.counters.count(DriverCall::CreateVm);
        let mut vms = self.vms.lock().unwrap_or_else(|e| e.into_inner());
        let vmid = (1..(1u32 << 14))
            .map(|v| v as Vmid)
            .find(|v| !vms.contains_key(v))
            .ok_or(DriverError::NoVmid)?;
        vms.insert(
            vmid,
            VmRecord {
                grants: Vec::new(),
                vcpus: Vec::new(),
            },
        );
        Ok(VmHandle { vmid })
    }

    /// Grant `size` bytes of zeroed host-physical memory to `vm` and program the PMC for it.
    pub fn grant_memory(&self, vm: VmHandle, size: u64) -> Result<MemoryGrant, DriverError> {
        self.shared.counters.count(DriverCall::GrantMemory);
        if size == 0 || size % dvext::PAGE_SIZE != 0 {
            return Err(DriverError::BadGrantSize(size));
        }
        let mut vms = self.vms.lock().unwrap_or_else(|e| e.into_inner());
        let rec = vms
            .get_mut(&vm.vmid)
            .ok_or(DriverError::NoSuchVm(vm.vmid))?;
        let base = self
            .pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .alloc(size)?;
        // Memory is zeroed on allocation (fresh anonymous pages) and on release.
        self.hv.pmc_grant(vm.vmid, base, size);
        rec.grants.push((base, size));
        Ok(MemoryGrant::new(self.hv.phys_mem().clone(), base, size))
    }

    /// Register vCPU `vcpu_id` of `vm` and return its hart, delegation enabled.
    pub fn register_vcpu(&self, vm: VmHandle, vcpu_id: u32) -> Result<Hart, DriverError> {
        self.shared.counters.count(DriverCall::RegisterVcpu);
        let mut vms = self.vms.lock().unwrap_or_else(|e| e.into_inner());
        let rec = vms
            .get_mut(&vm.vmid)
            .ok_or(DriverError::NoSuchVm(vm.vmid))?;
        let hart = self
            .hv
            .create_hart(vm.vmid, vcpu_id)
            .map_err(|_| DriverError::VcpuExists {
                vmid: vm.vmid,
                vcpu: vcpu_id,
            })?;
        rec.vcpus.push(vcpu_id);
        Ok(hart)
    }

    /// The VM's doorbell port (user-level interrupts between its threads).
    pub fn interrupter(&self, vm: VmHandle) -> Interrupter {
        self.shared.counters.count(DriverCall::Interrupter);
        self.hv.interrupter(vm.vmid)
    }

    /// Stop every vCPU of `vm` (teardown or an emergency).
    pub fn stop_vm(&self, vm: VmHandle) {
        self.shared.counters.count(DriverCall::StopVm);
        self.hv.halt_vm(vm.vmid, HaltReason::Stopped);
    }

    /// Tear down `vm`: unregister its vCPUs, revoke its PMC grants, return its memory.
    pub fn destroy_vm(&self, vm: VmHandle) {
        self.shared.counters.count(DriverCall::DestroyVm);
        let Some(rec) = self
            .vms
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&vm.vmid)
        else {
            return;
        };
        self.hv.halt_vm(vm.vmid, HaltReason::Stopped);
        for v in rec.vcpus {
            self.hv.remove_hart(vm.vmid, v);
        }
        self.hv.pmc_revoke_all(vm.vmid);
        let mem = self.hv.phys_mem();
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        for (base, size) in rec.grants {
            zero(mem, base, size);
            pool.free(base, size);
        }
    }

    /// Why `vm` was stopped, if it was.
    pub fn halt_reason(&self, vm: VmHandle) -> Option<HaltReason> {
        self.hv.halt_reason(vm.vmid)
    }

    /// Emergencies reported so far.
    pub fn emergencies(&self) -> Vec<Emergency> {
        self.shared
            .emergencies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Calls made into the driver so far, by kind.
    pub fn stats(&self) -> DriverStats {
        self.shared.counters.snapshot()
    }

    /// Test support: map `[base, base+len)` for `vm` in the PMC without taking it from the pool
    /// is deliberately NOT offered; tests that need a faulty mapping point a G-stage entry at
    /// memory granted to another VM instead.
    #[doc(hidden)]
    pub fn pmc_allows(&self, vm: VmHandle, hpa: u64, len: u64) -> bool {
        self.hv.pmc_check(vm.vmid, hpa, len)
    }
}

fn zero(mem: &dvext::PhysMemory, base: u64, size: u64) {
    if mem.discard(base, size) {
        return;
    }
    const CHUNK: usize = 64 * 1024;
    let zeros = vec![0u8; CHUNK];
    let mut off = 0;
    while off < size {
        let n = (size - off).min(CHUNK as u64) as usize;
        mem.write(base + off, &zeros[..n]);
        off += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_are_disjoint_checked_and_counted() {
        let d = DvDriver::load(64 << 20).unwrap();
        let a = d.create_vm().unwrap();
        let b = d.create_vm().unwrap();
        assert_ne!(a.vmid(), b.vmid());
        let ga = d.grant_memory(a, 1 << 20).unwrap();
        let gb = d.grant_memory(b, 1 << 20).unwrap();
        assert!(
            ga.hpa_base() + ga.len() <= gb.hpa_base() || gb.hpa_base() + gb.len() <= ga.hpa_base()
        );
        assert!(d.pmc_allows(a, ga.hpa_base(), 4096));
        assert!(!d.pmc_allows(a, gb.hpa_base(), 4096));
        assert!(matches!(
            d.grant_memory(a, 100),
            Err(DriverError::BadGrantSize(100))
        ));
        assert!(matches!(
            d.grant_memory(a, 1 << 30),
            Err(DriverError::PoolExhausted { .. })
        ));
        let s = d.stats();
        assert_eq!(s.get(DriverCall::CreateVm), 2);
        assert_eq!(s.get(DriverCall::GrantMemory), 4);
    }

    #[test]
    fn destroy_returns_memory_zeroed() {
        let d = DvDriver::load(8 << 20).unwrap();
        let a = d.create_vm().unwrap();
        let g = d.grant_memory(a, 8 << 20).unwrap();
        assert!(g.write(100, b"secret"));
        d.destroy_vm(a);
        assert!(!d.pmc_allows(a, g.hpa_base(), 8));
        let b = d.create_vm().unwrap();
        let g2 = d.grant_memory(b, 8 << 20).unwrap();
        let mut buf = [0u8; 6];
        assert!(g2.read(100, &mut buf));
        assert_eq!(
            &buf, &[0; 6],
            "memory of a destroyed VM must not leak to the next"
        );
    }

    #[test]
    fn duplicate_vcpu_is_refused() {
        let d = DvDriver::load(1 << 20).unwrap();
        let a = d.create_vm().unwrap();
        let _h = d.register_vcpu(a, 0).unwrap();
        assert!(matches!(
            d.register_vcpu(a, 0),
            Err(DriverError::VcpuExists { .. })
        ));
    }

    #[test]
    fn bad_doorbell_is_reported_not_delivered() {
        let d = DvDriver::load(1 << 20).unwrap();
        let a = d.create_vm().unwrap();
        let _h = d.register_vcpu(a, 0).unwrap();
        let irq = d.interrupter(a);
        assert!(irq.send_ipi(0).is_ok());
        assert!(irq.send_ipi(7).is_err());
        assert!(matches!(
            d.emergencies()[..],
            [Emergency::BadDoorbell { target: 7, .. }]
        ));
    }
}
