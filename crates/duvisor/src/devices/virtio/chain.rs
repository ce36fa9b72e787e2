//! Descriptor chains as lists of guest buffers, checked once: the chain must end properly (no
//! loop, no out-of-table index, no unreadable descriptor), device-readable buffers must come
//! before device-writable ones, and every buffer must lie in guest RAM before the device
//! touches any of it.

use std::ops::Deref;

use virtio_queue::DescriptorChain;
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryBackend, GuestMemoryMmap};

/// One guest buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seg {
    pub addr: u64,
    pub len: u32,
}

/// Why a chain is unusable: the device must stop the queue (DEVICE_NEEDS_RESET).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("descriptor chain is malformed (loop, bad index, bad indirect table or over 4 GiB)")]
    Malformed,
    #[error("device-readable descriptor after a device-writable one")]
    ReadableAfterWritable,
}

/// A guest buffer outside guest RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("guest buffer {addr:#x}+{len:#x} is outside guest RAM")]
pub struct OutOfRam {
    pub addr: u64,
    pub len: u64,
}

/// A chain's buffers, readable (driver -> device) then writable (device -> driver).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Buffers {
    pub head: u16,
    pub readable: Vec<Seg>,
    pub writable: Vec<Seg>,
}

impl Buffers {
    /// Walk `chain` (which `virtio-queue` bounds by the queue size, so loops end).
    pub fn gather<M>(chain: DescriptorChain<M>) -> Result<Buffers, ChainError>
    where
        M: Deref,
        M::Target: GuestMemory,
    {
        let head = chain.head_index();
        let mut b = Buffers {
            head,
            ..Default::default()
        };
        let mut last_has_next = true;
        for d in chain {
            last_has_next = d.has_next();
            if d.len() == 0 {
                continue;
            }
            let seg = Seg {
                addr: d.addr().0,
                len: d.len(),
            };
            if d.is_write_only() {
                b.writable.push(seg);
            } else if !b.writable.is_empty() {
                return Err(ChainError::ReadableAfterWritable);
            } else {
                b.readable.push(seg);
            }
        }
        // The iterator stops early (without an error) on a loop, an index past the table, an
        // unreadable descriptor or a nested indirect table: the last one it gave still says
        // "next".
        if last_has_next {
            return Err(ChainError::Malformed);
        }
        Ok(b)
    }
}

/// Total bytes of `segs`.
pub fn total(segs: &[Seg]) -> u64 {
    segs.iter().map(|s| s.len as u64).sum()
}

/// Split `segs` after `n` bytes (or at the end if shorter).
pub fn split_at(segs: &[Seg], mut n: u64) -> (Vec<Seg>, Vec<Seg>) {
    let mut head = Vec::new();
    let mut tail = Vec::new();
    for s in segs {
        if n == 0 {
            tail.push(*s);
        } else if (s.len as u64) <= n {
            n -= s.len as u64;
            head.push(*s);
        } else {
            head.push(Seg {
                addr: s.addr,
                len: n as u32,
            });
            tail.push(Seg {
                addr: s.addr.wrapping_add(n),
                len: s.len - n as u32,
            });
            n = 0;
        }
    }
    (head, tail)
}

/// Check that every buffer lies in guest RAM.
pub fn check(mem: &GuestMemoryMmap, segs: &[Seg]) -> Result<(), OutOfRam> {
    for s in segs {
        if !GuestMemoryBackend::check_range(mem, GuestAddress(s.addr), s.len as usize) {
            return Err(OutOfRam {
                addr: s.addr,
                len: s.len as u64,
            });
        }
    }
    Ok(())
}

/// Host pointer of a buffer that lies in guest RAM (checked), for `preadv`/`pwritev`/`read`.
pub fn host_ptr(mem: &GuestMemoryMmap, s: Seg) -> Result<*mut u8, OutOfRam> {
    let err = OutOfRam {
        addr: s.addr,
        len: s.len as u64,
    };
    let slice = mem
        .get_slice(GuestAddress(s.addr), s.len as usize)
        .map_err(|_| err)?;
    Ok(slice.ptr_guard_mut().as_ptr())
}

/// Copy the first `buf.len()` bytes of `segs` out of guest memory. Fails if `segs` is shorter
/// or leaves guest RAM.
pub fn read_bytes(mem: &GuestMemoryMmap, segs: &[Seg], buf: &mut [u8]) -> Result<(), OutOfRam> {
    let mut done = 0;
    for s in segs {
        if done == buf.len() {
            break;
        }
        let n = (s.len as usize).min(buf.len() - done);
        mem.read_slice(&mut buf[done..done + n], GuestAddress(s.addr))
            .map_err(|_| OutOfRam {
                addr: s.addr,
                len: n as u64,
            })?;
        done += n;
    }
    if done < buf.len() {
        return Err(OutOfRam {
            addr: 0,
            len: buf.len() as u64,
        });
    }
    Ok(())
}

/// Copy `buf` into the start of `segs`; returns the bytes written (at most the buffers' size).
pub fn write_bytes(mem: &GuestMemoryMmap, segs: &[Seg], buf: &[u8]) -> Result<usize, OutOfRam> {
    let mut done = 0;
    for s in segs {
        if done == buf.len() {
            break;
        }
        let n = (s.len as usize).min(buf.len() - done);
        mem.write_slice(&buf[done..done + n], GuestAddress(s.addr))
            .map_err(|_| OutOfRam {
                addr: s.addr,
                len: n as u64,
            })?;
        done += n;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_inside_and_between_segments() {
        let segs = [
            Seg {
                addr: 0x1000,
                len: 16,
            },
            Seg {
                addr: 0x2000,
                len: 512,
            },
            Seg {
                addr: 0x3000,
                len: 1,
            },
        ];
        let (h, t) = split_at(&segs, 16);
        assert_eq!(h, vec![segs[0]]);
        assert_eq!(t, vec![segs[1], segs[2]]);
        let (h, t) = split_at(&segs, 20);
        assert_eq!(
            h,
            vec![
                segs[0],
                Seg {
                    addr: 0x2000,
                    len: 4
                }
            ]
        );
        assert_eq!(
            t,
            vec![
                Seg {
                    addr: 0x2004,
                    len: 508
                },
                segs[2]
            ]
        );
        let (h, t) = split_at(&segs, 1000);
        assert_eq!(h, segs.to_vec());
        assert!(t.is_empty());
        assert_eq!(total(&segs), 529);
    }

    #[test]
    fn copies_respect_guest_ram() {
        let mem = super::super::memory::GuestMem::anonymous(0x8000_0000, 0x10000);
        let segs = [
            Seg {
                addr: 0x8000_0ffe,
                len: 2,
            },
            Seg {
                addr: 0x8000_2000,
                len: 8,
            },
        ];
        assert_eq!(write_bytes(&mem, &segs, &[1, 2, 3, 4, 5]), Ok(5));
        let mut b = [0u8; 5];
        read_bytes(&mem, &segs, &mut b).unwrap();
        assert_eq!(b, [1, 2, 3, 4, 5]);
        let mut big = [0u8; 11];
        assert!(
            read_bytes(&mem, &segs, &mut big).is_err(),
            "chain too short"
        );
        let outside = [Seg {
            addr: 0x8000_fff0,
            len: 0x20,
        }];
        assert!(check(&mem, &outside).is_err());
        assert!(write_bytes(&mem, &outside, &[0; 0x20]).is_err());
        assert!(host_ptr(&mem, outside[0]).is_err());
        assert!(
            check(
                &mem,
                &[Seg {
                    addr: 0x1000_1000,
                    len: 4
                }]
            )
            .is_err(),
            "MMIO is not RAM"
        );
        assert!(check(
            &mem,
            &[Seg {
                addr: u64::MAX - 1,
                len: 4
            }]
        )
        .is_err());
        assert!(check(&mem, &segs).is_ok());
    }
}
