//! Fuzzing entry points for the VM plane.
//!
//! The cargo-fuzz targets in `fuzz/` are one-line wrappers around these functions, and
//! `tests/fuzz_regressions.rs` runs every saved crash input (and hand-written seeds) through the
//! same code under a plain `cargo test`. Every function accepts any byte string; a failed
//! `assert!` or any other panic is a bug in DuVisor.

mod mmio;
mod qcow2;
mod sbi;
mod virtio;

use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use clap::Parser;

pub use dvext::fuzzing::Input;
pub use mmio::mmio_decode;
pub use qcow2::{qcow2, qcow2_template, Qcow2Run};
pub use sbi::sbi;
pub use virtio::{virtio_queue, VirtioRun};

use crate::cli::{parse_size, Cli, Command};
use crate::devices::virtio::blk::DiskSpec;
use crate::devices::virtio::net::{Mac, NetSpec};
use crate::loader::{
    plan_layout, ImageHeader, Layout, LoaderError, IMAGE_HEADER_SIZE, KERNEL_ALIGN,
};

/// A file already removed from its directory, reachable only as `/proc/self/fd/N` while this
/// lives: harnesses that need a path (disk images, kernels) leave nothing behind.
pub struct ScratchFile {
    file: File,
    path: PathBuf,
}

impl ScratchFile {
    pub fn new(data: &[u8]) -> std::io::Result<ScratchFile> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        // tmpfs when there is one: fdatasync (virtio-blk flush) costs nothing there.
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let name = dir.join(format!(
            "duvisor-fuzz-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let mut file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&name)?;
        let written = file.write_all(data);
        std::fs::remove_file(&name)?;
        written?;
        let path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
        Ok(ScratchFile { file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn contents(&self) -> Vec<u8> {
        use std::os::unix::fs::FileExt;
        let len = self.file.metadata().expect("scratch file").len() as usize;
        let mut v = vec![0u8; len];
        self.file.read_exact_at(&mut v, 0).expect("scratch file");
        v
    }
}

// ---------------------------------------------------------------------------------------------
// loader
// ---------------------------------------------------------------------------------------------

/// Fuzz target `loader`: `ImageHeader::parse` and `plan_layout` on an arbitrary kernel file,
/// RAM, initrd size and device-tree window. When a layout is produced, the kernel footprint,
/// initrd and device-tree window must be aligned as documented, lie in RAM and not overlap.
///
/// Input: byte 0 selects how the numbers are drawn (bit 0: stamp the Image magic into the
/// kernel so parsing gets past it; bit 1: RAM at 0x8000_0000; bit 2: no initrd; bit 3: sizes
/// as multiples of 4 KiB), then RAM base and size, initrd length and window (u64 each), then
/// the kernel file. Returns the layout (for tests).
pub fn loader(data: &[u8]) -> Result<Layout, LoaderError> {
    let mut inp = Input::new(data);
    let mode = inp.u8();
    let (base, size, initrd, fdt) = (inp.u64(), inp.u64(), inp.u64(), inp.u64());
    let mut kernel = inp.rest().to_vec();
    if mode & 1 != 0 && kernel.len() >= IMAGE_HEADER_SIZE {
        kernel[56..60].copy_from_slice(crate::loader::IMAGE_MAGIC2);
        kernel[24] &= !1;
    }
    let ram_base = if mode & 2 != 0 { 0x8000_0000 } else { base };
    let (ram_size, initrd_len, fdt_max) = if mode & 8 != 0 {
        (
            (size % (1 << 20)) << 12,
            (initrd % (1 << 20)) << 12,
            (fdt % 0x400) << 12,
        )
    } else {
        (size, initrd, fdt)
    };
    let initrd_len = (mode & 4 == 0).then_some(initrd_len);

    let header = ImageHeader::parse(&kernel);
    if let Ok(h) = &header {
        assert!(kernel.len() >= IMAGE_HEADER_SIZE);
        assert_eq!(h.flags & 1, 0, "big-endian accepted");
        assert!(
            &kernel[56..60] == crate::loader::IMAGE_MAGIC2
                || &kernel[48..56] == crate::loader::IMAGE_MAGIC
        );
        let _ = h.version();
    }
    let layout = plan_layout(ram_base, ram_size, &kernel, initrd_len, fdt_max);
    let (h, l) = match (header, layout) {
        (Err(e), Err(e2)) => {
            assert_eq!(e, e2, "parse and plan_layout disagree");
            let _ = e.to_string();
            return Err(e2);
        }
        (Err(e), Ok(l)) => panic!("plan_layout accepted what parse refused ({e}): {l:?}"),
        (Ok(_), Err(e)) => {
            // The header parsed, so only its text_offset can make it "not an image".
            if let LoaderError::NotAnImage(why) = &e {
                assert!(why.contains("text_offset"), "{e}");
            }
            let _ = e.to_string();
            return Err(e);
        }
        (Ok(h), Ok(l)) => (h, l),
    };
    let ram_end = ram_base + ram_size;
    let inside = |start: u64, end: u64| ram_base <= start && start <= end && end <= ram_end;
    assert_eq!(l.entry, l.kernel_addr);
    assert_eq!(l.kernel_addr % KERNEL_ALIGN, 0, "{l:?}");
    assert_eq!(l.kernel_addr, ram_base + h.text_offset, "{l:?}");
    assert_eq!(
        l.kernel_end - l.kernel_addr,
        h.image_size.max(kernel.len() as u64),
        "{l:?}"
    );
    assert!(
        inside(l.kernel_addr, l.kernel_end),
        "kernel outside RAM: {l:?}"
    );
    assert_eq!(l.fdt_addr % 4096, 0, "{l:?}");
    let fdt_end = l.fdt_addr + fdt_max;
    assert!(
        inside(l.fdt_addr, fdt_end),
        "device tree outside RAM: {l:?}"
    );
    assert!(
        l.kernel_end <= l.fdt_addr,
        "kernel overlaps the device tree: {l:?}"
    );
    match (initrd_len, l.initrd) {
        (None, None) => {}
        (Some(len), Some((start, end))) => {
            assert_eq!(end - start, len, "{l:?}");
            assert_eq!(start % 4096, 0, "{l:?}");
            assert!(inside(start, end), "initrd outside RAM: {l:?}");
            assert!(l.kernel_end <= start, "initrd overlaps the kernel: {l:?}");
            assert!(end <= l.fdt_addr, "initrd overlaps the device tree: {l:?}");
        }
        (want, got) => panic!("initrd {want:?} planned as {got:?}"),
    }
    Ok(l)
}

// ---------------------------------------------------------------------------------------------
// cli
// ---------------------------------------------------------------------------------------------

/// Fuzz target `cli`: the whole command line through clap (`Cli::try_parse_from`, arguments
/// split at NUL bytes, not necessarily UTF-8), and each argument through the value parsers on
/// their own (`parse_size`, `DiskSpec`, `NetSpec`, `Mac`). Nothing may panic; what parses must
/// be well formed (round trips where the syntax has a canonical form). Returns whether clap
/// accepted the command line.
pub fn cli(data: &[u8]) -> bool {
    let args: Vec<&[u8]> = data.split(|&b| b == 0).collect();
    let argv: Vec<OsString> = std::iter::once(OsString::from("duvisor"))
        .chain(args.iter().map(|a| OsString::from_vec(a.to_vec())))
        .collect();
    let parsed = Cli::try_parse_from(&argv);
    let ok = parsed.is_ok();
    match parsed {
        Ok(cli) => {
            let machine = match &cli.command {
                Command::Run(r) => Some(&r.machine),
                Command::Demo(d) => Some(&d.machine),
                Command::FetchGuest(_) => None,
            };
            if let Some(m) = machine {
                for d in &m.disks {
                    assert!(!d.path.as_os_str().is_empty());
                }
                for n in &m.nets {
                    check_net(n);
                }
            }
        }
        Err(e) => {
            let _ = e.render().to_string();
        }
    }
    for a in args {
        let s = String::from_utf8_lossy(a);
        if let Ok(n) = parse_size(&s) {
            if n % (1 << 10) == 0 {
                assert_eq!(parse_size(&format!("{}K", n >> 10)).ok(), Some(n), "{s:?}");
            }
        }
        if let Ok(d) = s.parse::<DiskSpec>() {
            assert!(!d.path.as_os_str().is_empty(), "{s:?}");
        }
        if let Ok(n) = s.parse::<NetSpec>() {
            check_net(&n);
        }
        if let Ok(m) = s.parse::<Mac>() {
            check_mac(m);
        }
    }
    ok
}

fn check_net(n: &NetSpec) {
    if let crate::devices::virtio::net::NetBackend::Tap(name) = &n.backend {
        assert!(!name.is_empty() && name.len() < 16, "{n:?}");
        assert!(n.hostfwd.is_empty(), "{n:?}");
    }
    for f in &n.hostfwd {
        assert!(f.host_port != 0 && f.guest_port != 0, "{n:?}");
        let text = f.to_string();
        let back = text.strip_prefix("hostfwd=").map(str::parse);
        assert_eq!(back, Some(Ok(*f)), "{text}");
    }
    assert!(crate::devices::virtio::net::check_host_ports(std::slice::from_ref(n)).is_ok());
    if let Some(m) = n.mac {
        check_mac(m);
    }
}

fn check_mac(m: Mac) {
    assert_eq!(m.0[0] & 1, 0, "multicast MAC accepted: {m}");
    assert_eq!(m.to_string().parse::<Mac>(), Ok(m));
}
