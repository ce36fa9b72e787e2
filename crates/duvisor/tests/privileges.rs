//! Once set up, a running VM keeps no privileges: every thread of the process has no
//! capabilities (effective, permitted, inheritable, ambient or bounding), no_new_privs set and
//! its seccomp filters on; with `--user` it runs as that user. Run as root (as CI does) this
//! shows the capabilities root started with are gone; run unprivileged, that none were gained.

#[allow(unused_imports)] // common re-exports more than this test uses
mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::Command;

use common::bare::{check, guest_image};
use common::{duvisor_bin, spawn_bare_vm, TempPath};

/// Each thread's name and /proc status fields, read while a guest runs under `duvisor run
/// ... extra`.
fn running_threads(extra: &[&str]) -> Vec<(String, BTreeMap<String, String>)> {
    let mut args = vec!["--cpus", "2", "--rng"];
    args.extend(extra);
    let (mut child, _kernel) = spawn_bare_vm(&check("UP", "zero"), &args);
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pid = child.id();
    let mut threads = Vec::new();
    // The vthreads start one after the other, and each names itself just before it enters
    // its class: read until the last one is there and every one has entered.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while line.trim() == "UP=0000000000000000" && std::time::Instant::now() < deadline {
        threads = thread_status(pid);
        let vcpus: Vec<_> = threads
            .iter()
            .filter(|(n, _)| n.starts_with("vcpu"))
            .collect();
        if vcpus.len() == 2 && vcpus.iter().all(|(_, f)| f["Seccomp_filters"] == "5") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    assert!(
        !threads.is_empty(),
        "the guest did not come up: {line:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    threads
}

fn thread_status(pid: u32) -> Vec<(String, BTreeMap<String, String>)> {
    let mut threads = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let Ok(status) = std::fs::read_to_string(t.path().join("status")) else {
            continue; // a thread that ended meanwhile
        };
        let fields: BTreeMap<String, String> = status
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect();
        threads.push((fields["Name"].clone(), fields));
    }
    threads
}

fn is_root() -> bool {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn a_running_vm_has_no_capabilities_and_every_thread_is_filtered() {
    let threads = running_threads(&[]);
    let names: Vec<&str> = threads.iter().map(|(n, _)| n.as_str()).collect();
    for want in ["duvisor", "vcpu0", "vcpu1", "jit", "spawner"] {
        assert!(names.contains(&want), "no {want} thread in {names:?}");
    }
    for (name, f) in &threads {
        for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            assert_eq!(f[cap], "0000000000000000", "{name}: {cap}");
        }
        assert_eq!(f["NoNewPrivs"], "1", "{name}");
        assert_eq!(f["Seccomp"], "2", "{name}: seccomp filter mode");
        // Three refusals and the process-wide list on every thread; one more for a thread
        // that has entered its class: the main thread and the vthreads at once, the compiler
        // thread at its first job (which may not have come yet), the spawner never.
        let filters: u32 = f["Seccomp_filters"].parse().unwrap();
        match name.as_str() {
            "duvisor" | "vcpu0" | "vcpu1" => assert_eq!(filters, 5, "{name}"),
            "spawner" => assert_eq!(filters, 4, "{name}"),
            _ => assert!((4..=5).contains(&filters), "{name}: {filters}"),
        }
    }
}

#[test]
fn user_switches_every_thread_to_that_user() {
    if !is_root() {
        // Without root, switching users is refused with a one-line error.
        let o = Command::new(duvisor_bin())
            .args(["run", "--kernel"])
            .arg(&*TempPath::with("k.img", &guest_image("")))
            .args(["--user", "65534:65534"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(
            err.contains("--user: switching to uid 65534 gid 65534 needs root"),
            "{err}"
        );
        return;
    }
    let threads = running_threads(&["--user", "65534:65533"]);
    for (name, f) in &threads {
        assert_eq!(f["Uid"], "65534\t65534\t65534\t65534", "{name}");
        assert_eq!(f["Gid"], "65533\t65533\t65533\t65533", "{name}");
        assert_eq!(f["Groups"], "65533", "{name}");
        assert_eq!(f["CapEff"], "0000000000000000", "{name}");
    }
}
