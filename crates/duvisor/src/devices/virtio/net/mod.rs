//! virtio-net (virtio 1.x §5.1): the `--net` option. The device and its back ends (TAP,
//! passt) live in this directory.
//!
//! One receive and one transmit queue, no offloads, no mergeable receive buffers. The I/O
//! thread moves frames between the queues and the back end; a back end that cannot take a
//! frame right now holds the transmit queue (the guest sees back-pressure, nothing is lost),
//! and a back end that fails for good (passt exited, the stream went out of step) is logged
//! once and the link goes down: frames from the guest are then dropped, as on a cut wire.
//! Frames the device drops itself (a transmit buffer that is no frame, a frame larger than
//! the guest's receive buffer) are counted, and the first of each kind is logged.

pub mod passt;
pub mod tap;

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use virtio_queue::{Queue, QueueT};

use super::chain::{self, Buffers};
use super::{Activation, GuestMem, Interrupt, VirtioDevice, ID_NET, INT_VRING};
use crate::sandbox::ThreadClass;

/// Feature: the device has a MAC address in its configuration space.
pub const F_MAC: u64 = 1 << 5;
/// The virtio-net header in front of every frame (VERSION_1 layout, no offloads used).
pub const HDR_LEN: usize = 12;
/// Largest frame taken from the guest or a back end (no TSO offered, so real frames are far
/// smaller; this bounds what a misbehaving peer can make us buffer).
pub const MAX_FRAME: usize = 65_536;
/// An Ethernet header: anything shorter from the guest is not a frame and is dropped.
const ETH_HLEN: usize = 14;
const QUEUE_SIZE: u16 = 256;

/// Where the device sends and receives Ethernet frames.
pub trait Backend: Send + 'static {
    /// Readable when a frame is waiting; writable when queued frames can move on.
    fn fd(&self) -> RawFd;
    /// Send one frame: `Ok` when it was sent, queued, or dropped as a wire may drop it; an
    /// error only when the back end has failed for good.
    fn send(&mut self, frame: &[u8]) -> std::io::Result<()>;
    /// One frame into `buf` (`MAX_FRAME` bytes), or `None` if none is waiting. `None` only
    /// once `fd` has nothing more, so waiting for it to become readable is right. An error
    /// means the back end has failed for good.
    fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<Option<usize>>;
    /// Frames accepted by `send` are still waiting to go out: the device takes no more from
    /// the guest until `fd` is writable and [`Backend::flush`] has sent them.
    fn send_blocked(&self) -> bool {
        false
    }
    /// Write out what `send` had to queue (see [`Backend::send_blocked`]).
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Open the back end of `--net` device number `index` and build its device.
pub fn open(spec: &NetSpec, index: usize) -> anyhow::Result<Arc<dyn VirtioDevice>> {
    let mac = spec.mac.unwrap_or_else(|| default_mac(index));
    let backend: Box<dyn Backend> = match &spec.backend {
        NetBackend::Tap(name) => Box::new(tap::Tap::open(name)?),
        NetBackend::Passt => Box::new(passt::Passt::open(&spec.hostfwd)?),
    };
    Ok(Arc::new(Net {
        mac,
        backend: Arc::new(std::sync::Mutex::new(Some(backend))),
        drops: Arc::default(),
    }))
}

/// A virtio-net device with one receive and one transmit queue.
pub struct Net {
    mac: Mac,
    /// Taken by the I/O thread while the device runs; given back when it stops.
    backend: Arc<std::sync::Mutex<Option<Box<dyn Backend>>>>,
    drops: Arc<Drops>,
}

/// Frames the device dropped (not counting those a down link drops).
#[derive(Debug, Default)]
pub struct Drops {
    /// Transmit buffers too short for a header and an Ethernet header, or over `MAX_FRAME`.
    pub tx: AtomicU64,
    /// Frames larger than the receive buffer the guest offered for them.
    pub rx: AtomicU64,
}

/// Count a drop on `counter`; only the first is logged, so a guest cannot flood the log.
fn dropped(counter: &AtomicU64, why: std::fmt::Arguments) {
    if counter.fetch_add(1, Ordering::Relaxed) == 0 {
        tracing::warn!("virtio-net: {why}: dropped (further drops are only counted)");
    }
}

impl VirtioDevice for Net {
    fn device_id(&self) -> u32 {
        ID_NET
    }
    fn features(&self) -> u64 {
        F_MAC
    }
    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE, QUEUE_SIZE]
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let mut c = [0u8; 10];
        c[..6].copy_from_slice(&self.mac.0);
        c[8] = 1; // max_virtqueue_pairs
        super::read_config_bytes(&c, offset, data);
    }
    fn activate(&self, act: Activation) -> std::io::Result<JoinHandle<()>> {
        let backend = self
            .backend
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| std::io::Error::other("network back end busy"))?;
        // The back end outlives a reset: the thread hands it back when it ends.
        let slot = self.backend.clone();
        let drops = self.drops.clone();
        crate::sandbox::spawn(ThreadClass::NetIo, "virtio-net", move || {
            let b = run(act, backend, &drops);
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(b);
        })
    }
}

/// The back end failed for good: say so once; the device stops using it.
fn link_down(link: &mut bool, e: &std::io::Error) {
    if *link {
        tracing::error!("virtio-net: network back end failed, the link is down: {e}");
        *link = false;
    }
}

fn run(act: Activation, mut backend: Box<dyn Backend>, drops: &Drops) -> Box<dyn Backend> {
    let Activation {
        mem,
        mut queues,
        kicks,
        stop,
        irq,
        ..
    } = act;
    let mut rx = RxFrame {
        buf: vec![0u8; MAX_FRAME],
        pending: None,
    };
    let (mut rx_ok, mut tx_ok) = (queues[0].ready(), queues[1].ready());
    // The back end works; once it fails it is left alone until the device is reset.
    let mut link = true;
    loop {
        if link && backend.send_blocked() {
            if let Err(e) = backend.flush() {
                link_down(&mut link, &e);
            }
        }
        if tx_ok {
            tx_ok = transmit(
                &mut queues[1],
                &mem,
                &irq,
                backend.as_mut(),
                &mut link,
                drops,
            );
        }
        if rx_ok && link {
            rx_ok = receive(
                &mut queues[0],
                &mem,
                &irq,
                backend.as_mut(),
                &mut rx,
                &mut link,
                drops,
            );
        }
        let mut fds = vec![
            pollfd(stop.as_raw_fd(), libc::POLLIN),
            pollfd(kicks[0].as_raw_fd(), libc::POLLIN),
            pollfd(kicks[1].as_raw_fd(), libc::POLLIN),
        ];
        if link {
            let mut events = 0;
            // While a frame waits for receive buffers, only a kick can make progress.
            if rx.pending.is_none() && rx_ok {
                events |= libc::POLLIN;
            }
            if tx_ok && backend.send_blocked() {
                events |= libc::POLLOUT;
            }
            if events != 0 {
                fds.push(pollfd(backend.fd(), events));
            }
        }
        if poll(&mut fds).is_err() || fds[0].revents != 0 {
            return backend;
        }
        if fds[1].revents != 0 {
            let _ = kicks[0].read();
        }
        if fds[2].revents != 0 {
            let _ = kicks[1].read();
        }
    }
}

fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// Wait until one of `fds` is ready (their `revents` say which). Retries on EINTR.
fn poll(fds: &mut [libc::pollfd]) -> std::io::Result<()> {
    loop {
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs owned by the caller.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n >= 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Send the frames the guest queued, while the back end takes them (a link that is down
/// drops them). False when the queue broke.
fn transmit(
    q: &mut Queue,
    mem: &GuestMem,
    irq: &Interrupt,
    backend: &mut dyn Backend,
    link: &mut bool,
    drops: &Drops,
) -> bool {
    let m: &vm_memory::GuestMemoryMmap = mem;
    let mut used_any = false;
    let ok = loop {
        if q.disable_notification(m).is_err() {
            break false;
        }
        let mut broken = None;
        while !(*link && backend.send_blocked()) {
            let chain = match super::pop_chain(q, m) {
                Ok(Some(chain)) => chain,
                Ok(None) => break,
                Err(e) => {
                    broken = Some(e);
                    break;
                }
            };
            let head = chain.head_index();
            if let Err(e) = transmit_one(chain, m, backend, link, drops) {
                broken = Some(e);
                break;
            }
            if q.add_used(m, head, 0).is_err() {
                broken = Some(format!("cannot complete chain {head}"));
                break;
            }
            used_any = true;
        }
        if let Some(e) = broken {
            irq.needs_reset(&e);
            break false;
        }
        if *link && backend.send_blocked() {
            // Resumed when the back end's descriptor is writable.
            break true;
        }
        match q.enable_notification(m) {
            Ok(true) => continue,
            Ok(false) => break true,
            Err(_) => break false,
        }
    };
    if used_any && q.needs_notification(m).unwrap_or(true) {
        irq.raise(INT_VRING);
    }
    ok
}

/// Hand one transmit chain's frame to the back end. An error means the chain is unusable.
fn transmit_one(
    chain: virtio_queue::DescriptorChain<&vm_memory::GuestMemoryMmap>,
    m: &vm_memory::GuestMemoryMmap,
    backend: &mut dyn Backend,
    link: &mut bool,
    drops: &Drops,
) -> Result<(), String> {
    let b = Buffers::gather(chain).map_err(|e| e.to_string())?;
    chain::check(m, &b.readable).map_err(|e| e.to_string())?;
    let len = chain::total(&b.readable);
    if !(HDR_LEN + ETH_HLEN..=HDR_LEN + MAX_FRAME).contains(&(len as usize)) {
        // Too short for a header and a frame, or larger than any frame.
        dropped(
            &drops.tx,
            format_args!("the guest queued a {len}-byte transmit buffer, which is no frame"),
        );
        return Ok(());
    }
    if !*link {
        return Ok(());
    }
    let mut buf = vec![0u8; len as usize];
    chain::read_bytes(m, &b.readable, &mut buf).map_err(|e| e.to_string())?;
    if let Err(e) = backend.send(&buf[HDR_LEN..]) {
        link_down(link, &e);
    }
    Ok(())
}

/// A frame from the back end on its way to the guest.
struct RxFrame {
    buf: Vec<u8>,
    /// `buf[..n]` holds a frame still waiting for a receive buffer.
    pending: Option<usize>,
}

/// Move frames from the back end into the guest's receive buffers. False when the queue broke.
fn receive(
    q: &mut Queue,
    mem: &GuestMem,
    irq: &Interrupt,
    backend: &mut dyn Backend,
    rx: &mut RxFrame,
    link: &mut bool,
    drops: &Drops,
) -> bool {
    let m: &vm_memory::GuestMemoryMmap = mem;
    let mut used_any = false;
    let ok = loop {
        if rx.pending.is_none() {
            match backend.recv(&mut rx.buf) {
                Ok(Some(n)) => rx.pending = Some(n.min(rx.buf.len())),
                Ok(None) => break true,
                Err(e) => {
                    link_down(link, &e);
                    break true;
                }
            }
        }
        let n = rx.pending.expect("frame");
        let chain = match super::pop_chain(q, m) {
            Ok(Some(chain)) => chain,
            // No buffer: ask for a kick, and re-check in case one raced in.
            Ok(None) => match q.enable_notification(m) {
                Ok(true) => continue,
                Ok(false) => break true,
                Err(_) => break false,
            },
            // An available index too far ahead: a driver error, not "no buffer".
            Err(e) => {
                irq.needs_reset(&e);
                break false;
            }
        };
        let head = chain.head_index();
        let b = match Buffers::gather(chain) {
            Ok(b) => b,
            Err(e) => {
                irq.needs_reset(&e);
                break false;
            }
        };
        if let Err(e) = chain::check(m, &b.writable) {
            irq.needs_reset(&e);
            break false;
        }
        let mut hdr = [0u8; HDR_LEN];
        hdr[10] = 1; // num_buffers
        let room = chain::total(&b.writable);
        let written = if room >= (HDR_LEN + n) as u64 {
            let mut out = Vec::with_capacity(HDR_LEN + n);
            out.extend_from_slice(&hdr);
            out.extend_from_slice(&rx.buf[..n]);
            chain::write_bytes(m, &b.writable, &out).unwrap_or(0)
        } else {
            // No mergeable buffers: a frame that does not fit cannot be delivered.
            dropped(
                &drops.rx,
                format_args!("a {n}-byte frame does not fit a {room}-byte receive buffer"),
            );
            0
        };
        rx.pending = None;
        if q.add_used(m, head, written as u32).is_err() {
            irq.needs_reset(&"cannot complete a receive buffer");
            break false;
        }
        used_any = true;
    };
    if used_any && q.needs_notification(m).unwrap_or(true) {
        irq.raise(INT_VRING);
    }
    ok
}

/// A MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mac(pub [u8; 6]);

impl std::str::FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Mac, String> {
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(format!("bad MAC address {s:?} (want xx:xx:xx:xx:xx:xx)"));
        }
        let mut m = [0u8; 6];
        for (d, p) in m.iter_mut().zip(parts) {
            if p.len() != 2 {
                return Err(format!("bad MAC address {s:?}"));
            }
            *d = u8::from_str_radix(p, 16).map_err(|_| format!("bad MAC address {s:?}"))?;
        }
        if m[0] & 1 != 0 {
            return Err(format!("MAC address {s:?} is a multicast address"));
        }
        // Not a valid station address (Linux's is_valid_ether_addr rejects it, as multicast).
        if m == [0; 6] {
            return Err(format!("MAC address {s:?} is all zeros"));
        }
        Ok(Mac(m))
    }
}

impl std::fmt::Display for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// The default MAC of the `i`-th network device: 52:54:00:12:34:56, ...:57, ...
pub fn default_mac(i: usize) -> Mac {
    Mac([0x52, 0x54, 0x00, 0x12, 0x34, 0x56u8.wrapping_add(i as u8)])
}

/// Where a network device's frames go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetBackend {
    /// A host TAP interface, by name.
    Tap(String),
    /// A `passt` process (user-mode networking), in its QEMU-compatible socket mode.
    Passt,
}

/// The transport protocol of a forwarded port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// `hostfwd=PROTO:[ADDR:]HOSTPORT:GUESTPORT`: connections (TCP) or datagrams (UDP) to
/// HOSTPORT on the host go to GUESTPORT in the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostFwd {
    pub proto: Proto,
    /// The host address to listen on; `None` is every IPv4 address (as QEMU's `hostfwd`).
    pub addr: Option<std::net::IpAddr>,
    pub host_port: u16,
    pub guest_port: u16,
}

const HOSTFWD_SYNTAX: &str = "hostfwd=tcp|udp:[ADDR:]HOSTPORT:GUESTPORT";

impl HostFwd {
    /// The address passt binds: the given one, else every IPv4 address. Never passt's own
    /// default (IPv4 and IPv6, either one enough): a port taken on one of them would then be
    /// forwarded on the other only, without an error.
    pub fn bind_addr(&self) -> std::net::IpAddr {
        self.addr
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
    }
}

impl std::fmt::Display for HostFwd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "hostfwd={}:", self.proto)?;
        match self.addr {
            Some(std::net::IpAddr::V6(a)) => write!(f, "[{a}]:")?,
            Some(a) => write!(f, "{a}:")?,
            None => {}
        }
        write!(f, "{}:{}", self.host_port, self.guest_port)
    }
}

impl std::str::FromStr for HostFwd {
    type Err = String;
    /// `s` is what follows `hostfwd=`.
    fn from_str(s: &str) -> Result<HostFwd, String> {
        let bad = || format!("bad hostfwd={s:?} (want {HOSTFWD_SYNTAX})");
        let (proto, rest) = s.split_once(':').ok_or_else(bad)?;
        let proto = match proto {
            "tcp" => Proto::Tcp,
            "udp" => Proto::Udp,
            p => {
                return Err(format!(
                    "hostfwd={s:?}: unknown protocol {p:?} (want tcp or udp)"
                ))
            }
        };
        // An IPv6 address has colons of its own, so it comes in brackets.
        let (addr, ports) = if let Some(r) = rest.strip_prefix('[') {
            let (a, ports) = r.split_once("]:").ok_or_else(bad)?;
            let a = a
                .parse::<std::net::Ipv6Addr>()
                .map_err(|_| format!("hostfwd={s:?}: bad host address {a:?} (IPv6 in brackets)"))?;
            (Some(std::net::IpAddr::V6(a)), ports)
        } else {
            match rest.split(':').count() {
                2 => (None, rest),
                3 => {
                    let (a, ports) = rest.split_once(':').ok_or_else(bad)?;
                    let a = a.parse::<std::net::Ipv4Addr>().map_err(|_| {
                        format!(
                            "hostfwd={s:?}: bad host address {a:?} (an IPv4 address, or an \
                             IPv6 one in brackets)"
                        )
                    })?;
                    (Some(std::net::IpAddr::V4(a)), ports)
                }
                _ => return Err(bad()),
            }
        };
        let (host, guest) = ports.split_once(':').ok_or_else(bad)?;
        let port = |which: &str, p: &str| match p.parse::<u32>() {
            Ok(n @ 1..=65535) if !p.starts_with('+') => Ok(n as u16),
            _ => Err(format!(
                "hostfwd={s:?}: bad {which} port {p:?} (want 1 to 65535)"
            )),
        };
        Ok(HostFwd {
            proto,
            addr,
            host_port: port("host", host)?,
            guest_port: port("guest", guest)?,
        })
    }
}

/// `--net tap=NAME|passt[,mac=MAC][,hostfwd=...]...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetSpec {
    pub backend: NetBackend,
    pub mac: Option<Mac>,
    /// Ports forwarded from the host to the guest (passt only).
    pub hostfwd: Vec<HostFwd>,
}

impl std::str::FromStr for NetSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<NetSpec, String> {
        let mut backend = None;
        let mut mac = None;
        let mut hostfwd: Vec<HostFwd> = Vec::new();
        for part in s.split(',') {
            match part.split_once('=') {
                Some(("tap", n)) if !n.is_empty() && n.len() < 16 => {
                    backend = Some(NetBackend::Tap(n.to_string()))
                }
                Some(("tap", n)) => return Err(format!("bad TAP interface name {n:?}")),
                None if part == "passt" => backend = Some(NetBackend::Passt),
                Some(("mac", m)) => mac = Some(m.parse()?),
                Some(("hostfwd", f)) => hostfwd.push(f.parse()?),
                _ => {
                    return Err(format!(
                        "unknown net option {part:?} (want tap=NAME|passt[,mac=MAC][,{HOSTFWD_SYNTAX}]...)"
                    ))
                }
            }
        }
        let backend = backend.ok_or("missing tap=NAME or passt")?;
        if let (NetBackend::Tap(_), Some(f)) = (&backend, hostfwd.first()) {
            return Err(format!(
                "{f}: port forwarding is not supported for tap= devices, only for passt \
                 (forward on the host, e.g. with nftables)"
            ));
        }
        let spec = NetSpec {
            backend,
            mac,
            hostfwd,
        };
        check_host_ports(std::slice::from_ref(&spec))?;
        Ok(spec)
    }
}

/// Each host port (per protocol) is forwarded once across all devices: passt takes a port
/// once whatever the address, and two passt processes cannot both bind it.
pub fn check_host_ports(nets: &[NetSpec]) -> Result<(), String> {
    let mut seen: Vec<&HostFwd> = Vec::new();
    for f in nets.iter().flat_map(|n| &n.hostfwd) {
        if let Some(g) = seen
            .iter()
            .find(|g| g.proto == f.proto && g.host_port == f.host_port)
        {
            return Err(format!(
                "host port {} {} is forwarded twice ({g} and {f})",
                f.proto, f.host_port
            ));
        }
        seen.push(f);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
