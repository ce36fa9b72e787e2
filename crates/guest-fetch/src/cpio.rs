//! A writer for the "newc" (SVR4, no CRC) cpio format, the format the Linux kernel unpacks as
//! an initramfs.
//!
//! Each entry is a 110-byte ASCII header (`070701` then thirteen 8-digit hex fields), the path
//! (NUL-terminated, padded to a multiple of 4 bytes counted from the start of the header), then
//! the data (padded to 4 bytes). The archive ends with an entry named `TRAILER!!!`.
//!
//! The kernel creates entries in archive order and does not create missing parent directories,
//! so the writer emits every missing parent directory (mode 0755) before an entry.
//! Timestamps are fixed, so the same input always yields the same archive.

use std::collections::HashSet;
use std::io::{self, Write};

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;

/// Modification time written for every entry (the archive is reproducible).
const MTIME: u32 = 0;

const TRAILER: &str = "TRAILER!!!";

/// Streams a newc cpio archive into `W`.
pub struct CpioWriter<W: Write> {
    out: W,
    /// Bytes written so far (for the 4-byte alignment of names and data).
    offset: u64,
    next_ino: u32,
    /// Paths already in the archive (normalised: no leading `/`).
    paths: HashSet<String>,
    /// Directories already in the archive.
    dirs: HashSet<String>,
}

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            offset: 0,
            next_ino: 1,
            paths: HashSet::new(),
            dirs: HashSet::new(),
        }
    }

    /// Adds a directory (a no-op if the directory is already there).
    pub fn dir(&mut self, path: &str, perm: u32) -> io::Result<()> {
        let path = normalise(path)?;
        if self.dirs.contains(&path) {
            return Ok(());
        }
        self.parents(&path)?;
        self.entry(&path, S_IFDIR | (perm & 0o7777), 2, (0, 0), &[])?;
        self.dirs.insert(path);
        Ok(())
    }

    /// Adds a regular file.
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        let path = normalise(path)?;
        self.parents(&path)?;
        self.entry(&path, S_IFREG | (perm & 0o7777), 1, (0, 0), data)
    }

    /// Adds a symbolic link pointing at `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        let path = normalise(path)?;
        self.parents(&path)?;
        self.entry(&path, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes())
    }

    /// Adds a character device node.
    pub fn char_dev(&mut self, path: &str, perm: u32, major: u32, minor: u32) -> io::Result<()> {
        let path = normalise(path)?;
        self.parents(&path)?;
        self.entry(&path, S_IFCHR | (perm & 0o7777), 1, (major, minor), &[])
    }

    /// Writes the trailer and returns the underlying writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.raw_entry(TRAILER, 0, 0, 1, (0, 0), &[])?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn parents(&mut self, path: &str) -> io::Result<()> {
        let mut end = 0;
        while let Some(pos) = path[end..].find('/') {
            let parent = &path[..end + pos];
            if !self.dirs.contains(parent) {
                self.entry(parent, S_IFDIR | 0o755, 2, (0, 0), &[])?;
                self.dirs.insert(parent.to_string());
            }
            end += pos + 1;
        }
        Ok(())
    }

    fn entry(
        &mut self,
        path: &str,
        mode: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> io::Result<()> {
        if !self.paths.insert(path.to_string()) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("cpio: duplicate entry {path:?}"),
            ));
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.raw_entry(path, mode, ino, nlink, rdev, data)
    }

    fn raw_entry(
        &mut self,
        name: &str,
        mode: u32,
        ino: u32,
        nlink: u32,
        rdev: (u32, u32),
        data: &[u8],
    ) -> io::Result<()> {
        let filesize = u32::try_from(data.len()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cpio: {name:?} is larger than 4 GiB"),
            )
        })?;
        let namesize = u32::try_from(name.len() + 1)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "cpio: name too long"))?;
        let header = format!(
            "070701{ino:08x}{mode:08x}{uid:08x}{gid:08x}{nlink:08x}{mtime:08x}{filesize:08x}\
             {devmajor:08x}{devminor:08x}{rmaj:08x}{rmin:08x}{namesize:08x}{check:08x}",
            uid = 0,
            gid = 0,
            mtime = MTIME,
            devmajor = 0,
            devminor = 0,
            rmaj = rdev.0,
            rmin = rdev.1,
            check = 0,
        );
        debug_assert_eq!(header.len(), 110);
        self.put(header.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        self.put(data)?;
        self.pad()
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let rem = (self.offset % 4) as usize;
        if rem != 0 {
            self.put(&[0u8; 3][..4 - rem])?;
        }
        Ok(())
    }
}

/// Strips leading `/` and `./`, rejects empty names and `.`/`..` components.
fn normalise(path: &str) -> io::Result<String> {
    let trimmed = path.trim_start_matches('/');
    let trimmed = trimmed.strip_prefix("./").unwrap_or(trimmed);
    let trimmed = trimmed.trim_end_matches('/');
    let bad = trimmed.is_empty()
        || trimmed == TRAILER
        || trimmed
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cpio: invalid path {path:?}"),
        ));
    }
    Ok(trimmed.to_string())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    /// One parsed entry: (name, mode, rdev major, rdev minor, data).
    pub(crate) type Parsed = (String, u32, u32, u32, Vec<u8>);

    /// Parses a newc archive back (test-only reader, strict about the format).
    pub(crate) fn parse_newc(mut buf: &[u8]) -> Vec<Parsed> {
        let total = buf.len();
        let mut out = Vec::new();
        loop {
            let at = total - buf.len();
            assert_eq!(at % 4, 0, "entry not 4-byte aligned");
            assert_eq!(&buf[..6], b"070701", "bad magic at {at}");
            let field = |i: usize| {
                let s = std::str::from_utf8(&buf[6 + i * 8..6 + (i + 1) * 8]).unwrap();
                u32::from_str_radix(s, 16).unwrap()
            };
            let mode = field(1);
            let filesize = field(6) as usize;
            let rmaj = field(9);
            let rmin = field(10);
            let namesize = field(11) as usize;
            let name = std::str::from_utf8(&buf[110..110 + namesize - 1])
                .unwrap()
                .to_string();
            assert_eq!(buf[110 + namesize - 1], 0);
            let data_start = (110 + namesize).div_ceil(4) * 4;
            let data = buf[data_start..data_start + filesize].to_vec();
            let next = (data_start + filesize).div_ceil(4) * 4;
            buf = &buf[next..];
            if name == TRAILER {
                assert!(buf.is_empty(), "data after trailer");
                return out;
            }
            out.push((name, mode, rmaj, rmin, data));
        }
    }

    fn sample() -> Vec<u8> {
        let mut w = CpioWriter::new(Vec::new());
        w.dir("/bin", 0o755).unwrap();
        w.file("/bin/busybox", 0o755, b"\x7fELF fake busybox")
            .unwrap();
        w.symlink("/bin/sh", "busybox").unwrap();
        w.file("/etc/deep/nested/file.txt", 0o644, b"hello\n")
            .unwrap();
        w.file("/empty", 0o600, b"").unwrap();
        w.file("/odd", 0o644, b"abc").unwrap();
        w.dir("/tmp", 0o1777).unwrap();
        w.finish().unwrap()
    }

    #[test]
    fn round_trip_parse() {
        let mut w = CpioWriter::new(Vec::new());
        w.file("/init", 0o755, b"#!/bin/sh\n").unwrap();
        w.char_dev("/dev/console", 0o600, 5, 1).unwrap();
        w.symlink("/bin/sh", "busybox").unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.len() % 4, 0);
        let entries = parse_newc(&bytes);
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, ["init", "dev", "dev/console", "bin", "bin/sh"]);
        assert_eq!(entries[0].1, S_IFREG | 0o755);
        assert_eq!(entries[0].4, b"#!/bin/sh\n");
        assert_eq!(entries[1].1, S_IFDIR | 0o755);
        assert_eq!(
            (entries[2].1, entries[2].2, entries[2].3),
            (S_IFCHR | 0o600, 5, 1)
        );
        assert_eq!(entries[4].1, S_IFLNK | 0o777);
        assert_eq!(entries[4].4, b"busybox");
    }

    #[test]
    fn rejects_duplicates_and_bad_paths() {
        let mut w = CpioWriter::new(Vec::new());
        w.file("/a", 0o644, b"x").unwrap();
        assert!(w.file("a", 0o644, b"y").is_err());
        assert!(w.file("/", 0o644, b"").is_err());
        assert!(w.file("/x/../y", 0o644, b"").is_err());
        assert!(w.file("TRAILER!!!", 0o644, b"").is_err());
        // A directory added twice is fine.
        w.dir("/d", 0o755).unwrap();
        w.dir("/d/", 0o755).unwrap();
    }

    #[test]
    fn round_trip_with_system_cpio() {
        if Command::new("cpio").arg("--version").output().is_err() {
            eprintln!("cpio not installed; skipping");
            return;
        }
        let bytes = sample();
        let dir = crate::testutil::TempDir::new("cpio");
        let mut child = Command::new("cpio")
            .args(["-idm", "--quiet", "--no-absolute-filenames"])
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&bytes).unwrap();
        assert!(child.wait().unwrap().success());

        let p = dir.path();
        assert_eq!(
            std::fs::read(p.join("bin/busybox")).unwrap(),
            b"\x7fELF fake busybox"
        );
        assert_eq!(
            std::fs::read_link(p.join("bin/sh")).unwrap().to_str(),
            Some("busybox")
        );
        assert_eq!(
            std::fs::read(p.join("etc/deep/nested/file.txt")).unwrap(),
            b"hello\n"
        );
        assert_eq!(std::fs::read(p.join("empty")).unwrap(), b"");
        assert_eq!(std::fs::read(p.join("odd")).unwrap(), b"abc");
        use std::os::unix::fs::PermissionsExt;
        let mode = |rel: &str| {
            std::fs::symlink_metadata(p.join(rel))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("bin/busybox"), 0o755);
        assert_eq!(mode("empty"), 0o600);
        assert_eq!(mode("tmp"), 0o1777);
        assert!(p.join("etc/deep/nested").is_dir());

        // And the system cpio lists exactly what we wrote, in order.
        let out = Command::new("cpio")
            .args(["-it", "--quiet"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                c.stdin.take().unwrap().write_all(&bytes)?;
                c.wait_with_output()
            })
            .unwrap();
        let listing = String::from_utf8(out.stdout).unwrap();
        let names: Vec<&str> = listing.lines().collect();
        assert_eq!(
            names,
            [
                "bin",
                "bin/busybox",
                "bin/sh",
                "etc",
                "etc/deep",
                "etc/deep/nested",
                "etc/deep/nested/file.txt",
                "empty",
                "odd",
                "tmp"
            ]
        );
    }
}
