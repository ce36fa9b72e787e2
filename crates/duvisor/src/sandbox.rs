//! The seccomp sandbox: once a VM is set up (guest memory granted, kernel loaded, disk images,
//! TAP devices and sockets open), every DuVisor thread — the vthreads, the I/O threads and the
//! console reader, present and future — may make only the system calls in [`POLICY`]. Opening
//! a file fails with EACCES ([`REFUSED`]); anything else (creating a socket, `execve`, `ptrace`,
//! making memory executable, ...) ends the process: the kernel delivers `SIGSYS`, and our
//! handler prints one line naming the call and exits with status [`SANDBOX_EXIT`].
//!
//! Two layers, as Firecracker does it: [`install`] puts the union of every thread class's calls
//! on all threads (`TSYNC`), and each thread then narrows itself to its class's list
//! ([`ThreadClass`], [`enter`]): a vCPU thread cannot make the block device's or the network
//! back end's calls, an I/O thread cannot make the other devices' calls. Threads started after
//! [`install`] are started by one spawner thread ([`spawn`]), which is left with the union, so
//! a vCPU thread that starts a device's I/O thread does not pass its own narrow filter on.
//! docs/security.md explains each entry.
use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::{mpsc, Mutex, OnceLock};
use std::thread::JoinHandle;

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
    /// Argument `a` is the first value and argument `b` the second.
    Both(u8, u64, u8, u64),
    /// Argument `pid` is this process's id (fixed when the filter is built) and argument
    /// `idx` is the value.
    ToSelf(u8, u8, u64),
    /// Argument 0 is one of the compiled-code descriptors given to [`install`]; with none
    /// (no compiling tier) the call is not allowed at all.
    CodeSpaceFd,
}

/// The kinds of DuVisor thread, each with its own allow-list: the calls of [`POLICY`] whose
/// [`Allowed::threads`] name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadClass {
    /// The main thread once the VM runs: waits for the vthreads, prints statistics, restores
    /// the terminal.
    Main,
    /// A vthread: runs its hart, handles every exit, writes queue-notify eventfds.
    Vcpu,
    /// The I/O thread of a virtio-blk device: reads and writes its image.
    BlockIo,
    /// The I/O thread of a virtio-net device: frames to and from the TAP device or passt.
    NetIo,
    /// The I/O thread of the virtio-rng device.
    RngIo,
    /// The console reader: stdin to the UART.
    Console,
    /// The compiling tier's compiler thread.
    Compiler,
    /// The lock-up watchdog.
    Watchdog,
    /// The Goldfish RTC's alarm thread.
    Rtc,
}

impl ThreadClass {
    pub const ALL: [ThreadClass; 9] = [
        ThreadClass::Main,
        ThreadClass::Vcpu,
        ThreadClass::BlockIo,
        ThreadClass::NetIo,
        ThreadClass::RngIo,
        ThreadClass::Console,
        ThreadClass::Compiler,
        ThreadClass::Watchdog,
        ThreadClass::Rtc,
    ];

    const fn bit(self) -> u16 {
        1 << self as u16
    }

    pub const fn name(self) -> &'static str {
        match self {
            ThreadClass::Main => "main",
            ThreadClass::Vcpu => "vcpu",
            ThreadClass::BlockIo => "blk-io",
            ThreadClass::NetIo => "net-io",
            ThreadClass::RngIo => "rng-io",
            ThreadClass::Console => "console",
            ThreadClass::Compiler => "compiler",
            ThreadClass::Watchdog => "watchdog",
            ThreadClass::Rtc => "rtc",
        }
    }

    /// The calls of [`POLICY`] this class may make.
    pub fn calls(self) -> impl Iterator<Item = &'static Allowed> {
        POLICY.iter().filter(move |a| a.threads & self.bit() != 0)
    }
}

/// Which thread classes may make a call: a set of [`ThreadClass`] bits.
type Threads = u16;
const MAIN: Threads = ThreadClass::Main.bit();
const VCPU: Threads = ThreadClass::Vcpu.bit();
const BLK: Threads = ThreadClass::BlockIo.bit();
const NET: Threads = ThreadClass::NetIo.bit();
const RNG: Threads = ThreadClass::RngIo.bit();
const CONSOLE: Threads = ThreadClass::Console.bit();
const COMPILER: Threads = ThreadClass::Compiler.bit();
const WATCHDOG: Threads = ThreadClass::Watchdog.bit();
const RTC: Threads = ThreadClass::Rtc.bit();
/// The device I/O threads.
const IO: Threads = BLK | NET | RNG;
/// Every class.
const ANY: Threads = MAIN | VCPU | IO | CONSOLE | COMPILER | WATCHDOG | RTC;
/// No class: only the spawner thread, and a new thread before it enters its class (starting
/// a thread, naming it, installing the class's filter).
const STARTUP: Threads = 0;

/// One allowed system call, the threads that may make it, and why DuVisor needs it after
/// set-up.
#[derive(Debug, Clone, Copy)]
pub struct Allowed {
    pub name: &'static str,
    pub nr: libc::c_long,
    pub args: Args,
    pub threads: Threads,
    pub why: &'static str,
}

const fn allow(
    name: &'static str,
    nr: libc::c_long,
    args: Args,
    threads: Threads,
    why: &'static str,
) -> Allowed {
    Allowed {
        name,
        nr,
        args,
        threads,
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

/// `madvise` advice DuVisor and its allocator give: dropping pages (glibc's free and thread
/// exit, discarded guest pages, filled code pages) and freeing the code space's memfd pages.
const MADVICE: &[u64] = &[libc::MADV_DONTNEED as u64, libc::MADV_REMOVE as u64];

/// Everything a running VM may call, and which threads may call it. Kept in step with the
/// table in docs/security.md (a test checks that every name appears there).
#[rustfmt::skip]
pub const POLICY: &[Allowed] = &[
    // Memory.
    allow("mmap", libc::SYS_mmap, Args::NoBits(2, PROT_EXEC), ANY, "allocator and thread stacks; never executable"),
    allow("mprotect", libc::SYS_mprotect, Args::NoBits(2, PROT_EXEC), ANY, "allocator arenas and stack guard pages; never executable"),
    allow("munmap", libc::SYS_munmap, Args::Any, ANY, "allocator, thread stacks, guest memory at VM end"),
    allow("mremap", libc::SYS_mremap, Args::Any, ANY, "allocator (growing large buffers)"),
    allow("brk", libc::SYS_brk, Args::Any, ANY, "allocator"),
    allow("madvise", libc::SYS_madvise, Args::OneOf(2, MADVICE), ANY, "MADV_DONTNEED and MADV_REMOVE only: returning freed heap, thread stacks, discarded guest pages and code space to the host"),
    // Threads and synchronisation.
    allow("clone", libc::SYS_clone, Args::AllBits(0, THREAD_CLONE), STARTUP, "the spawner thread starts vthreads and virtio I/O threads (threads only, no new processes)"),
    allow("clone3", libc::SYS_clone3, Args::Any, STARTUP, "let through here only to fail with ENOSYS (see REFUSED), so glibc falls back to clone"),
    allow("set_robust_list", libc::SYS_set_robust_list, Args::Any, STARTUP, "a new thread starts (glibc)"),
    allow("rseq", libc::SYS_rseq, Args::Any, STARTUP, "a new thread starts (glibc registers restartable sequences)"),
    allow("prctl", libc::SYS_prctl, Args::OneOf(0, &[libc::PR_SET_NAME as u64, libc::PR_SET_NO_NEW_PRIVS as u64]), STARTUP, "a new thread names itself, and sets no_new_privs (already set) before it enters its class"),
    allow("seccomp", libc::SYS_seccomp, Args::Both(0, libc::SECCOMP_SET_MODE_FILTER as u64, 1, 0), STARTUP, "a new thread enters its class: one more filter on itself, which can only forbid more (no TSYNC, no listener)"),
    allow("sched_getaffinity", libc::SYS_sched_getaffinity, Args::Any, ANY, "a thread starts, or makes its first allocation (glibc counts the CPUs it may use to size stacks and malloc arenas)"),
    allow("openat", libc::SYS_openat, Args::Any, ANY, "let through here only to fail with EACCES (see REFUSED): glibc's malloc opens /proc/sys/vm/overcommit_memory lazily when a thread's heap shrinks, and copes with a refusal"),
    allow("futex", libc::SYS_futex, Args::MaskedOneOf(1, FUTEX_CMD, FUTEX_CMDS), ANY, "locks, condition variables, thread join"),
    allow("sigaltstack", libc::SYS_sigaltstack, Args::Any, ANY, "a thread ends (Rust removes its stack-overflow guard)"),
    allow("rt_sigprocmask", libc::SYS_rt_sigprocmask, Args::Any, ANY, "a thread starts or ends (signals blocked meanwhile)"),
    allow("rt_sigreturn", libc::SYS_rt_sigreturn, Args::Any, ANY, "returning from a signal handler"),
    allow("sched_yield", libc::SYS_sched_yield, Args::Any, ANY, "spinning vthreads and locks back off"),
    allow("gettid", libc::SYS_gettid, Args::Any, ANY, "thread identity (tracing, abort)"),
    allow("getpid", libc::SYS_getpid, Args::Any, ANY, "process identity (abort)"),
    allow("tgkill", libc::SYS_tgkill, Args::ToSelf(0, 2, libc::SIGABRT as u64), ANY, "abort() on an internal error: SIGABRT, and only to a thread of this process"),
    allow("exit", libc::SYS_exit, Args::Any, ANY, "a thread ends"),
    allow("exit_group", libc::SYS_exit_group, Args::Any, ANY, "the process ends"),
    // Time.
    allow("clock_gettime", libc::SYS_clock_gettime, Args::Any, ANY, "guest timer and wall time (when the vDSO is unavailable)"),
    allow("clock_nanosleep", libc::SYS_clock_nanosleep, Args::Any, ANY, "sleeping"),
    allow("nanosleep", libc::SYS_nanosleep, Args::Any, ANY, "sleeping"),
    // I/O on descriptors opened at set-up.
    allow("read", libc::SYS_read, Args::Any, VCPU | IO | CONSOLE, "console input, network frames, eventfds"),
    allow("write", libc::SYS_write, Args::Any, ANY, "console output, network frames, eventfds, log lines and the sandbox's own message (any thread)"),
    allow("readv", libc::SYS_readv, Args::Any, NET, "network frames (TAP)"),
    allow("writev", libc::SYS_writev, Args::Any, NET, "network frames (TAP)"),
    allow("pread64", libc::SYS_pread64, Args::Any, BLK, "virtio-blk reads"),
    allow("pwrite64", libc::SYS_pwrite64, Args::Any, BLK, "virtio-blk writes"),
    allow("preadv", libc::SYS_preadv, Args::Any, BLK, "virtio-blk reads"),
    allow("pwritev", libc::SYS_pwritev, Args::Any, BLK, "virtio-blk writes"),
    allow("fsync", libc::SYS_fsync, Args::Any, BLK, "virtio-blk flush"),
    allow("fdatasync", libc::SYS_fdatasync, Args::Any, BLK, "virtio-blk flush"),
    allow("fallocate", libc::SYS_fallocate, Args::Any, BLK, "virtio-blk discard and write-zeroes"),
    allow("pwrite64 (code space)", libc::SYS_pwrite64, Args::CodeSpaceFd, VCPU, "copying compiled code into the vCPU's code space: on its memfd only, which no mapping can write"),
    allow("fallocate (code space)", libc::SYS_fallocate, Args::CodeSpaceFd, VCPU, "emptying a full code space (punching a hole in its memfd): on that memfd only"),
    allow("statx", libc::SYS_statx, Args::Any, ANY, "let through here only to fail with ENOSYS (see REFUSED): it takes a path, so host paths could be probed; nothing stats a file after set-up"),
    allow("ioctl", libc::SYS_ioctl, Args::OneOf(1, TTY_IOCTLS), ANY, "terminal settings only (restored by any thread that ends the VM)"),
    allow("close", libc::SYS_close, Args::Any, MAIN | VCPU | IO, "descriptors of stopped devices"),
    allow("fcntl", libc::SYS_fcntl, Args::OneOf(1, &[libc::F_GETFD as u64, libc::F_GETFL as u64]), ANY, "flag queries only (Rust checks a descriptor is open before closing it)"),
    allow("eventfd2", libc::SYS_eventfd2, Args::Any, VCPU, "queue-notify and stop events, created when the guest starts a device"),
    allow("ppoll", libc::SYS_ppoll, Args::Any, IO | CONSOLE, "I/O threads wait for notifies and frames"),
    allow("poll", libc::SYS_poll, Args::Any, IO | CONSOLE, "I/O threads wait for notifies and frames"),
    allow("sendto", libc::SYS_sendto, Args::Any, NET, "network frames on the passt socket"),
    allow("recvfrom", libc::SYS_recvfrom, Args::Any, NET, "network frames on the passt socket"),
    allow("getrandom", libc::SYS_getrandom, Args::Any, ANY, "virtio-rng, and hash-map seeds (any thread's first map)"),
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
    #[error("seccomp sandbox: starting the thread spawner: {0}")]
    Spawner(std::io::Error),
    #[error("seccomp sandbox: installed twice")]
    Twice,
}

/// Compares the low 32 bits only: every argument we check is an `int` or has its bits of
/// interest there, and the kernel does not promise the upper half of an `int` argument is zero.
fn condition(idx: u8, op: SeccompCmpOp, v: u64) -> Result<SeccompCondition, SandboxError> {
    Ok(SeccompCondition::new(idx, SeccompCmpArgLen::Dword, op, v)?)
}

/// The rules for `args`: empty means any arguments, None that the entry allows nothing.
fn rules(args: Args, code_fds: &[i32]) -> Result<Option<Vec<SeccompRule>>, SandboxError> {
    Ok(Some(match args {
        Args::Any => vec![],
        Args::CodeSpaceFd if code_fds.is_empty() => return Ok(None),
        Args::CodeSpaceFd => code_fds
            .iter()
            .map(|&fd| {
                SeccompRule::new(vec![condition(0, SeccompCmpOp::Eq, fd as u64)?])
                    .map_err(SandboxError::from)
            })
            .collect::<Result<_, _>>()?,
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
        Args::Both(a, va, b, vb) => vec![SeccompRule::new(vec![
            condition(a, SeccompCmpOp::Eq, va)?,
            condition(b, SeccompCmpOp::Eq, vb)?,
        ])?],
        Args::ToSelf(pid, idx, v) => vec![SeccompRule::new(vec![
            condition(pid, SeccompCmpOp::Eq, std::process::id() as u64)?,
            condition(idx, SeccompCmpOp::Eq, v)?,
        ])?],
    }))
}

fn target_arch() -> Result<TargetArch, SandboxError> {
    TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|_| SandboxError::Arch(std::env::consts::ARCH))
}

/// A filter allowing the calls of `calls`, trapping everything else. A call listed twice
/// (for different classes) is allowed when either entry allows it; an entry with any
/// arguments makes the call unconditional (seccompiler reads an empty rule list so).
fn allow_list<'a>(
    calls: impl Iterator<Item = &'a Allowed>,
    code_fds: &[i32],
) -> Result<BpfProgram, SandboxError> {
    let mut map: BTreeMap<i64, Option<Vec<SeccompRule>>> = BTreeMap::new();
    for a in calls {
        let Some(r) = rules(a.args, code_fds)? else {
            continue;
        };
        let entry = map.entry(a.nr).or_insert(Some(Vec::new()));
        match (entry.as_mut(), r.is_empty()) {
            // Already unconditional.
            (None, _) => {}
            (Some(_), true) => *entry = None,
            (Some(v), false) => v.extend(r),
        }
    }
    let map: BTreeMap<i64, Vec<SeccompRule>> = map
        .into_iter()
        .map(|(nr, r)| (nr, r.unwrap_or_default()))
        .collect();
    let f = SeccompFilter::new(
        map,
        SeccompAction::Trap,
        SeccompAction::Allow,
        target_arch()?,
    )?;
    Ok(f.try_into()?)
}

/// The process-wide filter: every call of [`POLICY`] allowed (the union of the classes and
/// what starting a thread needs), everything else traps. `code_fds`: see [`install`].
pub fn filter(code_fds: &[i32]) -> Result<BpfProgram, SandboxError> {
    allow_list(POLICY.iter(), code_fds)
}

/// The filter a thread of `class` adds on itself: its calls allowed, everything else traps.
pub fn class_filter(class: ThreadClass, code_fds: &[i32]) -> Result<BpfProgram, SandboxError> {
    allow_list(class.calls(), code_fds)
}

/// Calls that fail with an error instead of ending the process, each by a filter of its own
/// stacked on the main one (the kernel applies the strictest answer: this errno over the main
/// filter's "allow"). `clone3` fails with ENOSYS so glibc falls back to `clone`, whose flags the
/// main filter can check (clone3 passes them in memory, out of seccomp's reach). `openat` fails
/// with EACCES: no file can be opened, and libraries that probe a file lazily carry on.
/// `statx` fails with ENOSYS: it resolves a path (even with AT_EMPTY_PATH a non-empty path is
/// looked up), which seccomp cannot see, so it could probe the host's files.
pub const REFUSED: &[(&str, libc::c_long, i32)] = &[
    ("clone3", libc::SYS_clone3, libc::ENOSYS),
    ("openat", libc::SYS_openat, libc::EACCES),
    ("statx", libc::SYS_statx, libc::ENOSYS),
];

fn refusal_filter(nr: libc::c_long, errno: i32) -> Result<BpfProgram, SandboxError> {
    let map = BTreeMap::from([(nr, vec![])]);
    let f = SeccompFilter::new(
        map,
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        target_arch()?,
    )?;
    Ok(f.try_into()?)
}

/// Set once [`install`] has put the process-wide filter in place.
struct Installed {
    /// Each class's filter, in [`ThreadClass::ALL`] order, compiled before the sandbox.
    classes: Vec<BpfProgram>,
    /// Jobs for the spawner thread: each starts one thread.
    spawner: Mutex<mpsc::Sender<Box<dyn FnOnce() + Send>>>,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();

thread_local! {
    /// The class this thread entered (const-initialised: the SIGSYS handler reads it).
    static CLASS: Cell<Option<ThreadClass>> = const { Cell::new(None) };
}

/// Narrow the calling thread to `class`'s allow-list. Before [`install`] (and without a
/// sandbox) it does nothing; a thread enters one class once, later calls do nothing.
pub fn enter(class: ThreadClass) -> Result<(), SandboxError> {
    let Some(inst) = INSTALLED.get() else {
        return Ok(());
    };
    if CLASS.get().is_some() {
        return Ok(());
    }
    let i = ThreadClass::ALL
        .iter()
        .position(|&c| c == class)
        .expect("every class is listed");
    seccompiler::apply_filter(&inst.classes[i])?;
    CLASS.set(Some(class));
    Ok(())
}

/// [`enter`], ending the process if the filter cannot be added: a thread never runs with a
/// wider list than its class's.
pub fn enter_or_exit(class: ThreadClass) {
    if let Err(e) = enter(class) {
        eprintln!("duvisor: {e} (entering the {} thread class)", class.name());
        // SAFETY: _exit ends the process at once; nothing is left half-done that matters more
        // than running a thread unconfined.
        unsafe { libc::_exit(SANDBOX_EXIT) };
    }
}

/// For the compiling tier's compiler thread, which dvext starts during set-up: it enters its
/// class before each job (the first job comes after [`install`]).
pub fn enter_compiler() {
    enter_or_exit(ThreadClass::Compiler)
}

/// Start a thread of `class` named `name` running `f`. Once the sandbox is installed the
/// spawner thread starts it (so it does not inherit its caller's narrow filter) and it enters
/// its class before `f` runs; without a sandbox it is an ordinary thread.
pub fn spawn<F, T>(class: ThreadClass, name: &str, f: F) -> std::io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let body = move || {
        enter_or_exit(class);
        f()
    };
    let builder = std::thread::Builder::new().name(name.to_string());
    let Some(inst) = INSTALLED.get() else {
        return builder.spawn(body);
    };
    let (reply, answer) = mpsc::sync_channel(1);
    let job: Box<dyn FnOnce() + Send> = Box::new(move || {
        let _ = reply.send(builder.spawn(body));
    });
    let gone = || std::io::Error::other("the sandbox's thread spawner has stopped");
    inst.spawner
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(job)
        .map_err(|_| gone())?;
    answer.recv().map_err(|_| gone())?
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
        libc::SYS_tgkill => "tgkill of another process, or not SIGABRT",
        libc::SYS_madvise => "madvise other than MADV_DONTNEED or MADV_REMOVE",
        libc::SYS_fcntl => "fcntl other than a flag query",
        libc::SYS_prctl => "prctl other than naming a thread",
        libc::SYS_seccomp => "seccomp",
        libc::SYS_newfstatat => "newfstatat",
        libc::SYS_clone3 => "clone3",
        // Allowed to some thread classes but not to this thread's.
        _ => POLICY
            .iter()
            .find(|a| a.nr == nr)
            .map_or("see /usr/include/asm/unistd_64.h", |a| a.name),
    }
}

extern "C" fn on_sigsys(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t for SIGSYS with SA_SIGINFO; its layout begins
    // with the fields of `SigSysInfo` (asm-generic/siginfo.h, 64-bit).
    let nr = unsafe { (*(info as *const SigSysInfo)).syscall };
    let mut digits = [0u8; 20];
    // A const-initialised Copy thread local: reading it neither allocates nor locks.
    let class = CLASS.get().map_or("process", ThreadClass::name);
    let parts: [&[u8]; 7] = [
        b"\r\nduvisor: sandbox: forbidden system call ",
        decimal(nr as u64, &mut digits),
        b" (",
        syscall_name(nr as libc::c_long).as_bytes(),
        b") on a thread of class ",
        class.as_bytes(),
        b" after set-up; the VM is stopped (run with --no-sandbox to debug)\n",
    ];
    crate::console::restore_terminal();
    for p in parts {
        // SAFETY: writes a valid buffer to stderr; write(2) is async-signal-safe.
        unsafe { libc::write(libc::STDERR_FILENO, p.as_ptr().cast(), p.len()) };
    }
    // SAFETY: _exit is async-signal-safe and ends the process without running anything else.
    unsafe { libc::_exit(SANDBOX_EXIT) };
}

/// Install the sandbox on every thread of the process (and so on every thread started later),
/// start the spawner thread, and put the calling thread in `caller`'s class. `code_fds`: the
/// descriptors vCPU threads write compiled code through (`Hart::jit_code_fd`), the only ones
/// they may `pwrite` or `fallocate`. Irreversible: call it once set-up is complete.
pub fn install(caller: ThreadClass, code_fds: &[i32]) -> Result<(), SandboxError> {
    let main = filter(code_fds)?;
    let refusals = REFUSED
        .iter()
        .map(|&(_, nr, errno)| refusal_filter(nr, errno))
        .collect::<Result<Vec<_>, _>>()?;
    let classes = ThreadClass::ALL
        .iter()
        .map(|&c| class_filter(c, code_fds))
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
    let (tx, rx) = mpsc::channel::<Box<dyn FnOnce() + Send>>();
    std::thread::Builder::new()
        .name("spawner".into())
        .spawn(move || {
            for job in rx {
                job();
            }
        })
        .map_err(SandboxError::Spawner)?;
    for f in &refusals {
        seccompiler::apply_filter_all_threads(f)?;
    }
    seccompiler::apply_filter_all_threads(&main)?;
    if INSTALLED
        .set(Installed {
            classes,
            spawner: Mutex::new(tx),
        })
        .is_err()
    {
        return Err(SandboxError::Twice);
    }
    enter(caller)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_compiles_and_has_no_duplicates() {
        assert!(!filter(&[]).unwrap().is_empty());
        assert!(!filter(&[7, 9]).unwrap().is_empty());
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
            libc::SYS_capset,
            libc::SYS_setuid,
            libc::SYS_newfstatat,
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
        assert!(REFUSED.iter().any(|r| r.1 == libc::SYS_statx));
    }

    /// The `threads` column of docs/security.md for a call.
    fn threads_column(a: &Allowed) -> String {
        match a.threads {
            ANY => "all".into(),
            STARTUP => "startup".into(),
            t => ThreadClass::ALL
                .iter()
                .filter(|c| t & c.bit() != 0)
                .map(|c| c.name())
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    #[test]
    fn every_call_is_documented_with_its_threads() {
        let doc = include_str!("../../../docs/security.md");
        for a in POLICY {
            let row = doc
                .lines()
                .find(|l| l.starts_with(&format!("| `{}` |", a.name)))
                .unwrap_or_else(|| panic!("docs/security.md does not list `{}`", a.name));
            let cols: Vec<&str> = row.split(" | ").collect();
            assert_eq!(cols[1], threads_column(a), "threads of `{}`", a.name);
        }
    }

    #[test]
    fn classes_are_narrower_than_the_union() {
        // Only the union may start threads or add filters, and each class has what every
        // thread needs to live and end.
        for c in ThreadClass::ALL {
            let calls: Vec<&str> = c.calls().map(|a| a.name).collect();
            for startup in [
                "clone",
                "clone3",
                "seccomp",
                "prctl",
                "set_robust_list",
                "rseq",
            ] {
                assert!(!calls.contains(&startup), "{}: {startup}", c.name());
            }
            for needed in [
                "futex", "mmap", "munmap", "exit", "write", "openat", "ioctl",
            ] {
                assert!(calls.contains(&needed), "{}: {needed}", c.name());
            }
            assert!(!class_filter(c, &[7]).unwrap().is_empty());
        }
        // A vCPU thread writes only its code space's descriptor.
        for a in ThreadClass::Vcpu.calls() {
            let io = [
                libc::SYS_pwritev,
                libc::SYS_pwrite64,
                libc::SYS_fallocate,
                libc::SYS_sendto,
                libc::SYS_recvfrom,
                libc::SYS_writev,
            ];
            if io.contains(&a.nr) {
                assert!(
                    matches!(a.args, Args::CodeSpaceFd),
                    "a vCPU thread may {}",
                    a.name
                );
            }
        }
        // Without code descriptors the code-space entries allow nothing (an empty rule list
        // would allow any argument).
        assert!(rules(Args::CodeSpaceFd, &[]).unwrap().is_none());
        assert_eq!(rules(Args::CodeSpaceFd, &[3, 4]).unwrap().unwrap().len(), 2);
    }

    #[test]
    fn decimal_formats() {
        let mut b = [0u8; 20];
        assert_eq!(decimal(0, &mut b), b"0");
        assert_eq!(decimal(41, &mut b), b"41");
        assert_eq!(decimal(u64::MAX, &mut b), b"18446744073709551615");
    }
}
