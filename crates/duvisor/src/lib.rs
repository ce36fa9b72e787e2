//! # duvisor — the VM plane
//!
//! A user-level hypervisor: one process per VM, one vthread per vCPU, handling every VM exit
//! itself through the DV-Ext interface, with the devices of a QEMU `virt`-compatible platform.

pub mod cli;
pub mod console;
pub mod devices;
pub mod fdt;
#[doc(hidden)]
pub mod fuzzing;
pub mod guest_console;
pub mod loader;
pub mod privileges;
pub mod sandbox;
pub mod sbi;
pub mod stats;
pub mod storage;
#[cfg(test)]
#[path = "../tests/common/temp_path.rs"]
pub(crate) mod test_files;
pub mod vcpu;
pub mod vm;
