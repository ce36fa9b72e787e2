//! A real Debian riscv64 kernel and busybox initramfs boot under duvisor, run programs, and
//! power off; what the guest prints is compared with QEMU's for the same kernel and initramfs.

mod common;

use std::time::Duration;

use common::*;

const TIMEOUT: Duration = Duration::from_secs(300);

/// Boot tests share two cores: running them one at a time keeps their timing meaningful.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn check_against_qemu(cpus: u32) {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let g = guest();
    let ours = run_console(duvisor_cmd(&g, cpus, &["--stats"]), FACTS_SCRIPT, TIMEOUT);
    assert_eq!(
        ours.status,
        Some(0),
        "duvisor did not power off cleanly.\n--- console ---\n{}\n--- stderr ---\n{}",
        ours.output,
        ours.stderr
    );
    let qemu = run_console(qemu_cmd(&g, cpus), FACTS_SCRIPT, TIMEOUT);
    assert!(
        qemu.value("DONE").is_some(),
        "QEMU run did not finish:\n{}",
        qemu.output
    );
    for tag in [
        "KERNEL", "HARTS", "ONLINE", "SHA", "GZIP", "ARITH", "MEMOK", "UCLOCK",
    ] {
        let (a, b) = (ours.value(tag), qemu.value(tag));
        assert!(
            a.is_some(),
            "duvisor guest printed no {tag}:\n{}",
            ours.output
        );
        assert_eq!(a, b, "{tag} differs between duvisor and QEMU");
    }
    assert_eq!(ours.value("HARTS"), Some(cpus.to_string()));
    assert!(
        ours.stderr.contains("0 while the guest ran"),
        "driver calls on the exit path:\n{}",
        ours.stderr
    );
    eprintln!(
        "duvisor {cpus} vCPU: {:.2?}; qemu: {:.2?}",
        ours.elapsed, qemu.elapsed
    );
}

#[test]
fn debian_boots_on_one_vcpu_like_qemu() {
    check_against_qemu(1);
}

#[test]
fn debian_boots_on_four_vcpus_like_qemu() {
    check_against_qemu(4);
}
