//! Counting every call into the driver.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverCall {
    CreateVm,
    GrantMemory,
    RegisterVcpu,
    Interrupter,
    StopVm,
    DestroyVm,
    Emergency,
}

const KINDS: [DriverCall; 7] = [
    DriverCall::CreateVm,
    DriverCall::GrantMemory,
    DriverCall::RegisterVcpu,
    DriverCall::Interrupter,
    DriverCall::StopVm,
    DriverCall::DestroyVm,
    DriverCall::Emergency,
];

impl DriverCall {
    pub fn name(self) -> &'static str {
        match self {
            DriverCall::CreateVm => "create_vm",
            DriverCall::GrantMemory => "grant_memory",
            DriverCall::RegisterVcpu => "register_vcpu",
            DriverCall::Interrupter => "interrupter",
            DriverCall::StopVm => "stop_vm",
            DriverCall::DestroyVm => "destroy_vm",
            DriverCall::Emergency => "emergency",
        }
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    n: [AtomicU64; 7],
}

impl Counters {
    pub fn count(&self, c: DriverCall) {
        self.n[c as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> DriverStats {
        DriverStats {
            n: std::array::from_fn(|i| self.n[i].load(Ordering::Relaxed)),
        }
    }
}

/// A snapshot of the driver's call counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DriverStats {
    n: [u64; 7],
}

impl DriverStats {
    pub fn get(&self, c: DriverCall) -> u64 {
        self.n[c as usize]
    }

    pub fn total(&self) -> u64 {
        self.n.iter().sum()
    }

    /// (name, count) for every kind of call.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        KINDS.iter().map(move |&k| (k.name(), self.get(k)))
    }
}
