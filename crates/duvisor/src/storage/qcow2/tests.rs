//! qcow2 against QEMU's own tools: images made by `qemu-img`/`qemu-io` read back exactly as
//! `qemu-img convert -O raw` shows them; after our writes `qemu-img check` finds nothing and
//! `convert` shows exactly what we wrote; hand-made hostile images are errors, not panics.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::storage::{open_chain, Error, Qcow2};

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().expect(cmd);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn qemu_img(args: &[&str]) -> String {
    run("qemu-img", args)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// What QEMU reads from `img`.
fn qemu_raw(dir: &Path, img: &Path) -> Vec<u8> {
    let out = dir.join("qemu-view.raw");
    qemu_img(&["convert", "-O", "raw", s(img), s(&out)]);
    std::fs::read(out).unwrap()
}

fn qemu_check(img: &Path) {
    let out = Command::new("qemu-img")
        .args(["check", s(img)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "qemu-img check {}: {}{}",
        img.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn opener(p: &Path) -> anyhow::Result<(File, u64, (u64, u64))> {
    let f = File::open(p)?;
    let md = f.metadata()?;
    Ok((f, md.len(), (md.dev(), md.ino())))
}

fn open(p: &Path, writable: bool) -> Result<Qcow2, Error> {
    let f = File::options().read(true).write(writable).open(p)?;
    let md = f.metadata()?;
    open_chain(f, md.len(), p, (md.dev(), md.ino()), writable, &mut opener)
}

fn read_all(q: &mut Qcow2) -> Vec<u8> {
    let mut v = vec![0u8; q.size() as usize];
    // In odd pieces, so that reads start and end inside clusters.
    let mut off = 0;
    let mut step = 1536;
    while off < v.len() {
        let n = step.min(v.len() - off);
        q.read_at(&mut v[off..off + n], off as u64).unwrap();
        off += n;
        step = step * 7 % 200_000 + 512;
    }
    v
}

/// 3 MiB with data, zero runs and repetitive (compressible) parts.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = vec![0u8; len];
    for (i, b) in v.iter_mut().enumerate() {
        let region = i / 65536;
        if region % 4 == 1 {
            continue; // zero
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = if region % 4 == 2 {
            (i / 1000) as u8
        } else {
            x as u8
        };
    }
    v
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn make(dir: &Path, name: &str, opts: &[&str], data: &[u8]) -> PathBuf {
    let raw = dir.join(format!("{name}.src"));
    std::fs::write(&raw, data).unwrap();
    let img = dir.join(name);
    let mut args = vec!["convert", "-f", "raw", "-O", "qcow2"];
    args.extend_from_slice(opts);
    args.push(s(&raw));
    args.push(s(&img));
    qemu_img(&args);
    img
}

const VARIANTS: &[(&str, &[&str])] = &[
    ("v2.qcow2", &["-o", "compat=0.10"]),
    ("v3.qcow2", &["-o", "compat=1.1"]),
    ("v3-4k.qcow2", &["-o", "compat=1.1,cluster_size=4096"]),
    ("v3-c.qcow2", &["-c", "-o", "compat=1.1"]),
    (
        "v2-c-512.qcow2",
        &["-c", "-o", "compat=0.10,cluster_size=512"],
    ),
    ("v3-2m.qcow2", &["-o", "cluster_size=2M"]),
];

#[test]
fn reads_match_qemu() {
    let d = tmp();
    let data = pattern(3 << 20, 7);
    for (name, opts) in VARIANTS {
        let img = make(d.path(), name, opts, &data);
        let mut q = open(&img, false).unwrap();
        let ours = read_all(&mut q);
        assert!(ours == data, "{name}: differs from the source");
        assert!(
            ours == qemu_raw(d.path(), &img),
            "{name}: differs from qemu-img"
        );
    }
}

/// Writes of every shape (inside a cluster, across clusters, whole clusters, at the end),
/// then zeroing; the model is a plain byte array.
fn exercise(q: &mut Qcow2, model: &mut [u8], seed: u64) {
    let size = model.len() as u64;
    let mut x = seed | 1;
    let mut rnd = |m: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    };
    for i in 0..60u64 {
        let len = match i % 4 {
            0 => 512,
            1 => 4096 * (1 + rnd(40)),
            2 => 65536,
            _ => 512 * (1 + rnd(600)),
        }
        .min(size);
        let off = (rnd(size - len + 1) / 512) * 512;
        if i % 7 == 6 {
            q.write_zeroes(off, len).unwrap();
            model[off as usize..(off + len) as usize].fill(0);
        } else {
            let buf: Vec<u8> = (0..len).map(|k| (k ^ i ^ seed) as u8 | 1).collect();
            q.write_at(&buf, off).unwrap();
            model[off as usize..(off + len) as usize].copy_from_slice(&buf);
        }
        if i % 20 == 19 {
            q.flush().unwrap();
        }
    }
    // The last cluster and a discard of everything in the middle megabyte.
    q.write_at(&[0x5a; 512], size - 512).unwrap();
    model[size as usize - 512..].fill(0x5a);
    q.write_zeroes(1 << 20, 1 << 20).unwrap();
    model[1 << 20..2 << 20].fill(0);
    q.flush().unwrap();
    assert!(read_all(q) == model, "our reads after our writes");
}

#[test]
fn writes_stay_clean_and_match_qemu() {
    let d = tmp();
    let data = pattern(3 << 20, 11);
    for (k, (name, opts)) in VARIANTS.iter().enumerate() {
        let img = make(d.path(), name, opts, &data);
        let mut model = data.clone();
        {
            let mut q = open(&img, true).unwrap();
            exercise(&mut q, &mut model, k as u64 + 3);
        }
        qemu_check(&img);
        assert!(
            qemu_raw(d.path(), &img) == model,
            "{name}: qemu sees other data"
        );
    }
}

#[test]
fn fresh_image_and_growth() {
    let d = tmp();
    let img = d.path().join("new.qcow2");
    qemu_img(&["create", "-f", "qcow2", s(&img), "64M"]);
    let mut model = vec![0u8; 64 << 20];
    {
        let mut q = open(&img, true).unwrap();
        exercise(&mut q, &mut model, 99);
        // Far apart, so that new L2 tables are needed.
        for k in 0..8u64 {
            let off = k * (8 << 20) + 4096;
            q.write_at(&[k as u8 + 1; 8192], off).unwrap();
            model[off as usize..off as usize + 8192].fill(k as u8 + 1);
        }
        q.flush().unwrap();
    }
    qemu_check(&img);
    assert!(qemu_raw(d.path(), &img) == model);
    // Reopened by us, the same.
    let mut q = open(&img, false).unwrap();
    assert!(read_all(&mut q) == model);
}

fn sha(p: &Path) -> String {
    run("sha256sum", &[s(p)])
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn backing_chain_raw_and_qcow2() {
    let d = tmp();
    let base_data = pattern(3 << 20, 5);
    let base_raw = d.path().join("base.raw");
    std::fs::write(&base_raw, &base_data).unwrap();
    let base_q = make(d.path(), "base.qcow2", &["-c"], &base_data);
    // mid over the qcow2 base, with some data of its own; top over mid. Relative names.
    let mid = d.path().join("mid.qcow2");
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        s(&mid),
    ]);
    run(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -P 0x33 65536 100000", s(&mid)],
    );
    let top = d.path().join("top.qcow2");
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        "mid.qcow2",
        "-F",
        "qcow2",
        "-o",
        "compat=0.10",
        s(&top),
    ]);
    run(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -P 0x44 1000448 9000", s(&top)],
    );
    // And one straight over the raw base, larger than the base.
    let over_raw = d.path().join("over-raw.qcow2");
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        "base.raw",
        "-F",
        "raw",
        s(&over_raw),
        "4M",
    ]);
    for img in [&top, &over_raw] {
        let before = [sha(&base_raw), sha(&base_q), sha(&mid)];
        let mut q = open(img, false).unwrap();
        let want = qemu_raw(d.path(), img);
        assert!(read_all(&mut q) == want, "{}: read", img.display());
        let mut model = want;
        {
            let mut q = open(img, true).unwrap();
            exercise(&mut q, &mut model, 17);
        }
        qemu_check(img);
        assert!(
            qemu_raw(d.path(), img) == model,
            "{}: written",
            img.display()
        );
        assert_eq!(
            before,
            [sha(&base_raw), sha(&base_q), sha(&mid)],
            "a base changed"
        );
    }
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

/// A small valid v3 image made by qemu-img, with data, as bytes.
fn sample(d: &Path) -> Vec<u8> {
    let img = make(
        d,
        "sample.qcow2",
        &["-o", "cluster_size=4096"],
        &pattern(256 << 10, 3),
    );
    std::fs::read(img).unwrap()
}

fn try_bytes(d: &Path, name: &str, b: &[u8], writable: bool) -> Result<Vec<u8>, Error> {
    let p = d.join(name);
    std::fs::write(&p, b).unwrap();
    let mut q = open(&p, writable)?;
    let mut v = vec![0u8; q.size().min(1 << 20) as usize];
    q.read_at(&mut v, 0)?;
    if writable {
        q.write_at(&[1u8; 8192], 4096)?;
        q.flush()?;
    }
    Ok(v)
}

#[test]
fn hostile_headers_are_errors() {
    let d = tmp();
    let good = sample(d.path());
    assert!(try_bytes(d.path(), "good", &good, true).is_ok());
    let l1_off = u64::from_be_bytes(good[40..48].try_into().unwrap()) as usize;
    type Edit = fn(&mut Vec<u8>, usize);
    let cases: &[(&str, Edit)] = &[
        ("version 4", |b, _| put32(b, 4, 4)),
        ("cluster bits 30", |b, _| put32(b, 20, 30)),
        ("cluster bits 8", |b, _| put32(b, 20, 8)),
        ("encrypted", |b, _| put32(b, 32, 1)),
        ("huge L1", |b, _| put32(b, 36, u32::MAX)),
        ("L1 too small", |b, _| {
            put32(b, 36, 0);
        }),
        ("L1 misaligned", |b, _| put64(b, 40, 0x1008)),
        ("L1 past the end", |b, _| put64(b, 40, 1 << 40)),
        ("refcount table past the end", |b, _| put64(b, 48, 1 << 40)),
        ("huge refcount table", |b, _| put32(b, 56, u32::MAX)),
        ("unknown incompatible bit", |b, _| put64(b, 72, 1 << 40)),
        ("external data file", |b, _| put64(b, 72, 1 << 2)),
        ("extended L2", |b, _| put64(b, 72, 1 << 4)),
        ("zstd", |b, _| {
            put64(b, 72, 1 << 3);
            b[104] = 1;
        }),
        ("refcount order 7", |b, _| put32(b, 96, 7)),
        ("header length past the cluster", |b, _| {
            put32(b, 100, 1 << 20)
        }),
        ("huge size", |b, _| put64(b, 24, u64::MAX)),
        ("backing name too long", |b, _| {
            put64(b, 8, 512);
            put32(b, 16, 5000);
        }),
        ("backing name past the cluster", |b, _| {
            put64(b, 8, 4090);
            put32(b, 16, 100);
        }),
        ("backing missing", |b, _| {
            b[512..520].copy_from_slice(b"nothere!");
            put64(b, 8, 512);
            put32(b, 16, 8);
        }),
        ("L1 entry past the end", |b, l1| {
            put64(b, l1, (1 << 40) | (1 << 63))
        }),
        ("L1 entry misaligned", |b, l1| {
            let e = u64::from_be_bytes(b[l1..l1 + 8].try_into().unwrap());
            put64(b, l1, e + 512)
        }),
    ];
    for (what, edit) in cases {
        let mut b = good.clone();
        edit(&mut b, l1_off);
        let r = try_bytes(d.path(), what, &b, true);
        assert!(r.is_err(), "{what}: accepted");
    }
    // Dirty or corrupt: readable, not writable.
    for bit in [1u64, 2] {
        let mut b = good.clone();
        put64(&mut b, 72, bit);
        assert!(try_bytes(d.path(), "flag", &b, true).is_err());
        assert!(try_bytes(d.path(), "flag", &b, false).is_ok());
    }
}

#[test]
fn hostile_tables_are_errors() {
    let d = tmp();
    let good = sample(d.path());
    let cs = 4096usize;
    let l1_off = u64::from_be_bytes(good[40..48].try_into().unwrap()) as usize;
    let l2 = (u64::from_be_bytes(good[l1_off..l1_off + 8].try_into().unwrap())
        & 0x00ff_ffff_ffff_fe00) as usize;
    assert!(l2 != 0 && l2 % cs == 0);
    let rt = u64::from_be_bytes(good[48..56].try_into().unwrap()) as usize;
    let entries: &[(usize, u64, &str)] = &[
        (l2, (1 << 50) | (1 << 63), "data past the end"),
        (l2, 0x1200 | (1 << 63), "data misaligned"),
        (l2, (1 << 62) | 0x3fff_ffff_ffff, "compressed past the end"),
        (l2, (1 << 62) | 0x200, "compressed garbage"),
        (l2, 0x1000 | 0x2 | (1 << 63), "reserved bits"),
        (rt, 1 << 45, "refcount block past the end"),
        (rt, 0x1100, "refcount block misaligned"),
    ];
    for &(at, e, what) in entries {
        let mut b = good.clone();
        put64(&mut b, at, e);
        let p = d.path().join("t.qcow2");
        std::fs::write(&p, &b).unwrap();
        let r = open(&p, true).and_then(|mut q| {
            let mut v = vec![0u8; 8192];
            q.read_at(&mut v, 0)?;
            q.write_at(&[7u8; 512], 70 << 10)?; // unallocated: needs refcounts
            q.write_at(&[7u8; 512], 0)?;
            q.flush()
        });
        assert!(r.is_err(), "{what}: accepted");
        // The file never grew by more than what one allocation round needs.
        assert!(std::fs::metadata(&p).unwrap().len() <= b.len() as u64 + 8 * cs as u64);
    }
    // A refcount at its maximum: a hostile block claims every cluster past the end.
    let mut b = good.clone();
    let rb = u64::from_be_bytes(good[rt..rt + 8].try_into().unwrap()) as usize;
    b[rb + 2 * (good.len() / cs)..rb + cs].fill(0xff);
    let p = d.path().join("full.qcow2");
    std::fs::write(&p, &b).unwrap();
    let mut q = open(&p, true).unwrap();
    // Allocating there is an error (not a skip that grows the file as far as the claim goes).
    let r = q.write_at(&[1u8; 512], 70 << 10).and_then(|_| q.flush());
    assert!(matches!(r, Err(Error::Corrupt(_))), "{r:?}");
    drop(q);
    assert_eq!(std::fs::metadata(&p).unwrap().len(), b.len() as u64);
}

#[test]
fn backing_loops_and_depth() {
    let d = tmp();
    // a -> b -> a
    let a = d.path().join("a.qcow2");
    let b = d.path().join("b.qcow2");
    qemu_img(&["create", "-f", "qcow2", s(&a), "1M"]);
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        "a.qcow2",
        "-F",
        "qcow2",
        s(&b),
    ]);
    qemu_img(&[
        "rebase",
        "-u",
        "-f",
        "qcow2",
        "-b",
        "b.qcow2",
        "-F",
        "qcow2",
        s(&a),
    ]);
    let e = open(&b, false).err().expect("a loop");
    assert!(e.to_string().contains("loop"), "{e}");
    // Itself.
    qemu_img(&[
        "rebase",
        "-u",
        "-f",
        "qcow2",
        "-b",
        "a.qcow2",
        "-F",
        "qcow2",
        s(&a),
    ]);
    assert!(open(&a, false).is_err());
    // 20 deep.
    let mut prev = d.path().join("l0.qcow2");
    qemu_img(&["create", "-f", "qcow2", s(&prev), "1M"]);
    for k in 1..20 {
        let p = d.path().join(format!("l{k}.qcow2"));
        let bname = format!("l{}.qcow2", k - 1);
        qemu_img(&["create", "-f", "qcow2", "-b", &bname, "-F", "qcow2", s(&p)]);
        prev = p;
    }
    let e = open(&prev, false).err().expect("too deep");
    assert!(e.to_string().contains("longer"), "{e}");
    assert!(open(&d.path().join("l10.qcow2"), false).is_ok());
}

#[test]
fn read_only_refuses_writes() {
    let d = tmp();
    let img = make(d.path(), "ro.qcow2", &[], &pattern(1 << 20, 1));
    let before = sha(&img);
    let mut q = open(&img, false).unwrap();
    assert!(matches!(q.write_at(&[1; 512], 0), Err(Error::ReadOnly)));
    assert!(matches!(q.write_zeroes(0, 512), Err(Error::ReadOnly)));
    q.flush().unwrap();
    drop(q);
    assert_eq!(before, sha(&img));
    // FileExt is used for the sample's reads.
    let f = File::open(&img).unwrap();
    let mut m = [0u8; 4];
    f.read_exact_at(&mut m, 0).unwrap();
    assert_eq!(&m, b"QFI\xfb");
}

/// Zero clusters that keep their preallocated storage (`qemu-io write -z`) and ones that do
/// not (`-u`): written over, neither leaks a cluster nor loses one.
#[test]
fn preallocated_zero_clusters() {
    let d = tmp();
    let data = pattern(1 << 20, 21);
    let img = make(d.path(), "z.qcow2", &["-o", "compat=1.1"], &data);
    run(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -z 0 131072", s(&img)],
    );
    run(
        "qemu-io",
        &["-f", "qcow2", "-c", "write -z -u 196608 65536", s(&img)],
    );
    let mut model = data.clone();
    model[..131072].fill(0);
    model[196608..262144].fill(0);
    {
        let mut q = open(&img, false).unwrap();
        assert!(read_all(&mut q) == model);
        let mut q = open(&img, true).unwrap();
        q.write_at(&[9; 4096], 4096).unwrap();
        q.write_at(&[8; 512], 200_000).unwrap();
        q.flush().unwrap();
    }
    model[4096..8192].fill(9);
    model[200_000..200_512].fill(8);
    qemu_check(&img);
    assert!(qemu_raw(d.path(), &img) == model);
}
