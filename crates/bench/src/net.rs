//! The network rows' surroundings: a network namespace of the harness's own, where passt finds
//! what it needs (an interface with an address and a default route), and a TCP peer on the
//! namespace's loopback, which passt reaches for connections to the guest's gateway address.
//!
//! Both sides use the same passt binary with the same options, so the comparison is fair:
//! duvisor starts it itself (`--net passt`, passt on a socket pair); for QEMU the harness
//! starts passt on a Unix socket (`passt -s PATH`, which is ready once it returns) and gives
//! QEMU `-netdev stream,addr.type=unix,addr.path=PATH`. Running the VMs under
//! `ip netns exec` needs root; without it the rows are skipped and say so.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::workloads::{NetDir, NET_PORT};

/// What the peer sends first on a guest→host connection. Debian bookworm's passt (snapshot
/// 2023-03-09) counts a connection whose host side never sent data as unacknowledged and
/// resets it after its eighth retransmission timeout, 24 s in (fixed upstream in passt
/// 2023_03_29); one byte from the host, which the guest acknowledges, avoids that for both
/// sides alike.
pub const GREETING: &[u8] = b"\n";

/// Options given to passt on both sides (duvisor adds its `--fd`, the harness `-s`).
pub const PASST_ARGS: &[&str] = &["--quiet", "--mtu", "1500"];

/// Why the network rows cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("n/a (needs root for its network namespace)".into());
    }
    if !on_path("passt") {
        return Some("n/a (passt not installed)".into());
    }
    if !on_path("ip") {
        return Some("n/a (ip from iproute2 not installed)".into());
    }
    None
}

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let o = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ))
    }
}

/// The benchmark's network namespace, deleted on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    /// A namespace with a veth pair: 10.0.2.15/24 and a default route via 10.0.2.2 (what
    /// passt copies for the guest; nothing answers at 10.0.2.2, passt impersonates it).
    pub fn create() -> Result<Netns, String> {
        let name = format!("dvbench-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Netns { name };
        for args in [
            &["link", "set", "lo", "up"][..],
            &[
                "link", "add", "dvb0", "type", "veth", "peer", "name", "dvb1",
            ],
            &["addr", "add", "10.0.2.15/24", "dev", "dvb0"],
            &["link", "set", "dvb0", "up"],
            &["link", "set", "dvb1", "up"],
            &["route", "add", "default", "via", "10.0.2.2"],
        ] {
            run(Command::new("ip").args(["-n", &ns.name]).args(args))?;
        }
        Ok(ns)
    }

    /// `cmd` run inside the namespace (`ip netns exec NS ...`).
    pub fn wrap(&self, cmd: &Command) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name])
            .arg(cmd.get_program())
            .args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        c
    }

    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// What the peer saw of one transfer.
#[derive(Debug, Clone, Copy)]
pub struct PeerReport {
    pub bytes: u64,
    /// Accept to the end of the transfer, host clock.
    pub secs: f64,
}

/// The host side of one network run: listens on the namespace's 127.0.0.1:NET_PORT and
/// serves one connection (counts what the guest sends, or sends `bytes` and closes).
pub struct Peer {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Result<PeerReport, String>>,
}

impl Peer {
    pub fn start(ns: &Netns, dir: NetDir, bytes: u64, timeout: Duration) -> Result<Peer, String> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel::<Result<(), String>>();
        let path = ns.path();
        let stop2 = stop.clone();
        let handle = std::thread::spawn(move || {
            let listener = match listen_in(&path) {
                Ok(l) => {
                    let _ = tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = tx.send(Err(e.clone()));
                    return Err(e);
                }
            };
            serve(listener, dir, bytes, timeout, &stop2)
        });
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => Ok(Peer { stop, handle }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err("the peer thread did not start".into()),
        }
    }

    /// Stop waiting for a connection (the VM has exited) and collect the report.
    pub fn finish(self) -> Result<PeerReport, String> {
        self.stop.store(true, Ordering::Release);
        self.handle
            .join()
            .unwrap_or_else(|_| Err("the peer thread panicked".into()))
    }
}

/// Join the namespace (this thread only) and listen on its loopback.
fn listen_in(ns: &Path) -> Result<TcpListener, String> {
    let f = fs::File::open(ns).map_err(|e| format!("{}: {e}", ns.display()))?;
    // SAFETY: setns on a valid namespace descriptor; it moves only the calling thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(format!("setns: {}", std::io::Error::last_os_error()));
    }
    let l = TcpListener::bind(("127.0.0.1", NET_PORT))
        .map_err(|e| format!("binding 127.0.0.1:{NET_PORT}: {e}"))?;
    l.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok(l)
}

fn serve(
    listener: TcpListener,
    dir: NetDir,
    bytes: u64,
    timeout: Duration,
    stop: &AtomicBool,
) -> Result<PeerReport, String> {
    let mut conn = loop {
        match listener.accept() {
            Ok((c, _)) => break c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if stop.load(Ordering::Acquire) {
                    return Err("the guest never connected".into());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(format!("accept: {e}")),
        }
    };
    let io = |e: std::io::Error| format!("transfer: {e}");
    conn.set_nonblocking(false).map_err(io)?;
    conn.set_read_timeout(Some(timeout)).map_err(io)?;
    conn.set_write_timeout(Some(timeout)).map_err(io)?;
    let t = Instant::now();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    match dir {
        NetDir::Up => {
            conn.write_all(GREETING).map_err(io)?;
            loop {
                let r = conn.read(&mut buf).map_err(io)?;
                if r == 0 {
                    break;
                }
                n += r as u64;
            }
        }
        NetDir::Down => {
            for (i, b) in buf.iter_mut().enumerate() {
                *b = (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3];
            }
            while n < bytes {
                let k = (bytes - n).min(buf.len() as u64) as usize;
                conn.write_all(&buf[..k]).map_err(io)?;
                n += k as u64;
            }
            conn.shutdown(std::net::Shutdown::Write).map_err(io)?;
            // Wait for the guest to close too, so the time covers the delivery.
            while conn.read(&mut buf).map_err(io)? > 0 {}
        }
    }
    Ok(PeerReport {
        bytes: n,
        secs: t.elapsed().as_secs_f64(),
    })
}

/// passt on a Unix socket for one QEMU run, inside the namespace; stopped on drop.
pub struct QemuPasst {
    dir: PathBuf,
}

impl QemuPasst {
    /// Start passt; it returns once it listens (it goes into the background then).
    pub fn start(ns: &Netns, scratch: &Path) -> Result<QemuPasst, String> {
        // passt drops root for "nobody" before it creates its socket and PID file.
        let dir = scratch.join("passt");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let q = QemuPasst { dir };
        let mut c = Command::new("passt");
        c.args(PASST_ARGS)
            .arg("--one-off")
            .arg("--socket")
            .arg(q.socket())
            .arg("--pid")
            .arg(q.dir.join("pid"));
        run(&mut ns.wrap(&c))?;
        Ok(q)
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("sock")
    }

    /// QEMU's arguments for a virtio-net device on this passt.
    pub fn qemu_args(&self) -> Vec<String> {
        vec![
            "-netdev".into(),
            format!(
                "stream,id=n0,server=off,addr.type=unix,addr.path={}",
                self.socket().display()
            ),
            "-device".into(),
            "virtio-net-device,netdev=n0".into(),
        ]
    }
}

impl Drop for QemuPasst {
    fn drop(&mut self) {
        // --one-off makes it exit when QEMU disconnects; make sure of it.
        let pid = fs::read_to_string(self.dir.join("pid"))
            .ok()
            .and_then(|s| s.trim().parse::<libc::pid_t>().ok())
            .filter(|&p| p > 1);
        // Only while that pid still is a passt (it may have exited and the pid been reused).
        let is_passt = |p: libc::pid_t| {
            fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.starts_with("passt"))
        };
        if let Some(pid) = pid.filter(|&p| is_passt(p)) {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
