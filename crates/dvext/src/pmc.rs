//! The physical memory checker (PMC): the host-physical ranges each VMID may ever reach.
//!
//! Only the hypervisor plane programs it (through [`crate::HypervisorControl`]). Every G-stage
//! walk and every final translation is checked against it before any memory is touched.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

/// A VM identifier as written to hugatp.VMID.
pub type Vmid = u16;

/// Grants by VMID: a short list searched linearly (a host runs a handful of VMs, and a hash
/// of the VMID showed up in profiles of TLB refills, which check the PMC several times each).
#[derive(Debug)]
pub struct Pmc {
    grants: RwLock<Vec<Grants>>,
    /// Tells checkers apart in a thread's cached copy (see [`Pmc::check`]).
    id: u64,
    /// Bumped by every change, under the write lock.
    version: AtomicU64,
}

/// A VMID and its `[base, end)` ranges, sorted by base.
type Grants = (Vmid, Vec<(u64, u64)>);

fn ranges_of(g: &[Grants], vmid: Vmid) -> Option<&Vec<(u64, u64)>> {
    g.iter().find(|(v, _)| *v == vmid).map(|(_, r)| r)
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// One VMID's ranges as a thread last read them: (checker id, version, VMID) and the ranges.
/// A check takes no lock and writes no shared memory while its key holds: taking the read lock
/// for every check (a TLB refill makes up to 16) kept the lock's cache line moving between the
/// host cores of a 4-vCPU guest, 2% of the smp bench row's host time.
#[derive(Default)]
struct CachedGrants {
    key: (u64, u64, Vmid),
    ranges: Vec<(u64, u64)>,
}

thread_local! {
    static CACHED: RefCell<CachedGrants> = RefCell::new(CachedGrants::default());
}

impl Default for Pmc {
    fn default() -> Self {
        Pmc {
            grants: RwLock::default(),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            version: AtomicU64::new(0),
        }
    }
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
        self.version.fetch_add(1, Ordering::Release);
    }

    /// Remove every grant of `vmid`. A check that starts after this returns sees it.
    pub(crate) fn revoke_all(&self, vmid: Vmid) {
        let mut g = self.grants.write().unwrap_or_else(|e| e.into_inner());
        g.retain(|(v, _)| *v != vmid);
        self.version.fetch_add(1, Ordering::Release);
    }

    /// Whether `vmid` may access `[hpa, hpa + len)` (which must lie inside one grant).
    ///
    /// Against the calling thread's copy of the ranges while no change came since it was made;
    /// a check that reads the version before a change completes is ordered before that change,
    /// as if it had taken the read lock first.
    pub fn check(&self, vmid: Vmid, hpa: u64, len: u64) -> bool {
        let Some(end) = hpa.checked_add(len) else {
            return false;
        };
        let version = self.version.load(Ordering::Acquire);
        CACHED.with(|c| {
            let mut c = c.borrow_mut();
            if c.key != (self.id, version, vmid) {
                let g = self.grants.read().unwrap_or_else(|e| e.into_inner());
                // Read again under the lock: changes bump it under the write lock, so the
                // copy and its key agree.
                c.key = (self.id, self.version.load(Ordering::Acquire), vmid);
                c.ranges.clear();
                c.ranges.extend(ranges_of(&g, vmid).into_iter().flatten());
            }
            c.ranges.iter().any(|&(b, e)| b <= hpa && end <= e)
        })
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

    #[test]
    fn a_change_reaches_a_thread_that_checked_before_it() {
        use std::sync::mpsc::channel;
        let p = Pmc::new();
        p.grant(1, 0x1000, 0x1000);
        let (to_main, from_t) = channel();
        let (to_t, from_main) = channel::<()>();
        let p = &p;
        // The closure owns `to_t`: a failed assertion drops it, ending the thread's wait.
        std::thread::scope(move |s| {
            s.spawn(move || {
                to_main.send(p.check(1, 0x1000, 8)).unwrap();
                from_main.recv().unwrap();
                to_main.send(p.check(1, 0x1000, 8)).unwrap();
                from_main.recv().unwrap();
                to_main.send(p.check(1, 0x5000, 8)).unwrap();
            });
            assert!(from_t.recv().unwrap());
            p.revoke_all(1);
            to_t.send(()).unwrap();
            assert!(!from_t.recv().unwrap(), "revoked");
            p.grant(1, 0x5000, 0x1000);
            to_t.send(()).unwrap();
            assert!(from_t.recv().unwrap(), "granted");
        });
    }

    #[test]
    fn checkers_do_not_share_a_threads_copy() {
        let a = Pmc::new();
        a.grant(1, 0x1000, 0x1000);
        assert!(a.check(1, 0x1000, 8));
        let b = Pmc::new();
        assert!(!b.check(1, 0x1000, 8));
        b.grant(1, 0x9000, 0x1000);
        assert!(b.check(1, 0x9000, 8));
        assert!(!a.check(1, 0x9000, 8));
        assert!(a.check(1, 0x1000, 8));
    }
}
