//! How a VM ends when its guest fails, and that a VM's failure stays its own:
//! * a locked-up guest (interrupts off, timer pending) is ended by `--watchdog` with status 6,
//!   while a busy guest taking its timer interrupts runs on under the same watchdog, also when
//!   its vCPU shares a host CPU with other busy processes;
//! * a Debian guest kernel panic ends the VM with status 5 and the panic message, both when the
//!   kernel reboots after panicking (the default `panic=-1`) and when it stays down (`panic=0`);
//! * two VMs run as separate processes: SIGKILL on one leaves the other running to a clean
//!   power-off, with its disk intact.

#[allow(unused_imports)]
mod common;

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::bare::asm;
use common::*;

const LOAD_ADDR: u64 = 0x8020_0000;

/// A bare-metal guest packaged as a RISC-V Linux Image (text_offset 2 MiB); `body` runs with
/// `timer` as its trap vector.
fn image(body: &str) -> std::path::PathBuf {
    let src = format!(
        r#"
    .option norvc
_start:
    j real_start
    .word 0
    .dword 0x200000
    .dword 0x100000
    .dword 0
    .word 0x2
    .word 0
    .dword 0
    .ascii "RISCV\0\0\0"
    .ascii "RSC\x05"
    .word 0
real_start:
    la t0, timer
    csrw stvec, t0
{body}
"#
    );
    let bytes = asm::assemble_at(&src, LOAD_ADDR);
    let p = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "faults-{}-{}.img",
        std::process::id(),
        body.len()
    ));
    std::fs::write(&p, bytes).unwrap();
    p
}

struct Ended {
    code: Option<i32>,
    signal: Option<i32>,
    stderr: String,
    took: Duration,
}

/// Wait for `child` (killing it after `timeout`), collecting stderr.
fn wait(mut child: Child, timeout: Duration) -> Ended {
    let start = Instant::now();
    let mut se = child.stderr.take().unwrap();
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ended {
        code: status.code(),
        signal: status.signal(),
        stderr: err.join().unwrap(),
        took: start.elapsed(),
    }
}

fn run_image(body: &str, extra: &[&str], timeout: Duration) -> Ended {
    run_image_with(Command::new(duvisor_bin()), body, extra, timeout)
}

/// As [`run_image`], with duvisor started by `cmd` (a wrapper such as `taskset`, or duvisor).
fn run_image_with(mut cmd: Command, body: &str, extra: &[&str], timeout: Duration) -> Ended {
    let img = image(body);
    let child = cmd
        .args(["run", "--memory", "64M", "--kernel"])
        .arg(&img)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let e = wait(child, timeout);
    let _ = std::fs::remove_file(img);
    e
}

/// Timer enabled in sie and due at once, interrupts globally off, spinning: a lock-up.
const LOCKED_UP: &str = r#"
    li t0, 1 << 5
    csrs sie, t0
    csrr t1, time
    csrw stimecmp, t1
    csrci sstatus, 2
1:  j 1b
timer:
    j timer
"#;

/// Busy for 3 s of guest time, taking a timer interrupt every 10 ms (counted in s1), with
/// short interrupts-off windows like a kernel's; then SBI system shutdown.
const BUSY_BUT_ALIVE: &str = r#"
    li s1, 0
    li t0, 1 << 5
    csrs sie, t0
    csrr t1, time
    li t2, 100000
    add t1, t1, t2
    csrw stimecmp, t1
    csrsi sstatus, 2
1:  csrci sstatus, 2
    li t3, 200
2:  addi t3, t3, -1
    bnez t3, 2b
    csrsi sstatus, 2
    li t3, 300
    blt s1, t3, 1b
    li a7, 0x53525354
    li a6, 0
    li a0, 0
    li a1, 0
    ecall
3:  j 3b
    .balign 4
timer:
    addi s1, s1, 1
    csrr t4, time
    li t5, 100000
    add t4, t4, t5
    csrw stimecmp, t4
    sret
"#;

#[test]
fn watchdog_ends_a_locked_up_guest() {
    let e = run_image(LOCKED_UP, &["--watchdog", "2"], Duration::from_secs(60));
    assert_eq!(e.code, Some(6), "exit status; stderr:\n{}", e.stderr);
    assert!(
        e.stderr
            .contains("watchdog: vCPU 0 ran with interrupts disabled"),
        "{}",
        e.stderr
    );
    assert!(!e.stderr.contains("panicked"), "{}", e.stderr);
    // Detected after the limit, within a few probe periods of it.
    assert!(
        e.took >= Duration::from_secs(2) && e.took < Duration::from_secs(20),
        "took {:?}",
        e.took
    );
}

#[test]
fn watchdog_leaves_a_busy_guest_alone() {
    let e = run_image(
        BUSY_BUT_ALIVE,
        &["--watchdog", "1"],
        Duration::from_secs(60),
    );
    assert_eq!(e.code, Some(0), "exit status; stderr:\n{}", e.stderr);
    assert!(e.took >= Duration::from_secs(3), "took {:?}", e.took);
}

/// Processes spinning on one host CPU, killed when dropped.
struct Spinners(Vec<Child>);

impl Spinners {
    fn on_cpu0(n: usize) -> Spinners {
        Spinners(
            (0..n)
                .map(|_| {
                    Command::new("taskset")
                        .args(["-c", "0", "sh", "-c", "while :; do :; done"])
                        .spawn()
                        .expect("taskset (util-linux)")
                })
                .collect(),
        )
    }
}

impl Drop for Spinners {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The same busy guest with its vCPU sharing one host CPU with three spinning processes: the
/// vCPU thread is preempted all the time, often while masked with its timer due, and the
/// watchdog must still see that it keeps taking interrupts.
#[test]
fn watchdog_leaves_a_busy_guest_alone_on_a_loaded_host() {
    let _load = Spinners::on_cpu0(3);
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "0"]).arg(duvisor_bin());
    let e = run_image_with(
        cmd,
        BUSY_BUT_ALIVE,
        &["--watchdog", "1"],
        Duration::from_secs(120),
    );
    assert_eq!(e.code, Some(0), "exit status; stderr:\n{}", e.stderr);
}

#[test]
fn without_watchdog_a_locked_up_guest_is_left_running() {
    let e = run_image(LOCKED_UP, &[], Duration::from_secs(5));
    assert_eq!(e.signal, Some(libc::SIGKILL), "{:?} {}", e.code, e.stderr);
}

fn panic_test(cmdline: Option<&str>) {
    let g = guest();
    let cmd = match cmdline {
        None => duvisor_cmd(&g, 1, &[]),
        Some(c) => {
            let mut cmd = Command::new(duvisor_bin());
            cmd.arg("run")
                .arg("--kernel")
                .arg(&g.kernel)
                .arg("--initrd")
                .arg(&g.initrd)
                .args(["--cmdline", c, "--memory", "512M"]);
            cmd
        }
    };
    let r = run_console(
        cmd,
        "echo 1 > /proc/sys/kernel/sysrq; echo c > /proc/sysrq-trigger\n",
        Duration::from_secs(300),
    );
    assert!(
        r.output
            .contains("Kernel panic - not syncing: sysrq triggered crash"),
        "the guest did not panic:\n{}",
        r.output
    );
    assert_eq!(r.status, Some(5), "stderr:\n{}", r.stderr);
    assert!(
        r.stderr
            .contains("duvisor: guest kernel panicked: sysrq triggered crash"),
        "{}",
        r.stderr
    );
}

#[test]
fn kernel_panic_with_reboot_ends_the_vm_with_status_5() {
    panic_test(None);
}

#[test]
fn kernel_panic_without_reboot_ends_the_vm_with_status_5() {
    panic_test(Some("console=ttyS0 panic=0"));
}

fn sha256_file_region(p: &std::path::Path, len: usize) -> String {
    let data = std::fs::read(p).unwrap();
    let tmp = p.with_extension("region");
    std::fs::write(&tmp, &data[..len]).unwrap();
    let o = Command::new("sha256sum").arg(&tmp).output().unwrap();
    let _ = std::fs::remove_file(tmp);
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn killing_one_vm_leaves_the_other_running_with_its_disk_intact() {
    let g = guest();
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let disk_a = dir.join(format!("iso-a-{}.img", std::process::id()));
    let disk_b = dir.join(format!("iso-b-{}.img", std::process::id()));
    for d in [&disk_a, &disk_b] {
        std::fs::write(d, vec![0u8; 16 << 20]).unwrap();
    }
    // VM B: boots and writes its disk in a loop until it is killed.
    let mut b = duvisor_cmd(&g, 1, &["--disk", &format!("path={}", disk_b.display())]);
    b.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut b = b.spawn().unwrap();
    let mut b_in = b.stdin.take().unwrap();
    let b_out = b.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut out = b_out;
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&seen).contains("B-WRITING") {
                let _ = tx.send(());
                seen.clear();
            }
        }
    });
    // VM A: does its own disk I/O and powers off cleanly; runs while B is killed.
    let disk_a2 = disk_a.clone();
    let a = std::thread::spawn(move || {
        let cmd = duvisor_cmd(&g, 1, &["--disk", &format!("path={}", disk_a2.display())]);
        run_console(
            cmd,
            "dd if=/dev/urandom of=/tmp/r bs=1M count=4 2>/dev/null\n\
             dd if=/tmp/r of=/dev/vda bs=1M conv=fsync 2>/dev/null; sync\n\
             echo \"AS\"\"UM=$(sha256sum /tmp/r | cut -d' ' -f1)\"\n\
             sleep 5\n\
             echo 3 > /proc/sys/vm/drop_caches\n\
             echo \"ARE\"\"AD=$(head -c 4194304 /dev/vda | sha256sum | cut -d' ' -f1)\"\n\
             poweroff -f\n",
            Duration::from_secs(400),
        )
    });
    // Wait until B's guest is writing, then kill it.
    let started = Instant::now();
    let script = "while true; do echo B-WR\"\"ITING; dd if=/dev/urandom of=/dev/vda bs=64k count=32 conv=fsync 2>/dev/null; done\n";
    let mut typed = false;
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "VM B never started writing"
        );
        if !typed {
            // The console takes input before the shell is up; retype until B confirms.
            let _ = std::io::Write::write_all(&mut b_in, script.as_bytes());
        }
        if rx.recv_timeout(Duration::from_secs(5)).is_ok() {
            typed = true;
            break;
        }
    }
    assert!(typed);
    std::thread::sleep(Duration::from_secs(1));
    // SAFETY: kill(2) on our own child's pid, which has not been reaped.
    assert_eq!(unsafe { libc::kill(b.id() as i32, libc::SIGKILL) }, 0);
    let st = b.wait().unwrap();
    assert_eq!(st.signal(), Some(libc::SIGKILL));

    let r = a.join().unwrap();
    assert_eq!(
        r.status,
        Some(0),
        "VM A did not power off cleanly:\n{}",
        r.stderr
    );
    let sum = r.expect_value("ASUM");
    assert_eq!(r.expect_value("AREAD"), sum, "VM A read back other data");
    assert_eq!(
        sha256_file_region(&disk_a, 4 << 20),
        sum,
        "VM A's disk image"
    );
    for d in [&disk_a, &disk_b] {
        let _ = std::fs::remove_file(d);
    }
}
