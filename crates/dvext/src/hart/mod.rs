//! The hart: guest execution engine and its DV-Ext interface.

pub mod decode;
pub mod fpu;
pub mod inst;
pub mod mmu;
