//! The seccomp sandbox (`duvisor::sandbox`): after `install()`, what a running VM needs still
//! works (threads, memory, I/O on open descriptors, randomness), opening any host file fails
//! with EACCES, and each other kind of escape a compromised VM plane would try — creating a
//! socket, starting a program, making memory executable, ptrace, signalling another process —
//! ends the process with status 159 and a one-line reason.
//!
//! Each case runs in a child process (this test binary re-run with `DUVISOR_SANDBOX_CASE`), since
//! the filter is irreversible and covers every thread.

use std::os::unix::process::ExitStatusExt;
use std::process::Command;

use duvisor::sandbox::{install, SANDBOX_EXIT};

const CASE_ENV: &str = "DUVISOR_SANDBOX_CASE";

/// What a VM does after set-up; panics if the sandbox got in the way.
fn allowed_work() {
    let t = std::thread::Builder::new()
        .name("worker".into())
        .spawn(|| (0..1000u64).sum::<u64>())
        .unwrap();
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
    let m = std::sync::Mutex::new(0);
    let c = std::sync::Condvar::new();
    std::thread::scope(|s| {
        s.spawn(|| {
            *m.lock().unwrap() = 1;
            c.notify_one();
        });
        let g = c.wait_while(m.lock().unwrap(), |v| *v == 0).unwrap();
        assert_eq!(*g, 1);
    });
    std::thread::sleep(std::time::Duration::from_millis(1));
    eprintln!("ALLOWED-WORK-OK");
}

/// In the child: install the sandbox, do allowed work, then make the forbidden call of `case`.
#[test]
fn sandbox_child() {
    let Ok(case) = std::env::var(CASE_ENV) else {
        return; // run directly by the harness: nothing to do
    };
    install().expect("installing the sandbox");
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
            assert!(!std::path::Path::new("/tmp/duvisor-sandbox-must-not-exist").exists());
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
        other => panic!("unknown case {other}"),
    }
    eprintln!("SURVIVED-FORBIDDEN");
}

/// Run `case` in a child; its exit code (or 128 + the signal that killed it) and stderr.
fn run_case(case: &str) -> (Option<i32>, String) {
    let out = Command::new(std::env::current_exe().unwrap())
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
