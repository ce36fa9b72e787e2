//! qcow2 images, versions 2 and 3 (QEMU's docs/interop/qcow2.txt), read and written from the
//! block I/O thread with positional reads and writes only (the sandbox allows no open, stat,
//! lseek or ftruncate there): the file grows by writing past its end.
//!
//! What is supported: backing files (raw or qcow2, opened at set-up), deflate-compressed
//! clusters (read; a write re-allocates the cluster), zero clusters, discard and write-zeroes.
//! Not supported, refused at open: encryption, external data files, extended L2 entries,
//! zstd compression, writing images with internal snapshots, dirty or corrupt images, or
//! refcounts narrower than 8 bits.
//!
//! Allocation only appends (clusters are never reused while the image is open; freed ones
//! are punched out of the file), and metadata is cached and written at flush, in an order
//! that keeps the image consistent if the host crashes at any point:
//!   1. refcount blocks and newly allocated L2 tables; fdatasync (with the guest data);
//!   2. refcount table entries of new refcount blocks; fdatasync;
//!   3. entries of existing L2 tables and L1 entries; fdatasync;
//!   4. refcount decrements of clusters no longer referenced; fdatasync; punch holes.
//!
//! So no L1/L2 entry on disk ever points at a cluster whose refcount or contents are not yet
//! on disk, and no cluster is freed while an entry on disk still points at it.

mod header;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

pub use header::{BackingFormat, Header, MAGIC};

use super::{Error, Layer};

const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const COPIED: u64 = 1 << 63;
const COMPRESSED: u64 = 1 << 62;
const ZERO: u64 = 1;
/// Most bytes of cached L2 tables and of cached refcount blocks, each.
const CACHE_BYTES: u64 = 8 << 20;

/// Where a guest cluster's data is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mapping {
    /// Not allocated here: the backing file, or zeroes.
    Unallocated,
    /// Reads as zeroes.
    Zero,
    /// A standard cluster at this host offset.
    Data(u64),
    /// Deflate data at this host offset, of at most this many bytes.
    Compressed(u64, u64),
}

struct Table<T> {
    data: Vec<T>,
    dirty: bool,
    /// Allocated since the last flush: nothing on disk points at it yet.
    new: bool,
}

/// Opens the layer a header names: (backing file name, declared format).
pub type OpenBacking<'a> = dyn FnMut(&[u8], Option<BackingFormat>) -> Result<Layer, Error> + 'a;

/// An open qcow2 image.
pub struct Qcow2 {
    file: File,
    writable: bool,
    h: Header,
    cs: u64,
    l1: Vec<u64>,
    l1_dirty: HashSet<usize>,
    reftable: Vec<u64>,
    reftable_dirty: HashSet<usize>,
    l2_cache: HashMap<u64, Table<u64>>,
    rb_cache: HashMap<u64, Table<u8>>,
    /// Clusters to release after the next metadata flush: (host offset, clusters).
    pending_free: Vec<(u64, u64)>,
    /// The file's length as far as our own writes go (it only grows).
    file_len: u64,
    /// The next cluster to allocate (the end of the file at open, rounded up).
    next_free: u64,
    allocated: u64,
    backing: Option<Box<Layer>>,
    /// The last decompressed cluster: (its L2 entry, its bytes).
    zcache: Option<(u64, Vec<u8>)>,
}

fn be_u64s(b: &[u8]) -> Vec<u64> {
    b.chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

fn corrupt(what: impl Into<String>) -> Error {
    Error::Corrupt(what.into())
}

impl Qcow2 {
    /// Open an image from its file of `file_len` bytes (already checked and locked by the
    /// caller; a block device's size is not its metadata's length). `backing` is
    /// called with the backing file name the header holds (if any) and its declared format,
    /// and opens that layer read-only.
    pub fn open(
        file: File,
        file_len: u64,
        writable: bool,
        backing: &mut OpenBacking,
    ) -> Result<Qcow2, Error> {
        let mut first = vec![0u8; (file_len.min(1 << header::MAX_CLUSTER_BITS)) as usize];
        file.read_exact_at(&mut first, 0)?;
        let h = Header::parse(&first, file_len, writable)?;
        let cs = 1u64 << h.cluster_bits;
        let mut l1b = vec![0u8; h.l1_size as usize * 8];
        file.read_exact_at(&mut l1b, h.l1_offset)?;
        let l1 = be_u64s(&l1b);
        let mut rtb = vec![0u8; (h.reftable_clusters as u64 * cs) as usize];
        file.read_exact_at(&mut rtb, h.reftable_offset)?;
        let reftable = be_u64s(&rtb);
        for &e in &reftable {
            if e & !OFFSET_MASK != 0 && writable {
                return Err(corrupt(format!("refcount table entry {e:#x}")));
            }
        }
        let backing = match &h.backing {
            Some(name) => Some(Box::new(backing(name, h.backing_format)?)),
            None => None,
        };
        let mut q = Qcow2 {
            file,
            writable,
            cs,
            l1,
            l1_dirty: HashSet::new(),
            reftable,
            reftable_dirty: HashSet::new(),
            l2_cache: HashMap::new(),
            rb_cache: HashMap::new(),
            pending_free: Vec::new(),
            file_len,
            next_free: file_len.div_ceil(cs) * cs,
            allocated: 0,
            backing,
            zcache: None,
            h,
        };
        if writable && q.h.version == 3 && q.h.autoclear != 0 {
            // Features we do not maintain (bitmaps) must be marked stale before we write.
            q.file.write_all_at(&0u64.to_be_bytes(), 88)?;
            q.file.sync_data()?;
            q.h.autoclear = 0;
        }
        Ok(q)
    }

    /// The virtual size in bytes.
    pub fn size(&self) -> u64 {
        self.h.size
    }

    pub fn header(&self) -> &Header {
        &self.h
    }

    /// Clusters allocated since open (for bounds checks: the file never grows past its
    /// length at open, rounded up to a cluster, plus this many clusters).
    pub fn allocated_clusters(&self) -> u64 {
        self.allocated
    }

    pub fn cluster_size(&self) -> u64 {
        self.cs
    }

    fn l2_entries(&self) -> u64 {
        self.cs / 8
    }

    fn check_cluster(&self, off: u64, what: &str) -> Result<(), Error> {
        if off == 0
            || off % self.cs != 0
            || off
                .checked_add(self.cs)
                .is_none_or(|e| e > self.file_len.div_ceil(self.cs) * self.cs)
        {
            return Err(corrupt(format!(
                "{what} at {off:#x} misaligned or outside the file"
            )));
        }
        Ok(())
    }

    /// Bring a cached table in (evicting if the cache is full).
    fn load_l2(&mut self, off: u64) -> Result<(), Error> {
        if self.l2_cache.contains_key(&off) {
            return Ok(());
        }
        self.check_cluster(off, "L2 table")?;
        self.make_room(false)?;
        let mut b = vec![0u8; self.cs as usize];
        self.file.read_exact_at(&mut b, off)?;
        self.l2_cache.insert(
            off,
            Table {
                data: be_u64s(&b),
                dirty: false,
                new: false,
            },
        );
        Ok(())
    }

    fn load_rb(&mut self, off: u64) -> Result<(), Error> {
        if self.rb_cache.contains_key(&off) {
            return Ok(());
        }
        self.check_cluster(off, "refcount block")?;
        self.make_room(true)?;
        let mut b = vec![0u8; self.cs as usize];
        self.file.read_exact_at(&mut b, off)?;
        self.rb_cache.insert(
            off,
            Table {
                data: b,
                dirty: false,
                new: false,
            },
        );
        Ok(())
    }

    /// Keep a cache under its bound: drop a clean table, or flush and then drop one.
    fn make_room(&mut self, refcounts: bool) -> Result<(), Error> {
        let max = (CACHE_BYTES / self.cs).max(4) as usize;
        let len = if refcounts {
            self.rb_cache.len()
        } else {
            self.l2_cache.len()
        };
        if len < max {
            return Ok(());
        }
        let clean = if refcounts {
            self.rb_cache
                .iter()
                .find(|(_, t)| !t.dirty)
                .map(|(&k, _)| k)
        } else {
            self.l2_cache
                .iter()
                .find(|(_, t)| !t.dirty)
                .map(|(&k, _)| k)
        };
        match clean {
            Some(k) => {
                if refcounts {
                    self.rb_cache.remove(&k);
                } else {
                    self.l2_cache.remove(&k);
                }
            }
            None => {
                self.flush()?;
                if refcounts {
                    self.rb_cache.clear();
                } else {
                    self.l2_cache.clear();
                }
            }
        }
        Ok(())
    }

    fn split(&self, vaddr: u64) -> (usize, usize) {
        let c = vaddr >> self.h.cluster_bits;
        (
            (c / self.l2_entries()) as usize,
            (c % self.l2_entries()) as usize,
        )
    }

    /// The raw L2 entry for guest offset `vaddr` (0 when there is no L2 table).
    fn l2_entry(&mut self, vaddr: u64) -> Result<u64, Error> {
        let (i1, i2) = self.split(vaddr);
        let l1e = *self
            .l1
            .get(i1)
            .ok_or_else(|| corrupt("offset beyond the L1 table"))?;
        let l2off = l1e & OFFSET_MASK;
        if l2off == 0 {
            return Ok(0);
        }
        self.load_l2(l2off)?;
        Ok(self.l2_cache[&l2off].data[i2])
    }

    fn decode(&self, e: u64) -> Result<Mapping, Error> {
        if e & COMPRESSED != 0 {
            let x = 62 - (self.h.cluster_bits - 8);
            let off = e & ((1 << x) - 1);
            let sectors = ((e & !(COMPRESSED | COPIED)) >> x) + 1;
            let len = sectors * 512 - (off & 511);
            if off == 0 || off >= self.file_len {
                return Err(corrupt(format!(
                    "compressed cluster at {off:#x} outside the file"
                )));
            }
            return Ok(Mapping::Compressed(off, len.min(self.file_len - off)));
        }
        if e & ZERO != 0 {
            return Ok(Mapping::Zero);
        }
        let off = e & OFFSET_MASK;
        if off == 0 {
            return Ok(Mapping::Unallocated);
        }
        if e & !(OFFSET_MASK | COPIED) != 0 {
            return Err(corrupt(format!("L2 entry {e:#x} has reserved bits set")));
        }
        self.check_cluster(off, "data cluster")?;
        Ok(Mapping::Data(off))
    }

    /// Read `buf.len()` bytes at guest offset `off` (the caller keeps it inside the disk).
    pub fn read_at(&mut self, buf: &mut [u8], mut off: u64) -> Result<(), Error> {
        let mut done = 0;
        while done < buf.len() {
            let in_c = off % self.cs;
            let n = ((self.cs - in_c) as usize).min(buf.len() - done);
            let e = self.l2_entry(off)?;
            let m = self.decode(e)?;
            self.read_mapped(m, e, &mut buf[done..done + n], off)?;
            done += n;
            off += n as u64;
        }
        Ok(())
    }

    fn read_mapped(&mut self, m: Mapping, e: u64, buf: &mut [u8], off: u64) -> Result<(), Error> {
        let in_c = off % self.cs;
        match m {
            Mapping::Unallocated => match &mut self.backing {
                Some(b) => b.read_at(buf, off)?,
                None => buf.fill(0),
            },
            Mapping::Zero => buf.fill(0),
            Mapping::Data(h) => read_zero_fill(&self.file, buf, h + in_c)?,
            Mapping::Compressed(h, len) => {
                if self.zcache.as_ref().is_none_or(|(k, _)| *k != e) {
                    let mut src = vec![0u8; len as usize];
                    read_zero_fill(&self.file, &mut src, h)?;
                    let mut out = vec![0u8; self.cs as usize];
                    let mut d = flate2::Decompress::new(false);
                    match d.decompress(&src, &mut out, flate2::FlushDecompress::Finish) {
                        Ok(_) if d.total_out() == self.cs => {}
                        _ => return Err(corrupt(format!("compressed cluster at {h:#x}"))),
                    }
                    self.zcache = Some((e, out));
                }
                let data = &self.zcache.as_ref().expect("just filled").1;
                buf.copy_from_slice(&data[in_c as usize..in_c as usize + buf.len()]);
            }
        }
        Ok(())
    }

    /// The L2 table for guest offset `vaddr`, allocated if there is none.
    fn l2_for_write(&mut self, vaddr: u64) -> Result<(u64, usize), Error> {
        let (i1, i2) = self.split(vaddr);
        let l1e = *self
            .l1
            .get(i1)
            .ok_or_else(|| corrupt("offset beyond the L1 table"))?;
        let off = l1e & OFFSET_MASK;
        if off == 0 {
            let off = self.alloc()?;
            self.make_room(false)?;
            self.l2_cache.insert(
                off,
                Table {
                    data: vec![0; self.l2_entries() as usize],
                    dirty: true,
                    new: true,
                },
            );
            self.l1[i1] = off | COPIED;
            self.l1_dirty.insert(i1);
            return Ok((off, i2));
        }
        if l1e & COPIED == 0 {
            return Err(Error::Unsupported("writing to a shared L2 table".into()));
        }
        self.load_l2(off)?;
        Ok((off, i2))
    }

    fn set_l2(&mut self, l2: u64, i2: usize, e: u64) {
        let t = self.l2_cache.get_mut(&l2).expect("loaded");
        t.data[i2] = e;
        t.dirty = true;
    }

    /// Release what an L2 entry pointed at (after the next metadata flush): a data cluster
    /// (a zero cluster may have one preallocated), or the clusters compressed data touches.
    fn release(&mut self, e: u64, m: Mapping) {
        match m {
            Mapping::Compressed(h, len) => {
                let first = h / self.cs;
                let last = (h + len.max(1) - 1) / self.cs;
                self.pending_free.push((first * self.cs, last - first + 1));
            }
            Mapping::Data(h) => self.pending_free.push((h, 1)),
            Mapping::Zero => {
                let h = e & OFFSET_MASK;
                // A bad offset is left alone: at worst a cluster of a corrupt image leaks.
                if h != 0 && self.check_cluster(h, "zero cluster").is_ok() {
                    self.pending_free.push((h, 1));
                }
            }
            Mapping::Unallocated => {}
        }
    }

    /// Write `buf` at guest offset `off` (the caller keeps it inside the disk).
    pub fn write_at(&mut self, buf: &[u8], mut off: u64) -> Result<(), Error> {
        if !self.writable {
            return Err(Error::ReadOnly);
        }
        let mut done = 0;
        while done < buf.len() {
            let in_c = off % self.cs;
            let n = ((self.cs - in_c) as usize).min(buf.len() - done);
            self.write_cluster(&buf[done..done + n], off)?;
            done += n;
            off += n as u64;
        }
        Ok(())
    }

    fn write_cluster(&mut self, data: &[u8], off: u64) -> Result<(), Error> {
        let in_c = off % self.cs;
        let (l2, i2) = self.l2_for_write(off)?;
        let e = self.l2_cache[&l2].data[i2];
        let m = self.decode(e)?;
        if let Mapping::Data(h) = m {
            if e & COPIED != 0 {
                self.file.write_all_at(data, h + in_c)?;
                return Ok(());
            }
        }
        // Copy on write: a new cluster with the old contents and the new data.
        let mut c = vec![0u8; self.cs as usize];
        if data.len() as u64 != self.cs {
            let base = off - in_c;
            self.read_mapped(m, e, &mut c, base)?;
        }
        c[in_c as usize..in_c as usize + data.len()].copy_from_slice(data);
        let h = self.alloc()?;
        self.file.write_all_at(&c, h)?;
        self.set_l2(l2, i2, h | COPIED);
        self.release(e, m);
        Ok(())
    }

    /// Make `len` bytes at `off` read as zeroes; whole clusters lose their storage (`unmap`:
    /// discard and write-zeroes are the same here, and a discarded range reads as zeroes).
    pub fn write_zeroes(&mut self, mut off: u64, len: u64) -> Result<(), Error> {
        if !self.writable {
            return Err(Error::ReadOnly);
        }
        let end = off + len;
        while off < end {
            let in_c = off % self.cs;
            let n = (self.cs - in_c).min(end - off);
            let e = self.l2_entry(off)?;
            let m = self.decode(e)?;
            let below_is_zero = self.backing.is_none();
            if m == Mapping::Zero || (m == Mapping::Unallocated && below_is_zero) {
                // Already reads as zeroes.
            } else if n == self.cs && (self.h.version == 3 || below_is_zero) {
                let (l2, i2) = self.l2_for_write(off)?;
                let entry = if self.h.version == 3 { ZERO } else { 0 };
                self.set_l2(l2, i2, entry);
                self.release(e, m);
            } else {
                self.write_cluster(&vec![0u8; n as usize], off)?;
            }
            off += n;
        }
        Ok(())
    }

    fn refcount_bits(&self) -> u64 {
        1 << self.h.refcount_order
    }

    fn rb_index(&self, host: u64) -> (usize, usize) {
        let per_block = self.cs * 8 / self.refcount_bits();
        let c = host / self.cs;
        ((c / per_block) as usize, (c % per_block) as usize)
    }

    fn get_ref_in(&self, block: &[u8], i: usize) -> u64 {
        let w = (self.refcount_bits() / 8) as usize;
        block[i * w..(i + 1) * w]
            .iter()
            .fold(0u64, |a, &b| (a << 8) | b as u64)
    }

    fn refcount(&mut self, host: u64) -> Result<u64, Error> {
        let (ti, bi) = self.rb_index(host);
        let Some(&rbo) = self.reftable.get(ti) else {
            return Ok(0);
        };
        let rbo = rbo & OFFSET_MASK;
        if rbo == 0 {
            return Ok(0);
        }
        self.load_rb(rbo)?;
        Ok(self.get_ref_in(&self.rb_cache[&rbo].data, bi))
    }

    fn set_refcount(&mut self, host: u64, v: u64, depth: u32) -> Result<(), Error> {
        let (ti, bi) = self.rb_index(host);
        if ti >= self.reftable.len() {
            return Err(Error::Unsupported(
                "the refcount table is full (growing it is not implemented)".into(),
            ));
        }
        let mut rbo = self.reftable[ti] & OFFSET_MASK;
        if rbo == 0 {
            if depth > 2 {
                return Err(corrupt("refcount block allocation does not converge"));
            }
            // A new refcount block at the end of the file; it counts itself when it covers
            // itself, as it does unless it starts a new block's range.
            rbo = self.next_free;
            self.next_free += self.cs;
            self.file_len = self.file_len.max(self.next_free);
            self.allocated += 1;
            self.make_room(true)?;
            self.rb_cache.insert(
                rbo,
                Table {
                    data: vec![0; self.cs as usize],
                    dirty: true,
                    new: true,
                },
            );
            self.reftable[ti] = rbo;
            self.reftable_dirty.insert(ti);
            self.set_refcount(rbo, 1, depth + 1)?;
        }
        self.load_rb(rbo)?;
        let w = (self.refcount_bits() / 8) as usize;
        if w < 8 && v >> (w * 8) != 0 {
            return Err(corrupt("refcount overflow"));
        }
        let t = self.rb_cache.get_mut(&rbo).expect("loaded");
        for (k, b) in t.data[bi * w..(bi + 1) * w].iter_mut().enumerate() {
            *b = (v >> (8 * (w - 1 - k))) as u8;
        }
        t.dirty = true;
        Ok(())
    }

    /// A new cluster at the end of the file, refcount 1. Past the end of the file at open
    /// everything is ours: a refcount there is corruption (and skipping it would let a
    /// hostile image make the file grow without bound).
    fn alloc(&mut self) -> Result<u64, Error> {
        let h = self.next_free;
        if h.checked_add(self.cs).is_none_or(|e| e > header::MAX_SIZE) {
            return Err(corrupt("image file too large"));
        }
        if self.refcount(h)? != 0 {
            return Err(corrupt(format!(
                "cluster {h:#x} past the end of the file has a refcount"
            )));
        }
        self.next_free += self.cs;
        self.file_len = self.file_len.max(h + self.cs);
        self.allocated += 1;
        self.set_refcount(h, 1, 0)?;
        Ok(h)
    }

    fn metadata_dirty(&self) -> bool {
        !self.l1_dirty.is_empty()
            || !self.reftable_dirty.is_empty()
            || !self.pending_free.is_empty()
            || self.l2_cache.values().any(|t| t.dirty)
            || self.rb_cache.values().any(|t| t.dirty)
    }

    fn write_table(&self, off: u64, data: &[u64]) -> Result<(), Error> {
        let b: Vec<u8> = data.iter().flat_map(|e| e.to_be_bytes()).collect();
        self.file.write_all_at(&b, off)?;
        Ok(())
    }

    fn write_refblocks(&mut self) -> Result<(), Error> {
        for (&off, t) in self.rb_cache.iter_mut().filter(|(_, t)| t.dirty) {
            self.file.write_all_at(&t.data, off)?;
            t.dirty = false;
            t.new = false;
        }
        Ok(())
    }

    /// Make every write so far durable, data and metadata, in the crash-safe order given in
    /// the module documentation.
    pub fn flush(&mut self) -> Result<(), Error> {
        if !self.writable {
            return Ok(());
        }
        if !self.metadata_dirty() {
            self.file.sync_data()?;
            return Ok(());
        }
        // 1. Refcount blocks and new L2 tables, with the data.
        self.write_refblocks()?;
        for (&off, t) in self.l2_cache.iter().filter(|(_, t)| t.new) {
            self.write_table(off, &t.data)?;
        }
        self.file.sync_data()?;
        // 2. The refcount table's new entries.
        if !self.reftable_dirty.is_empty() {
            let mut idx: Vec<usize> = self.reftable_dirty.drain().collect();
            idx.sort_unstable();
            for i in idx {
                self.file.write_all_at(
                    &self.reftable[i].to_be_bytes(),
                    self.h.reftable_offset + 8 * i as u64,
                )?;
            }
            self.file.sync_data()?;
        }
        // 3. Existing L2 tables and the L1 table.
        for (&off, t) in self.l2_cache.iter().filter(|(_, t)| t.dirty && !t.new) {
            self.write_table(off, &t.data)?;
        }
        for t in self.l2_cache.values_mut() {
            t.dirty = false;
            t.new = false;
        }
        let mut idx: Vec<usize> = self.l1_dirty.drain().collect();
        idx.sort_unstable();
        for i in idx {
            self.file
                .write_all_at(&self.l1[i].to_be_bytes(), self.h.l1_offset + 8 * i as u64)?;
        }
        self.file.sync_data()?;
        // 4. Clusters nothing points at any more.
        if !self.pending_free.is_empty() {
            let frees = std::mem::take(&mut self.pending_free);
            let mut holes = Vec::new();
            for (h, n) in frees {
                for k in 0..n {
                    let c = h + k * self.cs;
                    let r = self.refcount(c)?;
                    if r == 0 {
                        return Err(corrupt(format!("freeing cluster {c:#x} with refcount 0")));
                    }
                    self.set_refcount(c, r - 1, 0)?;
                    if r == 1 {
                        holes.push(c);
                    }
                }
            }
            self.write_refblocks()?;
            self.file.sync_data()?;
            for c in holes {
                punch_hole(&self.file, c, self.cs);
            }
        }
        Ok(())
    }
}

/// Read at `off`, zeroes past the end of the file.
fn read_zero_fill(f: &File, buf: &mut [u8], off: u64) -> Result<(), Error> {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], off + done as u64) {
            Ok(0) => {
                buf[done..].fill(0);
                break;
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Give a freed cluster's space back to the host file system (best effort: the refcount,
/// not the hole, is what frees it).
fn punch_hole(f: &File, off: u64, len: u64) {
    // SAFETY: fallocate on our own descriptor with plain integer arguments.
    unsafe {
        libc::fallocate(
            f.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            off as libc::off_t,
            len as libc::off_t,
        );
    }
}
