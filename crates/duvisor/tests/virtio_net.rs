//! virtio-net with the TAP back end in the real Debian guest: the guest configures eth0 with
//! its (configured) MAC, pings the host end of a TAP interface, and moves TCP data both ways
//! with matching checksums. Needs root (it creates the TAP interface), as the tests run here.

#[allow(unused_imports)] // common re-exports more than this test uses
mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use common::*;

fn sha256(data: &[u8]) -> String {
    let p = std::env::temp_dir().join(format!("duvisor-net-sha-{}", std::process::id()));
    std::fs::write(&p, data).unwrap();
    let o = Command::new("sha256sum").arg(&p).output().unwrap();
    let _ = std::fs::remove_file(&p);
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

/// A TAP interface with the host at 10.213.<n>.1/24, removed on drop.
struct TapIf(String);

impl Drop for TapIf {
    fn drop(&mut self) {
        ip(&["link", "del", &self.0]);
    }
}

#[test]
fn tap_ping_and_tcp_both_ways() {
    // Only root may create TAP interfaces.
    let uid = String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout).unwrap();
    assert_eq!(
        uid.trim(),
        "0",
        "this test creates a TAP interface and must run as root"
    );
    let n = std::process::id() % 200 + 20;
    let name = format!("dvt{n}");
    let tap = TapIf(name.clone());
    ip(&["link", "del", &name]);
    assert!(ip(&["tuntap", "add", "dev", &name, "mode", "tap"]));
    let host = format!("10.213.{n}.1");
    assert!(ip(&["addr", "add", &format!("{host}/24"), "dev", &name]));
    assert!(ip(&["link", "set", &name, "up"]));

    // Guest -> host on one port, host -> guest on the next.
    let up = TcpListener::bind((host.as_str(), 0)).unwrap();
    let down = TcpListener::bind((host.as_str(), 0)).unwrap();
    let (up_port, down_port) = (
        up.local_addr().unwrap().port(),
        down.local_addr().unwrap().port(),
    );
    let to_guest: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let want_down = sha256(&to_guest);
    let server = std::thread::spawn(move || {
        let (mut c, _) = up.accept().unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        // busybox nc exits when the peer closes, not at the end of its input.
        drop(c);
        let (mut c2, _) = down.accept().unwrap();
        c2.write_all(&to_guest).unwrap();
        drop(c2);
        got
    });

    let script = format!(
        r#"ip link set eth0 up; ip addr add 10.213.{n}.15/24 dev eth0
echo "MA""C=$(cat /sys/class/net/eth0/address)"
ping -c 2 -W 5 {host} >/dev/null; echo "PI""NG=$?"
head -c 2097152 /dev/urandom > /tmp/x
echo "U""P=$(sha256sum < /tmp/x | cut -d' ' -f1)"
nc {host} {up_port} < /tmp/x
echo "DO""WN=$(nc {host} {down_port} < /dev/null | sha256sum | cut -d' ' -f1)"
echo "DO""NE=1"
poweroff -f"#
    );
    let _one = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let g = guest();
    let cmd = duvisor_cmd(
        &g,
        1,
        &["--net", &format!("tap={name},mac=02:00:00:ab:cd:ef")],
    );
    let run = run_console(cmd, &script, Duration::from_secs(150));
    let v = |t: &str| run.expect_value(t);
    assert_eq!(v("DONE"), "1");
    assert_eq!(v("MAC"), "02:00:00:ab:cd:ef");
    assert_eq!(v("PING"), "0");
    let got = server.join().unwrap();
    assert_eq!(got.len(), 2 << 20);
    assert_eq!(sha256(&got), v("UP"));
    assert_eq!(v("DOWN"), want_down);
    drop(tap);
}

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn tap_that_cannot_be_opened_is_a_one_line_error() {
    // "lo" exists and is not a TAP device: TUNSETIFF refuses it.
    let g = guest();
    let o = duvisor_cmd(&g, 1, &["--net", "tap=lo"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1));
    let lines: Vec<_> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains("TAP lo cannot be opened"), "{err}");
    assert!(o.stdout.is_empty());
}
