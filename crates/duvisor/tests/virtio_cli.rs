//! Bad `--disk`/`--net` options fail with a one-line error before any guest runs.

#[allow(unused_imports)] // common re-exports more than this test uses
mod common;

use std::process::Command;

use common::{duvisor_bin, guest, TempPath};

fn assert_one_line_error(extra: &[&str], needle: &str) {
    let g = guest();
    let o = Command::new(duvisor_bin())
        .arg("run")
        .arg("--kernel")
        .arg(&g.kernel)
        .arg("--initrd")
        .arg(&g.initrd)
        .args(extra)
        .output()
        .expect("run duvisor");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{extra:?} should fail: {err}");
    assert!(
        o.stdout.is_empty(),
        "the guest must not start for {extra:?}"
    );
    let lines: Vec<_> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one-line error for {extra:?}, got:\n{err}");
    assert!(
        lines[0].contains(needle),
        "error for {extra:?} should mention {needle:?}: {err}"
    );
}

#[test]
fn missing_disk_image() {
    assert_one_line_error(&["--disk", "path=/nonexistent/d.img"], "/nonexistent/d.img");
}

#[test]
fn disk_is_a_directory() {
    assert_one_line_error(&["--disk", "path=/tmp"], "is a directory");
}

#[test]
fn disk_size_not_whole_sectors() {
    let p = TempPath::with("odd.img", &[0; 1000]);
    let arg = format!("path={}", p.display());
    assert_one_line_error(&["--disk", &arg], "not a multiple of 512");
}

#[test]
fn bad_disk_option() {
    // A syntax error is clap's usage error (status 2), naming the bad option.
    let o = Command::new(duvisor_bin())
        .args([
            "run",
            "--kernel",
            "/nonexistent",
            "--disk",
            "path=/x.img,cache=none",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown disk option \"cache=none\""));
}

#[test]
fn bad_mac_address() {
    // Refused while the command line is parsed, like a bad --disk option: clap's usage error
    // (status 2) whose first line names the address and what is wrong with it; no back end
    // is opened and no guest runs (with the address accepted, the missing kernel would fail
    // instead, with status 1).
    for (mac, why) in [
        ("zz:00:00:00:00:00", "bad MAC address \"zz:00:00:00:00:00\""),
        (
            "03:00:00:00:00:01",
            "MAC address \"03:00:00:00:00:01\" is a multicast address",
        ),
        (
            "00:00:00:00:00:00",
            "MAC address \"00:00:00:00:00:00\" is all zeros",
        ),
    ] {
        let net = format!("passt,mac={mac}");
        let o = Command::new(duvisor_bin())
            .args(["run", "--kernel", "/nonexistent", "--net", &net])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{net}: {err}");
        assert!(o.stdout.is_empty(), "{net}: output on stdout");
        let first = err.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("error: ") && first.contains("--net") && first.contains(why),
            "{net}: the first line should say {why:?}: {err}"
        );
    }
}

#[test]
fn too_many_devices() {
    let p = TempPath::with("many.img", &[0; 4096]);
    let arg = format!("path={},readonly", p.display());
    let mut args = Vec::new();
    for _ in 0..9 {
        args.push("--disk");
        args.push(&arg);
    }
    assert_one_line_error(&args, "virtio-mmio slots");
}
