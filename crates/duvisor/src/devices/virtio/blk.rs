//! virtio-blk backed by a raw image file (virtio 1.x §5.2): read, write, flush (fdatasync
//! before completing), get-id, discard (punch hole) and write-zeroes (zero range), with an
//! optional read-only mode the guest sees as VIRTIO_BLK_F_RO.
//!
//! Requests are served on the device's I/O thread, straight between the file and guest RAM
//! (one `preadv`/`pwritev` per request, into the checked host mappings of the guest buffers).

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{bail, Context};
use vm_memory::GuestMemoryMmap;

use super::chain::{self, Buffers, Seg};
use super::{run_queues, serve_queue, Activation, Handled, VirtioDevice, ID_BLOCK};
use crate::sandbox::ThreadClass;
use crate::storage::{self, Image};

pub const SECTOR: u64 = 512;

// Feature bits.
pub const F_SEG_MAX: u64 = 1 << 2;
pub const F_RO: u64 = 1 << 5;
pub const F_BLK_SIZE: u64 = 1 << 6;
pub const F_FLUSH: u64 = 1 << 9;
pub const F_DISCARD: u64 = 1 << 13;
pub const F_WRITE_ZEROES: u64 = 1 << 14;

// Request types.
pub const T_IN: u32 = 0;
pub const T_OUT: u32 = 1;
pub const T_FLUSH: u32 = 4;
pub const T_GET_ID: u32 = 8;
pub const T_DISCARD: u32 = 11;
pub const T_WRITE_ZEROES: u32 = 13;

// Status bytes.
pub const S_OK: u8 = 0;
pub const S_IOERR: u8 = 1;
pub const S_UNSUPP: u8 = 2;

pub const ID_BYTES: usize = 20;
/// Descriptors per request queue: twice QEMU's default, so that a 1 MiB direct-I/O request
/// (256 scattered 4 KiB pages) fits one descriptor chain (see `SEG_MAX`).
const QUEUE_SIZE: u16 = 512;
/// Most data segments per request (advertised as seg_max): the ring size less the header and
/// status descriptors, as a chain may not be longer than the ring even with indirect
/// descriptors. With 254 (QEMU's, for its 256-entry ring) Linux split every 1 MiB direct read
/// into two requests, 1016 and 8 KiB; with 510 it sends one, and the bench's 128 MiB
/// `dd iflag=direct` read went from 0.143 to 0.129 s (medians of 8).
const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// Most sectors per discard / write-zeroes request, and segments per such request.
const MAX_DISCARD_SECTORS: u32 = 1 << 22;
const MAX_DISCARD_SEG: u32 = 1;
/// write-zeroes flag: the device may deallocate.
const WZ_UNMAP: u32 = 1;

/// `--disk path=FILE[,readonly]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSpec {
    pub path: PathBuf,
    pub readonly: bool,
}

impl std::str::FromStr for DiskSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<DiskSpec, String> {
        let mut path = None;
        let mut readonly = false;
        for part in s.split(',') {
            match part.split_once('=') {
                Some(("path", p)) if !p.is_empty() => path = Some(PathBuf::from(p)),
                None if part == "readonly" || part == "ro" => readonly = true,
                Some(("readonly", v)) => {
                    readonly = match v {
                        "on" | "true" | "1" | "yes" => true,
                        "off" | "false" | "0" | "no" => false,
                        _ => return Err(format!("bad readonly value {v:?}")),
                    }
                }
                None if path.is_none() && !part.is_empty() => path = Some(PathBuf::from(part)),
                _ => {
                    return Err(format!(
                        "unknown disk option {part:?} (want path=FILE[,readonly])"
                    ))
                }
            }
        }
        Ok(DiskSpec {
            path: path.ok_or("missing path=FILE")?,
            readonly,
        })
    }
}

/// The 16-byte request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: u32,
    pub sector: u64,
}

impl Header {
    pub fn parse(b: &[u8; 16]) -> Header {
        Header {
            kind: u32::from_le_bytes(b[0..4].try_into().unwrap()),
            sector: u64::from_le_bytes(b[8..16].try_into().unwrap()),
        }
    }
}

/// A request decoded from a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub header: Header,
    /// Readable data after the header (OUT data, discard ranges).
    pub data_in: Vec<Seg>,
    /// Writable data before the status byte (IN data, ID).
    pub data_out: Vec<Seg>,
    /// The status byte.
    pub status: Seg,
}

/// Why a chain is not a block request the device can even answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("no writable status byte")]
    NoStatus,
    #[error("request header shorter than 16 bytes")]
    ShortHeader,
    #[error(transparent)]
    OutOfRam(#[from] chain::OutOfRam),
}

/// Split a chain into header, data and status (virtio 1.x §5.2.6). Every buffer must be in
/// guest RAM.
pub fn parse_request(mem: &GuestMemoryMmap, b: &Buffers) -> Result<Request, ParseError> {
    // The status byte is the last writable byte.
    let wtotal = chain::total(&b.writable);
    if wtotal == 0 {
        return Err(ParseError::NoStatus);
    }
    let (data_out, status) = chain::split_at(&b.writable, wtotal - 1);
    chain::check(mem, &b.writable)?;
    chain::check(mem, &b.readable)?;
    let mut h = [0u8; 16];
    if chain::total(&b.readable) < 16 {
        return Err(ParseError::ShortHeader);
    }
    chain::read_bytes(mem, &b.readable, &mut h)?;
    let (_, data_in) = chain::split_at(&b.readable, 16);
    Ok(Request {
        header: Header::parse(&h),
        data_in,
        data_out,
        status: status[0],
    })
}

/// The image and its properties.
pub struct Disk {
    image: Image,
    path: PathBuf,
    sectors: u64,
    readonly: bool,
    id: [u8; ID_BYTES],
}

impl Disk {
    /// Open an image: it must exist, be a regular file or block device and a whole number of
    /// 512-byte sectors, and no other user may hold it: writers take an exclusive lock, read-only
    /// users a shared one ([`lock`]), so one image is never attached twice or to two VMs while
    /// either writes.
    pub fn open(spec: &DiskSpec) -> anyhow::Result<Disk> {
        let p = &spec.path;
        let (file, size, ident) = open_checked(p, spec.readonly)
            .map_err(|e| anyhow::anyhow!("disk {}{}{e}", p.display(), e.separator()))?;
        let is_qcow2 =
            crate::storage::is_qcow2(&file).with_context(|| format!("disk {}", p.display()))?;
        let (image, size) = if is_qcow2 {
            let mut open_backing =
                |bp: &Path| open_checked(bp, true).map_err(|e| anyhow::anyhow!("{e}"));
            let q = storage::open_chain(file, size, p, ident, !spec.readonly, &mut open_backing)
                .map_err(|e| anyhow::anyhow!("disk {}: {e}", p.display()))?;
            let size = q.size();
            (Image::Qcow2(std::sync::Mutex::new(Box::new(q))), size)
        } else {
            (Image::Raw(file), size)
        };
        if size % SECTOR != 0 {
            bail!(
                "disk {}: size {size} is not a multiple of 512 bytes",
                p.display()
            );
        }
        let mut id = [0u8; ID_BYTES];
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for (d, s) in id.iter_mut().zip(name.bytes()) {
            *d = s;
        }
        Ok(Disk {
            image,
            path: p.clone(),
            sectors: size / SECTOR,
            readonly: spec.readonly,
            id,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn sectors(&self) -> u64 {
        self.sectors
    }
}

/// Why an image file cannot be used; its text follows the file's name ([`OpenError::separator`]).
#[derive(Debug, thiserror::Error)]
enum OpenError {
    #[error("is {0}, not a regular file or block device")]
    Kind(&'static str),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// In use by another user (see [`lock`]).
    #[error("{0}")]
    Locked(String),
}

impl OpenError {
    /// What goes between the file's name and the reason: "d.img is a FIFO, ...", "d.img: ...".
    fn separator(&self) -> &'static str {
        match self {
            OpenError::Kind(_) => " ",
            _ => ": ",
        }
    }
}

/// Open an image file (the disk itself, or read-only a file of its backing chain): it must
/// exist and be a regular file or block device, and no other user may hold it ([`lock`]).
/// Returns the file, its size and its identity (device, inode).
fn open_checked(p: &Path, readonly: bool) -> Result<(File, u64, (u64, u64)), OpenError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let check = |t: std::fs::FileType| {
        if t.is_file() || t.is_block_device() {
            Ok(())
        } else {
            Err(OpenError::Kind(crate::vm::file_kind(t)))
        }
    };
    // Checked before opening so that a FIFO (whose open may block, or fail oddly without
    // blocking) gets the same message; and again on the descriptor, which is what counts.
    check(std::fs::metadata(p)?.file_type())?;
    let file = OpenOptions::new()
        .read(true)
        .write(!readonly)
        .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(p)?;
    let md = file.metadata()?;
    check(md.file_type())?;
    lock(&file, &md, readonly).map_err(OpenError::Locked)?;
    let size = if md.file_type().is_block_device() {
        block_device_size(&file)?
    } else {
        md.len()
    };
    Ok((file, size, (md.dev(), md.ino())))
}

/// Lock the image as its user, with open-file-description locks (two opens in one process
/// conflict as two processes do, and a lock lives exactly as long as its descriptor): a writer
/// locks the whole file exclusively; a read-only user takes a shared lock and makes sure no one
/// writes. A conflict names the holder.
///
/// QEMU locks images too, with shared locks on single bytes: 100 + n for each permission n it
/// uses and 200 + n for each it refuses others (n = 0 consistent read, 1 write); a writer holds
/// byte 101. Our read-only user leaves out bytes 101 and 200 and checks that no one holds 101,
/// so it refuses a QEMU writer and does not refuse a QEMU reader; its lock on byte 201 keeps a
/// QEMU writer from starting later; our exclusive lock conflicts with all of QEMU's. So a QEMU
/// reader and ours share an image, as two of ours do, and a writer has it alone.
fn lock(file: &File, md: &std::fs::Metadata, readonly: bool) -> Result<(), String> {
    /// QEMU's bytes for using the write permission and for refusing others consistent reads
    /// (see above).
    const WRITE_BYTE: i64 = 101;
    const READ_DENY: i64 = 200;
    let fd = file.as_raw_fd();
    let range = |kind: i32, start: i64, len: i64| {
        // SAFETY: a zeroed flock is valid; we set the fields the calls read.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = kind as i16;
        fl.l_whence = libc::SEEK_SET as i16;
        fl.l_start = start;
        fl.l_len = len; // 0: to the end of the file, however it grows
        fl
    };
    let set = |fl: libc::flock| {
        // SAFETY: F_OFD_SETLK reads the flock we pass and keeps no pointer to it.
        if unsafe { libc::fcntl(fd, libc::F_OFD_SETLK, &fl) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    };
    let taken = if readonly {
        set(range(libc::F_RDLCK, 0, WRITE_BYTE))
            .and_then(|_| {
                set(range(
                    libc::F_RDLCK,
                    WRITE_BYTE + 1,
                    READ_DENY - WRITE_BYTE - 1,
                ))
            })
            .and_then(|_| set(range(libc::F_RDLCK, READ_DENY + 1, 0)))
            .and_then(|_| {
                let mut probe = range(libc::F_WRLCK, WRITE_BYTE, 1);
                // SAFETY: F_OFD_GETLK reads and rewrites the flock we pass.
                if unsafe { libc::fcntl(fd, libc::F_OFD_GETLK, &mut probe) } != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if probe.l_type == libc::F_UNLCK as i16 {
                    Ok(())
                } else {
                    Err(std::io::Error::from_raw_os_error(libc::EAGAIN))
                }
            })
    } else {
        set(range(libc::F_WRLCK, 0, 0))
    };
    let Err(e) = taken else {
        return Ok(());
    };
    if !matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) {
        return Err(format!("locking the image: {e}"));
    }
    let how = if readonly {
        "another user writes it"
    } else {
        "another user has it open"
    };
    use std::os::unix::fs::MetadataExt;
    Err(match lock_holder(md.dev(), md.ino()) {
        Some(pid) if pid == std::process::id() => {
            "is attached twice (the same image may back one disk only)".to_string()
        }
        Some(pid) => format!(
            "is in use: {how} (process {pid}, {}); a disk image shared while written is corrupted",
            process_name(pid)
        ),
        None => format!(
            "is in use: {how} (a process this user cannot see); a disk image shared while written \
             is corrupted"
        ),
    })
}

/// The process holding a lock on the file `dev`/`ino`: open-file-description locks show no
/// owner in /proc/locks, but each appears in the `fdinfo` of the descriptor that holds it.
fn lock_holder(dev: u64, ino: u64) -> Option<u32> {
    let id = format!(" {:02x}:{:02x}:{ino} ", libc::major(dev), libc::minor(dev));
    for proc_entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = proc_entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(proc_entry.path().join("fdinfo")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(info) = std::fs::read_to_string(fd.path()) else {
                continue;
            };
            if info
                .lines()
                .any(|l| l.starts_with("lock:") && l.contains(&id))
            {
                return Some(pid);
            }
        }
    }
    None
}

fn process_name(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim().to_string())
        .unwrap_or_else(|_| "name unknown".into())
}

fn block_device_size(f: &File) -> std::io::Result<u64> {
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 to the pointer we pass.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), 0x8008_1272, &mut size as *mut u64) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(size)
}

/// A virtio-blk device.
pub struct Blk {
    disk: Arc<Disk>,
}

impl Blk {
    pub fn new(disk: Disk) -> Blk {
        Blk {
            disk: Arc::new(disk),
        }
    }

    fn config(&self) -> Vec<u8> {
        let mut c = vec![0u8; 0x3c];
        c[0..8].copy_from_slice(&self.disk.sectors.to_le_bytes());
        c[0x0c..0x10].copy_from_slice(&SEG_MAX.to_le_bytes());
        c[0x14..0x18].copy_from_slice(&(SECTOR as u32).to_le_bytes());
        c[0x22..0x24].copy_from_slice(&1u16.to_le_bytes());
        c[0x24..0x28].copy_from_slice(&MAX_DISCARD_SECTORS.to_le_bytes());
        c[0x28..0x2c].copy_from_slice(&MAX_DISCARD_SEG.to_le_bytes());
        c[0x2c..0x30].copy_from_slice(&1u32.to_le_bytes());
        c[0x30..0x34].copy_from_slice(&MAX_DISCARD_SECTORS.to_le_bytes());
        c[0x34..0x38].copy_from_slice(&MAX_DISCARD_SEG.to_le_bytes());
        c[0x38] = 1; // write_zeroes_may_unmap
        c
    }
}

impl VirtioDevice for Blk {
    fn device_id(&self) -> u32 {
        ID_BLOCK
    }

    fn features(&self) -> u64 {
        let mut f = F_SEG_MAX | F_BLK_SIZE | F_FLUSH;
        if self.disk.readonly {
            f |= F_RO;
        } else {
            f |= F_DISCARD | F_WRITE_ZEROES;
        }
        f
    }

    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE]
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        super::read_config_bytes(&self.config(), offset, data);
    }

    fn activate(&self, act: Activation) -> std::io::Result<JoinHandle<()>> {
        let disk = self.disk.clone();
        let writethrough = act.features & F_FLUSH == 0;
        crate::sandbox::spawn(ThreadClass::BlockIo, "virtio-blk", move || {
            run_queues(act, |_, q, mem, irq| {
                serve_queue(q, mem, irq, |b| handle_chain(&disk, mem, &b, writethrough))
            });
            // Stopped (reset, or the VM ends): a qcow2 image's cached metadata reaches the
            // file even if the guest never flushed (`sync` on a bare block device does not),
            // as QEMU flushes its images when it closes them.
            if let Image::Qcow2(_) = disk.image {
                if let Err(e) = disk.sync() {
                    tracing::error!("disk {}: flushing at stop: {e}", disk.path.display());
                }
            }
        })
    }
}

/// Serve one chain: complete it with a status, or report it unusable.
pub fn handle_chain(
    disk: &Disk,
    mem: &GuestMemoryMmap,
    b: &Buffers,
    writethrough: bool,
) -> Handled {
    let req = match parse_request(mem, b) {
        Ok(r) => r,
        Err(ParseError::ShortHeader) => {
            // We can still answer: the status byte is there.
            let (_, st) = chain::split_at(&b.writable, chain::total(&b.writable) - 1);
            return match chain::write_bytes(mem, &st, &[S_IOERR]) {
                Ok(_) => Handled::Used(1),
                Err(e) => super::broken(e),
            };
        }
        Err(e) => return super::broken(e),
    };
    let (status, written) = execute(disk, mem, &req, writethrough);
    match chain::write_bytes(mem, &[req.status], &[status]) {
        Ok(_) => Handled::Used(written + 1),
        Err(e) => super::broken(e),
    }
}

/// Perform a request; returns its status and the data bytes written to guest memory.
pub fn execute(disk: &Disk, mem: &GuestMemoryMmap, req: &Request, writethrough: bool) -> (u8, u32) {
    let range = |len: u64| -> Option<u64> {
        let off = req.header.sector.checked_mul(SECTOR)?;
        let end = off.checked_add(len)?;
        (len % SECTOR == 0 && end <= disk.sectors * SECTOR).then_some(off)
    };
    match req.header.kind {
        T_IN => {
            let len = chain::total(&req.data_out);
            let Some(off) = range(len) else {
                return (S_IOERR, 0);
            };
            match disk.read(mem, &req.data_out, off) {
                Ok(()) => (S_OK, len as u32),
                Err(_) => (S_IOERR, 0),
            }
        }
        T_OUT => {
            if disk.readonly {
                return (S_IOERR, 0);
            }
            let len = chain::total(&req.data_in);
            let Some(off) = range(len) else {
                return (S_IOERR, 0);
            };
            if disk.write(mem, &req.data_in, off).is_err() {
                return (S_IOERR, 0);
            }
            if writethrough && disk.sync().is_err() {
                return (S_IOERR, 0);
            }
            (S_OK, 0)
        }
        T_FLUSH => {
            if disk.readonly || disk.sync().is_ok() {
                (S_OK, 0)
            } else {
                (S_IOERR, 0)
            }
        }
        T_GET_ID => match chain::write_bytes(mem, &req.data_out, &disk.id) {
            Ok(n) => (S_OK, n as u32),
            Err(_) => (S_IOERR, 0),
        },
        T_DISCARD | T_WRITE_ZEROES => {
            if disk.readonly {
                return (S_IOERR, 0);
            }
            let mut seg = [0u8; 16];
            if chain::total(&req.data_in) != 16
                || chain::read_bytes(mem, &req.data_in, &mut seg).is_err()
            {
                return (S_UNSUPP, 0);
            }
            let sector = u64::from_le_bytes(seg[0..8].try_into().unwrap());
            let n = u32::from_le_bytes(seg[8..12].try_into().unwrap());
            let flags = u32::from_le_bytes(seg[12..16].try_into().unwrap());
            // Unknown flags (for discard: any flag, unmap included) must be refused with
            // UNSUPP (virtio 1.2 §5.2.6.2).
            let known = if req.header.kind == T_DISCARD {
                0
            } else {
                WZ_UNMAP
            };
            if flags & !known != 0 {
                return (S_UNSUPP, 0);
            }
            let Some(off) = sector.checked_mul(SECTOR) else {
                return (S_IOERR, 0);
            };
            let len = n as u64 * SECTOR;
            if n > MAX_DISCARD_SECTORS
                || off
                    .checked_add(len)
                    .is_none_or(|e| e > disk.sectors * SECTOR)
            {
                return (S_IOERR, 0);
            }
            let unmap = req.header.kind == T_DISCARD || flags & WZ_UNMAP != 0;
            let r = disk.zero(off, len, unmap, req.header.kind == T_WRITE_ZEROES);
            match r {
                Ok(()) if writethrough && disk.sync().is_err() => (S_IOERR, 0),
                Ok(()) => (S_OK, 0),
                Err(_) => (S_IOERR, 0),
            }
        }
        _ => (S_UNSUPP, 0),
    }
}

/// Largest bounce buffer a qcow2 request uses at once.
const BOUNCE: u64 = 1 << 20;

impl Disk {
    /// The raw image's file (tests of the vectored path).
    #[cfg(test)]
    fn raw(&self) -> &File {
        match &self.image {
            Image::Raw(f) => f,
            Image::Qcow2(_) => panic!("not a raw image"),
        }
    }

    /// Read guest offset `off` into `segs` (in guest RAM; checked).
    fn read(&self, mem: &GuestMemoryMmap, segs: &[Seg], off: u64) -> std::io::Result<()> {
        match &self.image {
            Image::Raw(f) => transfer(f, mem, segs, off, false),
            Image::Qcow2(q) => {
                let mut q = q.lock().unwrap_or_else(|e| e.into_inner());
                bounce(segs, off, |segs, off, buf| {
                    q.read_at(buf, off).map_err(std::io::Error::other)?;
                    chain::write_bytes(mem, segs, buf).map_err(std::io::Error::other)?;
                    Ok(())
                })
            }
        }
    }

    /// Write `segs` (in guest RAM; checked) at guest offset `off`.
    fn write(&self, mem: &GuestMemoryMmap, segs: &[Seg], off: u64) -> std::io::Result<()> {
        match &self.image {
            Image::Raw(f) => transfer(f, mem, segs, off, true),
            Image::Qcow2(q) => {
                let mut q = q.lock().unwrap_or_else(|e| e.into_inner());
                bounce(segs, off, |segs, off, buf| {
                    chain::read_bytes(mem, segs, buf).map_err(std::io::Error::other)?;
                    q.write_at(buf, off).map_err(std::io::Error::other)
                })
            }
        }
    }

    /// Make every completed write durable, data and metadata.
    fn sync(&self) -> std::io::Result<()> {
        match &self.image {
            Image::Raw(f) => f.sync_data(),
            Image::Qcow2(q) => q
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .flush()
                .map_err(std::io::Error::other),
        }
    }

    /// Zero `len` bytes at `off`, deallocating when `unmap` (discard, write-zeroes with unmap);
    /// `may_write`: a raw image on a file system that cannot do it writes zeroes instead.
    fn zero(&self, off: u64, len: u64, unmap: bool, may_write: bool) -> std::io::Result<()> {
        match &self.image {
            Image::Raw(f) => {
                let r = if unmap {
                    // A punched hole reads as zeroes, so it also serves write-zeroes with unmap.
                    fallocate(
                        f,
                        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                        off,
                        len,
                    )
                } else {
                    fallocate(
                        f,
                        libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
                        off,
                        len,
                    )
                };
                match r {
                    Err(e) if may_write && e.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                        write_zeroes(f, off, len)
                    }
                    r => r,
                }
            }
            // qcow2 deallocates whole clusters and writes zeroes into partial ones either way.
            Image::Qcow2(q) => q
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .write_zeroes(off, len)
                .map_err(std::io::Error::other),
        }
    }
}

/// Run `f` over `segs` in pieces of at most [`BOUNCE`] bytes, each with a buffer of its size
/// and its guest offset: a request's memory use stays bounded however long its chain.
fn bounce(
    segs: &[Seg],
    mut off: u64,
    mut f: impl FnMut(&[Seg], u64, &mut [u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut rest = segs.to_vec();
    let mut buf = Vec::new();
    while chain::total(&rest) > 0 {
        let n = chain::total(&rest).min(BOUNCE);
        let (head, tail) = chain::split_at(&rest, n);
        buf.resize(n as usize, 0);
        f(&head, off, &mut buf)?;
        off += n;
        rest = tail;
    }
    Ok(())
}

fn fallocate(f: &File, mode: i32, off: u64, len: u64) -> std::io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    // SAFETY: fallocate on our own file descriptor with plain integer arguments.
    let r = unsafe { libc::fallocate(f.as_raw_fd(), mode, off as libc::off_t, len as libc::off_t) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn write_zeroes(f: &File, mut off: u64, mut len: u64) -> std::io::Result<()> {
    let zeros = vec![0u8; 1 << 16];
    while len > 0 {
        let n = len.min(zeros.len() as u64) as usize;
        f.write_all_at(&zeros[..n], off)?;
        off += n as u64;
        len -= n as u64;
    }
    Ok(())
}

/// Most iovecs one `preadv`/`pwritev` takes.
const IOV_MAX: usize = libc::UIO_MAXIOV as usize;

/// Move `segs` (checked here to be in guest RAM) to/from the file at `off`: one `preadv` or
/// `pwritev` per request rather than a call per segment (a 1 MiB direct-I/O request arrives
/// as up to `SEG_MAX` 4 KiB pages), with segments that are adjacent in host memory merged.
fn transfer(
    file: &File,
    mem: &GuestMemoryMmap,
    segs: &[Seg],
    mut off: u64,
    to_file: bool,
) -> std::io::Result<()> {
    let fd = file.as_raw_fd();
    let mut iov: Vec<libc::iovec> = Vec::with_capacity(segs.len());
    for &s in segs.iter().filter(|s| s.len > 0) {
        let ptr = chain::host_ptr(mem, s).map_err(std::io::Error::other)?;
        let len = s.len as usize;
        match iov.last_mut() {
            Some(v) if v.iov_base.cast::<u8>().wrapping_add(v.iov_len) == ptr => v.iov_len += len,
            _ => iov.push(libc::iovec {
                iov_base: ptr.cast(),
                iov_len: len,
            }),
        }
    }
    // First iovec not yet fully moved; a short transfer trims it in place.
    let mut i = 0usize;
    while i < iov.len() {
        let batch = &iov[i..iov.len().min(i + IOV_MAX)];
        let (p, n, at) = (
            batch.as_ptr(),
            batch.len() as libc::c_int,
            off as libc::off_t,
        );
        // SAFETY: every iovec lies inside one guest buffer checked by `host_ptr` to be in
        // the one RAM region (merged iovecs are adjacent checked buffers; a trimmed one is a
        // tail of its buffer), which stays mapped while `mem` lives; the kernel reads or
        // writes only those bytes. The guest may race on them, as it may with any DMA; that
        // cannot affect host memory safety.
        let r = unsafe {
            if to_file {
                libc::pwritev(fd, p, n, at)
            } else {
                libc::preadv(fd, p, n, at)
            }
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        }
        let mut n = r as usize;
        off += n as u64;
        while n > 0 {
            let v = &mut iov[i];
            if n < v.iov_len {
                v.iov_base = v.iov_base.cast::<u8>().wrapping_add(n).cast();
                v.iov_len -= n;
                break;
            }
            n -= v.iov_len;
            i += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
