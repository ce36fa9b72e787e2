//! Checks for the RISC-V Linux `Image` header (Documentation/arch/riscv/boot-image-header.rst).
//!
//! ```text
//! 0x00 code0 u32, 0x04 code1 u32, 0x08 text_offset u64, 0x10 image_size u64,
//! 0x18 flags u64, 0x20 version u32, 0x24 res1 u32, 0x28 res2 u64,
//! 0x30 magic "RISCV\0\0\0" (deprecated), 0x38 magic2 "RSC\x05", 0x3c res3 u32
//! ```

use anyhow::{bail, Result};

/// Offset of the `magic2` field.
pub const MAGIC2_OFFSET: usize = 0x38;
/// The `magic2` value every RISC-V `Image` since header version 0.2 carries.
pub const MAGIC2: &[u8; 4] = b"RSC\x05";
/// Size of the header.
pub const HEADER_LEN: usize = 0x40;

/// The fields of the header that matter to a loader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageHeader {
    /// Where the image wants to sit relative to the start of RAM.
    pub text_offset: u64,
    /// Bytes the image occupies once loaded (including bss); 0 means unknown.
    pub image_size: u64,
    /// Bit 0: endianness (0 = little).
    pub flags: u64,
    /// Header version, major in the upper 16 bits.
    pub version: u32,
    /// Whether the image is also a PE/COFF (EFI stub) binary ("MZ" at offset 0).
    pub efi_stub: bool,
}

/// Parses and validates the header at the start of `bytes`.
pub fn parse_image_header(bytes: &[u8]) -> Result<ImageHeader> {
    if bytes.len() < HEADER_LEN {
        bail!(
            "file too short for a RISC-V Image header ({} bytes)",
            bytes.len()
        );
    }
    if &bytes[MAGIC2_OFFSET..MAGIC2_OFFSET + 4] != MAGIC2 {
        bail!(
            "not a RISC-V Image: expected magic \"RSC\\x05\" at 0x38, found {:02x?}",
            &bytes[MAGIC2_OFFSET..MAGIC2_OFFSET + 4]
        );
    }
    let u64_at = |o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[o..o + 8]);
        u64::from_le_bytes(b)
    };
    let mut v = [0u8; 4];
    v.copy_from_slice(&bytes[0x20..0x24]);
    let header = ImageHeader {
        text_offset: u64_at(0x08),
        image_size: u64_at(0x10),
        flags: u64_at(0x18),
        version: u32::from_le_bytes(v),
        efi_stub: bytes.starts_with(b"MZ"),
    };
    if header.flags & 1 != 0 {
        bail!("RISC-V Image is big-endian (flags {:#x})", header.flags);
    }
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Vec<u8> {
        let mut h = vec![0u8; 0x1000];
        h[0..2].copy_from_slice(b"MZ");
        h[0x08..0x10].copy_from_slice(&0x20_0000u64.to_le_bytes());
        h[0x10..0x18].copy_from_slice(&0x23a_0000u64.to_le_bytes());
        h[0x20..0x24].copy_from_slice(&0x0002u32.to_le_bytes());
        h[0x30..0x38].copy_from_slice(b"RISCV\0\0\0");
        h[0x38..0x3c].copy_from_slice(b"RSC\x05");
        h
    }

    #[test]
    fn accepts_valid_header() {
        let h = parse_image_header(&header()).unwrap();
        assert_eq!(h.text_offset, 0x20_0000);
        assert_eq!(h.image_size, 0x23a_0000);
        assert_eq!(h.version, 2);
        assert!(h.efi_stub);
    }

    #[test]
    fn rejects_bad_magic_short_files_and_big_endian() {
        let mut h = header();
        h[0x3b] = 0x04;
        let err = parse_image_header(&h).unwrap_err().to_string();
        assert!(err.contains("not a RISC-V Image"), "{err}");
        assert!(parse_image_header(&header()[..0x3c]).is_err());
        // An ELF vmlinux is not an Image.
        let mut elf = vec![0u8; 0x100];
        elf[..4].copy_from_slice(b"\x7fELF");
        assert!(parse_image_header(&elf).is_err());
        let mut be = header();
        be[0x18] = 1;
        assert!(parse_image_header(&be).is_err());
    }
}
