//! What `huret()` hands back to the user-level hypervisor.

use crate::pmc::Vmid;

/// One VM exit, as delivered to HU-mode through ucause/utval/hutval/hutinst.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// A trap not delegated to the guest: `cause` as in ucause (bit 63 set for interrupts),
    /// `tval` as utval, `htval` as hutval (a guest-physical address shifted right by 2 for
    /// guest-page faults), `htinst` as hutinst (the transformed trapping instruction, or 0).
    Trap {
        cause: u64,
        tval: u64,
        htval: u64,
        htinst: u64,
    },
    /// Another thread rang this vCPU's kick doorbell: no guest event, the hypervisor asked to
    /// regain control (e.g. to stop the VM).
    Kicked,
    /// The hypervisor plane stopped this VM (an emergency such as a PMC violation).
    Halted(HaltReason),
}

/// Why the hypervisor plane stopped a VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Emergency {
    /// A G-stage translation (or a G-stage table walk) reached host-physical memory outside the
    /// VM's grants. Nothing was read or written.
    PmcViolation {
        vmid: Vmid,
        vcpu: u32,
        hpa: u64,
        va: u64,
    },
    /// A doorbell was rung for a vCPU ID that is not registered in the sender's VM.
    BadDoorbell { vmid: Vmid, target: u32 },
}

/// The reason a halted vCPU reports (copyable summary of the emergency).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HaltReason {
    /// `va` is the guest address whose translation reached `hpa`.
    PmcViolation {
        hpa: u64,
        va: u64,
    },
    BadDoorbell {
        target: u32,
    },
    /// Stopped by the hypervisor plane for another reason (e.g. VM teardown).
    Stopped,
}

impl std::fmt::Display for HaltReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HaltReason::PmcViolation { hpa, va } => write!(
                f,
                "PMC violation: guest address {va:#x} translated to host-physical {hpa:#x}, outside the VM's grant"
            ),
            HaltReason::BadDoorbell { target } => {
                write!(f, "doorbell rung for unregistered vCPU {target}")
            }
            HaltReason::Stopped => write!(f, "stopped by the hypervisor plane"),
        }
    }
}
