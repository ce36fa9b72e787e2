//! virtio-net driven through its queues the way a guest driver does, with a passt back end on
//! an in-process socket pair (so what reaches the back end, and what the back end sends, is
//! seen directly): frames both ways, and malformed descriptor chains on both queues. Guest
//! RAM sits inside a fenced host mapping, so a device access outside guest RAM would show.

use super::*;
use crate::devices::virtio::memory::{Fence, GuestMem};
use crate::devices::virtio::tests::{Harness, RAM, RAM_SIZE};
use crate::devices::virtio::{
    reg, F_VERSION_1, INT_CONFIG, INT_VRING, STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_DRIVER_OK,
    STATUS_FEATURES_OK,
};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};
use vm_memory::{Address, Bytes, GuestAddress};

const RX: usize = 0;
const TX: usize = 1;
const QSIZE: u16 = 16;
/// Descriptor table, available ring and used ring of each queue.
const RINGS: [[u64; 3]; 2] = [
    [RAM + 0x1000, RAM + 0x2000, RAM + 0x3000],
    [RAM + 0x4000, RAM + 0x5000, RAM + 0x6000],
];
/// Guest buffers live from here to the end of RAM.
const BUF: u64 = RAM + 0x10000;
const RAM_END: u64 = RAM + RAM_SIZE as u64;
/// Guest buffers hold this until the device writes them.
const UNTOUCHED: u8 = 0x3c;

/// A running device, the far end of its back end's socket, and a driver's ring state.
struct Rig {
    h: Harness,
    net: Arc<Net>,
    fence: Arc<Fence>,
    /// passt's side: frames the device sent come out here, frames written here reach it.
    peer: UnixStream,
    avail: [u16; 2],
}

impl Rig {
    fn new() -> Rig {
        let (ours, peer) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let backend: Box<dyn Backend> = Box::new(passt::Passt::from_stream(ours));
        let net = Arc::new(Net {
            mac: default_mac(0),
            backend: Arc::new(std::sync::Mutex::new(Some(backend))),
            drops: Arc::default(),
        });
        let (mem, fence) = GuestMem::fenced(RAM, RAM_SIZE, 64 << 10);
        mem.write_slice(
            &vec![UNTOUCHED; (RAM_END - BUF) as usize],
            GuestAddress(BUF),
        )
        .unwrap();
        let h = Harness::with_mem(net.clone(), mem);
        assert_ne!(h.negotiate(F_VERSION_1 | F_MAC) & STATUS_FEATURES_OK, 0);
        for (i, [desc, avail, used]) in RINGS.iter().enumerate() {
            h.setup_queue(i as u32, QSIZE as u32, *desc, *avail, *used);
        }
        h.w(
            reg::STATUS,
            STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK,
        );
        assert!(!h.needs_reset());
        Rig {
            h,
            net,
            fence,
            peer,
            avail: [0; 2],
        }
    }

    /// Write descriptor `i` of queue `q`.
    fn desc(&self, q: usize, i: u16, addr: u64, len: u32, write: bool, next: Option<u16>) {
        let flags = next.map_or(0u16, |_| 1) | if write { 2 } else { 0 };
        let a = GuestAddress(RINGS[q][0] + 16 * i as u64);
        let m = &self.h.mem;
        m.write_obj(addr, a).unwrap();
        m.write_obj(len, a.unchecked_add(8)).unwrap();
        m.write_obj(flags, a.unchecked_add(12)).unwrap();
        m.write_obj(next.unwrap_or(0), a.unchecked_add(14)).unwrap();
    }

    /// Make chain `head` of queue `q` available and notify the queue.
    fn submit(&mut self, q: usize, head: u16) {
        let avail = RINGS[q][1];
        let slot = self.avail[q] % QSIZE;
        let m = &self.h.mem;
        m.write_obj(head, GuestAddress(avail + 4 + 2 * slot as u64))
            .unwrap();
        self.avail[q] = self.avail[q].wrapping_add(1);
        m.write_obj(self.avail[q], GuestAddress(avail + 2)).unwrap();
        self.h.w(reg::QUEUE_NOTIFY, q as u32);
    }

    fn used_idx(&self, q: usize) -> u16 {
        self.h.mem.read_obj(GuestAddress(RINGS[q][2] + 2)).unwrap()
    }

    /// Used element `i` of queue `q`: (id, len).
    fn used(&self, q: usize, i: u16) -> (u32, u32) {
        let a = RINGS[q][2] + 4 + 8 * (i % QSIZE) as u64;
        let m = &self.h.mem;
        (
            m.read_obj(GuestAddress(a)).unwrap(),
            m.read_obj(GuestAddress(a + 4)).unwrap(),
        )
    }

    fn wait(&self, what: &str, cond: impl Fn(&Rig) -> bool) {
        let t0 = Instant::now();
        while !cond(self) {
            assert!(t0.elapsed() < Duration::from_secs(5), "timed out: {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// The guest's buffer area (everything after the rings).
    fn guest_buffers(&self) -> Vec<u8> {
        let mut b = vec![0u8; (RAM_END - BUF) as usize];
        self.h.mem.read_slice(&mut b, GuestAddress(BUF)).unwrap();
        b
    }

    /// The back end receives `frame` from its peer (as passt would send it).
    fn inject(&mut self, frame: &[u8]) {
        self.peer
            .write_all(&(frame.len() as u32).to_be_bytes())
            .unwrap();
        self.peer.write_all(frame).unwrap();
    }

    /// The next frame the device sent to the back end.
    fn sent(&mut self) -> Vec<u8> {
        let mut len = [0u8; 4];
        self.peer
            .read_exact(&mut len)
            .expect("a frame from the device");
        let mut f = vec![0u8; u32::from_be_bytes(len) as usize];
        self.peer.read_exact(&mut f).unwrap();
        f
    }

    /// Put `f` behind a virtio-net header in guest memory at `gpa` (a frame to transmit).
    fn put_frame(&self, gpa: u64, f: &[u8]) {
        self.h
            .mem
            .write_slice(&with_header(f), GuestAddress(gpa))
            .unwrap();
    }

    /// Nothing (more) reached the back end.
    fn nothing_sent(&self) -> bool {
        self.peer.set_nonblocking(true).unwrap();
        let r = (&self.peer).read(&mut [0u8; 1]);
        self.peer.set_nonblocking(false).unwrap();
        matches!(r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    fn drops(&self) -> (u64, u64) {
        let d = &self.net.drops;
        (d.tx.load(Ordering::Relaxed), d.rx.load(Ordering::Relaxed))
    }

    /// Reset the device. Its I/O thread must have ended normally (a panic would not have
    /// handed the back end back), and the host memory around guest RAM must be untouched.
    fn finish(self) {
        self.h.w(reg::STATUS, 0);
        assert!(!self.h.needs_reset());
        assert!(
            self.net.backend.lock().unwrap().is_some(),
            "the I/O thread did not hand the back end back (it panicked)"
        );
        assert!(
            self.fence.intact(),
            "host memory next to guest RAM was written"
        );
    }
}

/// An Ethernet frame of `len` bytes.
fn frame(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
        .collect()
}

/// `frame` behind a zeroed virtio-net header, as a driver queues it for transmission.
fn with_header(frame: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; HDR_LEN];
    v.extend_from_slice(frame);
    v
}

/// Guest addresses no buffer may use: past the end of RAM (straddling it), above 4 GiB where
/// 32-bit truncation would alias RAM, wrapping around, below RAM, and the MMIO window.
const OUTSIDE_RAM: [u64; 5] = [
    RAM_END - 8,
    RAM + (1 << 32),
    u64::MAX - 15,
    0x1000,
    0x1000_1000,
];

#[test]
fn frames_move_both_ways() {
    let mut r = Rig::new();
    // Transmit: header and frame split over two descriptors; the back end gets the frame.
    let f = frame(60, 1);
    let out = with_header(&f);
    r.h.mem.write_slice(&out, GuestAddress(BUF)).unwrap();
    r.desc(TX, 0, BUF, 20, false, Some(1));
    r.desc(TX, 1, BUF + 20, out.len() as u32 - 20, false, None);
    r.submit(TX, 0);
    assert_eq!(r.sent(), f);
    r.wait("transmit completed", |r| r.used_idx(TX) == 1);
    assert_eq!(r.used(TX, 0), (0, 0));
    // Receive: the header (num_buffers = 1) and the frame land in the guest's buffer.
    let g = frame(1514, 2);
    r.desc(RX, 0, BUF + 0x1000, 2048, true, None);
    r.submit(RX, 0);
    r.inject(&g);
    r.wait("receive completed", |r| r.used_idx(RX) == 1);
    assert_eq!(r.used(RX, 0), (0, (HDR_LEN + g.len()) as u32));
    let mut got = vec![0u8; HDR_LEN + g.len()];
    r.h.mem
        .read_slice(&mut got, GuestAddress(BUF + 0x1000))
        .unwrap();
    let mut hdr = [0u8; HDR_LEN];
    hdr[10] = 1;
    assert_eq!(got[..HDR_LEN], hdr);
    assert_eq!(got[HDR_LEN..], g[..]);
    assert_ne!(r.h.r(reg::INTERRUPT_STATUS) & INT_VRING, 0);
    assert!(!r.h.needs_reset());
    assert_eq!(r.drops(), (0, 0));
    r.finish();
}

/// Queue on `q` the chain `build` writes (head 0), with a frame waiting in the back end for
/// the receive queue. Expect what the spec asks of a device that cannot use a chain:
/// DEVICE_NEEDS_RESET with a configuration interrupt, the chain not used, and no effect:
/// no guest buffer written, no frame to the back end, no host memory touched, no panic.
fn expect_broken(q: usize, build: impl Fn(&Rig)) {
    let mut r = Rig::new();
    if q == RX {
        r.inject(&frame(60, 3));
    } else {
        r.put_frame(BUF, &frame(60, 3));
    }
    let before = r.guest_buffers();
    build(&r);
    r.submit(q, 0);
    r.wait("needs reset", |r| r.h.needs_reset());
    assert_eq!(r.used_idx(q), 0, "a broken chain was used");
    assert_ne!(r.h.r(reg::INTERRUPT_STATUS) & INT_CONFIG, 0);
    assert!(r.guest_buffers() == before, "guest buffers were written");
    assert!(r.nothing_sent(), "a frame reached the back end");
    assert_eq!(r.drops(), (0, 0));
    r.finish();
}

#[test]
fn descriptor_loops_need_reset() {
    for q in [RX, TX] {
        expect_broken(q, |r| {
            r.desc(q, 0, BUF, 40, q == RX, Some(1));
            r.desc(q, 1, BUF + 40, 40, q == RX, Some(0));
        });
        expect_broken(q, |r| r.desc(q, 0, BUF, 80, q == RX, Some(0)));
    }
}

#[test]
fn buffers_outside_guest_ram_need_reset() {
    for q in [RX, TX] {
        for addr in OUTSIDE_RAM {
            // Alone, and after a good buffer, which must not be touched either.
            expect_broken(q, |r| r.desc(q, 0, addr, 80, q == RX, None));
            expect_broken(q, |r| {
                r.desc(q, 0, BUF, HDR_LEN as u32, q == RX, Some(1));
                r.desc(q, 1, addr, 80, q == RX, None);
            });
        }
    }
}

#[test]
fn huge_lengths_need_reset() {
    for q in [RX, TX] {
        expect_broken(q, |r| r.desc(q, 0, BUF, u32::MAX, q == RX, None));
        // More than all of guest RAM, after a good buffer.
        expect_broken(q, |r| {
            r.desc(q, 0, BUF, HDR_LEN as u32, q == RX, Some(1));
            r.desc(q, 1, BUF + 0x100, RAM_SIZE as u32, q == RX, None);
        });
    }
}

#[test]
fn transmit_buffers_too_short_for_a_frame_are_dropped() {
    let mut r = Rig::new();
    let f = frame(60, 4);
    r.put_frame(BUF, &f);
    // Less than a virtio-net header; a header and less than an Ethernet header.
    r.desc(TX, 0, BUF, HDR_LEN as u32 - 1, false, None);
    r.desc(TX, 1, BUF, (HDR_LEN + 13) as u32, false, None);
    r.desc(TX, 2, BUF, (HDR_LEN + f.len()) as u32, false, None);
    for head in 0..3 {
        r.submit(TX, head);
    }
    r.wait("all three used", |r| r.used_idx(TX) == 3);
    // Each returned with length 0, as every transmit buffer is; only the real frame is sent.
    for i in 0..3 {
        assert_eq!(r.used(TX, i), (i as u32, 0));
    }
    assert_eq!(r.sent(), f);
    assert!(r.nothing_sent());
    assert_eq!(r.drops(), (2, 0));
    assert!(!r.h.needs_reset());
    r.finish();
}

#[test]
fn transmit_frames_over_the_maximum_are_dropped() {
    let mut r = Rig::new();
    let max = frame(MAX_FRAME, 5);
    let over = frame(MAX_FRAME + 1, 6);
    // The largest frame taken, then one byte more, each split over two descriptors.
    let big = BUF + 0x20000;
    r.put_frame(BUF, &max);
    r.put_frame(big, &over);
    let (a, b) = (HDR_LEN as u32, MAX_FRAME as u32);
    r.desc(TX, 0, big, a, false, Some(1));
    r.desc(TX, 1, big + a as u64, b + 1, false, None);
    r.desc(TX, 2, BUF, a, false, Some(3));
    r.desc(TX, 3, BUF + a as u64, b, false, None);
    r.submit(TX, 0);
    r.submit(TX, 2);
    r.wait("both used", |r| r.used_idx(TX) == 2);
    assert_eq!(r.used(TX, 0), (0, 0));
    assert_eq!(r.used(TX, 1), (2, 0));
    let sent = r.sent();
    assert_eq!(
        sent.len(),
        MAX_FRAME,
        "the oversized frame reached the back end"
    );
    assert!(sent == max);
    assert!(r.nothing_sent());
    assert_eq!(r.drops(), (1, 0));
    assert!(!r.h.needs_reset());
    r.finish();
}

#[test]
fn receive_buffers_too_short_drop_the_frame() {
    let mut r = Rig::new();
    // Too short for the header; room for the header but not the frame.
    r.desc(RX, 0, BUF, HDR_LEN as u32 - 1, true, None);
    r.desc(RX, 1, BUF + 0x100, HDR_LEN as u32, true, Some(2));
    r.desc(RX, 2, BUF + 0x200, 59, true, None);
    r.submit(RX, 0);
    r.submit(RX, 1);
    r.inject(&frame(60, 7));
    r.wait("first buffer used", |r| r.used_idx(RX) == 1);
    r.inject(&frame(60, 8));
    r.wait("second buffer used", |r| r.used_idx(RX) == 2);
    // Returned unwritten (length 0), the frames dropped rather than truncated.
    assert_eq!(r.used(RX, 0), (0, 0));
    assert_eq!(r.used(RX, 1), (1, 0));
    assert!(r.guest_buffers().iter().all(|&b| b == UNTOUCHED));
    assert_eq!(r.drops(), (0, 2));
    // The next frame goes to the next (big enough) buffer: the dropped ones are gone.
    let f = frame(60, 9);
    r.desc(RX, 3, BUF + 0x1000, 2048, true, None);
    r.submit(RX, 3);
    r.inject(&f);
    r.wait("third buffer used", |r| r.used_idx(RX) == 3);
    assert_eq!(r.used(RX, 2), (3, (HDR_LEN + f.len()) as u32));
    let mut got = vec![0u8; f.len()];
    r.h.mem
        .read_slice(&mut got, GuestAddress(BUF + 0x1000 + HDR_LEN as u64))
        .unwrap();
    assert_eq!(got, f);
    assert!(!r.h.needs_reset());
    r.finish();
}

#[test]
fn parse_net_specs() {
    assert_eq!(
        "tap=tap0".parse::<NetSpec>().unwrap(),
        NetSpec {
            backend: NetBackend::Tap("tap0".into()),
            mac: None,
            hostfwd: vec![],
        }
    );
    let n: NetSpec = "passt,mac=02:00:00:aa:bb:0c".parse().unwrap();
    assert_eq!(n.backend, NetBackend::Passt);
    assert_eq!(n.mac, Some(Mac([2, 0, 0, 0xaa, 0xbb, 0x0c])));
    assert_eq!(n.mac.unwrap().to_string(), "02:00:00:aa:bb:0c");
    assert!("mac=02:00:00:aa:bb:0c".parse::<NetSpec>().is_err());
    assert!("passt,mac=01:00:00:00:00:00".parse::<NetSpec>().is_err());
    assert!("passt,mac=zz:00:00:00:00:00".parse::<NetSpec>().is_err());
    assert_eq!(
        "passt,mac=00:00:00:00:00:00".parse::<NetSpec>(),
        Err("MAC address \"00:00:00:00:00:00\" is all zeros".to_string())
    );
    assert!("passt,mac=00:00:00:00:00:01".parse::<NetSpec>().is_ok());
    assert!("tap=".parse::<NetSpec>().is_err());
    assert!("vde=x".parse::<NetSpec>().is_err());
    assert_eq!(default_mac(0).to_string(), "52:54:00:12:34:56");
    assert_eq!(default_mac(1).to_string(), "52:54:00:12:34:57");
}

#[test]
fn parse_hostfwd() {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let n: NetSpec =
        "hostfwd=tcp:2222:22,passt,hostfwd=udp:127.0.0.1:5353:53,mac=02:00:00:00:00:01,\
                      hostfwd=tcp:[::1]:8080:80"
            .parse()
            .unwrap();
    assert_eq!(n.backend, NetBackend::Passt);
    assert_eq!(n.mac, Some(Mac([2, 0, 0, 0, 0, 1])));
    assert_eq!(
        n.hostfwd,
        [
            HostFwd {
                proto: Proto::Tcp,
                addr: None,
                host_port: 2222,
                guest_port: 22
            },
            HostFwd {
                proto: Proto::Udp,
                addr: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                host_port: 5353,
                guest_port: 53
            },
            HostFwd {
                proto: Proto::Tcp,
                addr: Some(IpAddr::V6(Ipv6Addr::LOCALHOST)),
                host_port: 8080,
                guest_port: 80
            },
        ]
    );
    // The default address is every IPv4 one; the text form round-trips.
    assert_eq!(n.hostfwd[0].bind_addr(), IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    for f in &n.hostfwd {
        let text = f.to_string();
        let back: HostFwd = text.strip_prefix("hostfwd=").unwrap().parse().unwrap();
        assert_eq!(&back, f, "{text}");
    }
    assert_eq!(n.hostfwd[2].to_string(), "hostfwd=tcp:[::1]:8080:80");
    // The same port on two protocols is two forwards.
    assert!("passt,hostfwd=tcp:53:53,hostfwd=udp:53:53"
        .parse::<NetSpec>()
        .is_ok());
    assert_eq!(
        "passt,hostfwd=tcp:1:65535"
            .parse::<NetSpec>()
            .unwrap()
            .hostfwd[0]
            .guest_port,
        65535
    );

    let err = |s: &str| s.parse::<NetSpec>().unwrap_err();
    assert_eq!(
        err("passt,hostfwd=sctp:1:2"),
        "hostfwd=\"sctp:1:2\": unknown protocol \"sctp\" (want tcp or udp)"
    );
    assert_eq!(
        err("passt,hostfwd=tcp:0:22"),
        "hostfwd=\"tcp:0:22\": bad host port \"0\" (want 1 to 65535)"
    );
    assert_eq!(
        err("passt,hostfwd=tcp:2222:65536"),
        "hostfwd=\"tcp:2222:65536\": bad guest port \"65536\" (want 1 to 65535)"
    );
    for bad_port in ["tcp:-1:22", "tcp:+22:22", "tcp::22", "tcp:22:", "tcp:x:22"] {
        assert!(
            err(&format!("passt,hostfwd={bad_port}")).contains("port"),
            "{bad_port}"
        );
    }
    assert_eq!(
        err("passt,hostfwd=tcp:1.2.3:2222:22"),
        "hostfwd=\"tcp:1.2.3:2222:22\": bad host address \"1.2.3\" (an IPv4 address, or an \
         IPv6 one in brackets)"
    );
    assert!(err("passt,hostfwd=tcp:[::1:2222:22").starts_with("bad hostfwd="));
    assert!(err("passt,hostfwd=tcp:[1.2.3.4]:2222:22").contains("bad host address"));
    assert!(err("passt,hostfwd=tcp:::1:2222:22").starts_with("bad hostfwd="));
    for malformed in [
        "passt,hostfwd=",
        "passt,hostfwd=tcp",
        "passt,hostfwd=tcp:22",
        "passt,hostfwd=tcp:a:b:c:d",
    ] {
        assert!(
            err(malformed).contains("want hostfwd=tcp|udp:[ADDR:]HOSTPORT:GUESTPORT"),
            "{malformed}: {}",
            err(malformed)
        );
    }
    assert_eq!(
        err("tap=tap0,hostfwd=tcp:2222:22"),
        "hostfwd=tcp:2222:22: port forwarding is not supported for tap= devices, only for \
         passt (forward on the host, e.g. with nftables)"
    );
    // passt takes a host port once per protocol, whatever the address.
    assert_eq!(
        err("passt,hostfwd=tcp:2222:22,hostfwd=tcp:127.0.0.1:2222:23"),
        "host port tcp 2222 is forwarded twice (hostfwd=tcp:2222:22 and \
         hostfwd=tcp:127.0.0.1:2222:23)"
    );
    let two: Vec<NetSpec> = ["passt,hostfwd=udp:7000:7", "passt,hostfwd=udp:7000:8"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    assert!(check_host_ports(&two)
        .unwrap_err()
        .starts_with("host port udp 7000 is forwarded twice"));
    assert!(check_host_ports(&two[..1]).is_ok());
}
