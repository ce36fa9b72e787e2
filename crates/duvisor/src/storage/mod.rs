//! Disk image formats behind virtio-blk: raw files (served by the device straight between
//! the file and guest memory) and qcow2 ([`qcow2`]), with backing chains.
//!
//! Every file of an image's chain is opened, checked and locked at set-up ([`open_chain`]):
//! the block I/O thread's sandbox allows positional reads and writes, syncs and fallocate on
//! descriptors it already has, nothing else.

pub mod qcow2;

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use qcow2::Qcow2;

/// Longest backing chain (overlay included) we open.
pub const MAX_CHAIN: usize = 16;

/// Why an image cannot be opened or a request on it fails.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("corrupt qcow2 image: {0}")]
    Corrupt(String),
    #[error("unsupported qcow2 feature: {0}")]
    Unsupported(String),
    #[error("backing file {path}: {msg}")]
    Backing { path: PathBuf, msg: String },
    #[error("the image is read-only")]
    ReadOnly,
}

/// A read-only layer under a qcow2 image.
pub enum Layer {
    Raw { file: File, len: u64 },
    Qcow2(Box<Qcow2>),
}

impl Layer {
    /// Read at `off`; past the layer's end it reads as zeroes (a base may be shorter than the
    /// overlay).
    pub fn read_at(&mut self, buf: &mut [u8], off: u64) -> Result<(), Error> {
        let len = match self {
            Layer::Raw { len, .. } => *len,
            Layer::Qcow2(q) => q.size(),
        };
        let inside = len.saturating_sub(off).min(buf.len() as u64) as usize;
        buf[inside..].fill(0);
        if inside == 0 {
            return Ok(());
        }
        match self {
            Layer::Raw { file, .. } => {
                use std::os::unix::fs::FileExt;
                file.read_exact_at(&mut buf[..inside], off)?;
            }
            Layer::Qcow2(q) => q.read_at(&mut buf[..inside], off)?,
        }
        Ok(())
    }
}

/// The back end of one disk.
pub enum Image {
    /// A raw file of this many bytes.
    Raw(File),
    Qcow2(Mutex<Box<Qcow2>>),
}

/// Whether a file starts with the qcow2 magic.
pub fn is_qcow2(file: &File) -> std::io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let mut m = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match file.read_at(&mut m[got..], got as u64) {
            Ok(0) => return Ok(false),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(m == qcow2::MAGIC)
}

/// Opens one backing file read-only: checks its kind, takes a shared lock; returns the file,
/// its size, and its identity (device, inode) for loop detection.
pub type Opener<'a> = dyn FnMut(&Path) -> anyhow::Result<(File, u64, (u64, u64))> + 'a;

/// Open the qcow2 image `file` (at `path`, identity `id`) and its backing chain: names
/// resolve against the directory of the image that holds them; a name seen twice (a loop)
/// or a chain longer than [`MAX_CHAIN`] is an error.
pub fn open_chain(
    file: File,
    len: u64,
    path: &Path,
    id: (u64, u64),
    writable: bool,
    open: &mut Opener,
) -> Result<Qcow2, Error> {
    let mut seen = HashSet::from([id]);
    open_qcow2(file, len, path, writable, 1, &mut seen, open)
}

fn open_qcow2(
    file: File,
    len: u64,
    path: &Path,
    writable: bool,
    depth: usize,
    seen: &mut HashSet<(u64, u64)>,
    open: &mut Opener,
) -> Result<Qcow2, Error> {
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    Qcow2::open(file, len, writable, &mut |name, fmt| {
        use std::os::unix::ffi::OsStrExt;
        let rel = Path::new(std::ffi::OsStr::from_bytes(name));
        let bpath = if rel.is_absolute() {
            rel.to_path_buf()
        } else {
            dir.join(rel)
        };
        let err = |msg: String| Error::Backing {
            path: bpath.clone(),
            msg,
        };
        if name.contains(&0) || name.is_empty() {
            return Err(err("bad name".into()));
        }
        if depth >= MAX_CHAIN {
            return Err(err(format!("backing chain longer than {MAX_CHAIN}")));
        }
        // Checked before opening too: our own lock on a file of the chain would otherwise
        // report the loop as an image attached twice.
        let loop_err = || err("the backing chain has a loop".into());
        if let Ok(md) = std::fs::metadata(&bpath) {
            use std::os::unix::fs::MetadataExt;
            if seen.contains(&(md.dev(), md.ino())) {
                return Err(loop_err());
            }
        }
        let (bfile, len, bid) = open(&bpath).map_err(|e| err(format!("{e:#}")))?;
        if !seen.insert(bid) {
            return Err(loop_err());
        }
        let is_q = match fmt {
            Some(qcow2::BackingFormat::Qcow2) => true,
            Some(qcow2::BackingFormat::Raw) => false,
            None => is_qcow2(&bfile)?,
        };
        if is_q {
            let q =
                open_qcow2(bfile, len, &bpath, false, depth + 1, seen, open).map_err(
                    |e| match e {
                        e @ Error::Backing { .. } => e,
                        e => err(e.to_string()),
                    },
                )?;
            Ok(Layer::Qcow2(Box::new(q)))
        } else {
            Ok(Layer::Raw { file: bfile, len })
        }
    })
}
