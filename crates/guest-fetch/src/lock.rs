//! A lock on the cache directory, shared by threads and processes: a directory made with
//! `mkdir` (atomic) holding the owner's pid. A lock whose owner has died is taken over.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};

/// How long to wait for another fetch before giving up.
const TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// A lock directory without a readable pid this old is a leftover.
const PID_GRACE: Duration = Duration::from_secs(30);

pub struct CacheLock {
    path: PathBuf,
}

impl CacheLock {
    /// Takes the lock at `path`, calling `on_wait` once if another holder makes us wait.
    pub fn acquire(path: &Path, on_wait: impl FnOnce(Option<u32>)) -> Result<Self> {
        let start = Instant::now();
        let mut on_wait = Some(on_wait);
        let mut takeovers = 0u32;
        loop {
            match fs::create_dir(path) {
                Ok(()) => {
                    fs::write(path.join("pid"), std::process::id().to_string())
                        .with_context(|| format!("writing {}/pid", path.display()))?;
                    return Ok(Self {
                        path: path.to_path_buf(),
                    });
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("creating lock {}", path.display()))
                }
            }
            let holder = fs::read_to_string(path.join("pid"))
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok());
            let stale = match holder {
                Some(pid) => !Path::new(&format!("/proc/{pid}")).exists(),
                None => fs::metadata(path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .is_some_and(|age| age > PID_GRACE),
            };
            if stale {
                // Move it aside first, so two waiters cannot both remove a fresh lock.
                takeovers += 1;
                let aside =
                    path.with_file_name(format!(".stale-lock-{}-{takeovers}", std::process::id()));
                if fs::rename(path, &aside).is_ok() {
                    tracing::warn!("removed the stale lock {} (pid {holder:?})", path.display());
                    let _ = fs::remove_dir_all(&aside);
                }
                continue;
            }
            if start.elapsed() > TIMEOUT {
                bail!(
                    "timed out waiting for {} (held by pid {holder:?}); remove it if no other \
                     duvisor is fetching the guest",
                    path.display()
                );
            }
            if let Some(f) = on_wait.take() {
                f(holder);
            }
            thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for CacheLock {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[test]
    fn excludes_threads_and_takes_over_dead_owners() {
        let dir = crate::testutil::TempDir::new("lock");
        let path = dir.path().join(".lock");
        let inside = Arc::new(AtomicU32::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let path = path.clone();
                let inside = inside.clone();
                thread::spawn(move || {
                    let _l = CacheLock::acquire(&path, |_| {}).unwrap();
                    assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0);
                    thread::sleep(Duration::from_millis(20));
                    inside.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(!path.exists());

        // A lock left by a process that no longer exists.
        fs::create_dir(&path).unwrap();
        fs::write(path.join("pid"), "4194305").unwrap(); // above the kernel's pid_max limit
        let l = CacheLock::acquire(&path, |_| panic!("should not wait")).unwrap();
        assert_eq!(
            fs::read_to_string(path.join("pid")).unwrap(),
            std::process::id().to_string()
        );
        drop(l);
    }
}
