//! The physical memory checker (PMC): the host-physical ranges each VMID may ever reach.
//!
//! Only the hypervisor plane programs it (through [`crate::HypervisorControl`]). Every G-stage
//! walk and every final translation is checked against it before any memory is touched.

use std::collections::HashMap;
use std::sync::RwLock;

/// A VM identifier as written to hugatp.VMID.
pub type Vmid = u16;

#[derive(Debug, Default)]
pub struct Pmc {
    grants: RwLock<HashMap<Vmid, Vec<(u64, u64)>>>,
}

impl Pmc {
    pub fn new() -> Self {
        Self::default()
    }

    /// Allow `vmid` to reach `[base, base + len)`.
    pub(crate) fn grant(&self, vmid: Vmid, base: u64, len: u64) {
        let mut g = self.grants.write().unwrap_or_else(|e| e.into_inner());
        let v = g.entry(vmid).or_default();
        v.push((base, base + len));
        v.sort_unstable();
    }

    /// Remove every grant of `vmid`.
    pub(crate) fn revoke_all(&self, vmid: Vmid) {
        self.grants
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&vmid);
    }

    /// Whether `vmid` may access `[hpa, hpa + len)` (which must lie inside one grant).
    pub fn check(&self, vmid: Vmid, hpa: u64, len: u64) -> bool {
        let Some(end) = hpa.checked_add(len) else {
            return false;
        };
        let g = self.grants.read().unwrap_or_else(|e| e.into_inner());
        g.get(&vmid)
            .is_some_and(|ranges| ranges.iter().any(|&(b, e)| b <= hpa && end <= e))
    }

    /// The ranges granted to `vmid`, sorted by base.
    pub fn ranges(&self, vmid: Vmid) -> Vec<(u64, u64)> {
        let g = self.grants.read().unwrap_or_else(|e| e.into_inner());
        g.get(&vmid).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_are_per_vmid_and_bounded() {
        let p = Pmc::new();
        p.grant(1, 0x1000, 0x2000);
        assert!(p.check(1, 0x1000, 8));
        assert!(p.check(1, 0x2ff8, 8));
        assert!(!p.check(1, 0x2ffc, 8), "straddles the end");
        assert!(!p.check(1, 0xff8, 8));
        assert!(!p.check(2, 0x1000, 8), "other VMID");
        assert!(!p.check(1, u64::MAX, 2), "overflow");
        p.revoke_all(1);
        assert!(!p.check(1, 0x1000, 8));
    }
}
