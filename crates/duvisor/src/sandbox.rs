//! The seccomp sandbox: once a VM is set up (guest memory granted, kernel loaded, disk images,
//! TAP devices and sockets open), every DuVisor thread — the vthreads, the I/O threads and the
//! console reader, present and future — may make only the system calls in [`POLICY`]. Opening
//! a file fails with EACCES ([`REFUSED`]); anything else (creating a socket, `execve`, `ptrace`,
//! making memory executable, ...) ends the process: the kernel delivers `SIGSYS`, and our
//! handler prints one line naming the call and exits with status [`SANDBOX_EXIT`].
//! docs/security.md explains each entry.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Exit status after a forbidden system call: 128 + SIGSYS, as if the signal had killed us.
pub const SANDBOX_EXIT: i32 = 128 + libc::SIGSYS;

/// Which arguments an allowed call may have.
#[derive(Debug, Clone, Copy)]
pub enum Args {
    /// Any arguments.
    Any,
    /// Argument `idx` is one of the listed values.
    OneOf(u8, &'static [u64]),
    /// Argument `idx`, masked, is one of the listed values.
    MaskedOneOf(u8, u64, &'static [u64]),
    /// Argument `idx` has none of the bits in the mask set.
    NoBits(u8, u64),
    /// Argument `idx` has all of the bits in the mask set.
    AllBits(u8, u64),
}

/// One allowed system call and why DuVisor needs it after set-up.
#[derive(Debug, Clone, Copy)]
pub struct Allowed {
    pub name: &'static str,
    pub nr: libc::c_long,
    pub args: Args,
    pub why: &'static str,
}

const fn allow(name: &'static str, nr: libc::c_long, args: Args, why: &'static str) -> Allowed {
    Allowed {
        name,
        nr,
        args,
        why,
    }
}

/// Terminal ioctls: the console restores the host terminal's settings when the VM ends.
const TTY_IOCTLS: &[u64] = &[libc::TCGETS, libc::TCSETS, libc::TCSETSW, libc::TIOCGWINSZ];
const PROT_EXEC: u64 = libc::PROT_EXEC as u64;
/// pthread_create's clone flags always include these; a fork (new process) does not.
const THREAD_CLONE: u64 = (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u64;
/// Futex commands (the op without its private and clock flags): waits and wakes only, no
/// priority-inheritance or file-descriptor futexes.
const FUTEX_CMDS: &[u64] = &[
    libc::FUTEX_WAIT as u64,
    libc::FUTEX_WAKE as u64,
    libc::FUTEX_REQUEUE as u64,
    libc::FUTEX_CMP_REQUEUE as u64,
    libc::FUTEX_WAKE_OP as u64,
    libc::FUTEX_WAIT_BITSET as u64,
    libc::FUTEX_WAKE_BITSET as u64,
];
/// FUTEX_CMD_MASK: the op without FUTEX_PRIVATE_FLAG and FUTEX_CLOCK_REALTIME.
const FUTEX_CMD: u64 =
    !((libc::FUTEX_PRIVATE_FLAG | libc::FUTEX_CLOCK_REALTIME) as u64) & 0xffff_ffff;

/// Everything a running VM may call. Kept in step with the table in docs/security.md (a test
/// checks that every name appears there).
#[rustfmt::skip]
pub const POLICY: &[Allowed] = &[
    // Memory.
    allow("mmap", libc::SYS_mmap, Args::NoBits(2, PROT_EXEC), "allocator and thread stacks; never executable"),
    allow("mprotect", libc::SYS_mprotect, Args::NoBits(2, PROT_EXEC), "allocator arenas and stack guard pages; never executable"),
    allow("munmap", libc::SYS_munmap, Args::Any, "allocator, thread stacks, guest memory at VM end"),
    allow("mremap", libc::SYS_mremap, Args::Any, "allocator (growing large buffers)"),
    allow("brk", libc::SYS_brk, Args::Any, "allocator"),
    allow("madvise", libc::SYS_madvise, Args::Any, "returning discarded guest pages and freed heap to the host"),
    // Threads and synchronisation.
    allow("clone", libc::SYS_clone, Args::AllBits(0, THREAD_CLONE), "starting vthreads and virtio I/O threads (threads only, no new processes)"),
    allow("clone3", libc::SYS_clone3, Args::Any, "let through here only to fail with ENOSYS (see REFUSED), so glibc falls back to clone"),
    allow("openat", libc::SYS_openat, Args::Any, "let through here only to fail with EACCES (see REFUSED): glibc's malloc opens /proc/sys/vm/overcommit_memory lazily when a thread's heap shrinks, and copes with a refusal"),
    allow("futex", libc::SYS_futex, Args::MaskedOneOf(1, FUTEX_CMD, FUTEX_CMDS), "locks, condition variables, thread join"),
    allow("set_robust_list", libc::SYS_set_robust_list, Args::Any, "new threads (glibc)"),
    allow("rseq", libc::SYS_rseq, Args::Any, "new threads (glibc registers restartable sequences)"),
    allow("sigaltstack", libc::SYS_sigaltstack, Args::Any, "new threads (Rust's stack-overflow guard)"),
    allow("rt_sigprocmask", libc::SYS_rt_sigprocmask, Args::Any, "new threads (signals blocked while a thread starts)"),
    allow("rt_sigreturn", libc::SYS_rt_sigreturn, Args::Any, "returning from a signal handler"),
    allow("prctl", libc::SYS_prctl, Args::OneOf(0, &[libc::PR_SET_NAME as u64]), "naming new threads"),
    allow("sched_yield", libc::SYS_sched_yield, Args::Any, "spinning vthreads back off"),
    allow("sched_getaffinity", libc::SYS_sched_getaffinity, Args::Any, "thread start-up (glibc sizes stacks from it)"),
    allow("gettid", libc::SYS_gettid, Args::Any, "thread identity (tracing, abort)"),
    allow("getpid", libc::SYS_getpid, Args::Any, "process identity (abort)"),
    allow("tgkill", libc::SYS_tgkill, Args::OneOf(2, &[libc::SIGABRT as u64]), "abort() on an internal error: SIGABRT to ourselves only"),
    allow("exit", libc::SYS_exit, Args::Any, "a thread ends"),
    allow("exit_group", libc::SYS_exit_group, Args::Any, "the process ends"),
    // Time.
    allow("clock_gettime", libc::SYS_clock_gettime, Args::Any, "guest timer and wall time (when the vDSO is unavailable)"),
    allow("clock_nanosleep", libc::SYS_clock_nanosleep, Args::Any, "sleeping"),
    allow("nanosleep", libc::SYS_nanosleep, Args::Any, "sleeping"),
    // I/O on descriptors opened at set-up.
    allow("read", libc::SYS_read, Args::Any, "console input, network frames, eventfds"),
    allow("write", libc::SYS_write, Args::Any, "console output, network frames, eventfds, log lines"),
    allow("readv", libc::SYS_readv, Args::Any, "scatter reads"),
    allow("writev", libc::SYS_writev, Args::Any, "scatter writes (log lines)"),
    allow("pread64", libc::SYS_pread64, Args::Any, "virtio-blk reads"),
    allow("pwrite64", libc::SYS_pwrite64, Args::Any, "virtio-blk writes"),
    allow("preadv", libc::SYS_preadv, Args::Any, "virtio-blk reads"),
    allow("pwritev", libc::SYS_pwritev, Args::Any, "virtio-blk writes"),
    allow("fsync", libc::SYS_fsync, Args::Any, "virtio-blk flush"),
    allow("fdatasync", libc::SYS_fdatasync, Args::Any, "virtio-blk flush"),
    allow("fallocate", libc::SYS_fallocate, Args::Any, "virtio-blk discard and write-zeroes"),
    allow("lseek", libc::SYS_lseek, Args::Any, "disk image size"),
    allow("fstat", libc::SYS_fstat, Args::Any, "disk image size"),
    allow("statx", libc::SYS_statx, Args::Any, "disk image size (newer glibc)"),
    allow("ioctl", libc::SYS_ioctl, Args::OneOf(1, TTY_IOCTLS), "terminal settings only"),
    allow("close", libc::SYS_close, Args::Any, "descriptors of stopped devices"),
    allow("fcntl", libc::SYS_fcntl, Args::OneOf(1, &[libc::F_GETFD as u64, libc::F_GETFL as u64]), "flag queries only (Rust checks a descriptor is open before closing it)"),
    allow("eventfd2", libc::SYS_eventfd2, Args::Any, "queue-notify and stop events, created when the guest starts a device"),
    allow("ppoll", libc::SYS_ppoll, Args::Any, "I/O threads wait for notifies and frames"),
    allow("poll", libc::SYS_poll, Args::Any, "I/O threads wait for notifies and frames"),
    allow("sendto", libc::SYS_sendto, Args::Any, "network frames on the passt socket"),
    allow("recvfrom", libc::SYS_recvfrom, Args::Any, "network frames on the passt socket"),
    allow("getrandom", libc::SYS_getrandom, Args::Any, "virtio-rng and hash-map seeds"),
];

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("seccomp sandbox: {0}")]
    Seccomp(#[from] seccompiler::Error),
    #[error("seccomp sandbox: {0}")]
    Filter(#[from] seccompiler::BackendError),
    #[error("seccomp sandbox: host architecture {0} is not supported")]
    Arch(&'static str),
    #[error("seccomp sandbox: installing the SIGSYS handler: {0}")]
    Handler(std::io::Error),
}

/// Compares the low 32 bits only: every argument we check is an `int` or has its bits of
/// interest there, and the kernel does not promise the upper half of an `int` argument is zero.
fn condition(idx: u8, op: SeccompCmpOp, v: u64) -> Result<SeccompCondition, SandboxError> {
    Ok(SeccompCondition::new(idx, SeccompCmpArgLen::Dword, op, v)?)
}

fn rules(args: Args) -> Result<Vec<SeccompRule>, SandboxError> {
    Ok(match args {
        Args::Any => vec![],
        Args::OneOf(idx, values) => values
            .iter()
            .map(|&v| {
                SeccompRule::new(vec![condition(idx, SeccompCmpOp::Eq, v)?])
                    .map_err(SandboxError::from)
            })
            .collect::<Result<_, _>>()?,
        Args::MaskedOneOf(idx, mask, values) => values
            .iter()
            .map(|&v| {
                SeccompRule::new(vec![condition(idx, SeccompCmpOp::MaskedEq(mask), v)?])
                    .map_err(SandboxError::from)
            })
            .collect::<Result<_, _>>()?,
        Args::NoBits(idx, mask) => vec![SeccompRule::new(vec![condition(
            idx,
            SeccompCmpOp::MaskedEq(mask),
            0,
        )?])?],
        Args::AllBits(idx, mask) => vec![SeccompRule::new(vec![condition(
            idx,
            SeccompCmpOp::MaskedEq(mask),
            mask,
        )?])?],
    })
}

/// The compiled filter: [`POLICY`] allowed, everything else traps.
pub fn filter() -> Result<BpfProgram, SandboxError> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|_| SandboxError::Arch(std::env::consts::ARCH))?;
    let mut map: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for a in POLICY {
        map.entry(a.nr).or_default().extend(rules(a.args)?);
    }
    let f = SeccompFilter::new(map, SeccompAction::Trap, SeccompAction::Allow, arch)?;
    Ok(f.try_into()?)
}

/// Calls that fail with an error instead of ending the process, each by a filter of its own
/// stacked on the main one (the kernel applies the strictest answer: this errno over the main
/// filter's "allow"). `clone3` fails with ENOSYS so glibc falls back to `clone`, whose flags the
/// main filter can check (clone3 passes them in memory, out of seccomp's reach). `openat` fails
/// with EACCES: no file can be opened, and libraries that probe a file lazily carry on.
pub const REFUSED: &[(&str, libc::c_long, i32)] = &[
    ("clone3", libc::SYS_clone3, libc::ENOSYS),
    ("openat", libc::SYS_openat, libc::EACCES),
];

fn refusal_filter(nr: libc::c_long, errno: i32) -> Result<BpfProgram, SandboxError> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|_| SandboxError::Arch(std::env::consts::ARCH))?;
    let map = BTreeMap::from([(nr, vec![])]);
    let f = SeccompFilter::new(
        map,
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        arch,
    )?;
    Ok(f.try_into()?)
}

/// Layout of the SIGSYS part of `siginfo_t` (`_sigsys` in the kernel's union).
#[repr(C)]
struct SigSysInfo {
    signo: i32,
    errno: i32,
    code: i32,
    _pad: i32,
    call_addr: usize,
    syscall: i32,
    arch: u32,
}

/// Formats `n` in decimal into `buf`, returning the digits (no allocation: runs in a handler).
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// Names of the calls a compromised or buggy VM plane would most likely try.
fn syscall_name(nr: libc::c_long) -> &'static str {
    match nr {
        libc::SYS_openat => "openat",
        libc::SYS_open => "open",
        libc::SYS_socket => "socket",
        libc::SYS_connect => "connect",
        libc::SYS_execve => "execve",
        libc::SYS_execveat => "execveat",
        libc::SYS_fork => "fork",
        libc::SYS_vfork => "vfork",
        libc::SYS_clone => "clone with process flags",
        libc::SYS_ptrace => "ptrace",
        libc::SYS_mmap => "mmap with PROT_EXEC",
        libc::SYS_mprotect => "mprotect with PROT_EXEC",
        libc::SYS_ioctl => "ioctl other than terminal settings",
        libc::SYS_rt_sigaction => "rt_sigaction",
        libc::SYS_kill => "kill",
        libc::SYS_futex => "futex with an unusual operation",
        _ => "see /usr/include/asm/unistd_64.h",
    }
}

extern "C" fn on_sigsys(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t for SIGSYS with SA_SIGINFO; its layout begins
    // with the fields of `SigSysInfo` (asm-generic/siginfo.h, 64-bit).
    let nr = unsafe { (*(info as *const SigSysInfo)).syscall };
    let mut digits = [0u8; 20];
    let parts: [&[u8]; 5] = [
        b"\r\nduvisor: sandbox: forbidden system call ",
        decimal(nr as u64, &mut digits),
        b" (",
        syscall_name(nr as libc::c_long).as_bytes(),
        b") after set-up; the VM is stopped (run with --no-sandbox to debug)\n",
    ];
    crate::console::restore_terminal();
    for p in parts {
        // SAFETY: writes a valid buffer to stderr; write(2) is async-signal-safe.
        unsafe { libc::write(libc::STDERR_FILENO, p.as_ptr().cast(), p.len()) };
    }
    // SAFETY: _exit is async-signal-safe and ends the process without running anything else.
    unsafe { libc::_exit(SANDBOX_EXIT) };
}

/// Install the sandbox on every thread of the process (and so on every thread started later).
/// Irreversible: call it once set-up is complete.
pub fn install() -> Result<(), SandboxError> {
    let main = filter()?;
    let refusals = REFUSED
        .iter()
        .map(|&(_, nr, errno)| refusal_filter(nr, errno))
        .collect::<Result<Vec<_>, _>>()?;
    // SAFETY: a zeroed sigaction is a valid starting point; we set the handler and flags and
    // pass valid pointers. The handler only calls async-signal-safe functions.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            on_sigsys;
        sa.sa_sigaction = handler as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(libc::SIGSYS, &sa, std::ptr::null_mut()) != 0 {
            return Err(SandboxError::Handler(std::io::Error::last_os_error()));
        }
    }
    for f in &refusals {
        seccompiler::apply_filter_all_threads(f)?;
    }
    seccompiler::apply_filter_all_threads(&main)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_compiles_and_has_no_duplicates() {
        assert!(!filter().unwrap().is_empty());
        let mut names: Vec<_> = POLICY.iter().map(|a| a.name).collect();
        names.sort_unstable();
        let n = names.len();
        names.dedup();
        assert_eq!(n, names.len(), "a system call is listed twice");
    }

    #[test]
    fn nothing_dangerous_is_allowed() {
        for forbidden in [
            libc::SYS_open,
            libc::SYS_socket,
            libc::SYS_connect,
            libc::SYS_execve,
            libc::SYS_execveat,
            libc::SYS_ptrace,
            libc::SYS_fork,
            libc::SYS_vfork,
            libc::SYS_process_vm_readv,
            libc::SYS_process_vm_writev,
            libc::SYS_mount,
            libc::SYS_rt_sigaction,
            libc::SYS_seccomp,
            // passt exits by itself when its socket closes: no child to signal or reap.
            libc::SYS_kill,
            libc::SYS_wait4,
        ] {
            assert!(
                POLICY.iter().all(|a| a.nr != forbidden),
                "system call {forbidden} must stay forbidden"
            );
        }
        // Let through the main filter only to be refused.
        for (name, nr, _) in REFUSED {
            assert!(
                POLICY.iter().any(|a| a.nr == *nr),
                "{name} is not in POLICY"
            );
        }
        assert!(REFUSED.iter().any(|r| r.1 == libc::SYS_openat));
    }

    #[test]
    fn every_call_is_documented() {
        let doc = include_str!("../../../docs/security.md");
        for a in POLICY {
            assert!(
                doc.contains(&format!("`{}`", a.name)),
                "docs/security.md does not list `{}`",
                a.name
            );
        }
    }

    #[test]
    fn decimal_formats() {
        let mut b = [0u8; 20];
        assert_eq!(decimal(0, &mut b), b"0");
        assert_eq!(decimal(41, &mut b), b"41");
        assert_eq!(decimal(u64::MAX, &mut b), b"18446744073709551615");
    }
}
