//! The seccomp sandbox (`duvisor::sandbox`): after `install()`, what a running VM needs still
//! works (threads, memory, I/O on open descriptors, randomness), opening any host file fails
//! with EACCES, and each other kind of escape a compromised VM plane would try — creating a
//! socket, starting a program, making memory executable, ptrace, signalling another process —
//! ends the process with status 159 and a one-line reason.
//!
//! Each case runs in a child process (this test binary re-run with `DUVISOR_SANDBOX_CASE`), since
//! the filter is irreversible and covers every thread.

use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

use duvisor::sandbox::{install, spawn, ThreadClass, SANDBOX_EXIT};

const CASE_ENV: &str = "DUVISOR_SANDBOX_CASE";
/// A scratch file the child opens before the sandbox (as a disk image is).
const FILE_ENV: &str = "DUVISOR_SANDBOX_FILE";

/// What a VM does after set-up; panics if the sandbox got in the way. Threads start through
/// the sandbox's spawner, as the VM's do.
fn allowed_work() {
    let t = spawn(ThreadClass::Vcpu, "worker", || (0..1000u64).sum::<u64>()).unwrap();
    assert_eq!(t.join().unwrap(), 499_500);
    let big = vec![7u8; 64 << 20];
    assert_eq!(big.iter().map(|&b| b as u64).sum::<u64>(), 7 * (64 << 20));
    drop(big);
    let mut r = [0u8; 32];
    // SAFETY: writes at most 32 bytes into `r`.
    assert_eq!(
        unsafe { libc::getrandom(r.as_mut_ptr().cast(), r.len(), 0) },
        32
    );
    let pair = std::sync::Arc::new((std::sync::Mutex::new(0), std::sync::Condvar::new()));
    let p = pair.clone();
    let t = spawn(ThreadClass::BlockIo, "notifier", move || {
        *p.0.lock().unwrap() = 1;
        p.1.notify_one();
    })
    .unwrap();
    let g = pair
        .1
        .wait_while(pair.0.lock().unwrap(), |v| *v == 0)
        .unwrap();
    assert_eq!(*g, 1);
    drop(g);
    t.join().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1));
    eprintln!("ALLOWED-WORK-OK");
}

/// pwrite of one byte at offset 0 of `fd`.
fn pwrite_byte(fd: i32) -> isize {
    // SAFETY: writes one byte from a valid buffer to a descriptor we own.
    unsafe { libc::pwrite(fd, b"x".as_ptr().cast(), 1, 0) }
}

/// In the child: install the sandbox, do allowed work, then make the forbidden call of `case`.
#[test]
fn sandbox_child() {
    let Ok(case) = std::env::var(CASE_ENV) else {
        return; // run directly by the harness: nothing to do
    };
    let file = std::env::var(FILE_ENV).ok().map(|p| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(p)
            .unwrap()
    });
    // Another process of ours, started before the sandbox (as passt is).
    let victim = (case == "tgkill-other").then(|| {
        // No pipes of ours: the parent waits for the child's output to close, not for the sleep.
        let c = Command::new("sleep")
            .arg("60")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        eprintln!("VICTIM={}", c.id());
        c
    });
    // A compiled-code memfd, as a vCPU's code space is.
    // SAFETY: a NUL-terminated name; the descriptor lives as long as the process.
    let code_fd = unsafe { libc::memfd_create(c"code".as_ptr(), 0) };
    assert!(code_fd >= 0);
    install(ThreadClass::Main, &[code_fd]).expect("installing the sandbox");
    allowed_work();
    eprintln!("ATTEMPTING-FORBIDDEN");
    match case.as_str() {
        "none" => {}
        "open" => {
            // Refused with EACCES (not fatal: libraries probe files lazily), then a socket.
            for path in ["/etc/hostname", "/proc/self/mem", "/dev/null"] {
                let e = std::fs::File::open(path).expect_err("a file was opened");
                assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{path}");
            }
            let e = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open("/tmp/duvisor-sandbox-must-not-exist")
                .expect_err("a file was created");
            assert_eq!(e.raw_os_error(), Some(libc::EACCES));
            // (The parent checks it does not exist: stat is not allowed here.)
            eprintln!("OPEN-REFUSED");
            let _ = std::net::TcpListener::bind("127.0.0.1:0");
        }
        "socket" => {
            let _ = std::net::TcpListener::bind("127.0.0.1:0");
        }
        "exec" => {
            let _ = Command::new("/bin/true").status();
        }
        "mmap-exec" => {
            // SAFETY: an anonymous mapping request; the result is only compared.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_EXEC,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            eprintln!("mmap returned {p:?}");
        }
        "ptrace" => {
            // SAFETY: PTRACE_TRACEME has no memory arguments.
            unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) };
        }
        "kill" => {
            // No process has this pid (above any pid_max), so even unfiltered it harms none.
            // SAFETY: kill has no memory arguments.
            unsafe { libc::kill(libc::pid_t::MAX, libc::SIGTERM) };
        }
        "tgkill-other" => {
            let pid = victim.as_ref().unwrap().id() as i32;
            // SAFETY: tgkill has no memory arguments.
            let r = unsafe { libc::syscall(libc::SYS_tgkill, pid, pid, libc::SIGABRT) };
            eprintln!("tgkill returned {r}");
        }
        "abort" => std::process::abort(),
        "madvise" => {
            let mut page = vec![1u8; 8192];
            let p = (page.as_mut_ptr() as usize).next_multiple_of(4096);
            // Advice the VM plane never gives (the reviewed attack used MADV_HWPOISON, which
            // would really poison the page if it got through).
            // SAFETY: a page inside our own buffer; the result is only printed.
            let r = unsafe { libc::madvise(p as *mut libc::c_void, 4096, libc::MADV_MERGEABLE) };
            eprintln!("madvise returned {r}");
        }
        "statx" => {
            // SAFETY: a zeroed statx buffer is valid for the kernel to fill.
            let mut buf: libc::statx = unsafe { std::mem::zeroed() };
            for flags in [0, libc::AT_EMPTY_PATH] {
                // The system call itself: glibc's statx() emulates a missing one with
                // newfstatat, which is not allowed at all.
                // SAFETY: a NUL-terminated path and a valid buffer.
                let r = unsafe {
                    libc::syscall(
                        libc::SYS_statx,
                        libc::AT_FDCWD,
                        c"/etc/shadow".as_ptr(),
                        flags,
                        libc::STATX_BASIC_STATS,
                        &mut buf,
                    )
                };
                let e = std::io::Error::last_os_error();
                assert_eq!((r, e.raw_os_error()), (-1, Some(libc::ENOSYS)));
            }
            assert_eq!(buf.stx_mode, 0, "nothing was filled in");
            eprintln!("STATX-REFUSED");
            // std then falls back to the path-based newfstatat, which is not allowed at all.
            let _ = std::fs::metadata("/etc/shadow");
        }
        "vcpu-pwrite" => {
            let fd = file.as_ref().unwrap().as_raw_fd();
            let t = spawn(ThreadClass::Vcpu, "vcpu-test", move || {
                assert_eq!(
                    pwrite_byte(code_fd),
                    1,
                    "a vCPU thread writes its code space"
                );
                // ... and empties it as a full code space is (the arena's reset).
                let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
                // SAFETY: fallocate has no memory arguments.
                assert_eq!(unsafe { libc::fallocate(code_fd, mode, 0, 4096) }, 0);
                eprintln!("CODE-PWRITE-OK");
                pwrite_byte(fd)
            })
            .unwrap();
            eprintln!("pwrite returned {:?}", t.join());
        }
        "blk-sendto" => {
            let fd = file.as_ref().unwrap().as_raw_fd();
            let t = spawn(ThreadClass::BlockIo, "blk-test", move || {
                assert_eq!(pwrite_byte(fd), 1, "a block I/O thread writes its image");
                eprintln!("BLK-PWRITE-OK");
                // SAFETY: sendto on a descriptor that is no socket, with a valid buffer.
                unsafe { libc::sendto(fd, b"x".as_ptr().cast(), 1, 0, std::ptr::null(), 0) }
            })
            .unwrap();
            eprintln!("sendto returned {:?}", t.join());
        }
        "vcpu-thread" => {
            // A vCPU thread starting a thread itself (not through the spawner).
            let t = spawn(ThreadClass::Vcpu, "vcpu-test", || {
                std::thread::spawn(|| ()).join().is_ok()
            })
            .unwrap();
            eprintln!("thread started: {:?}", t.join());
        }
        other => panic!("unknown case {other}"),
    }
    eprintln!("SURVIVED-FORBIDDEN");
}

/// Run `case` in a child; its exit code (or 128 + the signal that killed it) and stderr.
fn run_case(case: &str) -> (Option<i32>, String) {
    run_case_with(case, None)
}

fn run_case_with(case: &str, file: Option<&std::path::Path>) -> (Option<i32>, String) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    if let Some(f) = file {
        cmd.env(FILE_ENV, f);
    }
    let out = cmd
        .args([
            "--exact",
            "sandbox_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CASE_ENV, case)
        .output()
        .unwrap();
    let code = out
        .status
        .code()
        .or_else(|| out.status.signal().map(|s| 128 + s));
    (code, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `call`: the name the one-line reason gives, or `None` when the call is made with signals
/// blocked (posix_spawn blocks them), where the kernel kills the process with SIGSYS directly.
fn assert_killed(case: &str, call: Option<&str>) {
    let (code, err) = run_case(case);
    assert!(
        err.contains("ALLOWED-WORK-OK"),
        "{case}: allowed work failed:\n{err}"
    );
    assert!(err.contains("ATTEMPTING-FORBIDDEN"), "{case}:\n{err}");
    assert!(
        !err.contains("SURVIVED-FORBIDDEN"),
        "{case}: the call was not stopped:\n{err}"
    );
    assert_eq!(code, Some(SANDBOX_EXIT), "{case}: exit status\n{err}");
    let Some(call) = call else { return };
    let line = err
        .lines()
        .find(|l| l.contains("duvisor: sandbox: forbidden system call"))
        .unwrap_or_else(|| panic!("{case}: no sandbox message:\n{err}"));
    assert!(line.contains(call), "{case}: expected {call:?} in {line:?}");
}

#[test]
fn allowed_work_runs_under_the_sandbox() {
    let (code, err) = run_case("none");
    assert!(err.contains("ALLOWED-WORK-OK"), "{err}");
    assert!(err.contains("SURVIVED-FORBIDDEN"), "{err}");
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn opening_a_host_file_is_refused() {
    let (code, err) = run_case("open");
    assert!(err.contains("OPEN-REFUSED"), "{err}");
    assert!(!std::path::Path::new("/tmp/duvisor-sandbox-must-not-exist").exists());
    // ... and the socket afterwards still ends the process.
    assert_eq!(code, Some(SANDBOX_EXIT), "{err}");
    assert!(err.contains("(socket)"), "{err}");
}

#[test]
fn creating_a_socket_kills_the_process() {
    assert_killed("socket", Some("(socket)"));
}

#[test]
fn starting_a_program_kills_the_process() {
    // std spawns through posix_spawn: clone3 (refused with ENOSYS), then clone without
    // CLONE_THREAD, with every signal blocked, so SIGSYS kills the process outright.
    assert_killed("exec", None);
}

#[test]
fn executable_memory_kills_the_process() {
    assert_killed("mmap-exec", Some("(mmap with PROT_EXEC)"));
}

#[test]
fn ptrace_kills_the_process() {
    assert_killed("ptrace", Some("(ptrace)"));
}

#[test]
fn signalling_another_process_kills_the_process() {
    // Even SIGTERM, which passt never needs: it exits when its socket closes.
    assert_killed("kill", Some("(kill)"));
}

#[test]
fn signalling_another_process_with_tgkill_kills_the_caller_only() {
    // The rule checked only the signal: tgkill(other, other, SIGABRT) aborted any process
    // of the same user (any process for root).
    let (code, err) = run_case("tgkill-other");
    let victim: i32 = err
        .lines()
        .find_map(|l| l.strip_prefix("VICTIM="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no victim pid:\n{err}"));
    // SAFETY: signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(victim, 0) } == 0;
    // Not a zombie either (a killed child of a still-running parent).
    let running = std::fs::read_to_string(format!("/proc/{victim}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false);
    // SAFETY: signals the sleep the child started and left behind.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    assert!(alive && running, "the other process was killed:\n{err}");
    assert_eq!(code, Some(SANDBOX_EXIT), "{err}");
    assert!(err.contains("(tgkill of another process"), "{err}");
}

#[test]
fn abort_still_signals_the_process_itself() {
    let (code, err) = run_case("abort");
    assert!(err.contains("ATTEMPTING-FORBIDDEN"), "{err}");
    assert_eq!(code, Some(128 + libc::SIGABRT), "{err}");
}

#[test]
fn madvise_with_other_advice_kills_the_process() {
    assert_killed("madvise", Some("(madvise other than"));
}

#[test]
fn statx_cannot_probe_host_paths() {
    let (code, err) = run_case("statx");
    assert!(err.contains("STATX-REFUSED"), "{err}");
    assert_eq!(code, Some(SANDBOX_EXIT), "{err}");
    assert!(err.contains("(newfstatat)"), "{err}");
}

#[test]
fn a_vcpu_thread_cannot_write_a_disk_image() {
    let f = tempfile::NamedTempFile::new().unwrap();
    let (code, err) = run_case_with("vcpu-pwrite", Some(f.path()));
    assert!(err.contains("CODE-PWRITE-OK"), "{err}");
    assert_eq!(code, Some(SANDBOX_EXIT), "{err}");
    assert!(
        err.contains("(pwrite64) on a thread of class vcpu"),
        "{err}"
    );
    assert_eq!(
        std::fs::metadata(f.path()).unwrap().len(),
        0,
        "the file was written"
    );
}

#[test]
fn a_block_io_thread_writes_its_image_but_cannot_send() {
    let f = tempfile::NamedTempFile::new().unwrap();
    let (code, err) = run_case_with("blk-sendto", Some(f.path()));
    assert!(err.contains("BLK-PWRITE-OK"), "{err}");
    assert_eq!(code, Some(SANDBOX_EXIT), "{err}");
    assert!(
        err.contains("(sendto) on a thread of class blk-io"),
        "{err}"
    );
}

#[test]
fn a_vcpu_thread_cannot_start_threads_itself() {
    // glibc blocks every signal around clone3, so the kernel kills the process with SIGSYS
    // directly, without our message.
    assert_killed("vcpu-thread", None);
}
