//! virtio-rng (entropy device, virtio 1.x §5.4): fills the driver's writable buffers with
//! bytes from the host's `getrandom`, on the device's I/O thread.

use std::thread::JoinHandle;

use vm_memory::GuestMemoryMmap;

use super::chain::{self, Buffers};
use super::{run_queues, serve_queue, Activation, Handled, VirtioDevice, ID_RNG};
use crate::sandbox::ThreadClass;

const QUEUE_SIZE: u16 = 64;
/// Most bytes produced for one request.
const MAX_REQUEST: u64 = 64 * 1024;

pub struct Rng;

impl VirtioDevice for Rng {
    fn device_id(&self) -> u32 {
        ID_RNG
    }
    fn features(&self) -> u64 {
        0
    }
    fn queue_max_sizes(&self) -> Vec<u16> {
        vec![QUEUE_SIZE]
    }
    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn activate(&self, act: Activation) -> std::io::Result<JoinHandle<()>> {
        crate::sandbox::spawn(ThreadClass::RngIo, "virtio-rng", move || {
            run_queues(act, |_, q, mem, irq| {
                serve_queue(q, mem, irq, |b| fill(mem, &b))
            })
        })
    }
}

/// Fill host random bytes into `buf`.
pub fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: writes at most `buf.len() - got` bytes into our own buffer.
        let n = unsafe { libc::getrandom(buf[got..].as_mut_ptr().cast(), buf.len() - got, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        got += n as usize;
    }
    Ok(())
}

/// Serve one request: random bytes into the chain's writable buffers (up to 64 KiB).
pub fn fill(mem: &GuestMemoryMmap, b: &Buffers) -> Handled {
    if let Err(e) = chain::check(mem, &b.writable) {
        return super::broken(e);
    }
    let n = chain::total(&b.writable).min(MAX_REQUEST) as usize;
    let mut data = vec![0u8; n];
    if getrandom(&mut data).is_err() {
        return Handled::Used(0);
    }
    match chain::write_bytes(mem, &b.writable, &data) {
        Ok(n) => Handled::Used(n as u32),
        Err(e) => super::broken(e),
    }
}
