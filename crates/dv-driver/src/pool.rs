//! The driver's pool of host-physical pages: first-fit over free ranges.

use crate::DriverError;

pub(crate) struct PagePool {
    /// Free ranges (base, size), sorted by base, coalesced.
    free: Vec<(u64, u64)>,
}

impl PagePool {
    pub fn new(size: u64) -> Self {
        PagePool {
            free: vec![(0, size)],
        }
    }

    pub fn alloc(&mut self, size: u64) -> Result<u64, DriverError> {
        let i = self
            .free
            .iter()
            .position(|&(_, s)| s >= size)
            .ok_or_else(|| DriverError::PoolExhausted {
                asked: size,
                free: self.free.iter().map(|r| r.1).sum(),
            })?;
        let (base, s) = self.free[i];
        if s == size {
            self.free.remove(i);
        } else {
            self.free[i] = (base + size, s - size);
        }
        Ok(base)
    }

    pub fn free(&mut self, base: u64, size: u64) {
        let i = self.free.partition_point(|&(b, _)| b < base);
        self.free.insert(i, (base, size));
        // Coalesce with neighbours.
        if i + 1 < self.free.len() && self.free[i].0 + self.free[i].1 == self.free[i + 1].0 {
            self.free[i].1 += self.free[i + 1].1;
            self.free.remove(i + 1);
        }
        if i > 0 && self.free[i - 1].0 + self.free[i - 1].1 == self.free[i].0 {
            self.free[i - 1].1 += self.free[i].1;
            self.free.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_free_coalesce() {
        let mut p = PagePool::new(0x10000);
        let a = p.alloc(0x4000).unwrap();
        let b = p.alloc(0x4000).unwrap();
        let c = p.alloc(0x8000).unwrap();
        assert_eq!((a, b, c), (0, 0x4000, 0x8000));
        assert!(p.alloc(0x1000).is_err());
        p.free(b, 0x4000);
        p.free(a, 0x4000);
        p.free(c, 0x8000);
        assert_eq!(p.free, vec![(0, 0x10000)]);
    }
}
