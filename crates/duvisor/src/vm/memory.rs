//! Guest RAM: a contiguous range of guest-physical addresses backed by one driver grant.

use dv_driver::MemoryGrant;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("guest-physical range {gpa:#x}+{len:#x} is outside guest RAM")]
pub struct OutOfRam {
    pub gpa: u64,
    pub len: u64,
}

#[derive(Clone, Debug)]
pub struct GuestRam {
    grant: MemoryGrant,
    base: u64,
}

impl GuestRam {
    pub fn new(grant: MemoryGrant, base: u64) -> Self {
        GuestRam { grant, base }
    }

    pub fn base(&self) -> u64 {
        self.base
    }

    pub fn size(&self) -> u64 {
        self.grant.len()
    }

    pub fn end(&self) -> u64 {
        self.base + self.grant.len()
    }

    /// Whether `[gpa, gpa + len)` is RAM.
    pub fn contains(&self, gpa: u64, len: u64) -> bool {
        gpa >= self.base && gpa.checked_add(len).is_some_and(|e| e <= self.end())
    }

    /// Host-physical address backing `gpa` (which must be RAM).
    pub fn hpa(&self, gpa: u64) -> Option<u64> {
        self.contains(gpa, 1)
            .then(|| self.grant.hpa_base() + (gpa - self.base))
    }

    /// Offset into the grant of `[gpa, gpa + len)`, which must be RAM.
    fn offset(&self, gpa: u64, len: usize) -> Result<u64, OutOfRam> {
        if self.contains(gpa, len as u64) {
            Ok(gpa - self.base)
        } else {
            Err(OutOfRam {
                gpa,
                len: len as u64,
            })
        }
    }

    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), OutOfRam> {
        let off = self.offset(gpa, buf.len())?;
        // In range by construction: the grant is exactly guest RAM.
        self.grant.read(off, buf).then_some(()).ok_or(OutOfRam {
            gpa,
            len: buf.len() as u64,
        })
    }

    pub fn write(&self, gpa: u64, buf: &[u8]) -> Result<(), OutOfRam> {
        let off = self.offset(gpa, buf.len())?;
        self.grant.write(off, buf).then_some(()).ok_or(OutOfRam {
            gpa,
            len: buf.len() as u64,
        })
    }
}
