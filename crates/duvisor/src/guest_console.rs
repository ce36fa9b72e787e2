//! Driving a guest through its serial console from another program: the boot tests and the
//! benchmark harness (`crates/bench`) share this.
//!
//! [`run_console`] starts a VM command (duvisor or QEMU) with the console on its stdin and
//! stdout, waits for one of the guest's ready markers (the caller's, [`ConsoleOptions::ready`]:
//! this crate knows nothing of the guests themselves), types a script, and collects
//! everything the guest prints until the process exits or a timeout passes. Along the way it
//! stamps the first appearance of chosen strings ([`ConsoleOptions::watch`]) with the host's
//! wall clock, and on exit reads the child's own resource usage with `wait4` (its peak RSS,
//! not the cumulative `RUSAGE_CHILDREN` figure).
//!
//! Guest scripts print results as `TAG=value` lines; write the command so that its echo never
//! holds the tag literally (`echo "DO""NE=1"` prints `DONE=1` but echoes `"DO""NE=1"`), then
//! [`value_of`] finds only what the guest printed.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The kernel command line the tests and the benchmark boot the reference guest with.
pub const CMDLINE: &str = "console=ttyS0 panic=-1";

/// `duvisor run` of `kernel` and `initrd` with `cpus` vCPUs and `memory` (e.g. `512M`), plus
/// `extra` args.
pub fn duvisor_command(
    duvisor: &Path,
    kernel: &Path,
    initrd: &Path,
    cpus: u32,
    memory: &str,
    extra: &[&str],
) -> Command {
    let mut c = Command::new(duvisor);
    c.arg("run")
        .arg("--kernel")
        .arg(kernel)
        .arg("--initrd")
        .arg(initrd)
        .arg("--cmdline")
        .arg(CMDLINE)
        .arg("--cpus")
        .arg(cpus.to_string())
        .arg("--memory")
        .arg(memory)
        .args(extra);
    c
}

/// `qemu-system-riscv64 -M virt` booting the same kernel and initramfs, console on stdio,
/// exiting when the guest powers off or resets; `extra` args are appended.
pub fn qemu_command(
    kernel: &Path,
    initrd: &Path,
    cpus: u32,
    memory: &str,
    extra: &[&str],
) -> Command {
    let mut c = Command::new("qemu-system-riscv64");
    c.args(["-M", "virt", "-m", memory, "-smp", &cpus.to_string()])
        .args(["-nographic", "-no-reboot"])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .arg("-append")
        .arg(CMDLINE)
        .args(extra);
    c
}

/// What to type and what to watch for.
#[derive(Debug, Clone)]
pub struct ConsoleOptions {
    /// Typed line by line once a ready marker is seen.
    pub script: String,
    /// The guest is ready for the script once it printed any of these.
    pub ready: Vec<String>,
    /// The process is killed when it is still running this long after it was spawned.
    pub timeout: Duration,
    /// Strings whose first appearance in the output is time-stamped (see [`ConsoleRun::seen`]).
    pub watch: Vec<String>,
    /// Pause between seeing the ready marker and typing, so the shell is reading.
    pub settle: Duration,
    /// Sample the process's resident set this often (see [`ConsoleRun::rss_samples`]).
    pub rss_every: Option<Duration>,
    /// Strings whose first appearance is sent (time since spawn) to their channel while the
    /// guest runs, so a test can act on the host side once the guest is ready for it.
    pub notify: Vec<(String, mpsc::Sender<Duration>)>,
}

impl ConsoleOptions {
    /// Types `script` once the guest printed one of `ready`.
    pub fn new(script: &str, timeout: Duration, ready: &[&str]) -> Self {
        Self {
            script: script.to_string(),
            ready: ready.iter().map(|r| r.to_string()).collect(),
            timeout,
            watch: Vec::new(),
            settle: Duration::from_millis(300),
            rss_every: None,
            notify: Vec::new(),
        }
    }

    /// Send on `tx` when `s` first appears in the output (see [`ConsoleOptions::notify`]).
    pub fn notify(mut self, s: &str, tx: mpsc::Sender<Duration>) -> Self {
        self.notify.push((s.to_string(), tx));
        self
    }

    pub fn sample_rss(mut self, every: Duration) -> Self {
        self.rss_every = Some(every);
        self
    }

    pub fn watch(mut self, s: &str) -> Self {
        self.watch.push(s.to_string());
        self
    }
}

/// What a console session produced.
#[derive(Debug, Clone)]
pub struct ConsoleRun {
    /// Everything the guest printed (lossy UTF-8).
    pub output: String,
    /// Exit status (`None` when killed by a signal, e.g. after the timeout).
    pub status: Option<i32>,
    pub stderr: String,
    /// Spawn to process exit.
    pub elapsed: Duration,
    /// Spawn to the first appearance of a ready marker.
    pub ready_at: Option<Duration>,
    /// Spawn to the first appearance of each watched string, in [`ConsoleOptions::watch`] order.
    pub seen: Vec<(String, Option<Duration>)>,
    /// Peak resident set size of the process, KiB (`ru_maxrss` from `wait4`).
    pub max_rss_kib: Option<u64>,
    /// The resident set every [`ConsoleOptions::rss_every`] while it ran.
    pub rss_samples: Vec<RssSample>,
    /// The timeout passed and the process was killed.
    pub timed_out: bool,
}

/// One sample of a running VM's resident set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RssSample {
    /// Time since spawn.
    pub at: Duration,
    /// VmRSS, KiB.
    pub rss_kib: u64,
    /// RssShmem, KiB: the compiled-code arenas (memfds). Their size is fixed, and they are
    /// emptied when full, so this part rises and falls with compiling; guest RAM and the heap
    /// are anonymous.
    pub shmem_kib: u64,
}

impl ConsoleRun {
    /// The value of `tag`, or a panic showing the whole console (for tests).
    pub fn expect_value(&self, tag: &str) -> String {
        self.value(tag).unwrap_or_else(|| {
            panic!(
                "guest printed no {tag}.\n--- console ---\n{}\n--- stderr ---\n{}",
                self.output, self.stderr
            )
        })
    }

    /// The value of the first `TAG=value` line the guest printed.
    pub fn value(&self, tag: &str) -> Option<String> {
        value_of(&self.output, tag)
    }

    /// When `watched` (one of [`ConsoleOptions::watch`]) first appeared.
    pub fn seen_at(&self, watched: &str) -> Option<Duration> {
        self.seen
            .iter()
            .find(|(s, _)| s == watched)
            .and_then(|(_, t)| *t)
    }

    /// Host wall time between the first appearances of two watched strings.
    pub fn between(&self, from: &str, to: &str) -> Option<Duration> {
        let (a, b) = (self.seen_at(from)?, self.seen_at(to)?);
        b.checked_sub(a)
    }
}

/// The value of the first `TAG=value` in `output` (the rest of that line, trimmed).
pub fn value_of(output: &str, tag: &str) -> Option<String> {
    let key = format!("{tag}=");
    output
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .find_map(|l| {
            l.match_indices(&key)
                .find(|(i, _)| {
                    // A whole tag: not the tail of a longer identifier.
                    !l[..*i]
                        .chars()
                        .next_back()
                        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                })
                .map(|(i, _)| l[i + key.len()..].trim().to_string())
        })
}

/// Finds `needle` in `hay`, looking only at what can include bytes from `new_from` on.
fn find_from(hay: &[u8], needle: &[u8], new_from: usize) -> bool {
    if needle.is_empty() {
        return true;
    }
    let start = new_from.saturating_sub(needle.len() - 1);
    hay.get(start..)
        .is_some_and(|h| h.windows(needle.len()).any(|w| w == needle))
}

/// Start `cmd` with the console on stdin/stdout (stderr captured), type the script once the
/// guest is ready, and collect everything until it exits or the timeout passes.
pub fn run_console(cmd: Command, opts: &ConsoleOptions) -> std::io::Result<ConsoleRun> {
    let mut cmd = cmd;
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id() as libc::pid_t;
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                break;
            }
        }
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let mut stdin = child.stdin.take();
    let mut out: Vec<u8> = Vec::new();
    let mut ready_at = None;
    let mut seen: Vec<(String, Option<Duration>)> =
        opts.watch.iter().map(|w| (w.clone(), None)).collect();
    let mut notify: Vec<_> = opts.notify.iter().map(|(s, tx)| (s, Some(tx))).collect();
    let mut timed_out = false;
    let mut rss_samples = Vec::new();
    let mut next_rss = start;
    loop {
        if let Some(every) = opts.rss_every {
            if Instant::now() >= next_rss {
                next_rss += every;
                if let Some((rss_kib, shmem_kib)) = current_rss_kib(pid) {
                    rss_samples.push(RssSample {
                        at: start.elapsed(),
                        rss_kib,
                        shmem_kib,
                    });
                }
            }
        }
        let left = opts.timeout.saturating_sub(start.elapsed());
        if left.is_zero() {
            timed_out = true;
            let _ = child.kill();
            break;
        }
        match rx.recv_timeout(left.min(Duration::from_millis(100))) {
            Ok((at, b)) => {
                let from = out.len();
                out.extend_from_slice(&b);
                let t = at.duration_since(start);
                for (w, when) in seen.iter_mut() {
                    if when.is_none() && find_from(&out, w.as_bytes(), from) {
                        *when = Some(t);
                    }
                }
                for (w, tx) in notify.iter_mut() {
                    if tx.is_some() && find_from(&out, w.as_bytes(), from) {
                        // The receiver may have stopped listening: not our concern.
                        let _ = tx.take().map(|tx| tx.send(t));
                    }
                }
                if ready_at.is_none()
                    && opts
                        .ready
                        .iter()
                        .any(|r| find_from(&out, r.as_bytes(), from))
                {
                    ready_at = Some(t);
                    std::thread::sleep(opts.settle);
                    if let Some(s) = stdin.as_mut() {
                        for line in opts.script.lines() {
                            let _ = s.write_all(line.as_bytes());
                            let _ = s.write_all(b"\n");
                            let _ = s.flush();
                        }
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
    drop(stdin);
    let (status, max_rss_kib) = wait_with_rusage(pid);
    let elapsed = start.elapsed();
    // The pid is reaped; std's Child must not wait for it again (it does not on drop).
    drop(child);
    let _ = reader.join();
    // Anything the reader got after we stopped looking.
    while let Ok((_, b)) = rx.try_recv() {
        out.extend_from_slice(&b);
    }
    Ok(ConsoleRun {
        output: String::from_utf8_lossy(&out).into_owned(),
        status,
        stderr: err_reader.join().unwrap_or_default(),
        elapsed,
        ready_at,
        seen,
        max_rss_kib,
        rss_samples,
        timed_out,
    })
}

/// VmRSS and RssShmem of a live process, KiB.
fn current_rss_kib(pid: libc::pid_t) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some((field("VmRSS:")?, field("RssShmem:")?))
}

/// Reap `pid` with `wait4`: its exit status and its own peak RSS (KiB).
fn wait_with_rusage(pid: libc::pid_t) -> (Option<i32>, Option<u64>) {
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: pid is our child, not yet reaped; both pointers are valid for writes.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            break;
        }
        if r < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        return (None, None);
    }
    let code = if libc::WIFEXITED(status) {
        Some(libc::WEXITSTATUS(status))
    } else {
        None
    };
    (code, u64::try_from(ru.ru_maxrss).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_values() {
        let out = "/ # echo \"DO\"\"NE=1\"\r\nDONE=1\r\nXSHA=no\r\nSHA=abc \r\nSHA=second\n";
        assert_eq!(value_of(out, "DONE").as_deref(), Some("1"));
        assert_eq!(value_of(out, "SHA").as_deref(), Some("abc"));
        assert_eq!(value_of(out, "MISSING"), None);
        assert_eq!(
            value_of("[  1.0] x KERNEL=6.12 y", "KERNEL").as_deref(),
            Some("6.12 y")
        );
    }

    #[test]
    fn incremental_find() {
        let hay = b"hello duvisor-guest: ready\n";
        assert!(find_from(hay, b"ready", 20));
        assert!(find_from(hay, b"ready", 0));
        assert!(!find_from(hay, b"hello", 10));
        assert!(find_from(hay, b"hello", 3));
    }

    #[test]
    fn console_of_a_shell() {
        // `sh` stands in for a guest: it prints the marker, then runs what we type.
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg("echo 'guest: ready'; exec sh");
        let opts = ConsoleOptions::new(
            "echo \"ST\"\"ART=1\"\necho \"VA\"\"L=42\"\nexit 7",
            Duration::from_secs(20),
            &["not this one", "guest: ready"],
        )
        .watch("START=")
        .watch("VAL=")
        .watch("NEVER=");
        let r = run_console(cmd, &opts).unwrap();
        assert_eq!(r.status, Some(7));
        assert!(!r.timed_out);
        assert_eq!(r.value("VAL").as_deref(), Some("42"));
        assert!(r.ready_at.is_some());
        assert!(r.between("START=", "VAL=").is_some());
        assert_eq!(r.seen_at("NEVER="), None);
        assert!(r.max_rss_kib.is_some_and(|k| k > 0));
    }

    #[test]
    fn samples_the_resident_set_while_it_runs() {
        let mut cmd = Command::new("sleep");
        cmd.arg("0.5");
        let opts = ConsoleOptions::new("", Duration::from_secs(5), &[])
            .sample_rss(Duration::from_millis(50));
        let r = run_console(cmd, &opts).unwrap();
        assert!(r.rss_samples.len() >= 3, "{:?}", r.rss_samples);
        assert!(r.rss_samples.windows(2).all(|w| w[0].at < w[1].at));
        for s in &r.rss_samples {
            assert!(s.rss_kib > 0 && s.shmem_kib <= s.rss_kib, "{s:?}");
        }
    }

    #[test]
    fn timeout_kills() {
        let mut cmd = Command::new("sleep");
        cmd.arg("30");
        let r = run_console(
            cmd,
            &ConsoleOptions::new("", Duration::from_millis(300), &[]),
        )
        .unwrap();
        assert!(r.timed_out);
        assert_eq!(r.status, None);
        assert!(r.elapsed < Duration::from_secs(10));
    }
}
