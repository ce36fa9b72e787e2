//! The fetcher's own check of a RISC-V Linux `Image` header (the hypervisor's loader checks
//! again at boot; this crate does not depend on it): enough to tell a kernel from anything else
//! a package might hold under the same name.

use anyhow::{bail, Result};

/// Size of the `Image` header.
pub const IMAGE_HEADER_SIZE: usize = 64;
/// The deprecated magic at offset 48.
const IMAGE_MAGIC: &[u8; 8] = b"RISCV\0\0\0";
/// The magic at offset 56.
pub(crate) const IMAGE_MAGIC2: &[u8; 4] = b"RSC\x05";

/// What the manifest records of a kernel's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageHeader {
    pub text_offset: u64,
    pub image_size: u64,
}

impl ImageHeader {
    /// Parses the header at the start of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < IMAGE_HEADER_SIZE {
            bail!(
                "not a RISC-V Linux Image: {} bytes, shorter than its header",
                bytes.len()
            );
        }
        if &bytes[56..60] != IMAGE_MAGIC2 && &bytes[48..56] != IMAGE_MAGIC {
            bail!("not a RISC-V Linux Image: no RISC-V magic in the header");
        }
        let u64_at = |off: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[off..off + 8]);
            u64::from_le_bytes(b)
        };
        Ok(Self {
            text_offset: u64_at(8),
            image_size: u64_at(16),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_checks() {
        let mut k = vec![0u8; 4096];
        assert!(ImageHeader::parse(&k).is_err());
        k[56..60].copy_from_slice(IMAGE_MAGIC2);
        k[16..24].copy_from_slice(&0x1234u64.to_le_bytes());
        let h = ImageHeader::parse(&k).unwrap();
        assert_eq!((h.text_offset, h.image_size), (0, 0x1234));
        assert!(ImageHeader::parse(&k[..63]).is_err());
        let mut old = vec![0u8; 64];
        old[48..56].copy_from_slice(IMAGE_MAGIC);
        ImageHeader::parse(&old).unwrap();
    }
}
