//! virtio-blk and virtio-rng in the real Debian guest: data written by the guest reaches the
//! image file (checked byte for byte on the host), data the host put in the image before boot
//! reads back identically, a read-only disk stays bit-identical, a `sync` in the guest is
//! durable even if duvisor is SIGKILLed right after, and /dev/hwrng is virtio-rng; all that
//! I/O takes no driver call while the guest runs (the I/O threads raise interrupts directly).

#[allow(unused_imports)] // common re-exports more than this test uses
mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

const TIMEOUT: Duration = Duration::from_secs(150);

/// Guest boots share two cores: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Deterministic bytes that differ everywhere (so misplaced sectors are caught).
fn pattern(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn sha256(data: &[u8]) -> String {
    let p = TempPath::with("sha", data);
    let o = Command::new("sha256sum").arg(&*p).output().unwrap();
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn arg(flag: &str, v: &Path, suffix: &str) -> [String; 2] {
    [flag.to_string(), format!("path={}{suffix}", v.display())]
}

#[test]
fn guest_reads_writes_and_readonly_disk_and_rng() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let g = guest();
    // vda: 16 MiB; its second half holds a host pattern before boot.
    let rw = TempPath::new("rw.img");
    let mut img = vec![0u8; 16 << 20];
    let host_half = pattern(8 << 20, 1);
    img[8 << 20..].copy_from_slice(&host_half);
    std::fs::write(&rw, &img).unwrap();
    // vdb: read-only, 1 MiB of pattern.
    let ro = TempPath::new("ro.img");
    let ro_data = pattern(1 << 20, 2);
    std::fs::write(&ro, &ro_data).unwrap();

    let script = r#"echo "SE""RA=$(cat /sys/block/vda/serial) $(cat /sys/block/vda/size) $(cat /sys/block/vda/ro)"
echo "SE""RB=$(cat /sys/block/vdb/serial) $(cat /sys/block/vdb/size) $(cat /sys/block/vdb/ro)"
echo "HOST""HALF=$(dd if=/dev/vda bs=1M skip=8 count=8 2>/dev/null | sha256sum | cut -d' ' -f1)"
echo "SE""GS=$(cat /sys/block/vda/queue/max_segments)"
set -- $(cat /sys/block/vda/stat); r0=$1
echo "DIR""ECT=$(dd if=/dev/vda bs=1M skip=8 count=8 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)"
set -- $(cat /sys/block/vda/stat); echo "DIRECT""REQS=$(($1 - r0))"
dd if=/dev/hwrng of=/tmp/r bs=4096 count=256 2>/dev/null
echo "RAND""LEN=$(wc -c < /tmp/r)"
echo "WRO""TE=$(sha256sum < /tmp/r | cut -d' ' -f1)"
dd if=/tmp/r of=/dev/vda bs=64k seek=16 2>/dev/null; sync
echo 3 > /proc/sys/vm/drop_caches
echo "READ""BACK=$(dd if=/dev/vda bs=64k skip=16 count=16 2>/dev/null | sha256sum | cut -d' ' -f1)"
dd if=/dev/zero of=/dev/vdb bs=512 count=1 conv=fsync 2>/dev/null; echo "RO""WRITE=$?"
echo "RO""SUM=$(dd if=/dev/vdb bs=64k 2>/dev/null | sha256sum | cut -d' ' -f1)"
echo "RNG""CUR=$(cat /sys/class/misc/hw_random/rng_current)"
echo "HW""RNG=$(head -c 64 /dev/hwrng | wc -c)"
echo "DO""NE=1"
poweroff -f"#;
    let mut cmd = duvisor_cmd(&g, 1, &["--rng", "--stats"]);
    cmd.args(arg("--disk", &rw, ""))
        .args(arg("--disk", &ro, ",readonly"));
    let run = run_console(cmd, script, TIMEOUT);
    let v = |t: &str| run.expect_value(t);
    assert_eq!(v("DONE"), "1");
    assert_eq!(run.status, Some(0), "stderr: {}", run.stderr);
    // Slot order is command-line order; the serial is the file name.
    assert_eq!(v("SERA"), "rw.img 32768 0");
    assert_eq!(v("SERB"), "ro.img 2048 1");
    // Host-written data reads back identically in the guest.
    assert_eq!(v("HOSTHALF"), sha256(&host_half));
    // seg_max (ring size less header and status), and 1 MiB direct reads move the same
    // bytes, one request each (256 segments: with QEMU's 254, two).
    assert_eq!(v("SEGS"), "510");
    assert_eq!(v("DIRECT"), sha256(&host_half));
    assert_eq!(v("DIRECTREQS"), "8");
    // Guest-written data: 1 MiB from virtio-rng at 1 MiB, read back after dropping caches,
    // and byte-identical in the image.
    assert_eq!(v("RANDLEN"), "1048576");
    assert_eq!(v("READBACK"), v("WROTE"));
    let after = std::fs::read(&rw).unwrap();
    assert_eq!(sha256(&after[1 << 20..2 << 20]), v("WROTE"));
    assert!(
        after[..1 << 20].iter().all(|&b| b == 0),
        "bytes before the write changed"
    );
    assert!(
        after[2 << 20..8 << 20].iter().all(|&b| b == 0),
        "bytes after the write changed"
    );
    assert_eq!(&after[8 << 20..], &host_half[..]);
    // The read-only disk: the write fails, the image is bit-identical.
    assert_ne!(v("ROWRITE"), "0");
    assert_eq!(v("ROSUM"), sha256(&ro_data));
    assert_eq!(std::fs::read(&ro).unwrap(), ro_data);
    // virtio-rng is the guest's hardware RNG.
    assert_eq!(v("RNGCUR"), "virtio_rng.0");
    assert_eq!(v("HWRNG"), "64");
    // The I/O threads completed all of that, interrupts included, without one driver call.
    let calls = run
        .stderr
        .lines()
        .find(|l| l.trim_start().starts_with("driver calls"))
        .unwrap_or_else(|| panic!("no driver-call count in --stats:\n{}", run.stderr));
    assert!(
        calls.trim_end().ends_with(", 0 while the guest ran"),
        "driver calls while the guest ran: {calls}\n{}",
        run.stderr
    );
    eprintln!("virtio blk+rng boot: {:.1?}", run.elapsed);
}

#[test]
fn sync_survives_sigkill() {
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let g = guest();
    let img = TempPath::new("kill.img");
    std::fs::write(&img, vec![0u8; 8 << 20]).unwrap();
    let mut cmd = duvisor_cmd(&g, 1, &[]);
    cmd.args(arg("--disk", &img, ""));
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut b = [0u8; 4096];
        while let Ok(n) = out.read(&mut b) {
            if n == 0 || tx.send(b[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut stdin = child.stdin.take();
    let script = "dd if=/dev/urandom of=/tmp/d bs=64k count=48 2>/dev/null\n\
                  dd if=/tmp/d of=/dev/vda bs=64k seek=8 2>/dev/null; sync; echo \"SYN\"\"CED=$(sha256sum < /tmp/d | cut -d' ' -f1)\"\n";
    let start = Instant::now();
    let mut text = String::new();
    let mut sent = false;
    let synced = loop {
        if let Ok(b) = rx.recv_timeout(Duration::from_millis(20)) {
            text.push_str(&String::from_utf8_lossy(&b));
        }
        if !sent && text.contains(guest_fetch::READY_MARKER) {
            std::thread::sleep(Duration::from_millis(300));
            use std::io::Write;
            let s = stdin.as_mut().unwrap();
            s.write_all(script.as_bytes()).unwrap();
            s.flush().unwrap();
            sent = true;
        }
        if let Some(i) = text.find("SYNCED=") {
            let rest = &text[i + 7..];
            if let Some(end) = rest.find(['\r', '\n']) {
                let sum = rest[..end].trim().to_string();
                // SIGKILL as soon as the guest's sync has returned.
                child.kill().unwrap();
                break sum;
            }
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            panic!("guest never synced:\n{text}");
        }
    };
    let _ = child.wait();
    drop(stdin);
    let data = std::fs::read(&img).unwrap();
    assert_eq!(data.len(), 8 << 20);
    assert_eq!(synced.len(), 64, "bad checksum line: {synced:?}");
    assert_eq!(sha256(&data[512 << 10..(512 << 10) + 48 * 65536]), synced);
    assert!(data[..512 << 10].iter().all(|&b| b == 0));
}
