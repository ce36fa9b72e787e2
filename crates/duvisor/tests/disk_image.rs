//! The Debian disk image of `duvisor fetch-guest --disk`: built once per cache (keyed by the
//! builder's inputs, so every test and every run shares it), then booted through U-Boot's
//! extlinux under QEMU, the reference: systemd reaches its targets, DHCP configures eth0, and
//! root logs in over ssh with the test's key.
//!
//! Long (a first build takes minutes, mostly the riscv64 second stage under emulation) and it
//! needs root: ignored unless asked for.
//! `cargo test -p duvisor --test disk_image -- --ignored --nocapture`

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use guest_fetch::disk::{self, DiskOptions, UBOOT};

/// The test's ssh key pair, made once in the cache (the image's cache key includes it).
fn test_key(cache: &Path) -> PathBuf {
    let dir = cache.join("disk-images");
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("test_ed25519");
    if !key.with_extension("pub").is_file() {
        let _ = std::fs::remove_file(&key);
        let st = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "duvisor-test", "-f"])
            .arg(&key)
            .status()
            .expect("ssh-keygen");
        assert!(st.success());
    }
    key
}

/// The shared image and the private key that logs in to it.
fn image() -> (PathBuf, PathBuf) {
    let cache = guest_fetch::default_cache_dir();
    let key = test_key(&cache);
    let opts = DiskOptions {
        ssh_key: Some(disk::read_ssh_key(&key.with_extension("pub")).unwrap()),
        ..DiskOptions::default()
    };
    let start = Instant::now();
    let img = disk::cached_image(&cache, &opts, true).expect("building the disk image");
    eprintln!(
        "disk image {} ready after {:.0}s",
        img.display(),
        start.elapsed().as_secs_f64()
    );
    (img, key)
}

/// A QEMU `virt` machine with its console on pipes, read by a thread.
struct Console {
    child: Child,
    stdin: ChildStdin,
    rx: mpsc::Receiver<Vec<u8>>,
    text: String,
    start: Instant,
}

impl Console {
    fn new(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("qemu-system-riscv64");
        let mut out = child.stdout.take().unwrap();
        let stdin = child.stdin.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut b = [0u8; 4096];
            while let Ok(n) = out.read(&mut b) {
                if n == 0 || tx.send(b[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            stdin,
            rx,
            text: String::new(),
            start: Instant::now(),
        }
    }

    /// Waits until the output after `from` holds `what`; returns where it ends.
    fn expect(&mut self, what: &str, from: usize, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.text.get(from..).and_then(|t| t.find(what)) {
                return from + i + what.len();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "no {what:?} within {timeout:?}\n--- console ---\n{}",
                    self.text
                );
            }
            if let Ok(b) = self.rx.recv_timeout(Duration::from_millis(50)) {
                self.text.push_str(&String::from_utf8_lossy(&b));
            }
        }
    }

    fn send(&mut self, line: &str) {
        self.stdin.write_all(line.as_bytes()).unwrap();
        self.stdin.write_all(b"\r").unwrap();
        self.stdin.flush().unwrap();
    }

    /// The value of the first `TAG=value` line from `from` on. Not anchored at a line start:
    /// bash's bracketed-paste escape (`ESC[?2004l`) comes before the output's first line.
    /// The typed commands split their tags (`"ST""ATE="`), so their echo never matches.
    fn value(&mut self, tag: &str, from: usize, timeout: Duration) -> String {
        let at = self.expect(&format!("{tag}="), from, timeout);
        let end = self.expect("\n", at, timeout);
        self.text[at..end].trim().to_string()
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
#[ignore = "builds a Debian image (minutes, root, network); run with --ignored"]
fn debian_disk_boots_under_qemu() {
    let (img, key) = image();
    let dir = tempfile::tempdir().unwrap();
    // Boot a copy-on-write overlay: the shared image stays as built.
    let overlay = dir.path().join("overlay.qcow2");
    let st = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(&img)
        .arg(&overlay)
        .status()
        .expect("qemu-img");
    assert!(st.success());
    let port = free_port();
    let mut cmd = Command::new("qemu-system-riscv64");
    cmd.args([
        "-M",
        "virt",
        "-m",
        "1G",
        "-smp",
        "2",
        "-nographic",
        "-no-reboot",
    ])
    .args(["-kernel", UBOOT])
    .arg("-drive")
    .arg(format!("file={},format=qcow2,if=virtio", overlay.display()))
    .args([
        "-netdev",
        &format!("user,id=n0,hostfwd=tcp:127.0.0.1:{port}-:22"),
    ])
    .args(["-device", "virtio-net-device,netdev=n0"]);
    let mut c = Console::new(cmd);
    let boot = Duration::from_secs(900);
    let at = c.expect(
        "Retrieving file: /boot/vmlinux",
        0,
        Duration::from_secs(120),
    );
    let at = c.expect(" login:", at, boot);
    let login_at = c.start.elapsed();
    eprintln!("login prompt after {:.1}s", login_at.as_secs_f64());
    c.send("root");
    let at = c.expect("root@duvisor:~# ", at, Duration::from_secs(120));
    c.send("systemctl is-system-running --wait >/dev/null; echo \"ST\"\"ATE=$(systemctl is-system-running)\"");
    let state = c.value("STATE", at, Duration::from_secs(300));
    c.send("echo \"AD\"\"DR=$(ip -4 -o addr show dev eth0 | grep -c dynamic)\"");
    let addr = c.value("ADDR", at, Duration::from_secs(60));
    if state != "running" {
        c.send("systemctl --failed --no-pager");
    }

    let ssh = Command::new("ssh")
        .args(["-i"])
        .arg(&key)
        .args([
            "-p",
            &port.to_string(),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=60",
            "root@127.0.0.1",
            "echo SSH=$(hostname)-$(findmnt -no FSTYPE /)",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("ssh");
    let ssh_out = String::from_utf8_lossy(&ssh.stdout).into_owned();

    c.send("poweroff");
    let deadline = Instant::now() + Duration::from_secs(180);
    while c.child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = c.child.kill();
            break;
        }
        if let Ok(b) = c.rx.recv_timeout(Duration::from_millis(100)) {
            c.text.push_str(&String::from_utf8_lossy(&b));
        }
    }
    let _ = c.child.wait();
    let console = &c.text;
    assert_eq!(state, "running", "system state\n--- console ---\n{console}");
    assert_eq!(
        addr, "1",
        "no DHCP address on eth0\n--- console ---\n{console}"
    );
    assert!(
        ssh_out.contains("SSH=duvisor-ext4"),
        "ssh: {ssh_out:?} {}",
        String::from_utf8_lossy(&ssh.stderr)
    );
}
