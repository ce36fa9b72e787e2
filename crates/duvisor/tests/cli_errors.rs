//! Bad command lines and bad files give a one-line error and a non-zero status, before any
//! guest runs.

mod common;

use std::process::Command;

use common::{duvisor_bin, TempPath};

fn run(args: &[&str]) -> (Option<i32>, String) {
    let o = Command::new(duvisor_bin())
        .args(args)
        .output()
        .expect("run duvisor");
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn assert_one_line_error(args: &[&str], needle: &str) {
    let (code, err) = run(args);
    assert_ne!(code, Some(0), "{args:?} should fail");
    let lines: Vec<_> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "expected a one-line error for {args:?}, got:\n{err}"
    );
    assert!(
        lines[0].contains(needle),
        "error for {args:?} should mention {needle:?}: {err}"
    );
}

#[test]
fn missing_kernel_file() {
    assert_one_line_error(
        &["run", "--kernel", "/nonexistent/Image"],
        "/nonexistent/Image",
    );
}

#[test]
fn kernel_is_a_directory() {
    assert_one_line_error(&["run", "--kernel", "/tmp"], "directory");
}

#[test]
fn malformed_kernel() {
    let k = TempPath::with("garbage", &[0x5a; 4096]);
    assert_one_line_error(
        &["run", "--kernel", k.to_str().unwrap()],
        "not a RISC-V Linux Image",
    );
    let short = TempPath::with("short", b"MZ");
    assert_one_line_error(
        &["run", "--kernel", short.to_str().unwrap()],
        "not a RISC-V Linux Image",
    );
}

#[test]
fn bad_vcpu_counts() {
    assert_one_line_error(&["run", "--kernel", "/x", "--cpus", "0"], "--cpus");
    assert_one_line_error(&["run", "--kernel", "/x", "--cpus", "65"], "--cpus");
}

#[test]
fn bad_memory_sizes() {
    assert_one_line_error(&["run", "--kernel", "/x", "--memory", "1M"], "too small");
    assert_one_line_error(&["run", "--kernel", "/x", "--memory", "100T"], "too large");
    assert_one_line_error(&["run", "--kernel", "/x", "--memory", "3M"], "too small");
    assert_one_line_error(
        &["run", "--kernel", "/x", "--memory", "33M"],
        "multiple of 2 MiB",
    );
}

fn assert_bounded_one_line_error(args: &[&str], needle: &str) {
    let mut cmd = Command::new(duvisor_bin());
    cmd.args(args);
    common::assert_bounded_one_line_error(cmd, needle);
}

/// A FIFO named `name` in a temporary directory (no writer ever opens it).
fn fifo(name: &str) -> TempPath {
    let p = TempPath::new(name);
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    p
}

#[test]
fn kernel_and_initrd_must_be_regular_files() {
    // /dev/zero was read until the OOM killer came; a FIFO hung in open or read.
    assert_bounded_one_line_error(
        &["run", "--kernel", "/dev/zero", "--memory", "64M"],
        "/dev/zero is a character device, not a regular file",
    );
    let k = fifo("kernel-fifo");
    assert_bounded_one_line_error(
        &["run", "--kernel", k.to_str().unwrap()],
        "is a FIFO, not a regular file",
    );
    let good = TempPath::with("kernel", &[0x5a; 4096]);
    let i = fifo("initrd-fifo");
    assert_bounded_one_line_error(
        &[
            "run",
            "--kernel",
            good.to_str().unwrap(),
            "--initrd",
            i.to_str().unwrap(),
        ],
        "initrd",
    );
}

#[test]
fn initrd_larger_than_ram_is_refused_before_reading() {
    let k = TempPath::with("kernel", &[0x5a; 4096]);
    let big = TempPath::with("initrd", b"");
    // 16 GiB, sparse: reading it took minutes.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&*big)
        .unwrap()
        .set_len(16 << 30)
        .unwrap();
    let started = std::time::Instant::now();
    assert_bounded_one_line_error(
        &[
            "run",
            "--kernel",
            k.to_str().unwrap(),
            "--initrd",
            big.to_str().unwrap(),
            "--memory",
            "64M",
        ],
        "is 17179869184 bytes, more than the guest's 64 MiB of RAM",
    );
    assert!(started.elapsed().as_secs() < 10, "{:?}", started.elapsed());
}
