//! Recognising a guest kernel panic on its serial console, so the VM ends with a status and
//! message that say so. Linux prints `Kernel panic - not syncing: MSG` when it panics; then it
//! either resets the machine (`panic=N`, the default command line has `panic=-1`) or, with
//! `panic=0`, prints `---[ end Kernel panic - not syncing: MSG ]---` and spins forever. The
//! first turns the reset into [`Outcome::Panicked`]; the second stops the VM at that line.
//!
//! The guest controls its console, so it can fake a panic line: that only changes how its own
//! VM reports its end.

use std::io::{self, Write};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use super::control::Outcome;
use super::VmShared;

const PANIC: &str = "Kernel panic - not syncing: ";
const END: &str = "---[ end Kernel panic - not syncing: ";
/// Longest console line kept for matching; the rest of a longer line is ignored.
const MAX_LINE: usize = 512;

/// What the console has shown of a panic, shared between the console writer and the VM.
#[derive(Default)]
pub struct PanicState {
    message: Mutex<Option<String>>,
    vm: OnceLock<Weak<VmShared>>,
}

impl PanicState {
    /// The VM to stop when the panic is final.
    pub fn attach(&self, vm: &Arc<VmShared>) {
        let _ = self.vm.set(Arc::downgrade(vm));
    }

    /// The message of the first panic seen, if any.
    pub fn message(&self) -> Option<String> {
        self.message
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn line(&self, line: &str) {
        if let Some(i) = line.find(END) {
            let msg = line[i + END.len()..].trim_end_matches(" ]---").to_string();
            self.message
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert(msg.clone());
            if let Some(vm) = self.vm.get().and_then(Weak::upgrade) {
                vm.stop(Outcome::Panicked(msg));
            }
        } else if let Some(i) = line.find(PANIC) {
            self.message
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert_with(|| line[i + PANIC.len()..].to_string());
        }
    }
}

/// A console writer that passes everything through and watches it for panic lines.
pub struct PanicWatch {
    inner: Box<dyn Write + Send>,
    line: Vec<u8>,
    state: Arc<PanicState>,
}

impl PanicWatch {
    pub fn new(inner: Box<dyn Write + Send>, state: Arc<PanicState>) -> Self {
        PanicWatch {
            inner,
            line: Vec::with_capacity(MAX_LINE),
            state,
        }
    }

    fn scan(&mut self, bytes: &[u8]) {
        for &b in bytes {
            match b {
                b'\n' => {
                    let text = String::from_utf8_lossy(&self.line);
                    self.state.line(text.trim_end_matches('\r'));
                    self.line.clear();
                }
                _ if self.line.len() < MAX_LINE => self.line.push(b),
                _ => {}
            }
        }
    }
}

impl Write for PanicWatch {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.scan(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(s: &str) -> Arc<PanicState> {
        let state = Arc::new(PanicState::default());
        let mut w = PanicWatch::new(Box::new(io::sink()), state.clone());
        // In pieces, as a UART delivers it.
        for chunk in s.as_bytes().chunks(3) {
            w.write_all(chunk).unwrap();
        }
        state
    }

    #[test]
    fn finds_the_panic_message() {
        let s = feed(
            "[   12.5] sysrq: Trigger a crash\r\n\
             [   12.6] Kernel panic - not syncing: sysrq triggered crash\r\n\
             [   12.7] CPU: 0 PID: 1\r\n",
        );
        assert_eq!(s.message().as_deref(), Some("sysrq triggered crash"));
    }

    #[test]
    fn end_line_gives_the_message_without_its_frame() {
        let s = feed("---[ end Kernel panic - not syncing: Attempted to kill init! ]---\n");
        assert_eq!(s.message().as_deref(), Some("Attempted to kill init!"));
    }

    #[test]
    fn ordinary_output_is_not_a_panic() {
        let s = feed("Kernel: panic=-1\nnot syncing\n/ # echo Kernel panic\n");
        assert_eq!(s.message(), None);
        let long = "x".repeat(5000) + "\n";
        assert_eq!(feed(&long).message(), None);
    }

    #[test]
    fn first_panic_wins() {
        let s = feed("Kernel panic - not syncing: first\nKernel panic - not syncing: second\n");
        assert_eq!(s.message().as_deref(), Some("first"));
    }
}
