//! The guest's wall clock: the Debian guest finds the Goldfish RTC (as `/dev/rtc0`, like under
//! QEMU's `virt`), its clock starts at the host's time, and `hwclock -w` sets the RTC of that VM
//! only, never the host's clock.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use duvisor::guest_console::{self, ConsoleOptions};

const TIMEOUT: Duration = Duration::from_secs(300);
/// How far the guest's clock may be from the host's. The guest's clock starts from the RTC
/// (the kernel's hctosys, to the second plus half a second) and runs on the host's monotonic
/// clock from there.
const TOLERANCE: f64 = 2.0;
/// The same for the QEMU reference run.
const QEMU_TOLERANCE: f64 = 5.0;

/// What the guest prints before it touches the clock (shared with the QEMU run). Each value is
/// the first output of its line, so the host stamps when it arrives (see [`host_time_of`]).
///
/// The whole script is typed at once; `stty -echo` first, so that the terminal does not echo
/// what is typed ahead into the middle of the output (QEMU's console feeds input slowly, and on
/// a loaded host the echo of later lines split earlier results). The shell's own line editor
/// still shows each command as it reads it.
const QUERY: &str = r#"stty -echo
echo "GD""ATE=$(date +%s)"
echo "DE""V=$(ls /dev/rtc0)"
echo "RE""G=$(dmesg | grep -o 'goldfish_rtc [^ ]*: registered as rtc0')"
echo "HW""READ=$(hwclock -r -u)""#;

/// A static riscv64 Linux program: open `/dev/rtc0`, turn update interrupts on
/// (`RTC_UIE_ON`, which the kernel's RTC core implements with the device's alarm), and `read`
/// until one arrives; exits with 0, or 1/2/3 when the open/ioctl/read fails.
const UIE_PROGRAM: &str = r#"
    li a0, -100             # AT_FDCWD
    la a1, path
    li a2, 0                # O_RDONLY
    li a7, 56               # openat
    ecall
    li t0, 1
    bltz a0, exit_t0
    mv s0, a0
    li a1, 0x7003           # RTC_UIE_ON
    li a7, 29               # ioctl
    ecall
    li t0, 2
    bnez a0, exit_t0
    mv a0, s0
    la a1, buf
    li a2, 8
    li a7, 63               # read: blocks until the RTC interrupts
    ecall
    li t0, 3
    li t1, 8
    bne a0, t1, exit_t0
    mv a0, s0
    li a1, 0x7004           # RTC_UIE_OFF
    li a7, 29
    ecall
    li t0, 0
exit_t0:
    mv a0, t0
    li a7, 93               # exit
    ecall
path:
    .asciz "/dev/rtc0"
    .balign 8
buf:
    .dword 0
"#;

/// Where [`uie_elf`] loads the program.
const ELF_BASE: u64 = 0x10000;
const ELF_HEADERS: u64 = 64 + 56;

/// [`UIE_PROGRAM`] as a static ELF executable: one read-write-execute segment holding the
/// headers and the code.
fn uie_elf() -> Vec<u8> {
    let code = common::bare::asm::assemble_at(UIE_PROGRAM, ELF_BASE + ELF_HEADERS);
    let size = ELF_HEADERS + code.len() as u64;
    let mut e = Vec::new();
    e.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0"); // 64-bit LE, SysV
    e.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    e.extend_from_slice(&243u16.to_le_bytes()); // EM_RISCV
    e.extend_from_slice(&1u32.to_le_bytes()); // EV_CURRENT
    e.extend_from_slice(&(ELF_BASE + ELF_HEADERS).to_le_bytes()); // e_entry
    e.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
    e.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    e.extend_from_slice(&5u32.to_le_bytes()); // e_flags: RVC, double-float ABI
    for v in [64u16, 56, 1, 64, 0, 0] {
        e.extend_from_slice(&v.to_le_bytes()); // ehsize, phentsize, phnum, shentsize, shnum, shstrndx
    }
    e.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    e.extend_from_slice(&7u32.to_le_bytes()); // PF_R | PF_W | PF_X
    for v in [0, ELF_BASE, ELF_BASE, size, size, 0x1000u64] {
        e.extend_from_slice(&v.to_le_bytes()); // offset, vaddr, paddr, filesz, memsz, align
    }
    assert_eq!(e.len() as u64, ELF_HEADERS);
    e.extend_from_slice(&code);
    e
}

/// Types the program into the guest and runs it (with a time limit: without the RTC's interrupt
/// the read would block for ever); prints UIE (its exit status) and RTCIRQ (the RTC's
/// interrupt count).
fn uie_script() -> String {
    let b64 = base64(&uie_elf());
    format!(
        "echo {b64} | base64 -d > /tmp/uie && chmod +x /tmp/uie\n\
         echo \"UI\"\"E=$(timeout 20 /tmp/uie; echo $?)\"\n\
         echo \"RTC\"\"IRQ=$(grep 101000.rtc /proc/interrupts | awk '{{print $2}}')\""
    )
}

/// Standard base64 with padding (what busybox `base64 -d` reads).
fn base64(data: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Then: set the system clock, write it to the RTC, and read the RTC back.
const SET: &str = r#"date -u -s "2030-01-02 03:04:05" >/dev/null
hwclock -w -u
echo "HW""SET=$(hwclock -r -u)"
echo "SY""S=$(date -u +%s)"
echo "DO""NE=1"
poweroff -f"#;

/// 2030-01-02 03:04:05 UTC.
const SET_TO: i64 = 1_893_553_445;

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Seconds since the epoch of a `date`/`hwclock` time like `Wed Jan  2 03:04:05 2030` (UTC),
/// followed by anything.
fn parse_ctime(s: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let f: Vec<&str> = s.split_whitespace().collect();
    let month = MONTHS.iter().position(|m| Some(m) == f.get(1))? as i64 + 1;
    let day: i64 = f.get(2)?.parse().ok()?;
    let hms: Vec<i64> = f
        .get(3)?
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let year: i64 = f.get(4)?.parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hms.first()? * 3600 + hms.get(1)? * 60 + hms.get(2)?)
}

/// A guest run with the host's wall time of its start and of chosen outputs.
struct TimedRun {
    run: Run,
    /// Host wall time (seconds since the epoch) when the run started.
    started: f64,
}

impl TimedRun {
    fn start(cmd: std::process::Command, script: &str, tags: &[&str]) -> TimedRun {
        let mut opts = ConsoleOptions::new(script, TIMEOUT, guest_fetch::READY_MARKERS);
        for t in tags {
            opts = opts.watch(&format!("{t}="));
        }
        // Sampled just before the spawn; the run's time stamps count from just after.
        let started = now_secs();
        let run = guest_console::run_console(cmd, &opts).expect("spawning the VM");
        TimedRun { run, started }
    }

    /// Host wall time when the guest's `TAG=` first arrived: the guest's value was taken
    /// before that, by at most the time it took to print it and the host to read it.
    fn host_time_of(&self, tag: &str) -> f64 {
        let at = self
            .run
            .seen_at(&format!("{tag}="))
            .unwrap_or_else(|| panic!("no {tag}= seen:\n{}", self.run.output));
        self.started + at.as_secs_f64()
    }

    /// Asserts a guest time in whole seconds (truncated, so the guest's clock was in
    /// `[value, value + 1)`) was within `tolerance` seconds of the host's clock when it arrived.
    fn assert_near_host(&self, tag: &str, value: i64, tolerance: f64) {
        let host = self.host_time_of(tag);
        let (lo, hi) = (value as f64, value as f64 + 1.0);
        assert!(
            hi >= host - tolerance && lo <= host + tolerance,
            "{tag}: guest {value} vs host {host:.3} (more than {tolerance} s apart)\n{}",
            self.run.output
        );
        eprintln!("{tag}: guest {value}, host {host:.3}");
    }
}

#[test]
fn guest_clock_follows_the_host_and_hwclock_sets_only_the_vm() {
    let g = guest();
    let wall0 = now_secs();
    let mono0 = Instant::now();

    let ours = TimedRun::start(
        duvisor_cmd(&g, 1, &[]),
        &format!("{QUERY}\n{}\n{SET}", uie_script()),
        &["GDATE", "HWREAD"],
    );
    let r = &ours.run;
    assert_eq!(
        r.status,
        Some(0),
        "duvisor did not power off cleanly.\n--- console ---\n{}\n--- stderr ---\n{}",
        r.output,
        r.stderr
    );
    // The guest's clock is the host's, not 1970.
    let gdate: i64 = r.expect_value("GDATE").parse().expect("date +%s");
    ours.assert_near_host("GDATE", gdate, TOLERANCE);
    assert_eq!(r.expect_value("DEV"), "/dev/rtc0");
    let hwread = r.expect_value("HWREAD");
    let hw = parse_ctime(&hwread).unwrap_or_else(|| panic!("hwclock -r printed {hwread:?}"));
    ours.assert_near_host("HWREAD", hw, TOLERANCE);
    // hwclock -w wrote the guest's new time to its RTC; reading it back shows it (a little
    // later: allow for a slow host).
    let hwset = r.expect_value("HWSET");
    let set = parse_ctime(&hwset).unwrap_or_else(|| panic!("hwclock -r printed {hwset:?}"));
    assert!(
        (SET_TO..SET_TO + 60).contains(&set),
        "after hwclock -w the RTC reads {hwset:?}"
    );
    // The alarm reaches the guest: an update interrupt (the kernel's RTC core arms the alarm
    // for the next second) woke the program's read, through PLIC source 11.
    assert_eq!(r.expect_value("UIE"), "0", "{}", r.output);
    let irqs: u64 = r.expect_value("RTCIRQ").parse().expect("interrupt count");
    assert!(irqs >= 1, "no RTC interrupt:\n{}", r.output);
    let sys: i64 = r.expect_value("SYS").parse().unwrap();
    assert!((SET_TO..SET_TO + 60).contains(&sys), "date reads {sys}");

    // The host's clock went on as before: its wall time advanced as its monotonic clock did,
    // and it is not in 2030.
    let wall_moved = now_secs() - wall0;
    let mono_moved = mono0.elapsed().as_secs_f64();
    assert!(
        (wall_moved - mono_moved).abs() < 1.0,
        "host wall clock moved {wall_moved:.3} s in {mono_moved:.3} s"
    );
    assert!(now_secs() < SET_TO as f64 - 86_400.0);

    // QEMU's virt has the same device: its guest sees the same registration and clock.
    let qemu = TimedRun::start(
        qemu_cmd(&g, 1),
        &format!(
            "{QUERY}\n{}\necho \"DO\"\"NE=1\"\npoweroff -f",
            uie_script()
        ),
        &["GDATE", "HWREAD"],
    );
    assert!(
        qemu.run.value("DONE").is_some(),
        "QEMU run did not finish:\n{}",
        qemu.run.output
    );
    for tag in ["DEV", "REG", "UIE"] {
        assert_eq!(
            r.value(tag),
            qemu.run.value(tag),
            "{tag} differs between duvisor and QEMU"
        );
    }
    assert_eq!(
        r.expect_value("REG"),
        "goldfish_rtc 101000.rtc: registered as rtc0"
    );
    eprintln!(
        "RTC interrupts: duvisor {irqs}, QEMU {}",
        qemu.run.expect_value("RTCIRQ")
    );
    let qdate: i64 = qemu.run.expect_value("GDATE").parse().unwrap();
    // QEMU is the reference here, not under test: its console is slower to reach us on a
    // loaded host, so it gets more slack.
    qemu.assert_near_host("GDATE", qdate, QEMU_TOLERANCE);
}

#[test]
fn ctime_strings_parse() {
    assert_eq!(
        parse_ctime("Wed Jan  2 03:04:05 2030  0.000000 seconds"),
        Some(SET_TO)
    );
    assert_eq!(parse_ctime("Thu Jan  1 00:00:00 1970"), Some(0));
    assert_eq!(parse_ctime("Mon Dec  7 21:35:22 2026"), Some(1_796_679_322));
    assert_eq!(parse_ctime("Tue Feb 29 12:00:00 2028"), Some(1_835_438_400));
    assert_eq!(parse_ctime("garbage"), None);
}

#[test]
fn base64_encodes() {
    assert_eq!(base64(b""), "");
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foo"), "Zm9v");
    assert_eq!(base64(b"foob"), "Zm9vYg==");
    assert_eq!(base64(&[0xff, 0xfe, 0x7f]), "//5/");
}
