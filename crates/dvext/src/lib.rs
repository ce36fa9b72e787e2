//! # dvext — the DV-Ext hardware model
//!
//! A RISC-V hart (RV64IMAFDC, Zicsr, Zifencei, Zicntr, Sstc) that runs guests in VS/VU mode,
//! with two-stage translation, the physical memory checker, and the DV-Ext interface through
//! which a user-level hypervisor handles every VM exit: HU CSRs, `huret`, `hufence.gvma`,
//! `hlv`/`hlvx`/`hsv`, and user-level interrupt doorbells. See `docs/dv-ext.md`.

pub mod csr;
pub mod doorbell;
pub mod exit;
#[doc(hidden)]
pub mod fuzzing;
pub mod hart;
pub mod phys_mem;
pub mod platform;
pub mod pmc;
pub mod timer;

pub use doorbell::{DoorbellError, Interrupter, RemoteFence};
pub use exit::{Emergency, Exit, HaltReason};
pub use hart::{
    GuestAccessFault, Hart, HartStats, JitPool, JitPoolSettings, JitStats, NoSuchCsr,
    JIT_DEFAULT_THRESHOLD,
};
pub use phys_mem::{PhysMemory, PAGE_SIZE};
pub use platform::{HypervisorControl, Platform, PlatformError};
pub use pmc::{Pmc, Vmid};
pub use timer::{Timebase, TIMEBASE_HZ};
