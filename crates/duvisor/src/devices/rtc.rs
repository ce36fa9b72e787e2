//! The guest's wall clock: a Goldfish RTC (`google,goldfish-rtc`) at `0x0010_1000`, interrupt 11
//! on the PLIC, as on QEMU's `virt` machine. Linux drives it with `drivers/rtc/rtc-goldfish.c`
//! and registers it as `/dev/rtc0`; with `CONFIG_RTC_HCTOSYS` the kernel starts its clock from it.
//!
//! Registers (32 bits each; other widths and offsets read as zero and ignore writes):
//!
//! | offset | name | read | write |
//! | --- | --- | --- | --- |
//! | 0x00 | TIME_LOW | low word of the time; latches the high word | sets the low word of the time |
//! | 0x04 | TIME_HIGH | high word latched by the last TIME_LOW read | sets the high word of the time |
//! | 0x08 | ALARM_LOW | low word of the alarm | sets the low word and arms the alarm |
//! | 0x0c | ALARM_HIGH | high word of the alarm | sets the high word (arm with ALARM_LOW) |
//! | 0x10 | IRQ_ENABLED | bit 0 | bit 0: the alarm interrupt may reach the PLIC |
//! | 0x14 | CLEAR_ALARM | 0 | disarms the alarm |
//! | 0x18 | ALARM_STATUS | 1 while the alarm is armed | ignored |
//! | 0x1c | CLEAR_INTERRUPT | 0 | acknowledges a fired alarm (lowers the line) |
//!
//! Time is in nanoseconds since the Unix epoch. The guest's time is the host's `CLOCK_REALTIME`
//! plus a per-VM offset, zero at start: setting the time (Linux writes TIME_HIGH, then TIME_LOW)
//! changes only the offset, never the host's clock. An alarm is kept in guest time, so setting
//! the time while one is armed moves it along. Arming an alarm that is already due fires it at
//! once. A fired alarm is disarmed and leaves an interrupt pending; the line (level) is high
//! while one is pending and IRQ_ENABLED is set, until the guest writes CLEAR_INTERRUPT.
//!
//! An alarm thread, started with the device (before the seccomp sandbox is installed), waits on
//! a condition variable until the armed alarm is due; it needs only `futex` and `clock_gettime`
//! once running (its sandbox class, [`ThreadClass::Rtc`], entered at its first wake after
//! set-up) and ends when the device is quiesced or dropped. It re-reads the clock at least
//! every [`MAX_NAP`], so a step of the host's clock delays an alarm by at most that.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{IrqLine, MmioDevice};
use crate::sandbox::ThreadClass;

/// Guest-physical base of the RTC on the `virt` layout.
pub const RTC_BASE: u64 = 0x0010_1000;
/// Size of the RTC's MMIO window.
pub const RTC_SIZE: u64 = 0x1000;
/// The RTC's PLIC source.
pub const RTC_IRQ: u32 = 11;

const TIME_LOW: u64 = 0x00;
const TIME_HIGH: u64 = 0x04;
const ALARM_LOW: u64 = 0x08;
const ALARM_HIGH: u64 = 0x0c;
const IRQ_ENABLED: u64 = 0x10;
const CLEAR_ALARM: u64 = 0x14;
const ALARM_STATUS: u64 = 0x18;
const CLEAR_INTERRUPT: u64 = 0x1c;

/// Longest the alarm thread sleeps without looking at the clock while an alarm is armed.
pub const MAX_NAP: Duration = Duration::from_secs(1);

/// Why the RTC could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RtcError {
    #[error("goldfish RTC: starting its alarm thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// Everything the guest can observe of the RTC, as plain data (what a snapshot keeps; the host
/// clock is read afresh).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RtcState {
    /// Guest time minus host `CLOCK_REALTIME`, in nanoseconds, modulo 2^64 (guest time is
    /// `host.wrapping_add_signed(offset_ns)`).
    pub offset_ns: i64,
    /// What TIME_HIGH reads: the high word latched by the last TIME_LOW read.
    pub time_high: u32,
    /// The alarm time (guest nanoseconds since the epoch), as last written.
    pub alarm_ns: u64,
    /// The alarm is armed (ALARM_STATUS).
    pub alarm_armed: bool,
    /// IRQ_ENABLED bit 0.
    pub irq_enabled: bool,
    /// An alarm fired and the guest has not written CLEAR_INTERRUPT yet.
    pub irq_pending: bool,
}

impl RtcState {
    /// Guest time when the host's clock reads `host_ns`.
    fn guest_ns(&self, host_ns: u64) -> u64 {
        host_ns.wrapping_add_signed(self.offset_ns)
    }

    /// The interrupt line's level.
    fn level(&self) -> bool {
        self.irq_pending && self.irq_enabled
    }
}

/// Host `CLOCK_REALTIME` in nanoseconds since the epoch (0 before it; saturating after 2554).
fn host_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// `word` replaces the low (`high == false`) or high 32 bits of `v`.
fn deposit(v: u64, high: bool, word: u32) -> u64 {
    if high {
        (v & 0xffff_ffff) | u64::from(word) << 32
    } else {
        (v & !0xffff_ffff) | u64::from(word)
    }
}

struct Inner {
    regs: RtcState,
    /// The level last driven on the line.
    level: bool,
    /// The alarm thread must end.
    stop: bool,
}

/// What the MMIO side and the alarm thread share.
struct Shared {
    inner: Mutex<Inner>,
    /// Signalled when the alarm thread must look again (alarm or time changed, stop).
    changed: Condvar,
    line: Arc<dyn IrqLine>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drive the line from the state; only changes are driven, under the lock, so in order.
    fn update_line(&self, inner: &mut Inner) {
        let level = inner.regs.level();
        if level != inner.level {
            inner.level = level;
            self.line.set_level(level);
        }
    }

    /// The alarm went off: disarm it and make the interrupt pending.
    fn fire(&self, inner: &mut Inner) {
        inner.regs.alarm_armed = false;
        inner.regs.irq_pending = true;
        self.update_line(inner);
    }

    /// ALARM_LOW was written: fire now when due, else let the alarm thread wait for it.
    fn arm(&self, inner: &mut Inner) {
        if inner.regs.alarm_ns <= inner.regs.guest_ns(host_ns()) {
            self.fire(inner);
        } else {
            inner.regs.alarm_armed = true;
            self.changed.notify_all();
        }
    }

    fn read_reg(&self, offset: u64) -> u32 {
        let mut inner = self.lock();
        let r = &mut inner.regs;
        match offset {
            TIME_LOW => {
                let now = r.guest_ns(host_ns());
                r.time_high = (now >> 32) as u32;
                now as u32
            }
            TIME_HIGH => r.time_high,
            ALARM_LOW => r.alarm_ns as u32,
            ALARM_HIGH => (r.alarm_ns >> 32) as u32,
            IRQ_ENABLED => u32::from(r.irq_enabled),
            ALARM_STATUS => u32::from(r.alarm_armed),
            _ => 0,
        }
    }

    fn write_reg(&self, offset: u64, value: u32) {
        let mut inner = self.lock();
        match offset {
            TIME_LOW | TIME_HIGH => {
                let host = host_ns();
                let new = deposit(inner.regs.guest_ns(host), offset == TIME_HIGH, value);
                inner.regs.offset_ns = new.wrapping_sub(host) as i64;
                // An armed alarm is in guest time: it may be due now, or later than planned.
                self.changed.notify_all();
            }
            ALARM_LOW => {
                inner.regs.alarm_ns = deposit(inner.regs.alarm_ns, false, value);
                self.arm(&mut inner);
            }
            ALARM_HIGH => inner.regs.alarm_ns = deposit(inner.regs.alarm_ns, true, value),
            IRQ_ENABLED => {
                inner.regs.irq_enabled = value & 1 != 0;
                self.update_line(&mut inner);
            }
            CLEAR_ALARM => {
                inner.regs.alarm_armed = false;
                self.changed.notify_all();
            }
            CLEAR_INTERRUPT => {
                inner.regs.irq_pending = false;
                self.update_line(&mut inner);
            }
            _ => {}
        }
    }

    /// The alarm thread: fire the armed alarm when it is due, until told to stop.
    fn run_alarms(&self) {
        let mut inner = self.lock();
        while !inner.stop {
            // Started during set-up, before the sandbox: it narrows itself to its class at
            // its first wake after that (an alarm armed, or the VM's end).
            crate::sandbox::enter_or_exit(ThreadClass::Rtc);
            if !inner.regs.alarm_armed {
                inner = self.changed.wait(inner).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            let now = inner.regs.guest_ns(host_ns());
            if inner.regs.alarm_ns <= now {
                self.fire(&mut inner);
                continue;
            }
            let nap = Duration::from_nanos(inner.regs.alarm_ns - now).min(MAX_NAP);
            inner = self
                .changed
                .wait_timeout(inner, nap)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// The Goldfish RTC. Place it on the MMIO bus at [`RTC_BASE`] with size [`RTC_SIZE`].
pub struct Rtc {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Rtc {
    /// An RTC reading the host's time (offset 0) whose alarm interrupt drives `irq`; starts the
    /// alarm thread.
    pub fn new(irq: Arc<dyn IrqLine>) -> Result<Rtc, RtcError> {
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                regs: RtcState::default(),
                level: false,
                stop: false,
            }),
            changed: Condvar::new(),
            line: irq,
        });
        let for_thread = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("rtc".into())
            .spawn(move || for_thread.run_alarms())
            .map_err(RtcError::Thread)?;
        Ok(Rtc {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The device's state now.
    pub fn state(&self) -> RtcState {
        self.shared.lock().regs
    }

    /// The guest's time now, nanoseconds since the epoch.
    pub fn guest_time_ns(&self) -> u64 {
        self.shared.lock().regs.guest_ns(host_ns())
    }

    /// Stop the alarm thread and wait for it (idempotent). An alarm due later no longer fires.
    fn stop_thread(&self) {
        self.shared.lock().stop = true;
        self.shared.changed.notify_all();
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }
}

impl MmioDevice for Rtc {
    fn read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if data.len() == 4 && offset % 4 == 0 {
            data.copy_from_slice(&self.shared.read_reg(offset).to_le_bytes());
        }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        if let (Ok(bytes), 0) = (<[u8; 4]>::try_from(data), offset % 4) {
            self.shared.write_reg(offset, u32::from_le_bytes(bytes));
        }
    }

    fn quiesce(&self) {
        self.stop_thread();
    }
}

impl Drop for Rtc {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// Records every level driven on the line and lets a test wait for one.
    #[derive(Default)]
    struct RecLine {
        levels: Mutex<Vec<bool>>,
        cv: Condvar,
    }

    impl IrqLine for RecLine {
        fn set_level(&self, level: bool) {
            self.levels.lock().unwrap().push(level);
            self.cv.notify_all();
        }
    }

    impl RecLine {
        fn take(&self) -> Vec<bool> {
            std::mem::take(&mut *self.levels.lock().unwrap())
        }

        /// Waits (generously: the host may be loaded) until some level was driven, and takes them.
        fn wait_any(&self, limit: Duration) -> Vec<bool> {
            let end = Instant::now() + limit;
            let mut g = self.levels.lock().unwrap();
            while g.is_empty() {
                let left = end.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                g = self.cv.wait_timeout(g, left).unwrap().0;
            }
            std::mem::take(&mut *g)
        }
    }

    fn setup() -> (Rtc, Arc<RecLine>) {
        let line = Arc::new(RecLine::default());
        (Rtc::new(line.clone()).unwrap(), line)
    }

    fn rd(r: &Rtc, off: u64) -> u32 {
        let mut b = [0u8; 4];
        r.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    fn wr(r: &Rtc, off: u64, v: u32) {
        r.write(off, &v.to_le_bytes());
    }

    /// The time as Linux reads it: TIME_LOW, then the latched TIME_HIGH.
    fn read_time(r: &Rtc) -> u64 {
        let lo = rd(r, TIME_LOW);
        u64::from(rd(r, TIME_HIGH)) << 32 | u64::from(lo)
    }

    /// Sets the time as Linux does: TIME_HIGH, then TIME_LOW.
    fn set_time(r: &Rtc, ns: u64) {
        wr(r, TIME_HIGH, (ns >> 32) as u32);
        wr(r, TIME_LOW, ns as u32);
    }

    /// Arms the alarm as Linux does: ALARM_HIGH, then ALARM_LOW.
    fn set_alarm(r: &Rtc, ns: u64) {
        wr(r, ALARM_HIGH, (ns >> 32) as u32);
        wr(r, ALARM_LOW, ns as u32);
    }

    const SEC: u64 = 1_000_000_000;
    /// Generous bound for a thread to get scheduled on a loaded 2-core host.
    const PATIENCE: Duration = Duration::from_secs(10);

    #[test]
    fn time_reads_the_host_clock() {
        let (r, line) = setup();
        let before = host_ns();
        let t = read_time(&r);
        let after = host_ns();
        assert!(before <= t && t <= after, "{before} <= {t} <= {after}");
        // Plausibly now, not 1970: after 2020-01-01.
        assert!(t > 1_577_836_800 * SEC);
        assert_eq!(
            r.state(),
            RtcState {
                time_high: (t >> 32) as u32,
                ..RtcState::default()
            }
        );
        assert!(line.take().is_empty());
    }

    #[test]
    fn time_high_is_latched_by_time_low() {
        let (r, _) = setup();
        let h = 0x1234_5678u32;
        // Put the low word 100 ms below its wrap and read before the carry (again if the host
        // was too busy to let us).
        for attempt in 0.. {
            set_time(&r, u64::from(h) << 32 | u64::from(u32::MAX - 100_000_000));
            let lo = rd(&r, TIME_LOW);
            let hi = rd(&r, TIME_HIGH);
            assert!(
                hi == h || (hi == h + 1 && lo < 1_000_000_000),
                "{hi:#x} {lo:#x}"
            );
            if hi == h {
                break;
            }
            assert!(attempt < 20, "never read before the carry");
        }
        std::thread::sleep(Duration::from_millis(200));
        // Past the carry: TIME_HIGH still shows the latched word until TIME_LOW is read again.
        assert_eq!(rd(&r, TIME_HIGH), h);
        assert_eq!(rd(&r, TIME_HIGH), h);
        rd(&r, TIME_LOW);
        assert_eq!(rd(&r, TIME_HIGH), h + 1);
    }

    #[test]
    fn setting_the_time_moves_only_the_offset() {
        let (r, line) = setup();
        let target = 4_102_444_800 * SEC; // 2100-01-01
        let before = host_ns();
        set_time(&r, target);
        let t = read_time(&r);
        let after = host_ns();
        // The guest's clock keeps running from the new time...
        assert!(
            t >= target && t - target <= after - before + SEC,
            "{t} vs {target}"
        );
        // ...while the host's is where it was (the guest's 2100 is far from it).
        assert!(host_ns() < target - 10 * 365 * 86_400 * SEC);
        let s = r.state();
        let off = s.offset_ns as u64;
        assert!(
            (target.wrapping_sub(after)..=target.wrapping_sub(before)).contains(&off),
            "offset {off}"
        );
        // Back to the past (before the host's time): a negative offset.
        set_time(&r, 86_400 * SEC);
        let t = read_time(&r);
        assert!((86_400 * SEC..86_400 * SEC + PATIENCE.as_nanos() as u64).contains(&t));
        assert!(r.state().offset_ns < 0);
        assert_eq!(r.guest_time_ns() / SEC, t / SEC);
        assert!(line.take().is_empty());
    }

    #[test]
    fn alarm_fires_the_line_and_is_acknowledged() {
        let (r, line) = setup();
        wr(&r, IRQ_ENABLED, 1);
        assert_eq!(rd(&r, IRQ_ENABLED), 1);
        let due = read_time(&r) + 50_000_000; // 50 ms from now
        set_alarm(&r, due);
        assert_eq!(rd(&r, ALARM_LOW), due as u32);
        assert_eq!(rd(&r, ALARM_HIGH), (due >> 32) as u32);
        assert_eq!(rd(&r, ALARM_STATUS), 1);
        assert_eq!(line.wait_any(PATIENCE), vec![true]);
        // Not before it was due.
        assert!(r.guest_time_ns() >= due);
        assert_eq!(rd(&r, ALARM_STATUS), 0);
        assert!(r.state().irq_pending);
        // The level stays up until CLEAR_INTERRUPT.
        wr(&r, CLEAR_ALARM, 1);
        assert!(line.take().is_empty());
        wr(&r, CLEAR_INTERRUPT, 1);
        assert_eq!(line.take(), vec![false]);
        assert!(!r.state().irq_pending);
    }

    #[test]
    fn alarm_already_due_fires_at_once() {
        let (r, line) = setup();
        // Disabled: the alarm still fires (pending) but the line stays low...
        set_alarm(&r, read_time(&r) - SEC);
        assert_eq!(rd(&r, ALARM_STATUS), 0);
        assert!(r.state().irq_pending);
        assert!(line.take().is_empty());
        // ...until the interrupt is enabled; disabling lowers it again.
        wr(&r, IRQ_ENABLED, 1);
        assert_eq!(line.take(), vec![true]);
        wr(&r, IRQ_ENABLED, 0);
        assert_eq!(line.take(), vec![false]);
        wr(&r, CLEAR_INTERRUPT, 0);
        wr(&r, IRQ_ENABLED, 1);
        assert!(line.take().is_empty());
    }

    #[test]
    fn cleared_alarm_does_not_fire() {
        let (r, line) = setup();
        wr(&r, IRQ_ENABLED, 1);
        set_alarm(&r, read_time(&r) + 100_000_000);
        assert_eq!(rd(&r, ALARM_STATUS), 1);
        wr(&r, CLEAR_ALARM, 1);
        assert_eq!(rd(&r, ALARM_STATUS), 0);
        std::thread::sleep(Duration::from_millis(300));
        assert!(line.take().is_empty());
        assert!(!r.state().irq_pending);
    }

    #[test]
    fn alarm_follows_a_change_of_the_time() {
        let (r, line) = setup();
        wr(&r, IRQ_ENABLED, 1);
        // An hour away...
        let due = read_time(&r) + 3600 * SEC;
        set_alarm(&r, due);
        std::thread::sleep(Duration::from_millis(20));
        assert!(line.take().is_empty());
        // ...until the guest sets its clock past it.
        set_time(&r, due + SEC);
        assert_eq!(line.wait_any(PATIENCE), vec![true]);
        assert_eq!(rd(&r, ALARM_STATUS), 0);
    }

    #[test]
    fn quiesce_stops_the_alarm_thread() {
        let (r, line) = setup();
        wr(&r, IRQ_ENABLED, 1);
        set_alarm(&r, read_time(&r) + 200_000_000);
        r.quiesce();
        r.quiesce(); // idempotent
        assert!(r.thread.lock().unwrap().is_none());
        std::thread::sleep(Duration::from_millis(400));
        assert!(line.take().is_empty());
        // Registers still answer.
        assert!(read_time(&r) > 0);
        drop(r);
    }

    #[test]
    fn bad_offsets_and_widths_are_harmless() {
        let (r, line) = setup();
        let before = r.state();
        for off in [0x20, 0x24, 0xffc, 0x1000, u64::MAX - 3] {
            assert_eq!(rd(&r, off), 0, "offset {off:#x}");
            wr(&r, off, u32::MAX);
        }
        for off in [1, 2, 3, 5, 0x11] {
            wr(&r, off, u32::MAX);
        }
        for width in [1, 2, 8] {
            for off in [TIME_LOW, TIME_HIGH, ALARM_LOW, IRQ_ENABLED, CLEAR_INTERRUPT] {
                let mut b = vec![0xaa; width];
                r.read(off, &mut b);
                assert!(b.iter().all(|&x| x == 0), "width {width} at {off:#x}");
                r.write(off, &vec![0xff; width]);
            }
        }
        let mut empty: [u8; 0] = [];
        r.read(0, &mut empty);
        r.write(0, &empty);
        // Write-only registers read as zero; ALARM_STATUS ignores writes.
        assert_eq!(rd(&r, CLEAR_ALARM), 0);
        assert_eq!(rd(&r, CLEAR_INTERRUPT), 0);
        wr(&r, ALARM_STATUS, 1);
        assert_eq!(rd(&r, ALARM_STATUS), 0);
        assert_eq!(r.state(), before);
        assert!(line.take().is_empty());
        let t = read_time(&r);
        assert!(t.abs_diff(host_ns()) < PATIENCE.as_nanos() as u64);
    }

    #[test]
    fn deposit_replaces_one_word() {
        assert_eq!(
            deposit(0x1111_2222_3333_4444, false, 0xaaaa_bbbb),
            0x1111_2222_aaaa_bbbb
        );
        assert_eq!(
            deposit(0x1111_2222_3333_4444, true, 0xaaaa_bbbb),
            0xaaaa_bbbb_3333_4444
        );
    }
}
