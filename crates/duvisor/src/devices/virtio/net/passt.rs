//! passt back end: user-mode networking through a `passt` process (Debian package `passt`), so
//! an unprivileged user gets a working network without TAP devices or bridges.
//!
//! We create a connected `AF_UNIX` stream socket pair and start `passt --fd 3` with the other
//! end as its descriptor 3. passt speaks QEMU's `-netdev stream` framing on it: every Ethernet
//! frame, in both directions, is preceded by its length as a 4-byte big-endian number. passt
//! answers DHCP, ARP and NDP itself and carries the guest's TCP, UDP and ICMP traffic over
//! ordinary sockets of the host; connections to the gateway address reach the host's loopback.
//!
//! Start-up: passt configures itself (addresses and routes from the host interface with the
//! default route), sandboxes itself, then forks into the background; the process we started
//! exits with status 0 only once that worked. So we wait for it (bounded) and report its
//! stderr in one line when it fails: a bad option, or no usable host interface, is an error
//! before the guest starts. Shut-down: `--fd` implies `--one-off`, so passt exits as soon as
//! our end of the socket is closed, when this back end is dropped or when DuVisor dies in any
//! way (the kernel closes the socket then); no process is left behind and no signal is needed.
//!
//! Port forwarding (`hostfwd=`): passt takes one `-t`/`-u ADDR/HOSTPORT:GUESTPORT` option
//! per forward and binds those ports while it starts, before it goes into the background.
//! When it cannot bind any port of an option it exits with status 1 and "Failed to bind any
//! port for '-t …', exiting", so one option per port turns every failed bind into a start-up
//! error, which we report with the reason from a bind of our own. Probing the port before
//! starting passt would race with other programs; asking afterwards only explains passt's
//! answer. An address is always given: without one, passt binds IPv4 and IPv6 and is content
//! with either, so a port taken on IPv4 would quietly be forwarded on IPv6 only. passt takes a
//! host port once per protocol whatever the address ("Overlapping port specifier"), which the
//! `--net` parser checks before anything starts. The listening sockets are passt's: they go
//! away with it when our end of the socket closes.
//!
//! The stream is nonblocking on our side: partial frames are buffered in both directions, so
//! framing is never lost; a length above the device's frame limit means the stream is out of
//! step, which is reported as an error (the device then takes the link down), never a panic.

use std::ffi::OsString;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::{Backend, HostFwd, Proto};

/// Environment variable naming the passt binary to use instead of the one on `PATH`.
pub const PASST_ENV: &str = "DUVISOR_PASST";
/// The descriptor number passt finds its end of the socket at.
const PASST_FD: RawFd = 3;
/// How long passt may take to configure itself and go into the background.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Length prefix of every frame on the stream.
const LEN_BYTES: usize = 4;
/// An Ethernet header; anything shorter is not a frame.
const ETH_HLEN: usize = 14;
/// Receive buffer: room for several frames per read, and always for one whole frame.
const RX_BUF: usize = 256 * 1024;
/// Socket buffer size asked for on both ends (the kernel may cap it).
const SOCK_BUF: libc::c_int = 1 << 20;
/// The MTU passt advertises through DHCP and NDP. The device has no mergeable receive
/// buffers, so Linux posts 1518-byte receive buffers: a larger MTU would not fit them.
const MTU: &str = "1500";

/// A running passt process and our end of its socket.
pub struct Passt {
    sock: UnixStream,
    /// Received bytes not yet handed out: `rx[rx_start..rx_end]`.
    rx: Vec<u8>,
    rx_start: usize,
    rx_end: usize,
    /// Bytes accepted by `send` and not yet written: `tx[tx_done..]`.
    tx: Vec<u8>,
    tx_done: usize,
    /// Frames from passt too short to be Ethernet frames, dropped.
    dropped_short: u64,
}

impl Passt {
    /// Find passt (`$DUVISOR_PASST`, else `passt` on `PATH`) and start it, forwarding `fwds`.
    pub fn open(fwds: &[HostFwd]) -> anyhow::Result<Passt> {
        let bin = find_passt(
            std::env::var_os(PASST_ENV).filter(|v| !v.is_empty()),
            std::env::var_os("PATH"),
        )?;
        Passt::start(&bin, fwds, START_TIMEOUT)
    }

    /// Start `bin` with one end of a new socket pair as its `--fd`, forwarding `fwds`; wait
    /// at most `timeout` for it to configure itself, bind the forwarded ports and go into the
    /// background.
    pub fn start(bin: &Path, fwds: &[HostFwd], timeout: Duration) -> anyhow::Result<Passt> {
        let (ours, theirs) = UnixStream::pair().context("--net passt: creating a socket pair")?;
        for s in [&ours, &theirs] {
            grow_buffers(s);
        }
        // Command sets up the child's descriptors 0-2 before our pre_exec hook runs; an end
        // sitting there would be overwritten, so move it up (try_clone never returns < 3).
        let theirs = if theirs.as_raw_fd() <= 2 {
            theirs
                .try_clone()
                .context("--net passt: duplicating the socket")?
        } else {
            theirs
        };
        let fd = theirs.as_raw_fd();
        let mut cmd = Command::new(bin);
        cmd.args(["--fd", &PASST_FD.to_string(), "--quiet", "--mtu", MTU]);
        for f in fwds {
            cmd.args(fwd_args(f));
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: the hook runs in the forked child before exec and calls only dup2 and fcntl,
        // which are async-signal-safe, on `fd`, which the parent keeps open until spawn returns.
        unsafe {
            cmd.pre_exec(move || {
                // dup2 gives the new descriptor no close-on-exec flag; when `fd` already is
                // PASST_FD, dup2 does nothing, so clear the flag explicitly either way.
                if libc::dup2(fd, PASST_FD) < 0 || libc::fcntl(PASST_FD, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("--net passt: cannot run {}", bin.display()))?;
        drop(theirs);
        wait_started(child, bin, fwds, timeout)?;
        ours.set_nonblocking(true)
            .context("--net passt: making the socket nonblocking")?;
        Ok(Passt::from_stream(ours))
    }

    /// A back end on an already connected stream (passt's end is someone else's business).
    pub fn from_stream(sock: UnixStream) -> Passt {
        Passt {
            sock,
            rx: vec![0; RX_BUF],
            rx_start: 0,
            rx_end: 0,
            tx: Vec::new(),
            tx_done: 0,
            dropped_short: 0,
        }
    }

    /// The next whole frame already received, copied into `buf`.
    fn next_frame(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        while self.rx_end - self.rx_start >= LEN_BYTES {
            let at = self.rx_start;
            let mut len_be = [0u8; LEN_BYTES];
            len_be.copy_from_slice(&self.rx[at..at + LEN_BYTES]);
            let len = u32::from_be_bytes(len_be) as usize;
            if len > buf.len() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "passt sent a frame of {len} bytes, more than the {} the device \
                         takes: the stream is out of step",
                        buf.len()
                    ),
                ));
            }
            if self.rx_end - at < LEN_BYTES + len {
                return Ok(None);
            }
            self.rx_start = at + LEN_BYTES + len;
            if len < ETH_HLEN {
                self.dropped_short += 1;
                if self.dropped_short == 1 {
                    tracing::warn!(
                        "passt sent a {len}-byte frame, dropped (further ones silently)"
                    );
                }
                continue;
            }
            buf[..len].copy_from_slice(&self.rx[at + LEN_BYTES..self.rx_start]);
            return Ok(Some(len));
        }
        Ok(None)
    }

    /// Make room at the end of the receive buffer for at least one whole frame.
    fn compact(&mut self) {
        if self.rx_start == self.rx_end {
            self.rx_start = 0;
            self.rx_end = 0;
        } else if self.rx.len() - self.rx_end < LEN_BYTES + super::MAX_FRAME {
            self.rx.copy_within(self.rx_start..self.rx_end, 0);
            self.rx_end -= self.rx_start;
            self.rx_start = 0;
        }
    }
}

fn closed() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "passt closed its socket (it exited or was killed)",
    )
}

impl Backend for Passt {
    fn fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        let len = u32::try_from(frame.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
        if self.tx_done == self.tx.len() {
            self.tx.clear();
            self.tx_done = 0;
        }
        self.tx.extend_from_slice(&len.to_be_bytes());
        self.tx.extend_from_slice(frame);
        self.flush()
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            if let Some(n) = self.next_frame(buf)? {
                return Ok(Some(n));
            }
            self.compact();
            match (&self.sock).read(&mut self.rx[self.rx_end..]) {
                Ok(0) => return Err(closed()),
                Ok(n) => self.rx_end += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn send_blocked(&self) -> bool {
        self.tx_done < self.tx.len()
    }

    fn flush(&mut self) -> io::Result<()> {
        while self.tx_done < self.tx.len() {
            let rest = &self.tx[self.tx_done..];
            // SAFETY: `rest` is a valid buffer of `rest.len()` bytes; the socket is ours.
            // MSG_NOSIGNAL: a closed peer is an EPIPE error here, not a SIGPIPE.
            let n = unsafe {
                libc::send(
                    self.sock.as_raw_fd(),
                    rest.as_ptr().cast(),
                    rest.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if n >= 0 {
                self.tx_done += n as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => return Ok(()),
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => return Err(closed()),
                _ => return Err(e),
            }
        }
        self.tx.clear();
        self.tx_done = 0;
        Ok(())
    }
}

/// Ask for large socket buffers so bursts from passt (which writes a frame's length and its
/// body with separate calls) do not stall; the kernel caps the size, which is fine.
fn grow_buffers(s: &UnixStream) {
    for opt in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
        let v = SOCK_BUF;
        // SAFETY: setsockopt reads one c_int from the pointer we pass, on our own socket.
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

/// The passt binary: `env` (`$DUVISOR_PASST`) when given, else `passt` found on `path`.
pub fn find_passt(env: Option<OsString>, path: Option<OsString>) -> anyhow::Result<PathBuf> {
    let executable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if let Some(e) = env {
        let p = PathBuf::from(&e);
        if p.components().count() > 1 {
            if !executable(&p) {
                bail!(
                    "--net passt: {PASST_ENV}={} is not an executable file",
                    p.display()
                );
            }
            return Ok(p);
        }
        return search_path(&p, path.as_deref(), executable).ok_or_else(|| {
            anyhow::anyhow!("--net passt: {PASST_ENV}={} not found on PATH", p.display())
        });
    }
    search_path(Path::new("passt"), path.as_deref(), executable).ok_or_else(|| {
        anyhow::anyhow!("--net passt: passt not found on PATH (Debian package passt)")
    })
}

fn search_path(
    name: &Path,
    path: Option<&std::ffi::OsStr>,
    ok: impl Fn(&Path) -> bool,
) -> Option<PathBuf> {
    std::env::split_paths(path?)
        .filter(|d| !d.as_os_str().is_empty())
        .map(|d| d.join(name))
        .find(|p| ok(p))
}

/// Wait until the passt we started has gone into the background (it exits with status 0),
/// collecting its stderr; any other outcome is an error quoting that stderr in one line.
fn wait_started(
    mut child: Child,
    bin: &Path,
    fwds: &[HostFwd],
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut err_pipe = child.stderr.take().expect("stderr is piped");
    let mut stderr = Vec::new();
    // Read stderr until it closes: passt's start-up process exits, and the background process
    // it leaves points its stderr at /dev/null.
    let mut eof = false;
    while !eof {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let mut pfd = libc::pollfd {
            fd: err_pipe.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
        // SAFETY: one valid pollfd that we own.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e).context("--net passt: waiting for passt");
        }
        if r == 0 {
            continue;
        }
        let mut chunk = [0u8; 4096];
        match err_pipe.read(&mut chunk) {
            Ok(0) => eof = true,
            Ok(n) if stderr.len() < 64 * 1024 => stderr.extend_from_slice(&chunk[..n]),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => eof = true,
        }
    }
    let status = loop {
        if let Some(st) = child.try_wait().context("--net passt: waiting for passt")? {
            break Some(st);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let msg = summarize_stderr(&String::from_utf8_lossy(&stderr));
    match status {
        Some(st) if st.success() => Ok(()),
        Some(_) if msg.contains("Failed to bind") => {
            // passt binds the forwarded ports before it goes into the background, one
            // option per port, and exits with status 1 naming the option whose port it could
            // not bind. It does not say why, so ask the kernel the same question now.
            match fwds.iter().find(|f| {
                let [opt, spec] = fwd_args(f);
                msg.contains(&format!("'{opt} {spec}'"))
            }) {
                Some(f) => bail!("--net passt: {f}: {}", bind_failure(f, &msg)),
                None => bail!("--net passt: passt cannot bind a forwarded port: {msg}"),
            }
        }
        Some(st) => {
            let how = match st.code() {
                Some(c) => format!("exit status {c}"),
                None => st.to_string(),
            };
            let hint = if msg.contains("External interface not usable") {
                " (passt takes its addresses from the host interface with the default route)"
            } else {
                ""
            };
            bail!(
                "--net passt: {} failed to start ({how}): {}{hint}",
                bin.display(),
                if msg.is_empty() { "no message" } else { &msg }
            )
        }
        None => bail!(
            "--net passt: {} did not start within {} s{}",
            bin.display(),
            timeout.as_secs_f64(),
            if msg.is_empty() {
                String::new()
            } else {
                format!(": {msg}")
            }
        ),
    }
}

/// passt's option forwarding `f`: one option per port, with its address, so that passt
/// fails when that port cannot be bound (it only fails when no port of an option can be).
fn fwd_args(f: &HostFwd) -> [String; 2] {
    let opt = match f.proto {
        Proto::Tcp => "-t",
        Proto::Udp => "-u",
    };
    let spec = format!("{}/{}:{}", f.bind_addr(), f.host_port, f.guest_port);
    [opt.to_string(), spec]
}

/// Why `f`'s host port cannot be bound, once passt has said it could not: a bind of our own,
/// with the same privileges passt had when it tried. Only the explanation depends on it;
/// whether it failed is passt's answer.
fn bind_failure(f: &HostFwd, passt_said: &str) -> String {
    let at = std::net::SocketAddr::new(f.bind_addr(), f.host_port);
    let what = format!("cannot listen on {} port {at}", f.proto);
    // passt binds only the address families it found a host interface for.
    let family = if at.is_ipv6() { "IPv6" } else { "IPv4" };
    if passt_said.contains(&format!("No external routable interface for {family}")) {
        return format!(
            "{what}: passt does not use {family} (the host has no {family} default route)"
        );
    }
    let probe = match f.proto {
        Proto::Tcp => std::net::TcpListener::bind(at).map(drop),
        Proto::Udp => std::net::UdpSocket::bind(at).map(drop),
    };
    match probe {
        Err(e) => match e.kind() {
            io::ErrorKind::AddrInUse => format!("{what}: it is in use"),
            io::ErrorKind::AddrNotAvailable => {
                format!("{what}: the host has no address {}", f.bind_addr())
            }
            io::ErrorKind::PermissionDenied => format!("{what}: permission denied"),
            _ => format!("{what}: {e}"),
        },
        Ok(()) => format!("{what} (passt could not bind it; it is free now)"),
    }
}

/// passt's stderr as one line: its messages without the noise (failed syslog sends where
/// there is no system logger, the note about dropping root, the usage text after an error).
pub fn summarize_stderr(s: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for line in s.lines().map(str::trim) {
        if line.starts_with("Usage:") {
            break;
        }
        let noise = line.is_empty()
            || (line.starts_with("Failed to send") && line.ends_with("to syslog"))
            || line.starts_with("Don't run as root");
        if !noise {
            parts.push(line);
        }
    }
    let mut out = parts.join("; ");
    if out.chars().count() > 400 {
        out = out.chars().take(399).collect::<String>() + "…";
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_files::TempPath;
    use std::io::Write;

    const MAX: usize = super::super::MAX_FRAME;

    fn frame(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    fn framed(f: &[u8]) -> Vec<u8> {
        let mut v = (f.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(f);
        v
    }

    fn pair() -> (Passt, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        (Passt::from_stream(a), b)
    }

    #[test]
    fn frames_split_anywhere_come_out_whole() {
        let (mut p, mut peer) = pair();
        let frames: Vec<Vec<u8>> = [60, 1514, 14, 9000, 42]
            .iter()
            .enumerate()
            .map(|(i, &n)| frame(n, i as u8))
            .collect();
        let stream: Vec<u8> = frames.iter().flat_map(|f| framed(f)).collect();
        let mut buf = vec![0u8; MAX];
        let mut got = Vec::new();
        // Feed the stream in awkward pieces (inside length prefixes too).
        for piece in stream.chunks(3).collect::<Vec<_>>().chunks(7) {
            for c in piece {
                peer.write_all(c).unwrap();
            }
            while let Some(n) = p.recv(&mut buf).unwrap() {
                got.push(buf[..n].to_vec());
            }
        }
        assert_eq!(got, frames);
        assert_eq!(p.recv(&mut buf).unwrap(), None);
    }

    #[test]
    fn many_frames_fill_and_wrap_the_buffer() {
        let (mut p, peer) = pair();
        let mut buf = vec![0u8; MAX];
        let writer = std::thread::spawn(move || {
            let mut peer = peer;
            for i in 0..400u32 {
                peer.write_all(&framed(&frame(1000 + (i as usize * 97) % 3000, i as u8)))
                    .unwrap();
            }
        });
        let mut n = 0u32;
        while n < 400 {
            match p.recv(&mut buf).unwrap() {
                Some(len) => {
                    assert_eq!(
                        buf[..len],
                        frame(1000 + (n as usize * 97) % 3000, n as u8)[..]
                    );
                    n += 1;
                }
                None => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        writer.join().unwrap();
    }

    #[test]
    fn short_frames_are_dropped_and_framing_kept() {
        let (mut p, mut peer) = pair();
        peer.write_all(&framed(&[])).unwrap();
        peer.write_all(&framed(&[1, 2, 3])).unwrap();
        peer.write_all(&framed(&frame(64, 9))).unwrap();
        let mut buf = vec![0u8; MAX];
        assert_eq!(p.recv(&mut buf).unwrap(), Some(64));
        assert_eq!(buf[..64], frame(64, 9)[..]);
        assert_eq!(p.dropped_short, 2);
    }

    #[test]
    fn oversized_length_is_an_error() {
        let (mut p, mut peer) = pair();
        peer.write_all(&0xffff_fff0u32.to_be_bytes()).unwrap();
        peer.write_all(&[0u8; 100]).unwrap();
        let mut buf = vec![0u8; MAX];
        let e = p.recv(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("out of step"), "{e}");
        // One byte over the limit is too much as well; exactly the limit is fine.
        let (mut p, peer) = pair();
        let writer = std::thread::spawn(move || {
            let mut peer = peer;
            peer.write_all(&framed(&frame(MAX, 1))).unwrap();
            // The reader stops at this one and closes its end: the write may fail.
            let _ = peer.write_all(&framed(&frame(MAX + 1, 1)));
        });
        let mut next = || loop {
            match p.recv(&mut buf) {
                Ok(None) => std::thread::sleep(Duration::from_millis(1)),
                r => return r.map_err(|e| e.kind()),
            }
        };
        assert_eq!(next(), Ok(Some(MAX)));
        assert_eq!(next(), Err(io::ErrorKind::InvalidData));
        drop(p);
        writer.join().unwrap();
    }

    #[test]
    fn peer_gone_is_an_error_not_a_frame() {
        let (mut p, mut peer) = pair();
        peer.write_all(&framed(&frame(100, 3))[..50]).unwrap();
        drop(peer);
        let mut buf = vec![0u8; MAX];
        let e = p.recv(&mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
        assert!(e.to_string().contains("passt closed"), "{e}");
        let e = p.send(&frame(60, 0)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn sends_that_do_not_fit_wait_and_keep_their_framing() {
        let (mut p, peer) = pair();
        // Write until the socket is full: the last frame is partly written and kept.
        let mut sent = Vec::new();
        let mut i = 0u8;
        while !p.send_blocked() {
            let f = frame(1514, i);
            p.send(&f).unwrap();
            sent.push(f);
            i = i.wrapping_add(1);
            assert!(sent.len() < 100_000, "the socket never filled");
        }
        // Drain the other end in a thread while we flush; all frames arrive intact.
        let n = sent.len();
        let reader = std::thread::spawn(move || {
            let mut peer = peer;
            let mut out = Vec::new();
            for _ in 0..n {
                let mut len = [0u8; 4];
                peer.read_exact(&mut len).unwrap();
                let mut f = vec![0u8; u32::from_be_bytes(len) as usize];
                peer.read_exact(&mut f).unwrap();
                out.push(f);
            }
            out
        });
        while p.send_blocked() {
            p.flush().unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(reader.join().unwrap(), sent);
    }

    #[test]
    fn stderr_summary_is_one_line_without_noise() {
        let s = "Failed to send 47 bytes to syslog\nDon't run as root. Changing to nobody...\n\
                 Failed to send 46 bytes to syslog\nNo external routable interface for IPv4\n\
                 Failed to send 36 bytes to syslog\nExternal interface not usable\n";
        assert_eq!(
            summarize_stderr(s),
            "No external routable interface for IPv4; External interface not usable"
        );
        let s = "passt: unrecognized option '--bogus'\nUsage: passt [OPTION]...\n\n  -d, --debug\n";
        assert_eq!(summarize_stderr(s), "passt: unrecognized option '--bogus'");
        assert_eq!(summarize_stderr(&"x".repeat(1000)).chars().count(), 400);
        assert_eq!(summarize_stderr(""), "");
    }

    fn script(name: &str, body: &str) -> TempPath {
        let p = TempPath::with(name, format!("#!/bin/sh\n{body}\n").as_bytes());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn binary_lookup() {
        let script = script("passt", "exit 0");
        let sh = script.to_path_buf();
        let dir = sh.parent().unwrap().as_os_str().to_owned();
        let path = |d: &std::ffi::OsStr| {
            let mut p = OsString::from("/nonexistent:");
            p.push(d);
            Some(p)
        };
        assert_eq!(find_passt(None, path(&dir)).unwrap(), sh);
        let e = find_passt(None, Some("/nonexistent".into())).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--net passt: passt not found on PATH (Debian package passt)"
        );
        assert!(find_passt(None, None).is_err());
        assert_eq!(
            find_passt(Some(sh.clone().into()), Some("/nonexistent".into())).unwrap(),
            sh
        );
        let e = find_passt(Some("/nonexistent/passt".into()), path(&dir)).unwrap_err();
        assert!(
            e.to_string().contains("DUVISOR_PASST=/nonexistent/passt"),
            "{e}"
        );
        // A bare name is looked up on PATH.
        assert_eq!(find_passt(Some("passt".into()), path(&dir)).unwrap(), sh);
        // Not executable.
        let plain = sh.with_file_name("plain");
        std::fs::write(&plain, "x").unwrap();
        assert!(find_passt(Some(plain.into()), None).is_err());
    }

    #[test]
    fn a_passt_that_fails_is_reported_in_one_line() {
        let bad = script(
            "bad-passt",
            "echo 'Failed to send 36 bytes to syslog' >&2\n\
             echo \"passt: unrecognized option '$1'\" >&2\necho 'Usage: passt' >&2\nexit 1",
        );
        let e = Passt::start(&bad, &[], Duration::from_secs(10))
            .err()
            .unwrap()
            .to_string();
        assert!(e.starts_with("--net passt: "), "{e}");
        assert!(
            e.ends_with("failed to start (exit status 1): passt: unrecognized option '--fd'"),
            "{e}"
        );
        assert!(!e.contains('\n'));
    }

    #[test]
    fn forwards_are_one_option_each_with_an_address() {
        let f = |s: &str| s.parse::<HostFwd>().unwrap();
        assert_eq!(fwd_args(&f("tcp:2222:22")), ["-t", "0.0.0.0/2222:22"]);
        assert_eq!(
            fwd_args(&f("udp:127.0.0.1:5353:53")),
            ["-u", "127.0.0.1/5353:53"]
        );
        assert_eq!(fwd_args(&f("tcp:[::1]:8080:80")), ["-t", "::1/8080:80"]);
    }

    #[test]
    fn a_port_passt_cannot_bind_is_named_with_the_reason() {
        // Hold a port, and stand in for passt as it fails to bind it: the error names the
        // forward and says why, in one line.
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let bad = script(
            "bind-passt",
            &format!(
                "echo \"Failed to bind any port for '-t 127.0.0.1/{port}:22', exiting\" >&2\nexit 1"
            ),
        );
        let fwds: Vec<HostFwd> = vec![
            "udp:127.0.0.1:9:9".parse().unwrap(),
            format!("tcp:127.0.0.1:{port}:22").parse().unwrap(),
        ];
        let e = Passt::start(&bad, &fwds, Duration::from_secs(10))
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            e,
            format!(
                "--net passt: hostfwd=tcp:127.0.0.1:{port}:22: cannot listen on tcp port \
                 127.0.0.1:{port}: it is in use"
            )
        );
        // Free again by the time we look: said so, still an error.
        drop(held);
        let e = Passt::start(&bad, &fwds, Duration::from_secs(10))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.ends_with("(passt could not bind it; it is free now)"),
            "{e}"
        );
    }

    #[test]
    fn a_passt_that_never_starts_is_stopped() {
        let slow = script("slow-passt", "exec sleep 30");
        let t = Instant::now();
        let e = Passt::start(&slow, &[], Duration::from_millis(300))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("did not start within 0.3 s"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn socket_reaches_the_started_process() {
        // A stand-in for passt that checks its arguments, goes into the background like passt
        // and echoes the stream back: what we send comes back framed as sent.
        let echo = script(
            "echo-passt",
            "[ \"$1 $2\" = \"--fd 3\" ] || { echo \"bad arguments: $*\" >&2; exit 2; }\n\
             cat <&3 >&3 2>/dev/null &\nexit 0",
        );
        let mut p = Passt::start(&echo, &[], Duration::from_secs(10)).unwrap();
        let frames: Vec<Vec<u8>> = (0..20).map(|i| frame(60 + i * 71, i as u8)).collect();
        for f in &frames {
            p.send(f).unwrap();
            while p.send_blocked() {
                p.flush().unwrap();
            }
        }
        let mut buf = vec![0u8; MAX];
        let mut got = Vec::new();
        let t = Instant::now();
        while got.len() < frames.len() && t.elapsed() < Duration::from_secs(10) {
            match p.recv(&mut buf).unwrap() {
                Some(n) => got.push(buf[..n].to_vec()),
                None => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        assert_eq!(got, frames);
    }
}
