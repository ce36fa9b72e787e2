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
fn bad_port_forwards() {
    // Usage errors (status 2) before anything is opened, the reason on the first line, for
    // one --net or across several.
    for (nets, why) in [
        (
            &["passt,hostfwd=icmp:2222:22"][..],
            "unknown protocol \"icmp\" (want tcp or udp)",
        ),
        (
            &["passt,hostfwd=tcp:0:22"],
            "bad host port \"0\" (want 1 to 65535)",
        ),
        (
            &["passt,hostfwd=udp:2222:70000"],
            "bad guest port \"70000\" (want 1 to 65535)",
        ),
        (
            &["passt,hostfwd=tcp:localhost:2222:22"],
            "bad host address \"localhost\"",
        ),
        (
            &["tap=tap0,hostfwd=tcp:2222:22"],
            "port forwarding is not supported for tap= devices, only for passt",
        ),
        (
            &[
                "passt,hostfwd=tcp:2222:22",
                "passt,hostfwd=tcp:127.0.0.1:2222:23",
            ],
            "--net: host port tcp 2222 is forwarded twice (hostfwd=tcp:2222:22 and \
             hostfwd=tcp:127.0.0.1:2222:23)",
        ),
    ] {
        let mut cmd = Command::new(duvisor_bin());
        cmd.args(["run", "--kernel", "/nonexistent"]);
        for n in nets {
            cmd.args(["--net", n]);
        }
        let o = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{nets:?}: {err}");
        let first = err.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("error: ") && first.contains(why),
            "{nets:?}: the first line should say {why:?}: {err}"
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

/// `duvisor run` of the Debian guest with `extra`; it must end within 30 s with one line
/// containing `needle`.
fn assert_bounded_error(extra: &[&str], needle: &str) {
    let g = guest();
    let mut cmd = Command::new(duvisor_bin());
    cmd.arg("run")
        .arg("--kernel")
        .arg(&g.kernel)
        .arg("--initrd")
        .arg(&g.initrd)
        .args(extra);
    common::assert_bounded_one_line_error(cmd, needle);
}

#[test]
fn disk_must_be_a_regular_file_or_block_device() {
    // /dev/zero and /dev/null were accepted as empty disks; a FIFO hung in open.
    for dev in ["/dev/zero", "/dev/null"] {
        for opt in ["", ",readonly"] {
            assert_bounded_error(
                &["--disk", &format!("path={dev}{opt}")],
                "is a character device, not a regular file or block device",
            );
        }
    }
    let fifo = TempPath::new("disk-fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    for opt in ["", ",readonly"] {
        assert_bounded_error(
            &["--disk", &format!("path={}{opt}", fifo.display())],
            "is a FIFO, not a regular file or block device",
        );
    }
}

#[test]
fn one_image_cannot_back_two_disks() {
    let img = TempPath::with("twice.img", &[0; 1 << 20]);
    let a = format!("path={}", img.display());
    for second in [a.clone(), format!("{a},readonly")] {
        assert_bounded_error(&["--disk", &a, "--disk", &second], "is attached twice");
    }
}

/// Take an open-file-description lock on `f` (as another duvisor or QEMU would hold it).
fn hold_lock(f: &std::fs::File, write: bool) {
    use std::os::fd::AsRawFd;
    // SAFETY: a zeroed flock is valid; we set the fields the call reads.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = if write { libc::F_WRLCK } else { libc::F_RDLCK } as i16;
    fl.l_whence = libc::SEEK_SET as i16;
    // SAFETY: F_OFD_SETLK reads the flock we pass.
    assert_eq!(
        unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_SETLK, &fl) },
        0
    );
}

#[test]
fn an_image_another_process_holds_is_refused_with_its_name() {
    let img = TempPath::with("held.img", &[0; 1 << 20]);
    let rw = format!("path={}", img.display());
    let ro = format!("{rw},readonly");
    let me = format!("process {}", std::process::id());
    // Held for writing: neither a writer nor a reader may attach it.
    let holder = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&*img)
        .unwrap();
    hold_lock(&holder, true);
    assert_bounded_error(&["--disk", &rw], &me);
    assert_bounded_error(&["--disk", &ro], "another user writes it");
    drop(holder);
    // Held by a reader: a writer may not attach it.
    let reader = std::fs::File::open(&*img).unwrap();
    hold_lock(&reader, false);
    assert_bounded_error(&["--disk", &rw], "another user has it open");
    assert_bounded_error(&["--disk", &rw], &me);
}

#[test]
fn a_running_vm_keeps_its_disk_from_a_second_vm() {
    use std::io::{BufRead, BufReader};
    let img = TempPath::with("shared.img", &[0; 1 << 20]);
    let disk = format!("path={}", img.display());
    // VM 1: a bare guest that says it is up, then spins with the disk attached.
    let (mut first, _kernel) =
        common::spawn_bare_vm(&common::bare::check("UP", "zero"), &["--disk", &disk]);
    let mut line = String::new();
    BufReader::new(first.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "UP=0000000000000000");
    let result = std::panic::catch_unwind(|| {
        assert_bounded_error(
            &["--disk", &disk],
            &format!("another user has it open (process {}, duvisor)", first.id()),
        );
    });
    let _ = first.kill();
    let _ = first.wait();
    result.unwrap();
    // Once it has ended the image is free again.
    let (code, err) = quick_vm(&disk);
    assert_eq!(code, Some(0), "{err}");
}

/// QEMU on `img` (raw, virtio), once it has opened and locked it: its firmware (OpenSBI) has
/// printed its banner, so machine set-up, where QEMU opens drives and settles its locks, is
/// over. (Its locks can appear in /proc/locks earlier and change while it sets up.)
fn qemu_holding(img: &std::path::Path, readonly: bool) -> std::process::Child {
    use std::io::Read;
    let g = guest();
    let ro = if readonly { ",readonly=on" } else { "" };
    let mut q = Command::new("qemu-system-riscv64")
        .args(["-M", "virt", "-display", "none", "-nographic", "-kernel"])
        .arg(&g.kernel)
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio{ro}", img.display()))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("qemu-system-riscv64 (scripts/install-deps.sh installs it)");
    let mut out = q.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("OpenSBI") {
        let n = out.read(&mut buf).unwrap();
        assert!(n > 0, "QEMU ended before its firmware ran");
        seen.extend_from_slice(&buf[..n]);
    }
    // Keep draining its console so it never blocks on a full pipe.
    std::thread::spawn(move || while matches!(out.read(&mut buf), Ok(n) if n > 0) {});
    q
}

/// duvisor with a bare guest that shuts down at once, `disk` attached: its status and stderr.
fn quick_vm(disk: &str) -> (Option<i32>, String) {
    let k = TempPath::with(
        "quick.img",
        &common::bare::guest_image(common::bare::SHUTDOWN),
    );
    let o = Command::new(duvisor_bin())
        .args(["run", "--memory", "64M", "--kernel"])
        .arg(&*k)
        .args(["--disk", disk])
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn image_locks_agree_with_qemus() {
    let img = TempPath::with("q.img", &[0; 1 << 20]);
    let rw = format!("path={}", img.display());
    let ro = format!("{rw},readonly");
    // QEMU writes: we may neither write nor read it.
    let mut q = qemu_holding(&img, false);
    let writer = quick_vm(&rw);
    let reader = quick_vm(&ro);
    let _ = q.kill();
    let _ = q.wait();
    assert_eq!(writer.0, Some(1), "{}", writer.1);
    assert!(writer.1.contains("qemu-system-ris"), "{}", writer.1);
    assert_eq!(reader.0, Some(1), "{}", reader.1);
    assert!(reader.1.contains("another user writes it"), "{}", reader.1);
    // QEMU reads: we may read it too, not write it.
    let mut q = qemu_holding(&img, true);
    let writer = quick_vm(&rw);
    let reader = quick_vm(&ro);
    let _ = q.kill();
    let _ = q.wait();
    assert_eq!(writer.0, Some(1), "{}", writer.1);
    assert!(
        writer.1.contains("another user has it open"),
        "{}",
        writer.1
    );
    assert_eq!(reader.0, Some(0), "{}", reader.1);
    // We hold it (a read-only user, still running): a QEMU writer refuses to start, a QEMU
    // reader shares it.
    let (mut ours, _kernel) = common::spawn_bare_vm("", &["--disk", &ro]);
    use std::os::unix::fs::MetadataExt;
    let ino = format!(":{} ", std::fs::metadata(&*img).unwrap().ino());
    while !std::fs::read_to_string("/proc/locks")
        .unwrap()
        .contains(&ino)
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let qemu = |ro: &str| {
        Command::new("timeout")
            .args([
                "5",
                "qemu-system-riscv64",
                "-M",
                "virt",
                "-display",
                "none",
                "-nographic",
            ])
            .arg("-kernel")
            .arg(&guest().kernel)
            .arg("-drive")
            .arg(format!("file={},format=raw,if=virtio{ro}", img.display()))
            .output()
            .unwrap()
    };
    let qw = qemu("");
    let qr = qemu(",readonly=on");
    let _ = ours.kill();
    let _ = ours.wait();
    let qw_err = String::from_utf8_lossy(&qw.stderr);
    assert!(
        qw_err.contains("Failed to get"),
        "QEMU wrote our image: {qw_err}"
    );
    // The reader ran until `timeout` ended it (124): it opened the image.
    assert_eq!(
        qr.status.code(),
        Some(124),
        "{}",
        String::from_utf8_lossy(&qr.stderr)
    );
}

/// qcow2 images: a missing backing file, an unsupported feature, a backing file another
/// process writes, and the base of an overlay as a second disk are one-line errors.
#[test]
fn qcow2_problems_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let qemu_img = |args: &[&str]| {
        let o = Command::new("qemu-img").args(args).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let p = |n: &str| d.join(n).to_str().unwrap().to_string();
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-u",
        "-b",
        "gone.qcow2",
        "-F",
        "qcow2",
        &p("orphan.qcow2"),
        "1M",
    ]);
    assert_bounded_error(
        &["--disk", &format!("path={}", p("orphan.qcow2"))],
        "gone.qcow2",
    );
    qemu_img(&["create", "-f", "qcow2", &p("enc.qcow2"), "1M"]);
    let mut b = std::fs::read(p("enc.qcow2")).unwrap();
    b[32..36].copy_from_slice(&1u32.to_be_bytes());
    std::fs::write(p("enc.qcow2"), &b).unwrap();
    assert_bounded_error(
        &["--disk", &format!("path={}", p("enc.qcow2"))],
        "encrypted",
    );
    qemu_img(&["create", "-f", "raw", &p("base.raw"), "1M"]);
    qemu_img(&[
        "create",
        "-f",
        "qcow2",
        "-b",
        "base.raw",
        "-F",
        "raw",
        &p("top.qcow2"),
    ]);
    let top = format!("path={}", p("top.qcow2"));
    // The base may not be attached too: the overlay's chain holds it.
    assert_bounded_error(
        &["--disk", &top, "--disk", &format!("path={}", p("base.raw"))],
        "is attached twice",
    );
    let holder = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(p("base.raw"))
        .unwrap();
    hold_lock(&holder, true);
    assert_bounded_error(&["--disk", &top], "another user writes it");
}
