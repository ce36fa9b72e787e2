//! The physical memory checker (PMC): the host-physical ranges each VMID may ever reach.
//!
//! Only the hypervisor plane programs it (through [`crate::HypervisorControl`]). Every G-stage
//! walk and every final translation is checked against it before any memory is touched.

use std::sync::RwLock;

/// A VM identifier as written to hugatp.VMID.
pub type Vmid = u16;

/// Grants by VMID: a short list searched linearly (a host runs a handful of VMs, and a hash
/// of the VMID showed up in profiles of TLB refills, which check the PMC several times each).
#[derive(Debug, Default)]
pub struct Pmc {
    grants: RwLock<Vec<Grants>>,
}

/// A VMID and its `[base, end)` ranges, sorted by base.
type Grants = (Vmid, Vec<(u64, u64)>);

fn ranges_of(g: &[Grants], vmid: Vmid) -> Option<&Vec<(u64, u64)>> {
    g.iter().find(|(v, _)| *v == vmid).map(|(_, r)| r)
}

impl Pmc {
    pub fn new() -> Self {
        Self::default()
    }

    /// Allow `vmid` to reach `[base, base + len)`.
    pub(crate) fn grant(&self, vmid: Vmid, base: u64, len: u64) {
        let mut g = self.grants.write().unwrap_or_else(|e| e.into_inner());
        let i = match g.iter().position(|(v, _)| *v == vmid) {
            Some(i) => i,
            None => {
                g.push((vmid, Vec::new()));
                g.len() - 1
            }
        };
        let v = &mut g[i].1;
        v.push((base, base + len));
        v.sort_unstable();
    }

    /// Remove every grant of `vmid`.
    pub(crate) fn revoke_all(&self, vmid: Vmid) {
        self.grants
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(v, _)| *v != vmid);
    }

    /// Whether `vmid` may access `[hpa, hpa + len)` (which must lie inside one grant).
    pub fn check(&self, vmid: Vmid, hpa: u64, len: u64) -> bool {
        let Some(end) = hpa.checked_add(len) else {
            return false;
        };
        let g = self.grants.read().unwrap_or_else(|e| e.into_inner());
        ranges_of(&g, vmid).is_some_and(|ranges| ranges.iter().any(|&(b, e)| b <= hpa && end <= e))
    }

    /// The ranges granted to `vmid`, sorted by base.
    pub fn ranges(&self, vmid: Vmid) -> Vec<(u64, u64)> {
        let g = self.grants.read().unwrap_or_else(|e| e.into_inner());
        ranges_of(&g, vmid).cloned().unwrap_or_default()
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
