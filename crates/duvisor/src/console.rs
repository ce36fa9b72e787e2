//! The host terminal side of the guest's serial console.
//!
//! * **Input**: a reader thread forwards stdin to a callback (the UART's
//!   [`enqueue_input`](crate::devices::Uart::enqueue_input)). When stdin is a terminal it is put
//!   in raw mode, so every key (Ctrl-C included) goes to the guest, and an escape prefix gives
//!   control back to the user: **Ctrl-A x** asks the VM to quit, **Ctrl-A Ctrl-A** sends one
//!   Ctrl-A, **Ctrl-A h** prints this help on stderr; Ctrl-A followed by anything else sends both
//!   bytes unchanged. When stdin is not a terminal (scripts, tests) bytes pass through untouched
//!   and end of input only ends the reader: it never stops the VM.
//! * **Output**: [`Console::output`] writes to stdout, flushing every write.
//!
//! Raw mode keeps output post-processing on (`OPOST`), unlike `cfmakeraw`, so that host log lines
//! ending in a bare `\n` still start at the left margin. The terminal's previous settings come back
//! when the [`Console`] (its [`RawModeGuard`]) is dropped, when the process panics (a panic hook,
//! which also runs with `panic = "abort"`), and when it calls `std::process::exit` (an `atexit`
//! handler); [`restore_terminal`] does the same on demand.

use crate::sandbox::ThreadClass;
use std::io::{self, IsTerminal, Read, Write};
use std::os::fd::RawFd;
use std::sync::{Mutex, Once, TryLockError};
use std::thread::JoinHandle;

/// The escape prefix, Ctrl-A.
pub const ESCAPE: u8 = 0x01;

const HELP: &str = "\r\nC-a x    quit the VM\r\nC-a C-a  send C-a\r\nC-a h    this help\r\n";

/// Whether the process's stdin is a terminal.
pub fn stdin_is_tty() -> bool {
    io::stdin().is_terminal()
}

/// The terminal side of the console.
pub struct Console {
    raw: Option<RawModeGuard>,
}

impl Console {
    /// Set up the console; when `stdin_is_tty`, stdin is switched to raw mode until the console is
    /// dropped (see the module documentation for the other ways it is restored).
    pub fn new(stdin_is_tty: bool) -> io::Result<Console> {
        let raw = if stdin_is_tty {
            Some(RawModeGuard::new(libc::STDIN_FILENO)?)
        } else {
            None
        };
        Ok(Console { raw })
    }

    /// Whether stdin is handled as a terminal (raw mode, escape sequences).
    pub fn is_tty(&self) -> bool {
        self.raw.is_some()
    }

    /// Start the thread reading stdin: input goes to `on_input`; the quit escape (terminal only)
    /// calls `on_quit` and ends the thread, as do end of input and read errors.
    pub fn spawn_input<I, Q>(&self, on_input: I, on_quit: Q) -> io::Result<JoinHandle<()>>
    where
        I: Fn(&[u8]) + Send + 'static,
        Q: Fn() + Send + 'static,
    {
        spawn_reader(io::stdin(), self.is_tty(), on_input, on_quit)
    }

    /// Where the guest's console output goes: stdout, flushed on every write.
    pub fn output(&self) -> Box<dyn Write + Send> {
        Box::new(StdoutWriter)
    }
}

/// Run a reader thread over any source: with `escapes`, the Ctrl-A escapes are interpreted
/// ([`EscapeFilter`]); without, bytes pass through. The thread ends at end of input, on a read
/// error, or after calling `on_quit`.
pub fn spawn_reader<R, I, Q>(
    mut reader: R,
    escapes: bool,
    on_input: I,
    on_quit: Q,
) -> io::Result<JoinHandle<()>>
where
    R: Read + Send + 'static,
    I: Fn(&[u8]) + Send + 'static,
    Q: Fn() + Send + 'static,
{
    crate::sandbox::spawn(ThreadClass::Console, "console-in", move || {
        let mut buf = [0u8; 1024];
        let mut filter = EscapeFilter::new();
        let mut out = Vec::with_capacity(buf.len() + 1);
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!("console: reading stdin failed: {e}");
                    return;
                }
            };
            if !escapes {
                on_input(&buf[..n]);
                continue;
            }
            out.clear();
            let action = filter.feed(&buf[..n], &mut out);
            if !out.is_empty() {
                on_input(&out);
            }
            match action {
                EscapeAction::None => {}
                EscapeAction::Help => eprint!("{HELP}"),
                EscapeAction::Quit => {
                    on_quit();
                    return;
                }
            }
        }
    })
}

/// What an escape sequence asked for, besides the bytes to forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EscapeAction {
    None,
    Help,
    Quit,
}

/// Interprets the Ctrl-A escapes in a byte stream; a sequence may span calls.
#[derive(Debug, Default)]
pub struct EscapeFilter {
    after_escape: bool,
}

impl EscapeFilter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Append the bytes of `input` meant for the guest to `out`. Stops at a quit request
    /// (ignoring the rest of `input`); reports a help request after the whole input.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> EscapeAction {
        let mut action = EscapeAction::None;
        for &b in input {
            if !self.after_escape {
                if b == ESCAPE {
                    self.after_escape = true;
                } else {
                    out.push(b);
                }
                continue;
            }
            self.after_escape = false;
            match b {
                b'x' | b'X' => return EscapeAction::Quit,
                b'h' | b'H' | b'?' => action = EscapeAction::Help,
                ESCAPE => out.push(ESCAPE),
                other => out.extend_from_slice(&[ESCAPE, other]),
            }
        }
        action
    }
}

/// Writes to stdout, flushing every write so the guest's output appears at once.
struct StdoutWriter;

impl Write for StdoutWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut out = io::stdout().lock();
        out.write_all(buf)?;
        out.flush()?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stdout().flush()
    }
}

/// The settings to put back: the terminal's fd and its termios before raw mode.
static SAVED: Mutex<Option<(RawFd, libc::termios)>> = Mutex::new(None);
static HOOKS: Once = Once::new();

/// Puts a terminal in raw mode; restores the previous settings when dropped.
pub struct RawModeGuard {
    _private: (),
}

impl RawModeGuard {
    /// Switch the terminal on `fd` to raw mode (keeping `OPOST`), remembering its settings, and
    /// install the panic and exit hooks that restore them.
    pub fn new(fd: RawFd) -> io::Result<RawModeGuard> {
        // SAFETY: an all-zero `termios` is a valid value of this plain C struct; it is only a
        // buffer for tcgetattr to fill.
        let mut original: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `original` is a valid, writable termios; tcgetattr only writes into it and
        // fails cleanly (ENOTTY/EBADF) for an fd that is not a terminal.
        if unsafe { libc::tcgetattr(fd, &mut original) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut raw = original;
        // SAFETY: cfmakeraw only modifies the termios struct it is given, which is valid.
        unsafe { libc::cfmakeraw(&mut raw) };
        raw.c_oflag |= libc::OPOST;
        *lock_saved() = Some((fd, original));
        install_hooks();
        // SAFETY: `raw` is a valid termios for this terminal, derived from its own settings.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
            let err = io::Error::last_os_error();
            lock_saved().take();
            return Err(err);
        }
        Ok(RawModeGuard { _private: () })
    }
}

impl Drop for RawModeGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

fn lock_saved() -> std::sync::MutexGuard<'static, Option<(RawFd, libc::termios)>> {
    SAVED.lock().unwrap_or_else(|e| e.into_inner())
}

/// Put the terminal back as it was before raw mode, if it is in raw mode. Idempotent, and safe
/// to call from any thread, a panic hook or an exit handler.
pub fn restore_terminal() {
    // Never block here: this also runs from hooks that may fire while the lock is held.
    let mut saved = match SAVED.try_lock() {
        Ok(g) => g,
        Err(TryLockError::Poisoned(e)) => e.into_inner(),
        Err(TryLockError::WouldBlock) => return,
    };
    if let Some((fd, original)) = saved.take() {
        // SAFETY: `original` was filled in by tcgetattr for this same fd; restoring it has no
        // memory-safety requirements beyond a valid pointer, and failure is harmless here.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &original) };
    }
}

extern "C" fn restore_at_exit() {
    restore_terminal();
}

fn install_hooks() {
    HOOKS.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_terminal();
            previous(info);
        }));
        // SAFETY: `restore_at_exit` is a plain `extern "C" fn()` that never unwinds (it only
        // makes a non-blocking lock attempt and a tcsetattr call), as atexit requires.
        if unsafe { libc::atexit(restore_at_exit) } != 0 {
            tracing::warn!("console: could not register the terminal restore at exit");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    fn filter_all(chunks: &[&[u8]]) -> (Vec<u8>, Vec<EscapeAction>) {
        let mut f = EscapeFilter::new();
        let mut out = Vec::new();
        let actions = chunks.iter().map(|c| f.feed(c, &mut out)).collect();
        (out, actions)
    }

    #[test]
    fn plain_bytes_pass_through_the_filter() {
        let (out, actions) = filter_all(&[b"ls -l\r", b"\x03\x1b[A"]);
        assert_eq!(out, b"ls -l\r\x03\x1b[A");
        assert_eq!(actions, vec![EscapeAction::None; 2]);
    }

    #[test]
    fn ctrl_a_x_quits_and_drops_the_rest() {
        let (out, actions) = filter_all(&[b"ab\x01xcd"]);
        assert_eq!(out, b"ab");
        assert_eq!(actions, vec![EscapeAction::Quit]);
        // Split across reads, upper case.
        let (out, actions) = filter_all(&[b"a\x01", b"X"]);
        assert_eq!(out, b"a");
        assert_eq!(actions, vec![EscapeAction::None, EscapeAction::Quit]);
    }

    #[test]
    fn ctrl_a_ctrl_a_sends_one_ctrl_a_and_others_pass() {
        let (out, actions) = filter_all(&[b"\x01\x01x", b"\x01", b"\x01\x01e"]);
        assert_eq!(out, b"\x01x\x01\x01e");
        assert_eq!(actions, vec![EscapeAction::None; 3]);
        let (out, actions) = filter_all(&[b"\x01h", b"z"]);
        assert_eq!(out, b"z");
        assert_eq!(actions, vec![EscapeAction::Help, EscapeAction::None]);
    }

    fn run_reader(input: &'static [u8], escapes: bool) -> (Vec<u8>, bool) {
        let got = Arc::new(Mutex::new(Vec::new()));
        let quit = Arc::new(AtomicBool::new(false));
        let (g, q) = (got.clone(), quit.clone());
        let h = spawn_reader(
            io::Cursor::new(input),
            escapes,
            move |b| g.lock().unwrap().extend_from_slice(b),
            move || q.store(true, Ordering::SeqCst),
        )
        .unwrap();
        h.join().unwrap();
        let got = got.lock().unwrap().clone();
        (got, quit.load(Ordering::SeqCst))
    }

    #[test]
    fn non_tty_reader_passes_everything_and_eof_does_not_quit() {
        let (got, quit) = run_reader(b"echo hi\n\x01x more\n", false);
        assert_eq!(got, b"echo hi\n\x01x more\n");
        assert!(!quit);
    }

    #[test]
    fn tty_reader_quits_on_escape() {
        let (got, quit) = run_reader(b"abc\x01\x01\x01x ignored", true);
        assert_eq!(got, b"abc\x01");
        assert!(quit);
        let (got, quit) = run_reader(b"no escape here", true);
        assert_eq!(got, b"no escape here");
        assert!(!quit);
    }

    #[test]
    fn non_tty_console_has_no_raw_mode() {
        let _serial = TERMINAL_TESTS.lock().unwrap_or_else(|e| e.into_inner());
        let c = Console::new(false).unwrap();
        assert!(!c.is_tty());
        let mut out = c.output();
        out.write_all(b"").unwrap();
        out.flush().unwrap();
        // Nothing saved, so restoring is a no-op.
        restore_terminal();
    }

    /// Serialises the tests that use the process-wide saved terminal state.
    static TERMINAL_TESTS: Mutex<()> = Mutex::new(());

    #[test]
    fn raw_mode_on_a_non_terminal_fails_cleanly() {
        let _serial = TERMINAL_TESTS.lock().unwrap_or_else(|e| e.into_inner());
        let f = std::fs::File::open("/dev/null").unwrap();
        use std::os::fd::AsRawFd;
        assert!(RawModeGuard::new(f.as_raw_fd()).is_err());
        assert!(lock_saved().is_none());
    }

    fn termios_of(fd: RawFd) -> libc::termios {
        // SAFETY: zeroed termios is a valid buffer; tcgetattr fills it for a valid terminal fd.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `t` is valid and writable, `fd` is an open terminal.
        assert_eq!(unsafe { libc::tcgetattr(fd, &mut t) }, 0);
        t
    }

    #[test]
    fn raw_mode_on_a_pty_is_set_and_restored() {
        let _serial = TERMINAL_TESTS.lock().unwrap_or_else(|e| e.into_inner());
        let (mut master, mut slave) = (-1, -1);
        // SAFETY: openpty writes two fds into the given valid pointers; the name, termios and
        // window-size arguments may be null.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "openpty: {}", io::Error::last_os_error());
        let before = termios_of(slave);
        assert_ne!(before.c_lflag & libc::ICANON, 0);
        {
            let _raw = RawModeGuard::new(slave).unwrap();
            let raw = termios_of(slave);
            assert_eq!(raw.c_lflag & (libc::ICANON | libc::ECHO | libc::ISIG), 0);
            assert_eq!(raw.c_iflag & (libc::ICRNL | libc::IXON), 0);
            assert_ne!(raw.c_oflag & libc::OPOST, 0);
            assert_eq!(raw.c_cc[libc::VMIN], 1);
        }
        let after = termios_of(slave);
        assert_eq!(after.c_lflag, before.c_lflag);
        assert_eq!(after.c_iflag, before.c_iflag);
        assert_eq!(after.c_oflag, before.c_oflag);
        assert!(lock_saved().is_none());
        // Restoring again is a no-op.
        restore_terminal();
        // SAFETY: both fds came from openpty above and are closed once.
        unsafe {
            libc::close(slave);
            libc::close(master);
        }
    }
}
