//! Giving up privileges once the host resources that need them are open. DuVisor may be
//! started as root (to create a TAP interface, or to open a disk only root may write); the
//! running VM needs none of that, so every capability goes (effective, permitted, inheritable,
//! ambient and the bounding set), `no_new_privs` is set, and `--user` switches to an
//! unprivileged user and group. Done before the VM's threads start, as capabilities are per
//! thread and a new thread inherits its creator's.

use std::ffi::CString;

/// `--user USER[:GROUP]`: numeric ids or names, resolved when parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

impl std::str::FromStr for RunAs {
    type Err = String;
    fn from_str(s: &str) -> Result<RunAs, String> {
        let (user, group) = match s.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (s, None),
        };
        if user.is_empty() {
            return Err("missing user (want USER[:GROUP])".into());
        }
        let (uid, primary) = lookup_user(user)?;
        let gid = match group {
            None => primary,
            Some("") => return Err("missing group after ':' (want USER[:GROUP])".into()),
            Some(g) => lookup_group(g)?,
        };
        Ok(RunAs { uid, gid })
    }
}

/// A user's id and primary group, by number or name.
fn lookup_user(user: &str) -> Result<(u32, u32), String> {
    let name = CString::new(user).map_err(|_| format!("bad user name {user:?}"))?;
    // SAFETY: getpwnam reads a NUL-terminated name; the record it returns (static storage) is
    // read before any other call that could overwrite it. Called during set-up, single
    // threaded.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if !pw.is_null() {
        // SAFETY: a non-null record from getpwnam.
        return Ok(unsafe { ((*pw).pw_uid, (*pw).pw_gid) });
    }
    match user.parse::<u32>() {
        // An id without a passwd entry: its group is the same number.
        Ok(uid) => Ok((uid, uid)),
        Err(_) => Err(format!("unknown user {user:?}")),
    }
}

fn lookup_group(group: &str) -> Result<u32, String> {
    let name = CString::new(group).map_err(|_| format!("bad group name {group:?}"))?;
    // SAFETY: as in lookup_user, for getgrnam.
    let gr = unsafe { libc::getgrnam(name.as_ptr()) };
    if !gr.is_null() {
        // SAFETY: a non-null record from getgrnam.
        return Ok(unsafe { (*gr).gr_gid });
    }
    group
        .parse::<u32>()
        .map_err(|_| format!("unknown group {group:?}"))
}

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("--user: switching to uid {uid} gid {gid} needs root: {err}")]
    Switch {
        uid: u32,
        gid: u32,
        err: std::io::Error,
    },
    #[error("dropping capabilities: {0}")]
    Capabilities(std::io::Error),
    #[error("setting no_new_privs: {0}")]
    NoNewPrivs(std::io::Error),
}

/// prctl's variadic arguments, passed at full width (the kernel reads unsigned longs).
type Arg = libc::c_ulong;

fn check(r: libc::c_int) -> std::io::Result<()> {
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Switch to `run_as` (if given), then give up every capability of the calling thread and set
/// `no_new_privs`. Call it from the only thread that runs, after host resources are opened.
pub fn drop_privileges(run_as: Option<RunAs>) -> Result<(), PrivilegeError> {
    // The bounding set first, while we may still have CAP_SETPCAP (switching to another user
    // clears it). Without it (an unprivileged start) there is nothing in reach to drop.
    if effective_caps() & (1 << CAP_SETPCAP) != 0 {
        let mut cap: Arg = 0;
        // SAFETY: prctl with integer arguments; PR_CAPBSET_READ fails (EINVAL) past the
        // kernel's last capability.
        while unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap, 0 as Arg, 0 as Arg, 0 as Arg) } >= 0
        {
            // SAFETY: as above.
            check(unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0 as Arg, 0 as Arg, 0 as Arg) })
                .map_err(PrivilegeError::Capabilities)?;
            cap += 1;
        }
    }
    if let Some(RunAs { uid, gid }) = run_as {
        let switch = |err| PrivilegeError::Switch { uid, gid, err };
        // SAFETY: plain system calls with integer arguments and a valid one-element list.
        // glibc applies set*id to every thread of the process.
        unsafe {
            check(libc::setgroups(1, &gid)).map_err(switch)?;
            check(libc::setresgid(gid, gid, gid)).map_err(switch)?;
            check(libc::setresuid(uid, uid, uid)).map_err(switch)?;
        }
    }
    // SAFETY: prctl with integer arguments.
    let r = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as Arg,
            0 as Arg,
            0 as Arg,
            0 as Arg,
        )
    };
    check(r).map_err(PrivilegeError::Capabilities)?;
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData::default(); 2];
    // SAFETY: capset reads a version-3 header and two data records, which we pass.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
    check(r as libc::c_int).map_err(PrivilegeError::Capabilities)?;
    // SAFETY: prctl with integer arguments.
    check(unsafe {
        libc::prctl(
            libc::PR_SET_NO_NEW_PRIVS,
            1 as Arg,
            0 as Arg,
            0 as Arg,
            0 as Arg,
        )
    })
    .map_err(PrivilegeError::NoNewPrivs)?;
    Ok(())
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
/// linux/capability.h: may change the bounding set.
const CAP_SETPCAP: u32 = 8;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The calling thread's effective capabilities (both 32-bit words).
pub fn effective_caps() -> u64 {
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: capget writes two data records for a version-3 header.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    if r < 0 {
        return u64::MAX;
    }
    data[0].effective as u64 | (data[1].effective as u64) << 32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_as_parses_ids_and_names() {
        assert_eq!(
            "65534:65533".parse::<RunAs>(),
            Ok(RunAs {
                uid: 65534,
                gid: 65533
            })
        );
        assert_eq!("root".parse::<RunAs>(), Ok(RunAs { uid: 0, gid: 0 }));
        assert_eq!(
            "4242".parse::<RunAs>(),
            Ok(RunAs {
                uid: 4242,
                gid: 4242
            })
        );
        assert!("".parse::<RunAs>().is_err());
        assert!("1:".parse::<RunAs>().is_err());
        assert!("no-such-user-here".parse::<RunAs>().is_err());
        assert!("0:no-such-group-here".parse::<RunAs>().is_err());
    }
}
