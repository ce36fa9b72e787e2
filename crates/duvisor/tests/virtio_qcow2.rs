//! qcow2 in the real Debian guest: a qcow2 overlay over a compressed qcow2 base. The guest
//! reads the base's data through the overlay, writes (whole and partial clusters, past the
//! base's end) and syncs; afterwards the base is bit-identical, `qemu-img check` finds the
//! overlay clean, `qemu-img convert` shows the guest's data, and QEMU booting the same overlay
//! reads the same disk checksum the guest printed under duvisor.

#[allow(unused_imports)] // common re-exports more than this test uses
mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

const TIMEOUT: Duration = Duration::from_secs(200);

fn pattern(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            // Every other 64 KiB is repetitive, so the compressed base has both kinds.
            if (i >> 16) % 2 == 1 {
                (i >> 9) as u8
            } else {
                x as u8
            }
        })
        .collect()
}

fn sha256_file(p: &Path) -> String {
    let o = Command::new("sha256sum").arg(p).output().unwrap();
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn qemu_img(args: &[&str]) -> std::process::Output {
    let o = Command::new("qemu-img").args(args).output().unwrap();
    assert!(
        o.status.success(),
        "qemu-img {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

#[test]
fn guest_uses_qcow2_overlay_and_qemu_agrees() {
    let g = guest();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let base_data = pattern(8 << 20, 9);
    let src = d.join("base.raw");
    std::fs::write(&src, &base_data).unwrap();
    let base = d.join("base.qcow2");
    let overlay = d.join("overlay.qcow2");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    qemu_img(&[
        "convert",
        "-c",
        "-f",
        "raw",
        "-O",
        "qcow2",
        &s(&src),
        &s(&base),
    ]);
    // A relative backing name: resolved against the overlay's directory.
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        "base.qcow2",
        "-F",
        "qcow2",
        &s(&overlay),
        "16M",
    ]);
    let base_sum = sha256_file(&base);

    let script = r#"echo "BASE""SUM=$(dd if=/dev/vda bs=1M count=8 2>/dev/null | sha256sum | cut -d' ' -f1)"
echo "SI""ZE=$(cat /sys/block/vda/size)"
dd if=/dev/hwrng of=/tmp/r bs=4096 count=256 2>/dev/null
dd if=/tmp/r of=/dev/vda bs=64k seek=160 conv=fsync 2>/dev/null
dd if=/tmp/r of=/dev/vda bs=512 seek=8193 count=9 conv=notrunc 2>/dev/null
sync
echo 3 > /proc/sys/vm/drop_caches
echo "WRO""TE=$(dd if=/dev/vda bs=64k skip=160 count=16 2>/dev/null | sha256sum | cut -d' ' -f1)"
echo "RAND""SUM=$(sha256sum < /tmp/r | cut -d' ' -f1)"
echo "ALL""SUM=$(dd if=/dev/vda bs=1M 2>/dev/null | sha256sum | cut -d' ' -f1)"
echo "DO""NE=1"
poweroff -f"#;
    let mut cmd = duvisor_cmd(&g, 1, &["--rng"]);
    cmd.args(["--disk", &format!("path={}", overlay.display())]);
    let run = run_console(cmd, script, TIMEOUT);
    let v = |t: &str| run.expect_value(t);
    assert_eq!(v("DONE"), "1", "stderr: {}", run.stderr);
    assert_eq!(run.status, Some(0), "stderr: {}", run.stderr);
    assert_eq!(v("SIZE"), "32768");
    // The guest read the base's data through the overlay.
    let base_sum_raw = sha256_file(&src);
    assert_eq!(v("BASESUM"), base_sum_raw);
    assert_eq!(v("WROTE"), v("RANDSUM"));
    // The base is untouched; the overlay is clean and holds the guest's data.
    assert_eq!(sha256_file(&base), base_sum);
    qemu_img(&["check", &s(&overlay)]);
    let view = d.join("view.raw");
    qemu_img(&["convert", "-O", "raw", &s(&overlay), &s(&view)]);
    let img = std::fs::read(&view).unwrap();
    let rand_sum = {
        let p = d.join("r");
        std::fs::write(&p, &img[10 << 20..11 << 20]).unwrap();
        sha256_file(&p)
    };
    assert_eq!(rand_sum, v("RANDSUM"));
    // The partial write: 9 sectors at sector 8193 (inside the base's first cluster at 4 MiB),
    // the rest of the base as it was.
    let at = 8193 * 512;
    let first_diff = |a: &[u8], b: &[u8]| a.iter().zip(b).position(|(x, y)| x != y);
    assert_eq!(first_diff(&img[..at], &base_data[..at]), None);
    assert_eq!(
        first_diff(&img[at + 9 * 512..8 << 20], &base_data[at + 9 * 512..]),
        None
    );
    assert_eq!(img[8 << 20..10 << 20].iter().position(|&b| b != 0), None);
    assert!(img[11 << 20..].iter().all(|&b| b == 0));
    assert_eq!(sha256_file(&view), v("ALLSUM"));

    // QEMU reads the same disk.
    let qscript = r#"echo "ALL""SUM=$(dd if=/dev/vda bs=1M 2>/dev/null | sha256sum | cut -d' ' -f1)"
echo "DO""NE=1"
poweroff -f"#;
    let drive = format!(
        "file={},format=qcow2,if=none,id=d0,readonly=on",
        overlay.display()
    );
    let mut q = qemu_cmd(&g, 1);
    q.args(["-drive", &drive, "-device", "virtio-blk-device,drive=d0"]);
    let qrun = run_console(q, qscript, TIMEOUT);
    assert_eq!(
        qrun.expect_value("ALLSUM"),
        v("ALLSUM"),
        "QEMU: {}",
        qrun.stderr
    );
    eprintln!(
        "qcow2 boot: duvisor {:.1?}, qemu {:.1?}",
        run.elapsed, qrun.elapsed
    );
}

/// Not a check, a measurement (`cargo test --test virtio_qcow2 -- --ignored --nocapture`):
/// the guest writes 64 MiB (fsync) and reads it back with direct I/O, on a raw image and on a
/// fresh qcow2 image (64 KiB clusters), in one boot; prints the guest's timings.
#[test]
#[ignore]
fn throughput_raw_vs_qcow2() {
    let g = guest();
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("t.raw");
    let q = dir.path().join("t.qcow2");
    qemu_img(&["create", "-f", "raw", raw.to_str().unwrap(), "128M"]);
    qemu_img(&["create", "-f", "qcow2", q.to_str().unwrap(), "128M"]);
    let mut script = String::from(
        "t() { awk '{print int($1*1000)}' /proc/uptime; }\n\
         dd if=/dev/zero bs=1M count=64 2>/dev/null | tr '\\0' 'x' > /tmp/x\n",
    );
    for d in ["vda", "vdb"] {
        script.push_str(&format!(
            "s=$(t); dd if=/tmp/x of=/dev/{d} bs=1M conv=fsync 2>/dev/null; e=$(t); echo \"W\"\"R{d}=$((e - s))\"\n\
             s=$(t); dd if=/dev/{d} of=/dev/null bs=1M count=64 iflag=direct 2>/dev/null; e=$(t); echo \"R\"\"D{d}=$((e - s))\"\n"
        ));
    }
    script.push_str("echo \"DO\"\"NE=1\"\npoweroff -f\n");
    let mut cmd = duvisor_cmd(&g, 1, &[]);
    cmd.args(["--disk", &format!("path={}", raw.display())]);
    cmd.args(["--disk", &format!("path={}", q.display())]);
    let run = run_console(cmd, &script, TIMEOUT);
    assert_eq!(run.expect_value("DONE"), "1", "{}", run.stderr);
    for d in ["vda", "vdb"] {
        eprintln!(
            "{}: write 64 MiB + fsync {} ms, direct read {} ms",
            if d == "vda" { "raw  " } else { "qcow2" },
            run.expect_value(&format!("WR{d}")),
            run.expect_value(&format!("RD{d}"))
        );
    }
    qemu_img(&["check", q.to_str().unwrap()]);
}
