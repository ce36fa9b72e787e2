//! virtio-blk request parsing and execution against real image files.

use super::*;
use crate::devices::virtio::memory::GuestMem;
use crate::test_files::TempPath;
use vm_memory::{Bytes, GuestAddress};

const RAM: u64 = 0x8000_0000;
const HDR: u64 = RAM + 0x1000;
const DATA: u64 = RAM + 0x2000;
const STATUS: u64 = RAM + 0x9000;

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

fn mem() -> GuestMem {
    GuestMem::anonymous(RAM, 1 << 20)
}

fn header(m: &GuestMem, kind: u32, sector: u64) {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&kind.to_le_bytes());
    h[8..16].copy_from_slice(&sector.to_le_bytes());
    m.write_slice(&h, GuestAddress(HDR)).unwrap();
    m.write_slice(&[0xee], GuestAddress(STATUS)).unwrap();
}

fn seg(addr: u64, len: u32) -> Seg {
    Seg { addr, len }
}

/// header | data (readable for OUT, writable otherwise) | status
fn bufs(data_len: u32, out: bool) -> Buffers {
    let mut b = Buffers {
        head: 0,
        readable: vec![seg(HDR, 16)],
        writable: vec![],
    };
    if data_len > 0 {
        if out {
            b.readable.push(seg(DATA, data_len));
        } else {
            b.writable.push(seg(DATA, data_len));
        }
    }
    b.writable.push(seg(STATUS, 1));
    b
}

fn status(m: &GuestMem) -> u8 {
    m.read_obj(GuestAddress(STATUS)).unwrap()
}

fn disk(name: &str, data: &[u8], readonly: bool) -> (Disk, TempPath) {
    let p = TempPath::with(name, data);
    (
        Disk::open(&DiskSpec {
            path: p.to_path_buf(),
            readonly,
        })
        .unwrap(),
        p,
    )
}

fn used(h: Handled) -> u32 {
    match h {
        Handled::Used(n) => n,
        Handled::Broken(e) => panic!("chain broken: {e}"),
    }
}

#[test]
fn disk_specs() {
    let d: DiskSpec = "path=/x/y.img".parse().unwrap();
    assert_eq!((d.path, d.readonly), (PathBuf::from("/x/y.img"), false));
    let d: DiskSpec = "path=/x/y.img,readonly".parse().unwrap();
    assert!(d.readonly);
    let d: DiskSpec = "/z.img,readonly=on".parse().unwrap();
    assert_eq!((d.path, d.readonly), (PathBuf::from("/z.img"), true));
    assert!("readonly".parse::<DiskSpec>().is_err());
    assert!("path=a,cache=none".parse::<DiskSpec>().is_err());
    assert!("path=a,readonly=maybe".parse::<DiskSpec>().is_err());
}

#[test]
fn open_rejects_bad_images() {
    let e = Disk::open(&DiskSpec {
        path: "/nonexistent/disk.img".into(),
        readonly: false,
    })
    .err()
    .unwrap();
    assert!(format!("{e:#}").contains("/nonexistent/disk.img"));
    let e = Disk::open(&DiskSpec {
        path: std::env::temp_dir(),
        readonly: false,
    })
    .err()
    .unwrap();
    assert!(format!("{e:#}").contains("is a directory"));
    let p = TempPath::with("odd.img", &[0u8; 1000]);
    let e = Disk::open(&DiskSpec {
        path: p.to_path_buf(),
        readonly: false,
    })
    .err()
    .unwrap();
    assert!(format!("{e:#}").contains("not a multiple of 512"));
}

#[test]
fn parse_header_split_across_descriptors() {
    let m = mem();
    header(&m, T_IN, 0x0102_0304_0506);
    let b = Buffers {
        head: 3,
        readable: vec![seg(HDR, 5), seg(HDR + 5, 11)],
        writable: vec![seg(DATA, 512), seg(STATUS, 1)],
    };
    let r = parse_request(&m, &b).unwrap();
    assert_eq!(
        r.header,
        Header {
            kind: T_IN,
            sector: 0x0102_0304_0506
        }
    );
    assert_eq!(r.data_out, vec![seg(DATA, 512)]);
    assert_eq!(r.status, seg(STATUS, 1));
    assert!(r.data_in.is_empty());
    // Status byte sharing a descriptor with the data.
    let b = Buffers {
        head: 0,
        readable: vec![seg(HDR, 16)],
        writable: vec![seg(DATA, 513)],
    };
    let r = parse_request(&m, &b).unwrap();
    assert_eq!(r.data_out, vec![seg(DATA, 512)]);
    assert_eq!(r.status, seg(DATA + 512, 1));
}

#[test]
fn parse_rejects_bad_chains() {
    let m = mem();
    let no_status = Buffers {
        head: 0,
        readable: vec![seg(HDR, 16)],
        writable: vec![],
    };
    assert_eq!(parse_request(&m, &no_status), Err(ParseError::NoStatus));
    let short = Buffers {
        head: 0,
        readable: vec![seg(HDR, 8)],
        writable: vec![seg(STATUS, 1)],
    };
    assert_eq!(parse_request(&m, &short), Err(ParseError::ShortHeader));
    let mmio = Buffers {
        head: 0,
        readable: vec![seg(HDR, 16)],
        writable: vec![seg(0x1000_1000, 512), seg(STATUS, 1)],
    };
    assert!(matches!(
        parse_request(&m, &mmio),
        Err(ParseError::OutOfRam(_))
    ));
}

#[test]
fn short_header_gets_ioerr() {
    let m = mem();
    let (d, _) = disk("short.img", &[0u8; 4096], false);
    header(&m, T_IN, 0);
    let b = Buffers {
        head: 0,
        readable: vec![seg(HDR, 4)],
        writable: vec![seg(STATUS, 1)],
    };
    assert_eq!(used(handle_chain(&d, &m, &b, false)), 1);
    assert_eq!(status(&m), S_IOERR);
}

#[test]
fn read_returns_image_bytes() {
    let m = mem();
    let img = pattern(8192, 7);
    let (d, _) = disk("read.img", &img, false);
    assert_eq!(d.sectors(), 16);
    header(&m, T_IN, 3);
    assert_eq!(used(handle_chain(&d, &m, &bufs(2048, false), false)), 2049);
    assert_eq!(status(&m), S_OK);
    let mut got = vec![0u8; 2048];
    m.read_slice(&mut got, GuestAddress(DATA)).unwrap();
    assert_eq!(got, &img[3 * 512..3 * 512 + 2048]);
}

#[test]
fn write_reaches_the_file() {
    let m = mem();
    let (d, p) = disk("write.img", &[0u8; 8192], false);
    let data = pattern(1024, 99);
    m.write_slice(&data, GuestAddress(DATA)).unwrap();
    header(&m, T_OUT, 5);
    assert_eq!(used(handle_chain(&d, &m, &bufs(1024, true), true)), 1);
    assert_eq!(status(&m), S_OK);
    let f = std::fs::read(&p).unwrap();
    assert_eq!(&f[5 * 512..5 * 512 + 1024], &data[..]);
    assert!(f[..5 * 512].iter().all(|&b| b == 0));
    assert!(f[7 * 512..].iter().all(|&b| b == 0));
    header(&m, T_FLUSH, 0);
    assert_eq!(used(handle_chain(&d, &m, &bufs(0, true), false)), 1);
    assert_eq!(status(&m), S_OK);
}

#[test]
fn readonly_disk_refuses_writes_and_stays_unchanged() {
    let m = mem();
    let img = pattern(4096, 1);
    let (d, p) = disk("ro.img", &img, true);
    let feats = Blk::new(
        Disk::open(&DiskSpec {
            path: p.to_path_buf(),
            readonly: true,
        })
        .unwrap(),
    )
    .features();
    assert_ne!(feats & F_RO, 0);
    assert_eq!(feats & (F_DISCARD | F_WRITE_ZEROES), 0);
    m.write_slice(&[0xaa; 512], GuestAddress(DATA)).unwrap();
    header(&m, T_OUT, 0);
    used(handle_chain(&d, &m, &bufs(512, true), false));
    assert_eq!(status(&m), S_IOERR);
    header(&m, T_IN, 0);
    used(handle_chain(&d, &m, &bufs(512, false), false));
    assert_eq!(status(&m), S_OK);
    assert_eq!(std::fs::read(&p).unwrap(), img);
}

#[test]
fn out_of_range_and_unaligned_requests_fail() {
    let m = mem();
    let (d, p) = disk("range.img", &pattern(4096, 3), false);
    for (kind, sector, len, out) in [
        (T_IN, 8, 512, false),              // just past the end
        (T_IN, 7, 1024, false),             // crosses the end
        (T_IN, u64::MAX / 256, 512, false), // sector * 512 overflows
        (T_IN, 0, 100, false),              // not whole sectors
        (T_OUT, 8, 512, true),
        (T_OUT, 0, 511, true),
    ] {
        header(&m, kind, sector);
        used(handle_chain(&d, &m, &bufs(len, out), false));
        assert_eq!(status(&m), S_IOERR, "type {kind} sector {sector} len {len}");
    }
    header(&m, 99, 0);
    used(handle_chain(&d, &m, &bufs(0, false), false));
    assert_eq!(status(&m), S_UNSUPP);
    assert_eq!(std::fs::read(&p).unwrap(), pattern(4096, 3));
}

#[test]
fn get_id_is_the_file_name() {
    let m = mem();
    let (d, _) = disk("serial-test.img", &[0u8; 512], false);
    header(&m, T_GET_ID, 0);
    assert_eq!(used(handle_chain(&d, &m, &bufs(20, false), false)), 21);
    let mut id = [0u8; 20];
    m.read_slice(&mut id, GuestAddress(DATA)).unwrap();
    assert_eq!(&id[..15], b"serial-test.img");
    assert_eq!(&id[15..], &[0u8; 5]);
}

fn range_req(m: &GuestMem, kind: u32, sector: u64, n: u32, flags: u32) -> Buffers {
    header(m, kind, 0);
    let mut s = [0u8; 16];
    s[0..8].copy_from_slice(&sector.to_le_bytes());
    s[8..12].copy_from_slice(&n.to_le_bytes());
    s[12..16].copy_from_slice(&flags.to_le_bytes());
    m.write_slice(&s, GuestAddress(DATA)).unwrap();
    bufs(16, true)
}

#[test]
fn discard_and_write_zeroes_zero_the_range_and_keep_the_size() {
    let m = mem();
    let img = vec![0x5au8; 64 * 1024];
    let (d, p) = disk("discard.img", &img, false);
    let b = range_req(&m, T_DISCARD, 16, 32, 0);
    used(handle_chain(&d, &m, &b, false));
    assert_eq!(status(&m), S_OK);
    let b = range_req(&m, T_WRITE_ZEROES, 100, 3, 0);
    used(handle_chain(&d, &m, &b, false));
    assert_eq!(status(&m), S_OK);
    let b = range_req(&m, T_WRITE_ZEROES, 120, 2, 1);
    used(handle_chain(&d, &m, &b, false));
    assert_eq!(status(&m), S_OK);
    let f = std::fs::read(&p).unwrap();
    assert_eq!(f.len(), img.len());
    for (i, &byte) in f.iter().enumerate() {
        let s = i / 512;
        let zero = (16..48).contains(&s) || (100..103).contains(&s) || (120..122).contains(&s);
        assert_eq!(byte, if zero { 0 } else { 0x5a }, "byte {i}");
    }
    // Past the end fails and changes nothing.
    let b = range_req(&m, T_DISCARD, 127, 2, 0);
    used(handle_chain(&d, &m, &b, false));
    assert_eq!(status(&m), S_IOERR);
    assert_eq!(std::fs::read(&p).unwrap(), f);
}

#[test]
fn unknown_range_flags_are_unsupported_and_change_nothing() {
    let m = mem();
    let img = vec![0x5au8; 64 * 1024];
    let (d, p) = disk("wz-flags.img", &img, false);
    // Write-zeroes knows only UNMAP (bit 0); discard knows no flag at all.
    for (kind, flags) in [
        (T_WRITE_ZEROES, 2),
        (T_WRITE_ZEROES, WZ_UNMAP | 2),
        (T_WRITE_ZEROES, 1 << 31),
        (T_DISCARD, WZ_UNMAP),
        (T_DISCARD, 4),
    ] {
        let b = range_req(&m, kind, 8, 4, flags);
        assert_eq!(used(handle_chain(&d, &m, &b, false)), 1);
        assert_eq!(status(&m), S_UNSUPP, "type {kind} flags {flags:#x}");
    }
    // Unknown flags win over a range past the end as well.
    let b = range_req(&m, T_WRITE_ZEROES, 127, 2, 2);
    used(handle_chain(&d, &m, &b, false));
    assert_eq!(status(&m), S_UNSUPP);
    assert_eq!(std::fs::read(&p).unwrap(), img, "the image changed");
    // The known flag still works.
    let b = range_req(&m, T_WRITE_ZEROES, 8, 4, WZ_UNMAP);
    used(handle_chain(&d, &m, &b, false));
    assert_eq!(status(&m), S_OK);
    let f = std::fs::read(&p).unwrap();
    assert!(f[8 * 512..12 * 512].iter().all(|&b| b == 0));
    assert!(f[12 * 512..].iter().all(|&b| b == 0x5a));
}

#[test]
fn scattered_segments_move_in_order_merged_or_not() {
    let m = mem();
    let img = pattern(4096, 3);
    let (d, p) = disk("scatter.img", &img, false);
    // Out of address order, two of them adjacent (one iovec), 3 KiB in all.
    let segs = [
        seg(DATA + 0x4000, 512),
        seg(DATA, 1024),
        seg(DATA + 0x400, 512),
        seg(DATA + 0x6000, 1024),
    ];
    transfer(d.raw(), &m, &segs, 512, false).unwrap();
    let mut got = Vec::new();
    for s in &segs {
        let mut b = vec![0u8; s.len as usize];
        m.read_slice(&mut b, GuestAddress(s.addr)).unwrap();
        got.extend(b);
    }
    assert_eq!(got, &img[512..512 + 3072]);

    let data = pattern(3072, 77);
    let mut at = 0;
    for s in &segs {
        let n = s.len as usize;
        m.write_slice(&data[at..at + n], GuestAddress(s.addr))
            .unwrap();
        at += n;
    }
    transfer(d.raw(), &m, &segs, 1024, true).unwrap();
    let f = std::fs::read(&p).unwrap();
    assert_eq!(&f[1024..1024 + 3072], &data[..]);
    assert_eq!(&f[..1024], &img[..1024]);
    assert_eq!(&f[1024 + 3072..], &img[1024 + 3072..]);
}

#[test]
fn more_segments_than_one_call_takes() {
    let m = mem();
    let n = IOV_MAX + 6;
    let img = pattern(n * 512, 11);
    let (d, _) = disk("many.img", &img, false);
    // Non-adjacent 512-byte buffers: one iovec each, so two preadv calls.
    let segs: Vec<Seg> = (0..n as u64)
        .map(|k| seg(RAM + 0x1_0000 + k * 768, 512))
        .collect();
    transfer(d.raw(), &m, &segs, 0, false).unwrap();
    for (k, s) in segs.iter().enumerate() {
        let mut b = vec![0u8; 512];
        m.read_slice(&mut b, GuestAddress(s.addr)).unwrap();
        assert_eq!(b, &img[k * 512..(k + 1) * 512], "segment {k}");
    }
}
