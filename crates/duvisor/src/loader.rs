//! Placing a Linux RISC-V `Image`, an initrd and the device tree in guest RAM.
//!
//! This module only plans: it parses and checks the kernel's header and computes where each piece
//! goes ([`plan_layout`]); the caller copies the bytes into guest memory.
//!
//! # The `Image` header (Documentation/arch/riscv/boot-image-header.rst)
//!
//! | offset | field                                              |
//! |--------|----------------------------------------------------|
//! | 0      | `code0` (u32; `"MZ"…` when the Image is also a PE/EFI file) |
//! | 4      | `code1` (u32)                                      |
//! | 8      | `text_offset` (u64): load offset from the start of RAM |
//! | 16     | `image_size` (u64): bytes the kernel occupies, bss included |
//! | 24     | `flags` (u64): bit 0 = big-endian                  |
//! | 32     | `version` (u32): major << 16 \| minor              |
//! | 36     | reserved (u32)                                     |
//! | 40     | reserved (u64)                                     |
//! | 48     | `magic` = `"RISCV\0\0\0"` (deprecated)             |
//! | 56     | `magic2` = `"RSC\x05"`                             |
//! | 60     | reserved (u32; the PE header offset in EFI images) |
//!
//! All fields are little-endian. An image is accepted when either magic matches.
//!
//! # Layout
//!
//! * **Kernel** at `ram_base + text_offset` (Debian's: `0x20_0000`), which must be 2 MiB aligned as
//!   RV64 Linux requires. It occupies `max(image_size, file length)` bytes (`image_size` 0, as in
//!   very old kernels, means the file length). Entry point: the load address.
//! * **Device tree** in a window of `fdt_max` bytes (at most 2 MiB, the most Linux maps before it
//!   has parsed memory) at the top of RAM, page aligned: `align_down(ram_end - fdt_max, 4 KiB)`.
//! * **Initrd** right below the device tree window, page aligned:
//!   `align_down(fdt_addr - initrd_len, 4 KiB)`.
//!
//! Putting the initrd and the device tree at the top keeps them as far as possible from the kernel
//! and leaves all of the RAM in between to the kernel's early allocator. Both must lie above the
//! kernel's footprint, or planning fails with [`LoaderError::MemoryTooSmall`].

/// Size of the `Image` header.
pub const IMAGE_HEADER_SIZE: usize = 64;
/// The deprecated magic at offset 48.
pub const IMAGE_MAGIC: &[u8; 8] = b"RISCV\0\0\0";
/// The magic at offset 56.
pub const IMAGE_MAGIC2: &[u8; 4] = b"RSC\x05";
/// Alignment RV64 Linux needs for its load address.
pub const KERNEL_ALIGN: u64 = 2 << 20;
/// Alignment of the initrd and the device tree.
pub const PAGE_SIZE: u64 = 4096;
/// The largest device tree window: Linux maps at most this much of the DTB early on.
pub const FDT_MAX_SIZE: u64 = 2 << 20;

/// Why a kernel cannot be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoaderError {
    #[error("not a RISC-V Linux Image: {0}")]
    NotAnImage(String),
    #[error(
        "the kernel's load address {addr:#x} (RAM base + text_offset) is not 2 MiB aligned, \
         as RV64 Linux requires"
    )]
    MisalignedKernel { addr: u64 },
    #[error("invalid guest RAM {base:#x}+{size:#x}")]
    InvalidRam { base: u64, size: u64 },
    #[error(
        "memory too small for the kernel: it needs {kernel_addr:#x}..{kernel_end:#x} but RAM \
         ends at {ram_end:#x}"
    )]
    KernelTooBig {
        kernel_addr: u64,
        kernel_end: u64,
        ram_end: u64,
    },
    #[error(
        "memory too small for kernel + initrd + device tree: {needed:#x} bytes needed above \
         the kernel (which ends at {kernel_end:#x}), {available:#x} available"
    )]
    MemoryTooSmall {
        kernel_end: u64,
        needed: u64,
        available: u64,
    },
    #[error("the firmware file is empty")]
    EmptyFirmware,
    #[error("device tree window of {0:#x} bytes is not in 1..=2 MiB")]
    InvalidFdtWindow(u64),
}

/// The parsed `Image` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageHeader {
    pub code0: u32,
    pub code1: u32,
    pub text_offset: u64,
    pub image_size: u64,
    pub flags: u64,
    pub version: u32,
    /// Whether the file also starts as a PE/EFI image (`"MZ"`).
    pub is_pe: bool,
}

fn le_u32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

fn le_u64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

impl ImageHeader {
    /// Parse and check the header at the start of `kernel`.
    pub fn parse(kernel: &[u8]) -> Result<ImageHeader, LoaderError> {
        let bad = |why: String| Err(LoaderError::NotAnImage(why));
        if kernel.starts_with(&[0x1f, 0x8b]) {
            return bad("gzip-compressed data (an Image.gz: decompress it first)".into());
        }
        if kernel.starts_with(b"\x7fELF") {
            return bad("an ELF file (a vmlinux: use the raw Image instead)".into());
        }
        if kernel.starts_with(b"MZ") && kernel.get(4..8) == Some(b"zimg") {
            return bad(
                "an EFI zboot (compressed) image: extract and decompress its payload first".into(),
            );
        }
        if kernel.len() < IMAGE_HEADER_SIZE {
            return bad(format!(
                "too short ({} bytes; the header alone is {IMAGE_HEADER_SIZE})",
                kernel.len()
            ));
        }
        if &kernel[56..60] != IMAGE_MAGIC2 && &kernel[48..56] != IMAGE_MAGIC {
            return bad(format!(
                "bad magic {:02x?} at offset 56 (expected \"RSC\\x05\")",
                &kernel[56..60]
            ));
        }
        let header = ImageHeader {
            code0: le_u32(kernel, 0),
            code1: le_u32(kernel, 4),
            text_offset: le_u64(kernel, 8),
            image_size: le_u64(kernel, 16),
            flags: le_u64(kernel, 24),
            version: le_u32(kernel, 32),
            is_pe: kernel.starts_with(b"MZ"),
        };
        if header.flags & 1 != 0 {
            return bad("a big-endian kernel".into());
        }
        Ok(header)
    }

    /// `(major, minor)` of the header version.
    pub fn version(&self) -> (u16, u16) {
        ((self.version >> 16) as u16, self.version as u16)
    }
}

/// Where the kernel, initrd and device tree go. Ranges are `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Where the `Image` file is copied.
    pub kernel_addr: u64,
    /// End of the kernel's footprint (`image_size`, bss included).
    pub kernel_end: u64,
    /// `(start, end)` of the initrd, as `linux,initrd-start`/`-end` expect.
    pub initrd: Option<(u64, u64)>,
    /// Start of the device tree window (`fdt_max` bytes); passed to the kernel in `a1`.
    pub fdt_addr: u64,
    /// Where the boot hart starts (with `a0` = hart ID, `a1` = `fdt_addr`).
    pub entry: u64,
}

fn align_down(x: u64, a: u64) -> u64 {
    x & !(a - 1)
}

/// Plan where to put `kernel` (an `Image` file), an initrd of `initrd_len` bytes and a device
/// tree of at most `fdt_max` bytes in RAM `[ram_base, ram_base + ram_size)`. See the module
/// documentation for the placement rules.
pub fn plan_layout(
    ram_base: u64,
    ram_size: u64,
    kernel: &[u8],
    initrd_len: Option<u64>,
    fdt_max: u64,
) -> Result<Layout, LoaderError> {
    let header = ImageHeader::parse(kernel)?;
    let footprint = header.image_size.max(kernel.len() as u64);
    place(
        ram_base,
        ram_size,
        header.text_offset,
        footprint,
        initrd_len,
        fdt_max,
    )
}

/// Plan where to put a boot loader of `len` bytes (a raw S-mode binary such as U-Boot's
/// `u-boot.bin`) and the device tree: the loader goes where a kernel with Debian's
/// `text_offset` would (`ram_base + FIRMWARE_OFFSET`, where the SBI firmware of QEMU's `virt`
/// machine jumps too) and is entered the same way; there is no header to check.
pub fn plan_firmware_layout(
    ram_base: u64,
    ram_size: u64,
    len: u64,
    fdt_max: u64,
) -> Result<Layout, LoaderError> {
    if len == 0 {
        return Err(LoaderError::EmptyFirmware);
    }
    place(ram_base, ram_size, FIRMWARE_OFFSET, len, None, fdt_max)
}

/// Where in RAM a boot loader is loaded: the address S-mode U-Boot for QEMU `virt` is linked at.
pub const FIRMWARE_OFFSET: u64 = 0x20_0000;

/// Place `footprint` bytes at `ram_base + load_offset`, then the device tree and the initrd
/// at the top of RAM.
fn place(
    ram_base: u64,
    ram_size: u64,
    load_offset: u64,
    footprint: u64,
    initrd_len: Option<u64>,
    fdt_max: u64,
) -> Result<Layout, LoaderError> {
    let ram_end = ram_base
        .checked_add(ram_size)
        .filter(|_| ram_size > 0)
        .ok_or(LoaderError::InvalidRam {
            base: ram_base,
            size: ram_size,
        })?;
    if fdt_max == 0 || fdt_max > FDT_MAX_SIZE {
        return Err(LoaderError::InvalidFdtWindow(fdt_max));
    }

    let kernel_addr = ram_base
        .checked_add(load_offset)
        .ok_or(LoaderError::NotAnImage(format!(
            "text_offset {load_offset:#x} is out of range"
        )))?;
    if kernel_addr % KERNEL_ALIGN != 0 {
        return Err(LoaderError::MisalignedKernel { addr: kernel_addr });
    }
    let kernel_end = kernel_addr
        .checked_add(footprint)
        .filter(|&end| end <= ram_end)
        .ok_or(LoaderError::KernelTooBig {
            kernel_addr,
            kernel_end: kernel_addr.saturating_add(footprint),
            ram_end,
        })?;

    let too_small = || LoaderError::MemoryTooSmall {
        kernel_end,
        needed: fdt_max.saturating_add(initrd_len.unwrap_or(0)),
        available: ram_end - kernel_end,
    };
    let fdt_addr = ram_end
        .checked_sub(fdt_max)
        .map(|a| align_down(a, PAGE_SIZE))
        .filter(|&a| a >= kernel_end)
        .ok_or_else(too_small)?;
    let initrd = match initrd_len {
        None => None,
        Some(len) => {
            let start = fdt_addr
                .checked_sub(len)
                .map(|a| align_down(a, PAGE_SIZE))
                .filter(|&a| a >= kernel_end)
                .ok_or_else(too_small)?;
            Some((start, start + len))
        }
    };
    Ok(Layout {
        kernel_addr,
        kernel_end,
        initrd,
        fdt_addr,
        entry: kernel_addr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const RAM: u64 = 0x8000_0000;

    /// A synthetic Image: header fields as given, `len` bytes long, optionally PE-flavoured.
    fn image(text_offset: u64, image_size: u64, len: usize, pe: bool) -> Vec<u8> {
        let mut b = vec![0u8; len.max(IMAGE_HEADER_SIZE)];
        if pe {
            b[0..2].copy_from_slice(b"MZ");
        } else {
            b[0..4].copy_from_slice(&0x0400_006fu32.to_le_bytes()); // j 0x40
        }
        b[8..16].copy_from_slice(&text_offset.to_le_bytes());
        b[16..24].copy_from_slice(&image_size.to_le_bytes());
        b[32..36].copy_from_slice(&0x0000_0002u32.to_le_bytes());
        b[48..56].copy_from_slice(IMAGE_MAGIC);
        b[56..60].copy_from_slice(IMAGE_MAGIC2);
        b.truncate(len);
        b
    }

    fn debian_like() -> Vec<u8> {
        // 0x20_0000 text offset; a 40 MiB footprint from a 30 MiB file.
        image(0x20_0000, 40 * MIB, 30 << 20, true)
    }

    #[test]
    fn header_fields_are_parsed() {
        let h = ImageHeader::parse(&debian_like()).unwrap();
        assert_eq!(h.text_offset, 0x20_0000);
        assert_eq!(h.image_size, 40 * MIB);
        assert_eq!(h.flags, 0);
        assert_eq!(h.version(), (0, 2));
        assert!(h.is_pe);
        assert_eq!(h.code0 & 0xffff, u32::from_le_bytes(*b"MZ\0\0"));
        let h = ImageHeader::parse(&image(0, 0x1000, 0x1000, false)).unwrap();
        assert!(!h.is_pe);
        assert_eq!(h.code0, 0x0400_006f);
    }

    #[test]
    fn either_magic_is_enough() {
        let mut old = image(0x20_0000, 0x1000, 0x1000, false);
        old[56..60].fill(0);
        ImageHeader::parse(&old).unwrap();
        let mut new = image(0x20_0000, 0x1000, 0x1000, false);
        new[48..56].fill(0);
        ImageHeader::parse(&new).unwrap();
    }

    fn not_an_image(kernel: &[u8]) -> String {
        match ImageHeader::parse(kernel) {
            Err(e @ LoaderError::NotAnImage(_)) => e.to_string(),
            other => panic!("expected NotAnImage, got {other:?}"),
        }
    }

    #[test]
    fn bad_images_are_rejected_clearly() {
        let e = not_an_image(&image(0x20_0000, 0x1000, 63, false));
        assert!(
            e.starts_with("not a RISC-V Linux Image: too short (63 bytes"),
            "{e}"
        );
        assert!(not_an_image(&[]).contains("too short"));

        let mut bad = image(0x20_0000, 0x1000, 0x1000, true);
        bad[48..60].fill(0xff);
        let e = not_an_image(&bad);
        assert!(e.starts_with("not a RISC-V Linux Image: bad magic"), "{e}");

        let mut be = image(0x20_0000, 0x1000, 0x1000, false);
        be[24] = 1;
        assert!(not_an_image(&be).contains("big-endian"));

        assert!(not_an_image(&[0x1f, 0x8b, 8, 0, 0, 0]).contains("gzip"));
        assert!(not_an_image(b"\x7fELF\x02\x01\x01").contains("ELF"));
        assert!(not_an_image(b"MZ\0\0zimg\0\0gzip").contains("zboot"));
        // plan_layout reports the same.
        assert!(matches!(
            plan_layout(RAM, 256 * MIB, &[0; 10], None, 64 << 10),
            Err(LoaderError::NotAnImage(_))
        ));
    }

    #[test]
    fn debian_like_layout() {
        let ram_size = 1 << 30;
        let ram_end = RAM + ram_size;
        let l = plan_layout(
            RAM,
            ram_size,
            &debian_like(),
            Some(30 * MIB + 123),
            64 << 10,
        )
        .unwrap();
        assert_eq!(l.kernel_addr, 0x8020_0000);
        assert_eq!(l.entry, 0x8020_0000);
        assert_eq!(l.kernel_end, 0x8020_0000 + 40 * MIB);
        assert_eq!(l.fdt_addr, ram_end - (64 << 10));
        let (start, end) = l.initrd.unwrap();
        assert_eq!(end - start, 30 * MIB + 123);
        assert_eq!(start % PAGE_SIZE, 0);
        assert!(end <= l.fdt_addr);
        assert!(l.fdt_addr - end < PAGE_SIZE);
        assert!(start >= l.kernel_end);
    }

    #[test]
    fn fdt_window_is_page_aligned_and_in_ram() {
        let l = plan_layout(RAM, 64 * MIB + 0x123, &debian_like(), None, 0x2345).unwrap();
        assert_eq!(l.initrd, None);
        assert_eq!(l.fdt_addr % PAGE_SIZE, 0);
        assert!(l.fdt_addr + 0x2345 <= RAM + 64 * MIB + 0x123);
        assert!(l.fdt_addr >= l.kernel_end);
        for bad in [0, FDT_MAX_SIZE + 1] {
            assert_eq!(
                plan_layout(RAM, 64 * MIB, &debian_like(), None, bad),
                Err(LoaderError::InvalidFdtWindow(bad))
            );
        }
    }

    #[test]
    fn footprint_is_the_larger_of_image_size_and_file() {
        // image_size 0 (old kernels): the file length counts.
        let l = plan_layout(
            RAM,
            64 * MIB,
            &image(0x20_0000, 0, 0x12345, false),
            None,
            4096,
        )
        .unwrap();
        assert_eq!(l.kernel_end, 0x8020_0000 + 0x12345);
        let l = plan_layout(
            RAM,
            64 * MIB,
            &image(0x20_0000, 0x100, 0x2000, false),
            None,
            4096,
        )
        .unwrap();
        assert_eq!(l.kernel_end, 0x8020_0000 + 0x2000);
    }

    #[test]
    fn kernel_too_big_for_ram() {
        let err = plan_layout(RAM, 32 * MIB, &debian_like(), None, 64 << 10).unwrap_err();
        assert_eq!(
            err,
            LoaderError::KernelTooBig {
                kernel_addr: 0x8020_0000,
                kernel_end: 0x8020_0000 + 40 * MIB,
                ram_end: RAM + 32 * MIB
            }
        );
        assert!(err
            .to_string()
            .starts_with("memory too small for the kernel"));
        // A text_offset beyond RAM.
        let far = image(1 << 40, 0x1000, 0x1000, false);
        assert!(matches!(
            plan_layout(RAM, 1 << 30, &far, None, 4096),
            Err(LoaderError::KernelTooBig { .. })
        ));
        let wrap = image(u64::MAX - KERNEL_ALIGN + 1 - RAM, 0x1000, 0x1000, false);
        assert!(plan_layout(RAM, 1 << 30, &wrap, None, 4096).is_err());
    }

    #[test]
    fn initrd_or_fdt_that_do_not_fit_are_rejected() {
        // 48 MiB of RAM: the kernel ends at 42 MiB, leaving 6 MiB.
        let k = debian_like();
        plan_layout(RAM, 48 * MIB, &k, Some(5 * MIB), 64 << 10).unwrap();
        let err = plan_layout(RAM, 48 * MIB, &k, Some(6 * MIB), 64 << 10).unwrap_err();
        assert!(matches!(err, LoaderError::MemoryTooSmall { .. }), "{err:?}");
        assert!(err
            .to_string()
            .starts_with("memory too small for kernel + initrd"));
        let err = plan_layout(RAM, 48 * MIB, &k, Some(u64::MAX), 64 << 10).unwrap_err();
        assert!(matches!(err, LoaderError::MemoryTooSmall { .. }));
        // Not even room for the device tree.
        let err = plan_layout(RAM, 42 * MIB + 0x1000, &k, None, 0x2000).unwrap_err();
        assert!(matches!(err, LoaderError::MemoryTooSmall { .. }));
        // Exactly enough.
        let l = plan_layout(RAM, 42 * MIB + 0x2000, &k, Some(0x1000), 0x1000).unwrap();
        assert_eq!(l.initrd, Some((l.kernel_end, l.kernel_end + 0x1000)));
        assert_eq!(l.fdt_addr, l.kernel_end + 0x1000);
    }

    #[test]
    fn ram_and_alignment_checks() {
        let k = debian_like();
        assert!(matches!(
            plan_layout(RAM + 0x1000, 1 << 30, &k, None, 4096),
            Err(LoaderError::MisalignedKernel { addr: 0x8020_1000 })
        ));
        let odd = image(0x1000, 0x1000, 0x1000, false);
        assert!(matches!(
            plan_layout(RAM, 1 << 30, &odd, None, 4096),
            Err(LoaderError::MisalignedKernel { .. })
        ));
        assert!(matches!(
            plan_layout(RAM, 0, &k, None, 4096),
            Err(LoaderError::InvalidRam { .. })
        ));
        assert!(matches!(
            plan_layout(u64::MAX - MIB, 1 << 30, &k, None, 4096),
            Err(LoaderError::InvalidRam { .. })
        ));
        // text_offset 0 at a 2 MiB aligned base is fine.
        let l = plan_layout(RAM, 64 * MIB, &image(0, 0x1000, 0x1000, false), None, 4096).unwrap();
        assert_eq!(l.kernel_addr, RAM);
    }

    #[test]
    fn firmware_goes_where_a_kernel_would_without_a_header() {
        // u-boot.bin starts with plain code, no Image header.
        let l = plan_firmware_layout(RAM, 512 * MIB, 650_000, 64 << 10).unwrap();
        assert_eq!(l.kernel_addr, RAM + FIRMWARE_OFFSET);
        assert_eq!(l.entry, l.kernel_addr);
        assert_eq!(l.kernel_end, l.kernel_addr + 650_000);
        assert_eq!(l.initrd, None);
        assert_eq!(l.fdt_addr, RAM + 512 * MIB - (64 << 10));
        assert_eq!(
            plan_firmware_layout(RAM, 512 * MIB, 0, 4096),
            Err(LoaderError::EmptyFirmware)
        );
        assert!(matches!(
            plan_firmware_layout(RAM, 4 * MIB, 3 * MIB, 4096),
            Err(LoaderError::KernelTooBig { .. })
        ));
        assert!(matches!(
            plan_firmware_layout(RAM, 4 * MIB, 2 * MIB, 4096),
            Err(LoaderError::MemoryTooSmall { .. })
        ));
    }
}
