//! Fuzz target `qcow2`: open an arbitrary or mutated qcow2 image and run reads, writes,
//! write-zeroes and flushes on it.

use std::io::Write as _;

use super::{Input, ScratchFile};
use crate::storage::{self, Qcow2};

/// What a run did (for the seeds in the regression tests).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Qcow2Run {
    /// The image opened.
    pub opened: bool,
    /// Requests that succeeded / failed.
    pub ok: u32,
    pub failed: u32,
}

const CS: usize = 512;

/// A valid version 3 image with 512-byte clusters and 64 KiB of virtual size: header, L1 (2
/// entries), refcount table, one refcount block, one L2 table, a data cluster (guest cluster
/// 0), a deflate-compressed cluster (guest cluster 1) and a zero cluster (guest cluster 2).
pub fn qcow2_template() -> Vec<u8> {
    let mut img = vec![0u8; 7 * CS];
    let put32 = |b: &mut [u8], at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_be_bytes());
    let put64 = |b: &mut [u8], at: usize, v: u64| b[at..at + 8].copy_from_slice(&v.to_be_bytes());
    img[0..4].copy_from_slice(&storage::qcow2::MAGIC);
    put32(&mut img, 4, 3);
    put32(&mut img, 20, 9);
    put64(&mut img, 24, 64 << 10);
    put32(&mut img, 36, 2);
    put64(&mut img, 40, CS as u64);
    put64(&mut img, 48, 2 * CS as u64);
    put32(&mut img, 56, 1);
    put32(&mut img, 96, 4);
    put32(&mut img, 100, 104);
    put64(&mut img, CS, (4 * CS) as u64 | 1 << 63);
    put64(&mut img, 2 * CS, 3 * CS as u64);
    for c in 0..7 {
        img[3 * CS + 2 * c + 1] = 1;
    }
    put64(&mut img, 4 * CS, (5 * CS) as u64 | 1 << 63);
    put64(&mut img, 4 * CS + 8, (6 * CS) as u64 | 1 << 62);
    put64(&mut img, 4 * CS + 16, 1);
    for (k, b) in img[5 * CS..6 * CS].iter_mut().enumerate() {
        *b = k as u8 ^ 0x5a;
    }
    let plain: Vec<u8> = (0..CS).map(|k| (k / 7) as u8).collect();
    let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(&plain).expect("in memory");
    let packed = z.finish().expect("in memory");
    assert!(packed.len() <= CS);
    img[6 * CS..6 * CS + packed.len()].copy_from_slice(&packed);
    img
}

/// Input: byte 0 is the mode (bit 0: the image is writable; bit 1: start from
/// [`qcow2_template`] and XOR it with patches, a count byte then (u16 offset, u8) each; else a
/// u16 length and that many bytes of image), then requests of 8 bytes each: kind (0 read, 1
/// write, 2 write-zeroes, 3 flush), a u32 offset and a u16 length (both reduced into the
/// disk; at most 64 KiB).
///
/// Invariants: no panic; the image file never grows past its length at open rounded up to a
/// cluster plus the clusters the image allocated; a read-only image is unchanged; a write
/// (or zeroing) that succeeded reads back.
pub fn qcow2(data: &[u8]) -> Qcow2Run {
    let mut inp = Input::new(data);
    let mode = inp.u8();
    let writable = mode & 1 != 0;
    let image = if mode & 2 != 0 {
        let mut t = qcow2_template();
        for _ in 0..inp.u8() {
            let at = inp.u16() as usize % t.len();
            t[at] ^= inp.u8();
        }
        t
    } else {
        let n = inp.u16() as usize;
        inp.bytes(n).to_vec()
    };
    let mut run = Qcow2Run::default();
    let scratch = ScratchFile::new(&image).expect("scratch file");
    let file = std::fs::File::options()
        .read(true)
        .write(writable)
        .open(scratch.path())
        .expect("scratch file");
    let mut no_backing = |_: &std::path::Path| -> anyhow::Result<_> {
        anyhow::bail!("no backing files in the fuzzer")
    };
    let Ok(mut q) = storage::open_chain(
        file,
        image.len() as u64,
        scratch.path(),
        (0, 0),
        writable,
        &mut no_backing,
    ) else {
        assert!(
            image == scratch.contents(),
            "a failed open changed the file"
        );
        return run;
    };
    run.opened = true;
    let bound = |q: &Qcow2| {
        let cs = q.cluster_size();
        (image.len() as u64).div_ceil(cs) * cs + q.allocated_clusters() * cs
    };
    let size = q.size();
    while !inp.is_empty() && size > 0 {
        let kind = inp.u8() % 4;
        let off = inp.u32() as u64 % size;
        let len = (inp.u16() as u64 + 1).min(size - off);
        let r = match kind {
            0 => {
                let mut b = vec![0u8; len as usize];
                q.read_at(&mut b, off)
            }
            1 => {
                let b: Vec<u8> = (0..len).map(|k| (k as u8) ^ (off as u8) | 1).collect();
                q.write_at(&b, off).and_then(|_| {
                    let mut back = vec![0u8; len as usize];
                    q.read_at(&mut back, off)?;
                    assert!(back == b, "a write did not read back");
                    Ok(())
                })
            }
            2 => q.write_zeroes(off, len).and_then(|_| {
                let mut back = vec![1u8; len as usize];
                q.read_at(&mut back, off)?;
                assert!(back.iter().all(|&x| x == 0), "zeroes did not read back");
                Ok(())
            }),
            _ => q.flush(),
        };
        match r {
            Ok(()) => run.ok += 1,
            Err(_) => run.failed += 1,
        }
        let len_now = scratch.contents().len() as u64;
        assert!(
            len_now <= bound(&q),
            "the image grew past what it allocated"
        );
    }
    let _ = q.flush();
    let b = bound(&q);
    drop(q);
    let after = scratch.contents();
    assert!(
        after.len() as u64 <= b,
        "the image grew past what it allocated"
    );
    if !writable {
        assert!(after == image, "a read-only image changed");
    }
    run
}
