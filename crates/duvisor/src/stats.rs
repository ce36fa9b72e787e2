//! VM-exit statistics, counted by the vthreads that handled them.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    Sbi,
    MmioRead,
    MmioWrite,
    GStageMap,
    AccessFault,
    VirtualInst,
    Kick,
    Other,
}

pub const EXIT_KINDS: [ExitKind; 8] = [
    ExitKind::Sbi,
    ExitKind::MmioRead,
    ExitKind::MmioWrite,
    ExitKind::GStageMap,
    ExitKind::AccessFault,
    ExitKind::VirtualInst,
    ExitKind::Kick,
    ExitKind::Other,
];

impl ExitKind {
    pub fn name(self) -> &'static str {
        match self {
            ExitKind::Sbi => "sbi call (ecall)",
            ExitKind::MmioRead => "mmio read",
            ExitKind::MmioWrite => "mmio write",
            ExitKind::GStageMap => "g-stage fault (map RAM)",
            ExitKind::AccessFault => "access fault injected",
            ExitKind::VirtualInst => "virtual instruction",
            ExitKind::Kick => "kick",
            ExitKind::Other => "other",
        }
    }
}

#[derive(Default, Debug)]
pub struct ExitStats {
    n: [AtomicU64; 8],
}

impl ExitStats {
    #[inline]
    pub fn count(&self, k: ExitKind) {
        self.n[k as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, k: ExitKind) -> u64 {
        self.n[k as usize].load(Ordering::Relaxed)
    }

    pub fn total(&self) -> u64 {
        self.n.iter().map(|a| a.load(Ordering::Relaxed)).sum()
    }
}
