//! The qcow2 header (QEMU's docs/interop/qcow2.txt): parsed, and checked against the file it
//! came from, before any table is read. Everything an image may claim is bounded here: table
//! sizes, offsets, alignment, feature bits.

use super::Error;

pub const MAGIC: [u8; 4] = *b"QFI\xfb";
/// The version 2 header's length; version 3 says its own (at least 104).
const V2_HEADER_LEN: u64 = 72;
const V3_MIN_HEADER_LEN: u64 = 104;
pub const MIN_CLUSTER_BITS: u32 = 9;
pub const MAX_CLUSTER_BITS: u32 = 21;
/// Largest L1 table we accept (QEMU's limit too): 32 MiB, 4 Mi entries.
pub const MAX_L1_BYTES: u64 = 32 << 20;
/// Largest refcount table we accept (QEMU's limit): 8 MiB.
pub const MAX_REFTABLE_BYTES: u64 = 8 << 20;
/// Longest backing file name (QEMU's limit).
pub const MAX_BACKING_NAME: u32 = 1023;
/// Largest virtual size: 2^55 bytes, what an L2 entry's offset field can address.
pub const MAX_SIZE: u64 = 1 << 55;

// Incompatible feature bits.
pub const INCOMPAT_DIRTY: u64 = 1 << 0;
pub const INCOMPAT_CORRUPT: u64 = 1 << 1;
pub const INCOMPAT_DATA_FILE: u64 = 1 << 2;
pub const INCOMPAT_COMPRESSION: u64 = 1 << 3;
pub const INCOMPAT_EXTL2: u64 = 1 << 4;

// Header extension types.
const EXT_END: u32 = 0;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
const EXT_DATA_FILE: u32 = 0x4441_5441;
const EXT_CRYPTO: u32 = 0x0537_be77;

/// The backing file's format, as the image names it (header extension), if it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackingFormat {
    Raw,
    Qcow2,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub version: u32,
    pub cluster_bits: u32,
    pub size: u64,
    pub l1_size: u32,
    pub l1_offset: u64,
    pub reftable_offset: u64,
    pub reftable_clusters: u32,
    pub nb_snapshots: u32,
    pub incompatible: u64,
    pub autoclear: u64,
    pub refcount_order: u32,
    pub header_len: u64,
    pub backing: Option<Vec<u8>>,
    pub backing_format: Option<BackingFormat>,
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn bad(what: impl Into<String>) -> Error {
    Error::Corrupt(what.into())
}

impl Header {
    /// Parse and check the header from `first` (the file's first bytes: at least the first
    /// cluster, or all of a shorter file); `file_len` bounds every table.
    pub fn parse(first: &[u8], file_len: u64, writable: bool) -> Result<Header, Error> {
        if first.len() < V2_HEADER_LEN as usize || first[0..4] != MAGIC {
            return Err(bad("not a qcow2 header"));
        }
        let version = be32(first, 4);
        if version != 2 && version != 3 {
            return Err(Error::Unsupported(format!("qcow2 version {version}")));
        }
        let cluster_bits = be32(first, 20);
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
            return Err(bad(format!("cluster_bits {cluster_bits} not in 9..=21")));
        }
        let cs = 1u64 << cluster_bits;
        if be32(first, 32) != 0 {
            return Err(Error::Unsupported("encrypted images".into()));
        }
        let (incompatible, autoclear, refcount_order, header_len) = if version == 3 {
            if first.len() < V3_MIN_HEADER_LEN as usize {
                return Err(bad("version 3 header truncated"));
            }
            let hl = be32(first, 100) as u64;
            if hl < V3_MIN_HEADER_LEN || hl > cs || hl > first.len() as u64 {
                return Err(bad(format!("header length {hl}")));
            }
            (be64(first, 72), be64(first, 88), be32(first, 96), hl)
        } else {
            (0, 0, 4, V2_HEADER_LEN)
        };
        let known = INCOMPAT_DIRTY
            | INCOMPAT_CORRUPT
            | INCOMPAT_DATA_FILE
            | INCOMPAT_COMPRESSION
            | INCOMPAT_EXTL2;
        if incompatible & !known != 0 {
            return Err(Error::Unsupported(format!(
                "unknown incompatible features {:#x}",
                incompatible & !known
            )));
        }
        if incompatible & INCOMPAT_DATA_FILE != 0 {
            return Err(Error::Unsupported("external data files".into()));
        }
        if incompatible & INCOMPAT_EXTL2 != 0 {
            return Err(Error::Unsupported(
                "extended L2 entries (subclusters)".into(),
            ));
        }
        if incompatible & INCOMPAT_COMPRESSION != 0 {
            let ct = if header_len > 104 { first[104] } else { 0 };
            if ct != 0 {
                return Err(Error::Unsupported(format!(
                    "compression type {ct} (only deflate)"
                )));
            }
        }
        if writable && incompatible & INCOMPAT_CORRUPT != 0 {
            return Err(bad("the image is marked corrupt (qemu-img check -r all)"));
        }
        if writable && incompatible & INCOMPAT_DIRTY != 0 {
            return Err(Error::Unsupported(
                "the image is marked dirty (lazy refcounts): run qemu-img check -r all".into(),
            ));
        }
        if refcount_order > 6 {
            return Err(bad(format!("refcount_order {refcount_order}")));
        }
        if writable && refcount_order < 3 {
            return Err(Error::Unsupported(format!(
                "writing with {}-bit refcounts",
                1 << refcount_order
            )));
        }
        let size = be64(first, 24);
        if size > MAX_SIZE {
            return Err(bad(format!("virtual size {size}")));
        }
        let l1_size = be32(first, 36);
        let l1_offset = be64(first, 40);
        let l2_coverage = cs * (cs / 8);
        let need = size.div_ceil(l2_coverage);
        if (l1_size as u64) < need {
            return Err(bad(format!(
                "L1 table of {l1_size} entries too small for {size} bytes"
            )));
        }
        let l1_bytes = l1_size as u64 * 8;
        if l1_bytes > MAX_L1_BYTES {
            return Err(bad(format!("L1 table of {l1_size} entries")));
        }
        if l1_size > 0 && (l1_offset % cs != 0 || l1_offset == 0) {
            return Err(bad(format!("L1 table offset {l1_offset:#x} misaligned")));
        }
        if l1_offset.checked_add(l1_bytes).is_none_or(|e| e > file_len) {
            return Err(bad("L1 table beyond the end of the file"));
        }
        let reftable_offset = be64(first, 48);
        let reftable_clusters = be32(first, 56);
        let rt_bytes = reftable_clusters as u64 * cs;
        if rt_bytes > MAX_REFTABLE_BYTES {
            return Err(bad(format!(
                "refcount table of {reftable_clusters} clusters"
            )));
        }
        if reftable_offset % cs != 0
            || (reftable_clusters > 0 && reftable_offset == 0)
            || reftable_offset
                .checked_add(rt_bytes)
                .is_none_or(|e| e > file_len)
        {
            return Err(bad(
                "refcount table misaligned or beyond the end of the file",
            ));
        }
        if writable && reftable_clusters == 0 {
            return Err(bad("no refcount table"));
        }
        let nb_snapshots = be32(first, 60);
        if writable && nb_snapshots > 0 {
            return Err(Error::Unsupported(
                "writing an image with internal snapshots".into(),
            ));
        }
        let backing_offset = be64(first, 8);
        let backing_len = be32(first, 16);
        let backing = if backing_offset != 0 {
            if backing_len == 0 || backing_len > MAX_BACKING_NAME {
                return Err(bad(format!("backing file name of {backing_len} bytes")));
            }
            let end = backing_offset
                .checked_add(backing_len as u64)
                .filter(|&e| e <= cs.min(first.len() as u64))
                .ok_or_else(|| bad("backing file name outside the first cluster"))?;
            Some(first[backing_offset as usize..end as usize].to_vec())
        } else {
            None
        };
        // Header extensions: between the header and the backing file name (or the end of the
        // first cluster).
        let ext_end = match backing {
            Some(_) => backing_offset,
            None => cs,
        }
        .min(first.len() as u64) as usize;
        let mut at = header_len as usize;
        let mut backing_format = None;
        while at + 8 <= ext_end {
            let kind = be32(first, at);
            let len = be32(first, at + 4) as usize;
            at += 8;
            if kind == EXT_END {
                break;
            }
            if len > ext_end - at {
                return Err(bad("header extension beyond the header area"));
            }
            let data = &first[at..at + len];
            match kind {
                EXT_BACKING_FORMAT => {
                    backing_format = Some(match data {
                        b"raw" => BackingFormat::Raw,
                        b"qcow2" => BackingFormat::Qcow2,
                        other => {
                            return Err(Error::Unsupported(format!(
                                "backing file format {:?}",
                                String::from_utf8_lossy(other)
                            )))
                        }
                    })
                }
                EXT_DATA_FILE => return Err(Error::Unsupported("external data files".into())),
                EXT_CRYPTO => return Err(Error::Unsupported("encrypted images".into())),
                _ => {}
            }
            at += len.div_ceil(8) * 8;
        }
        Ok(Header {
            version,
            cluster_bits,
            size,
            l1_size,
            l1_offset,
            reftable_offset,
            reftable_clusters,
            nb_snapshots,
            incompatible,
            autoclear,
            refcount_order,
            header_len,
            backing,
            backing_format,
        })
    }
}
