//! The benchmark rows: what each boots, what it types into the guest, and what it times.
//!
//! Workload rows print a start and an end marker (`BSTART=1`, `BEND=1`); the harness times
//! the host wall clock between seeing them on the console (guest clocks run at different
//! speeds under emulation, so the guest's own uptime is no measure). Boot rows type only
//! `poweroff -f` and time the whole process, spawn to exit. Commands are written so their
//! echo never holds a tag literally (`"BS""TART=1"`).
//!
//! I/O rows move a known amount of data, so their time also gives a throughput. The network
//! rows talk to a peer of the harness through passt on both sides (see `net.rs`): the guest
//! is 10.0.2.15/24, and the gateway 10.0.2.2 is passt, which maps it to the host's loopback.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RowId {
    Boot1,
    Boot4,
    Cpu,
    Fork,
    Smp,
    Blk,
    BlkRead,
    BlkWrite,
    TcpUp,
    TcpDown,
}

pub const ALL_ROWS: [RowId; 10] = [
    RowId::Boot1,
    RowId::Boot4,
    RowId::Cpu,
    RowId::Fork,
    RowId::Smp,
    RowId::Blk,
    RowId::BlkRead,
    RowId::BlkWrite,
    RowId::TcpUp,
    RowId::TcpDown,
];

impl RowId {
    pub fn key(self) -> &'static str {
        match self {
            RowId::Boot1 => "boot1",
            RowId::Boot4 => "boot4",
            RowId::Cpu => "cpu",
            RowId::Fork => "fork",
            RowId::Smp => "smp",
            RowId::Blk => "blk",
            RowId::BlkRead => "blkrd",
            RowId::BlkWrite => "blkwr",
            RowId::TcpUp => "tcpup",
            RowId::TcpDown => "tcpdown",
        }
    }
}

impl fmt::Display for RowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

impl FromStr for RowId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ALL_ROWS
            .into_iter()
            .find(|r| r.key() == s.trim())
            .ok_or_else(|| {
                format!(
                    "unknown row {s:?} (rows: {})",
                    ALL_ROWS.map(RowId::key).join(",")
                )
            })
    }
}

/// How a row is timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    /// Process spawn to process exit.
    Process,
    /// First `BSTART=` to first `BEND=` on the console.
    Markers,
}

pub const START: &str = "BSTART=";
pub const END: &str = "BEND=";

/// TCP port of the harness's peer on the host's loopback (in the benchmark's own network
/// namespace, so it cannot clash with anything).
pub const NET_PORT: u16 = 5201;

/// Brings the guest's eth0 up with the address passt copies from the host for it.
const NET_UP: &str =
    "ip link set eth0 up; ip addr add 10.0.2.15/24 dev eth0; ip route add default via 10.0.2.2\n";

/// Which way a network row moves its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetDir {
    /// Guest to host: the peer counts what arrives.
    Up,
    /// Host to guest: the peer sends a fixed amount and closes.
    Down,
}

/// Workload sizes (`--quick` shrinks them about tenfold).
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Iterations of the shell arithmetic loop.
    pub arith: u32,
    /// `seq 1 N` is the data hashed and compressed by the CPU row.
    pub seq: u32,
    /// `seq 1 N` per job in the multi-process row.
    pub smp_seq: u32,
    /// `/bin/true` runs in the fork row.
    pub forks: u32,
    /// `cat /proc/self/stat` runs, and as many builtin reads of it, in the fork row.
    pub stat_reads: u32,
    /// Size of the disk image read by the virtio-blk row, MiB.
    pub disk_mib: u32,
    /// Data read and written with O_DIRECT by the virtio-blk throughput rows, MiB.
    pub direct_mib: u32,
    /// Data moved by each virtio-net row, MiB.
    pub net_mib: u32,
}

impl Sizes {
    pub fn full() -> Self {
        Sizes {
            arith: 20_000,
            seq: 300_000,
            smp_seq: 150_000,
            forks: 300,
            stat_reads: 100,
            disk_mib: 64,
            direct_mib: 128,
            net_mib: 64,
        }
    }

    pub fn quick() -> Self {
        Sizes {
            arith: 2_000,
            seq: 30_000,
            smp_seq: 15_000,
            forks: 30,
            stat_reads: 10,
            disk_mib: 8,
            direct_mib: 16,
            net_mib: 8,
        }
    }
}

/// One benchmark row.
#[derive(Debug, Clone)]
pub struct Row {
    pub id: RowId,
    pub label: String,
    pub cpus: u32,
    pub timing: Timing,
    /// Typed after the ready marker; always ends with `poweroff -f`.
    pub script: String,
    /// Tags whose values the guest prints, compared between duvisor and QEMU.
    pub check_tags: Vec<&'static str>,
    /// Needs a disk image of this many MiB attached.
    pub disk_mib: Option<u32>,
    /// Needs a network device and the harness's peer.
    pub net: Option<NetDir>,
    /// Bytes the timed part moves (for a throughput next to the time).
    pub bytes: Option<u64>,
}

pub fn row(id: RowId, z: &Sizes) -> Row {
    let mib = |n: u32| Some(u64::from(n) << 20);
    let (mut disk_mib, mut net, mut bytes) = (None, None, None);
    let (label, cpus, timing, body, check_tags): (String, u32, Timing, String, Vec<_>) = match id
    {
        RowId::Boot1 => (
            "boot to shell + poweroff, 1 vCPU".into(),
            1,
            Timing::Process,
            String::new(),
            vec![],
        ),
        RowId::Boot4 => (
            "boot to shell + poweroff, 4 vCPUs".into(),
            4,
            Timing::Process,
            String::new(),
            vec![],
        ),
        RowId::Cpu => (
            format!("CPU: shell loop ×{}, sha256sum + gzip -9 of seq 1 {}", z.arith, z.seq),
            1,
            Timing::Markers,
            format!(
                "seq 1 {seq} > /tmp/d; sync\n\
                 echo \"BS\"\"TART=1\"; i=0; s=0; while [ $i -lt {arith} ]; do s=$((s + i * i % 7)); i=$((i + 1)); done; \
                 h=$(sha256sum < /tmp/d | cut -c1-16); z=$(gzip -9 < /tmp/d | wc -c); echo \"BE\"\"ND=1\"\n\
                 echo \"AR\"\"ITH=$s\"; echo \"SH\"\"A=$h\"; echo \"GZ\"\"=$z\"\n",
                seq = z.seq,
                arith = z.arith
            ),
            vec!["ARITH", "SHA", "GZ"],
        ),
        RowId::Fork => (
            format!(
                "fork/exec + syscalls: {}× /bin/true, {}× cat + read /proc/self/stat",
                z.forks, z.stat_reads
            ),
            1,
            Timing::Markers,
            format!(
                "echo \"BS\"\"TART=1\"; p0=$(sed -n 's/^processes //p' /proc/stat); \
                 i=0; while [ $i -lt {forks} ]; do /bin/true; i=$((i + 1)); done; \
                 j=0; while [ $j -lt {reads} ]; do cat /proc/self/stat > /dev/null; read -r l < /proc/self/stat; j=$((j + 1)); done; \
                 p1=$(sed -n 's/^processes //p' /proc/stat); echo \"BE\"\"ND=1\"\n\
                 echo \"FO\"\"RKS=$((p1 - p0))\"\n",
                forks = z.forks,
                reads = z.stat_reads
            ),
            vec![],
        ),
        RowId::Smp => (
            format!("4 parallel sha256sum + gzip -9 jobs (seq 1 {}), 4 vCPUs", z.smp_seq),
            4,
            Timing::Markers,
            format!(
                "seq 1 {seq} > /tmp/d; sync\n\
                 echo \"BS\"\"TART=1\"; for k in 1 2 3 4; do (sha256sum < /tmp/d > /tmp/h$k; gzip -9 < /tmp/d | wc -c > /tmp/z$k) & done; wait; echo \"BE\"\"ND=1\"\n\
                 echo \"SM\"\"P=$(cat /tmp/h1 /tmp/h2 /tmp/h3 /tmp/h4 | sort -u | wc -l) $(cat /tmp/z1 /tmp/z2 /tmp/z3 /tmp/z4 | sort -u | wc -l) $(cut -c1-16 /tmp/h1)\"\n",
                seq = z.smp_seq
            ),
            vec!["SMP"],
        ),
        RowId::Blk => {
            disk_mib = Some(z.disk_mib);
            (
                format!("virtio-blk sequential read, {} MiB, dd bs=1M", z.disk_mib),
                1,
                Timing::Markers,
                "echo 3 > /proc/sys/vm/drop_caches\n\
                 echo \"BS\"\"TART=1\"; dd if=/dev/vda of=/dev/null bs=1M 2> /tmp/dd; echo \"BE\"\"ND=1\"\n\
                 echo \"BL\"\"K=$(cat /sys/block/vda/size 2>&1) $(tail -n 1 /tmp/dd)\"\n"
                    .to_string(),
                vec![],
            )
        }
        RowId::BlkRead => {
            disk_mib = Some(z.direct_mib);
            bytes = mib(z.direct_mib);
            (
                format!(
                    "virtio-blk sequential read, {} MiB, dd bs=1M iflag=direct",
                    z.direct_mib
                ),
                1,
                Timing::Markers,
                format!(
                    "echo \"BS\"\"TART=1\"; dd if=/dev/vda of=/dev/null bs=1M count={n} iflag=direct 2> /tmp/dd; echo \"BE\"\"ND=1\"\n\
                     echo \"D\"\"D=$(tail -n 1 /tmp/dd)\"\n",
                    n = z.direct_mib
                ),
                vec![],
            )
        }
        RowId::BlkWrite => {
            disk_mib = Some(z.direct_mib);
            bytes = mib(z.direct_mib);
            (
                format!(
                    "virtio-blk sequential write, {} MiB, dd bs=1M oflag=direct conv=fsync",
                    z.direct_mib
                ),
                1,
                Timing::Markers,
                format!(
                    "echo \"BS\"\"TART=1\"; dd if=/dev/zero of=/dev/vda bs=1M count={n} oflag=direct conv=fsync 2> /tmp/dd; echo \"BE\"\"ND=1\"\n\
                     echo \"D\"\"D=$(tail -n 1 /tmp/dd)\"\n",
                    n = z.direct_mib
                ),
                vec![],
            )
        }
        RowId::TcpUp => {
            net = Some(NetDir::Up);
            bytes = mib(z.net_mib);
            (
                format!("virtio-net TCP guest→host, {} MiB through nc (passt)", z.net_mib),
                1,
                Timing::Markers,
                // The peer greets the guest with one byte (see `net::GREETING`); nc prints it.
                format!(
                    "{NET_UP}dd if=/dev/zero of=/tmp/x bs=1M count={n} 2> /dev/null\n\
                     echo \"BS\"\"TART=1\"; nc 10.0.2.2 {NET_PORT} < /tmp/x > /dev/null; r=$?; echo \"BE\"\"ND=1\"; echo \"N\"\"ET=$r\"\n",
                    n = z.net_mib
                ),
                vec!["NET"],
            )
        }
        RowId::TcpDown => {
            net = Some(NetDir::Down);
            bytes = mib(z.net_mib);
            (
                format!("virtio-net TCP host→guest, {} MiB through nc (passt)", z.net_mib),
                1,
                Timing::Markers,
                // nc's input stays open (a FIFO nobody writes to): busybox nc half-closes the
                // connection at the end of its input, and bookworm's passt stops forwarding
                // to a guest that half-closed.
                format!(
                    "{NET_UP}mkfifo /tmp/hold; sleep 3600 > /tmp/hold &\n\
                     echo \"BS\"\"TART=1\"; nc 10.0.2.2 {NET_PORT} < /tmp/hold > /dev/null; r=$?; echo \"BE\"\"ND=1\"; echo \"N\"\"ET=$r\"; kill $!\n"
                ),
                vec!["NET"],
            )
        }
    };
    Row {
        id,
        label,
        cpus,
        timing,
        script: format!("{body}poweroff -f\n"),
        check_tags,
        disk_mib,
        net,
        bytes,
    }
}

/// Parses `boot1,cpu,...`.
pub fn parse_rows(s: &str) -> Result<Vec<RowId>, String> {
    let mut v = Vec::new();
    for part in s.split(',').filter(|p| !p.trim().is_empty()) {
        let r: RowId = part.parse()?;
        if !v.contains(&r) {
            v.push(r);
        }
    }
    if v.is_empty() {
        return Err("no rows given".into());
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_parse() {
        assert_eq!(
            parse_rows("boot1, cpu,boot1").unwrap(),
            vec![RowId::Boot1, RowId::Cpu]
        );
        assert!(parse_rows("boot1,nope").is_err());
        assert!(parse_rows("").is_err());
    }

    #[test]
    fn io_rows_say_what_they_need() {
        let z = Sizes::full();
        for id in [RowId::BlkRead, RowId::BlkWrite] {
            let r = row(id, &z);
            assert_eq!(r.disk_mib, Some(z.direct_mib));
            assert_eq!(r.bytes, Some(u64::from(z.direct_mib) << 20));
            assert!(r.script.contains("direct") && r.net.is_none());
        }
        assert!(row(RowId::BlkWrite, &z).script.contains("conv=fsync"));
        assert_eq!(row(RowId::TcpUp, &z).net, Some(NetDir::Up));
        assert_eq!(row(RowId::TcpDown, &z).net, Some(NetDir::Down));
        for id in [RowId::TcpUp, RowId::TcpDown] {
            let r = row(id, &z);
            assert_eq!(r.bytes, Some(u64::from(z.net_mib) << 20));
            assert!(r.script.contains(&format!("nc 10.0.2.2 {NET_PORT}")));
            assert!(r.disk_mib.is_none());
        }
        assert_eq!(row(RowId::Blk, &z).disk_mib, Some(z.disk_mib));
        assert!(row(RowId::Cpu, &z).bytes.is_none());
    }

    #[test]
    fn scripts_never_echo_their_tags() {
        for id in ALL_ROWS {
            let r = row(id, &Sizes::full());
            assert!(r.script.ends_with("poweroff -f\n"));
            let tags = r.check_tags.iter().map(|t| format!("{t}="));
            for tag in [START.to_string(), END.to_string()].into_iter().chain(tags) {
                assert!(
                    !r.script.contains(&tag),
                    "{id}: the script holds {tag} literally"
                );
            }
            if r.timing == Timing::Markers {
                assert!(r.script.contains("\"BS\"\"TART=1\""));
                assert!(r.script.contains("\"BE\"\"ND=1\""));
            }
        }
    }
}
