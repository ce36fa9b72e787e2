//! A bootable Debian riscv64 disk image built from Debian packages only.
//!
//! [`build_disk`] runs `mmdebstrap` (root mode, riscv64 second stage under `qemu-user-static`
//! through binfmt_misc) into a directory, then writes a raw GPT image without loop devices:
//! `sfdisk` lays out one partition on a sparse file, and `mkfs.ext4 -d` fills that partition in
//! place (`-E offset=`). The partition is Linux-filesystem type with the legacy-BIOS-bootable
//! attribute, which U-Boot's distro boot (Debian's `u-boot-qemu`, S-mode) scans for
//! `/boot/extlinux/extlinux.conf`; Debian's `u-boot-menu` writes that file, so kernel updates
//! inside the guest keep it current.
//!
//! The guest: Debian [`DiskOptions::suite`] with systemd, udev, apt, `linux-image-riscv64` and its
//! initramfs, systemd-networkd doing DHCP on `en*`/`eth*`, systemd-resolved, openssh-server, a
//! serial getty on `ttyS0`, `/etc/fstab` by UUID. Root has no password: it logs in on the
//! console only (sshd keeps Debian's defaults, which refuse empty passwords and root password
//! logins); with [`DiskOptions::ssh_key`] that public key may log in as root over ssh.
//!
//! Downloaded packages are kept in `<cache>/debian-disk/archives` and reused. The image is
//! written next to its destination under a temporary name and renamed into place when complete.

use std::collections::VecDeque;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use thiserror::Error;

use crate::Ui;

/// The suite the image is built from (riscv64 is an official architecture from trixie on).
pub const DEFAULT_SUITE: &str = "trixie";
/// Debian's S-mode U-Boot (package `u-boot-qemu`), which boots these images.
pub const UBOOT: &str = "/usr/lib/u-boot/qemu-riscv64_smode/u-boot.bin";
/// Default image size.
pub const DEFAULT_SIZE: u64 = 4 << 30;
/// Smaller images cannot hold the system and its kernel.
pub const MIN_SIZE: u64 = 1 << 30;
/// Default host name of the guest.
pub const DEFAULT_HOSTNAME: &str = "duvisor";
/// Where the first partition starts (1 MiB, the usual alignment).
const PART_START_SECTOR: u64 = 2048;
const SECTOR: u64 = 512;
/// Bump when what the builder puts into an image changes (part of [`DiskOptions::cache_key`]).
const FORMAT: u32 = 2;

/// The packages installed on top of mmdebstrap's `minbase` variant (which brings apt).
pub const PACKAGES: &[&str] = &[
    "systemd-sysv",
    "udev",
    "dbus",
    "systemd-resolved",
    "openssh-server",
    "linux-image-riscv64",
    "u-boot-menu",
    "e2fsprogs",
    "iproute2",
    "iputils-ping",
    "procps",
    "less",
    "ca-certificates",
];

/// Documentation, manual pages and translations are left out of the image (copyright files
/// stay): less to unpack under emulation, a smaller image.
const DPKG_EXCLUDES: &[&str] = &[
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
];

/// Host tools the builder runs, with the Debian package that has each.
const TOOLS: &[(&str, &str)] = &[
    ("mmdebstrap", "mmdebstrap"),
    ("mkfs.ext4", "e2fsprogs"),
    ("sfdisk", "fdisk"),
];

/// The binfmt_misc entry that runs riscv64 programs, and where Debian's qemu-user-static
/// keeps its registration line.
const BINFMT_DIR: &str = "/proc/sys/fs/binfmt_misc";
const BINFMT_NAME: &str = "qemu-riscv64";
const BINFMT_CONF: &[&str] = &[
    "/usr/lib/binfmt.d/qemu-riscv64.conf",
    "/lib/binfmt.d/qemu-riscv64.conf",
];

/// What goes into the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskOptions {
    /// Image size in bytes (a multiple of 1 MiB, at least [`MIN_SIZE`]).
    pub size: u64,
    /// An OpenSSH public key line that may log in as root.
    pub ssh_key: Option<String>,
    pub hostname: String,
    pub suite: String,
    pub mirror: String,
}

impl Default for DiskOptions {
    fn default() -> Self {
        Self {
            size: DEFAULT_SIZE,
            ssh_key: None,
            hostname: DEFAULT_HOSTNAME.to_string(),
            suite: DEFAULT_SUITE.to_string(),
            mirror: std::env::var("DUVISOR_DEBIAN_MIRROR")
                .unwrap_or_else(|_| crate::apt::DEFAULT_MIRROR.to_string()),
        }
    }
}

impl DiskOptions {
    /// A name for images built from these options (by this version of the builder), for
    /// callers that keep built images: equal options give equal keys.
    pub fn cache_key(&self) -> String {
        let text = format!(
            "{FORMAT}\n{}\n{:?}\n{}\n{}\n{}\n{}",
            self.size,
            self.ssh_key,
            self.hostname,
            self.suite,
            self.mirror,
            PACKAGES.join(",")
        );
        format!("{}-{:016x}", self.suite, fnv1a(text.as_bytes()))
    }

    fn check(&self) -> Result<(), DiskError> {
        if self.size < MIN_SIZE || self.size % (1 << 20) != 0 {
            return Err(DiskError::BadSize(self.size));
        }
        let ok_host = !self.hostname.is_empty()
            && self.hostname.len() <= 63
            && self
                .hostname
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !self.hostname.starts_with('-');
        if !ok_host {
            return Err(DiskError::BadHostname(self.hostname.clone()));
        }
        if let Some(key) = &self.ssh_key {
            let key = key.trim();
            if key.is_empty() || key.contains('\n') || !key.contains(' ') {
                return Err(DiskError::BadSshKey);
            }
        }
        Ok(())
    }
}

/// Reads an OpenSSH public key file (one key line).
pub fn read_ssh_key(path: &Path) -> Result<String, DiskError> {
    let text = fs::read_to_string(path).map_err(|e| DiskError::io(path, "reading", e))?;
    let key = text.trim().to_string();
    if key.is_empty() || key.contains('\n') || !key.contains(' ') || key.contains("PRIVATE KEY") {
        return Err(DiskError::BadSshKey);
    }
    Ok(key)
}

/// Why an image could not be built.
#[derive(Debug, Error)]
pub enum DiskError {
    #[error("building a disk image needs root (mmdebstrap's root mode, file owners kept by mkfs.ext4 -d)")]
    NotRoot,
    #[error(
        "{tool} not found: install the Debian package {package} (scripts/install-deps.sh does)"
    )]
    MissingTool {
        tool: &'static str,
        package: &'static str,
    },
    #[error("cannot run riscv64 programs through binfmt_misc: {0}")]
    Binfmt(String),
    #[error("image size {0} bytes: must be a multiple of 1 MiB and at least 1 GiB")]
    BadSize(u64),
    #[error("host name {0:?} is not a valid host name (letters, digits, '-', at most 63)")]
    BadHostname(String),
    #[error("the ssh key must be one OpenSSH public key line (the .pub file)")]
    BadSshKey,
    #[error("{what} failed ({status}):\n{tail}")]
    Command {
        what: String,
        status: String,
        tail: String,
    },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Unexpected(String),
}

impl DiskError {
    fn io(path: &Path, what: &'static str, source: io::Error) -> Self {
        Self::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// What a build made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskImage {
    pub path: PathBuf,
    /// The root file system's UUID (`root=UUID=…`).
    pub root_uuid: String,
}

/// Builds the image at `output` (replacing it only once complete). Packages are cached under
/// `cache_dir`. With `progress`, shows what it is doing on the terminal.
pub fn build_disk(
    output: &Path,
    opts: &DiskOptions,
    cache_dir: &Path,
    progress: bool,
) -> Result<DiskImage, DiskError> {
    opts.check()?;
    let ui = Ui::new(progress);
    let start = Instant::now();
    let r = build(output, opts, cache_dir, &ui);
    if r.is_err() {
        ui.fail_step();
    }
    let img = r?;
    ui.finish(format!(
        "disk image ready: {} (Debian {}, root UUID {}) in {:.0}s",
        img.path.display(),
        opts.suite,
        img.root_uuid,
        start.elapsed().as_secs_f64()
    ));
    Ok(img)
}

fn build(
    output: &Path,
    opts: &DiskOptions,
    cache_dir: &Path,
    ui: &Ui,
) -> Result<DiskImage, DiskError> {
    ui.step("checking the host tools");
    if !is_root() {
        return Err(DiskError::NotRoot);
    }
    for &(tool, package) in TOOLS {
        if find_in_path(tool).is_none() {
            return Err(DiskError::MissingTool { tool, package });
        }
    }
    ensure_binfmt(ui)?;

    let out_dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = output
        .file_name()
        .ok_or_else(|| DiskError::Unexpected(format!("{} names no file", output.display())))?
        .to_string_lossy()
        .into_owned();
    remove_stale_work_dirs(&out_dir, &name);
    let work = WorkDir::create(&out_dir.join(format!(".{name}.build-{}", std::process::id())))?;
    let archives = cache_dir.join("debian-disk").join("archives");
    fs::create_dir_all(&archives).map_err(|e| DiskError::io(&archives, "creating", e))?;

    let root_uuid = random_uuid()?;
    let overlay = work.0.join("overlay");
    write_overlay(&overlay, opts, &root_uuid)?;

    let rootfs = work.0.join("root");
    ui.step(format!(
        "mmdebstrap: Debian {} riscv64 ({} packages cached)",
        opts.suite,
        count_debs(&archives)
    ));
    mmdebstrap(&rootfs, &overlay, &archives, opts, ui)?;

    ui.step("writing the GPT and the ext4 root file system");
    let image = work.0.join("disk.img");
    let part = partition(&image, opts.size)?;
    mkfs(&image, &rootfs, &part, &root_uuid)?;

    ui.step(format!("moving the image to {}", output.display()));
    fs::File::open(&image)
        .and_then(|f| f.sync_all())
        .map_err(|e| DiskError::io(&image, "syncing", e))?;
    fs::rename(&image, output).map_err(|e| DiskError::io(output, "renaming the image to", e))?;
    drop(work);
    Ok(DiskImage {
        path: output.to_path_buf(),
        root_uuid,
    })
}

fn is_root() -> bool {
    // /proc/self belongs to the process's effective user.
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn find_in_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    // root's PATH has the sbin directories; an ordinary user's may not.
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// Makes sure riscv64 ELF files run under QEMU: mounts binfmt_misc when it is not, and
/// registers qemu-user-static's interpreter when its package did not (no systemd-binfmt in a
/// container). The F flag opens the interpreter now, so it also works inside the chroot.
fn ensure_binfmt(ui: &Ui) -> Result<(), DiskError> {
    let dir = Path::new(BINFMT_DIR);
    let entry = dir.join(BINFMT_NAME);
    if !dir.join("register").exists() {
        ui.note("mounting binfmt_misc");
        let mut cmd = Command::new("mount");
        cmd.args(["-t", "binfmt_misc", "binfmt_misc", BINFMT_DIR]);
        run(cmd, "mount -t binfmt_misc")?;
    }
    if let Ok(state) = fs::read_to_string(&entry) {
        return if state.lines().next() == Some("enabled") {
            Ok(())
        } else {
            Err(DiskError::Binfmt(format!(
                "{} is registered but disabled (echo 1 > {})",
                BINFMT_NAME,
                entry.display()
            )))
        };
    }
    let conf = BINFMT_CONF
        .iter()
        .find_map(|p| fs::read_to_string(p).ok())
        .ok_or(DiskError::MissingTool {
            tool: "qemu-riscv64 (binfmt.d entry)",
            package: "qemu-user-static",
        })?;
    let mut line = conf
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(':') && l.contains(BINFMT_NAME))
        .ok_or_else(|| DiskError::Binfmt(format!("no {BINFMT_NAME} line in its binfmt.d file")))?
        .to_string();
    // The flags are the last field; F keeps the interpreter usable inside the chroot.
    if !line.rsplit(':').next().is_some_and(|f| f.contains('F')) {
        line.push('F');
    }
    ui.note(format!("registering {BINFMT_NAME} with binfmt_misc"));
    fs::write(dir.join("register"), line.as_bytes())
        .map_err(|e| DiskError::Binfmt(format!("writing {}/register: {e}", BINFMT_DIR)))?;
    if !entry.exists() {
        return Err(DiskError::Binfmt(format!(
            "{BINFMT_NAME} did not appear after registering"
        )));
    }
    Ok(())
}

/// The configuration files the image gets on top of the packages', in a tree copied over the
/// root at the end.
fn write_overlay(dir: &Path, opts: &DiskOptions, uuid: &str) -> Result<(), DiskError> {
    let hostname = &opts.hostname;
    let mut files: Vec<(&str, String, u32)> = vec![
        ("etc/hostname", format!("{hostname}\n"), 0o644),
        (
            "etc/hosts",
            format!(
                "127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            ),
            0o644,
        ),
        (
            "etc/fstab",
            format!("# <file system> <mount point> <type> <options> <dump> <pass>\nUUID={uuid}\t/\text4\terrors=remount-ro\t0\t1\n"),
            0o644,
        ),
        // The virtio-mmio NIC is eth0; a PCI one would be en*.
        (
            "etc/systemd/network/20-wired.network",
            "[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n".to_string(),
            0o644,
        ),
        // Under emulation on a busy host, udev can take longer than systemd's default 90 s to
        // announce /dev/ttyS0, and the serial getty then fails for good.
        (
            "etc/systemd/system.conf.d/50-slow-devices.conf",
            "[Manager]\nDefaultDeviceTimeoutSec=300s\n".to_string(),
            0o644,
        ),
        // Read by u-boot-update, which writes /boot/extlinux/extlinux.conf.
        (
            "etc/default/u-boot",
            format!(
                "U_BOOT_UPDATE=\"true\"\nU_BOOT_PROMPT=\"1\"\nU_BOOT_TIMEOUT=\"10\"\n\
                 U_BOOT_MENU_LABEL=\"Debian GNU/Linux\"\n\
                 U_BOOT_ROOT=\"root=UUID={uuid}\"\n\
                 U_BOOT_PARAMETERS=\"rw console=ttyS0 earlycon\"\n"
            ),
            0o644,
        ),
    ];
    if let Some(key) = &opts.ssh_key {
        files.push((
            "root/.ssh/authorized_keys",
            format!("{}\n", key.trim()),
            0o600,
        ));
    }
    for (rel, text, mode) in files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| DiskError::io(parent, "creating", e))?;
        }
        fs::write(&path, text).map_err(|e| DiskError::io(&path, "writing", e))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .map_err(|e| DiskError::io(&path, "setting the mode of", e))?;
    }
    // Copying the tree over the root also copies its directories' modes.
    let mut dirs = vec![
        ("", 0o755),
        ("etc", 0o755),
        ("etc/systemd", 0o755),
        ("etc/systemd/network", 0o755),
        ("etc/systemd/system.conf.d", 0o755),
        ("etc/default", 0o755),
    ];
    if opts.ssh_key.is_some() {
        dirs.extend([("root", 0o700), ("root/.ssh", 0o700)]);
    }
    for (rel, mode) in dirs {
        let path = dir.join(rel);
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .map_err(|e| DiskError::io(&path, "setting the mode of", e))?;
    }
    Ok(())
}

fn mmdebstrap(
    rootfs: &Path,
    overlay: &Path,
    archives: &Path,
    opts: &DiskOptions,
    ui: &Ui,
) -> Result<(), DiskError> {
    let q = |p: &Path| shell_quote(&p.to_string_lossy());
    let mut cmd = Command::new("mmdebstrap");
    cmd.args([
        "--mode=root",
        "--variant=minbase",
        "--architectures=riscv64",
        "--format=directory",
    ])
    .arg(format!("--include={}", PACKAGES.join(",")));
    for d in DPKG_EXCLUDES {
        cmd.arg(format!("--dpkgopt={d}"));
    }
    // The package cache: copied in before apt downloads, new packages copied out after.
    cmd.arg("--skip=download/empty")
        .arg("--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives/")
        .arg(format!(
            "--setup-hook=sync-in {} /var/cache/apt/archives/",
            q(archives)
        ))
        .arg(format!(
            "--customize-hook=sync-out /var/cache/apt/archives {}",
            q(archives)
        ))
        .arg("--customize-hook=rm -f \"$1\"/var/cache/apt/archives/*.deb")
        .arg(format!("--customize-hook=sync-in {} /", q(overlay)))
        .arg("--customize-hook=chroot \"$1\" systemctl enable systemd-networkd systemd-resolved serial-getty@ttyS0.service")
        // Console login without a password; sshd refuses empty passwords.
        .arg("--customize-hook=chroot \"$1\" passwd --delete root")
        .arg("--customize-hook=chroot \"$1\" u-boot-update")
        .arg(&opts.suite)
        .arg(rootfs)
        .arg(&opts.mirror);
    run_streaming(cmd, "mmdebstrap", |line| {
        if let Some(msg) = line.strip_prefix("I: ") {
            ui.detail(msg);
        }
    })
}

/// Start sector and size in sectors of the root partition.
struct Partition {
    start: u64,
    sectors: u64,
}

/// Makes a sparse `size`-byte file with a GPT holding one bootable Linux partition.
fn partition(image: &Path, size: u64) -> Result<Partition, DiskError> {
    let f = fs::File::create(image).map_err(|e| DiskError::io(image, "creating", e))?;
    f.set_len(size)
        .map_err(|e| DiskError::io(image, "sizing", e))?;
    drop(f);
    let script = format!(
        "label: gpt\nunit: sectors\nfirst-lba: {PART_START_SECTOR}\n\
         start={PART_START_SECTOR}, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=\"root\", attrs=\"LegacyBIOSBootable\"\n"
    );
    let mut cmd = Command::new("sfdisk");
    cmd.args([
        "--quiet",
        "--no-reread",
        "--no-tell-kernel",
        "--wipe=always",
    ])
    .arg(image);
    run_with_input(cmd, "sfdisk", script.as_bytes())?;
    let mut cmd = Command::new("sfdisk");
    cmd.arg("--dump").arg(image);
    let dump = run(cmd, "sfdisk --dump")?;
    parse_dump(&dump)
        .ok_or_else(|| DiskError::Unexpected(format!("sfdisk --dump shows no partition:\n{dump}")))
}

fn parse_dump(dump: &str) -> Option<Partition> {
    let line = dump.lines().find(|l| l.contains("start="))?;
    let field = |key: &str| -> Option<u64> {
        let rest = &line[line.find(key)? + key.len()..];
        rest.trim_start()
            .split(|c: char| c == ',' || c.is_whitespace())
            .next()?
            .parse()
            .ok()
    };
    Some(Partition {
        start: field("start=")?,
        sectors: field("size=")?,
    })
}

/// Writes the ext4 file system holding `rootfs` into the partition, in place.
fn mkfs(image: &Path, rootfs: &Path, part: &Partition, uuid: &str) -> Result<(), DiskError> {
    let mut cmd = Command::new("mkfs.ext4");
    cmd.args(["-F", "-q", "-L", "root", "-U", uuid, "-d"])
        .arg(rootfs)
        .arg("-E")
        .arg(format!("offset={}", part.start * SECTOR))
        .arg(image)
        .arg(format!("{}k", part.sectors * SECTOR / 1024));
    run(cmd, "mkfs.ext4").map(drop)
}

/// The work directory next to the image; removed when dropped, unless something is still
/// mounted under it (a killed mmdebstrap's /proc or /dev: deleting through those would reach
/// the host's), which is reported instead.
struct WorkDir(PathBuf);

impl WorkDir {
    fn create(path: &Path) -> Result<Self, DiskError> {
        if path.exists() {
            remove_tree(path)?;
        }
        fs::create_dir_all(path).map_err(|e| DiskError::io(path, "creating", e))?;
        Ok(Self(path.to_path_buf()))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Err(e) = remove_tree(&self.0) {
            tracing::warn!("{e}");
            eprintln!("duvisor: {e}");
        }
    }
}

/// Work directories of earlier builds of `name` whose process is gone (killed, say).
fn remove_stale_work_dirs(dir: &Path, name: &str) {
    let prefix = format!(".{name}.build-");
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let file = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = file
            .strip_prefix(&prefix)
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            if let Err(err) = remove_tree(&e.path()) {
                tracing::warn!("{err}");
            }
        }
    }
}

fn remove_tree(path: &Path) -> Result<(), DiskError> {
    let abs = fs::canonicalize(path).map_err(|e| DiskError::io(path, "resolving", e))?;
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    if let Some(m) = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .find(|m| Path::new(m).starts_with(&abs))
    {
        return Err(DiskError::Unexpected(format!(
            "not removing {}: {m} is still mounted under it",
            abs.display()
        )));
    }
    fs::remove_dir_all(&abs).map_err(|e| DiskError::io(&abs, "removing", e))
}

fn count_debs(dir: &Path) -> usize {
    fs::read_dir(dir).map_or(0, |d| {
        d.flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".deb"))
            .count()
    })
}

/// A random version-4 UUID, as `mkfs.ext4 -U` takes it.
fn random_uuid() -> Result<String, DiskError> {
    let mut b = [0u8; 16];
    let urandom = Path::new("/dev/urandom");
    fs::File::open(urandom)
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| DiskError::io(urandom, "reading", e))?;
    Ok(format_uuid(b))
}

fn format_uuid(mut b: [u8; 16]) -> String {
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Quotes `s` for the shell mmdebstrap runs its hooks with.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn status_error(what: &str, status: std::process::ExitStatus, output: &str) -> DiskError {
    let lines: Vec<&str> = output.lines().filter(|l| !l.trim().is_empty()).collect();
    DiskError::Command {
        what: what.to_string(),
        status: status.to_string(),
        tail: lines[lines.len().saturating_sub(20)..].join("\n"),
    }
}

fn spawn_error(what: &str, e: io::Error) -> DiskError {
    DiskError::Command {
        what: what.to_string(),
        status: "not started".into(),
        tail: e.to_string(),
    }
}

fn run(cmd: Command, what: &str) -> Result<String, DiskError> {
    run_with_input(cmd, what, &[])
}

fn run_with_input(mut cmd: Command, what: &str, input: &[u8]) -> Result<String, DiskError> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| spawn_error(what, e))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A tool that does not read its input closes the pipe; its status tells the rest.
        let _ = stdin.write_all(input);
    }
    let out = child.wait_with_output().map_err(|e| spawn_error(what, e))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    tracing::debug!("{what}: {}\n{stdout}{stderr}", out.status);
    if !out.status.success() {
        return Err(status_error(what, out.status, &format!("{stdout}{stderr}")));
    }
    Ok(stdout)
}

/// Runs `cmd` with its output (stdout and stderr merged) passed to `on_line` line by line as
/// it comes; the last lines go into the error when it fails.
fn run_streaming(
    mut cmd: Command,
    what: &str,
    mut on_line: impl FnMut(&str),
) -> Result<(), DiskError> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| spawn_error(what, e))?;
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let tx2 = tx.clone();
    let pump = |r: Box<dyn Read + Send>, tx: std::sync::mpsc::Sender<String>| {
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        })
    };
    let t1 = pump(Box::new(stdout), tx);
    let t2 = pump(Box::new(stderr), tx2);
    let mut last: VecDeque<String> = VecDeque::new();
    for line in rx {
        tracing::debug!("{what}: {line}");
        on_line(&line);
        last.push_back(line);
        if last.len() > 40 {
            last.pop_front();
        }
    }
    let _ = t1.join();
    let _ = t2.join();
    let status = child.wait().map_err(|e| spawn_error(what, e))?;
    if !status.success() {
        let text: Vec<String> = last.into_iter().collect();
        return Err(status_error(what, status, &text.join("\n")));
    }
    Ok(())
}

/// The image built from `opts`, kept under `<cache_dir>/disk-images/` by
/// [`DiskOptions::cache_key`]: built (needing root, see [`build_disk`]) only when missing, once
/// for concurrent callers. Callers that boot it should not write it: an overlay
/// (`qemu-img create -f qcow2 -b IMAGE -F raw`) keeps it reusable.
pub fn cached_image(
    cache_dir: &Path,
    opts: &DiskOptions,
    progress: bool,
) -> Result<PathBuf, DiskError> {
    let dir = cache_dir.join("disk-images");
    let path = dir.join(format!("{}.img", opts.cache_key()));
    if path.is_file() {
        return Ok(path);
    }
    fs::create_dir_all(&dir).map_err(|e| DiskError::io(&dir, "creating", e))?;
    let _lock = crate::lock::CacheLock::acquire(&dir.join(".lock"), |pid| {
        eprintln!(
            "waiting for another disk build (pid {}) to finish",
            pid.map_or("?".to_string(), |p| p.to_string())
        )
    })
    .map_err(|e| DiskError::Unexpected(format!("{e:#}")))?;
    if !path.is_file() {
        build_disk(&path, opts, cache_dir, progress)?;
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_format() {
        let u = format_uuid([0xff; 16]);
        assert_eq!(u, "ffffffff-ffff-4fff-bfff-ffffffffffff");
        assert_eq!(format_uuid([0; 16]), "00000000-0000-4000-8000-000000000000");
    }

    #[test]
    fn sfdisk_dump() {
        let dump = "label: gpt\nlabel-id: 1B3C\ndevice: d.img\nunit: sectors\nfirst-lba: 2048\n\
                    last-lba: 8388574\nsector-size: 512\n\n\
                    d.img1 : start=        2048, size=     8386527, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=5E1B, name=\"root\", attrs=\"LegacyBIOSBootable\"\n";
        let p = parse_dump(dump).unwrap();
        assert_eq!((p.start, p.sectors), (2048, 8386527));
        assert!(parse_dump("label: gpt\n").is_none());
    }

    #[test]
    fn option_checks_and_keys() {
        let o = DiskOptions::default();
        o.check().unwrap();
        let bad = |f: fn(&mut DiskOptions)| {
            let mut o = DiskOptions::default();
            f(&mut o);
            o.check().unwrap_err()
        };
        assert!(matches!(bad(|o| o.size = 1 << 29), DiskError::BadSize(_)));
        assert!(matches!(
            bad(|o| o.size = (4 << 30) + 512),
            DiskError::BadSize(_)
        ));
        assert!(matches!(
            bad(|o| o.hostname = "a b".into()),
            DiskError::BadHostname(_)
        ));
        assert!(matches!(
            bad(|o| o.ssh_key = Some("x\ny z".into())),
            DiskError::BadSshKey
        ));
        let mut k = DiskOptions::default();
        assert_eq!(k.cache_key(), DiskOptions::default().cache_key());
        k.ssh_key = Some("ssh-ed25519 AAAA test".into());
        assert_ne!(k.cache_key(), DiskOptions::default().cache_key());
        assert!(k.cache_key().starts_with("trixie-"));
    }

    #[test]
    fn overlay_files() {
        let dir = crate::testutil::TempDir::new("overlay");
        let o = DiskOptions {
            ssh_key: Some("ssh-ed25519 AAAA me@host".into()),
            ..DiskOptions::default()
        };
        write_overlay(dir.path(), &o, "0000-1").unwrap();
        let read = |p: &str| fs::read_to_string(dir.path().join(p)).unwrap();
        assert!(read("etc/fstab").contains("UUID=0000-1\t/\text4"));
        assert!(read("etc/default/u-boot").contains("root=UUID=0000-1"));
        assert_eq!(
            read("root/.ssh/authorized_keys"),
            "ssh-ed25519 AAAA me@host\n"
        );
        let mode = |p: &str| {
            fs::metadata(dir.path().join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("root/.ssh"), 0o700);
        assert_eq!(mode("root/.ssh/authorized_keys"), 0o600);
        assert_eq!(read("etc/hostname"), "duvisor\n");
    }

    #[test]
    fn stale_work_dirs_go() {
        let dir = crate::testutil::TempDir::new("stale");
        // pid 0 never names a process directory; our own does.
        let dead = dir.path().join(".d.img.build-0");
        let live = dir
            .path()
            .join(format!(".d.img.build-{}", std::process::id()));
        let other = dir.path().join(".e.img.build-0");
        for d in [&dead, &live, &other] {
            fs::create_dir_all(d.join("root/etc")).unwrap();
        }
        remove_stale_work_dirs(dir.path(), "d.img");
        assert!(!dead.exists());
        assert!(live.exists() && other.exists());
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/a b/it's"), "'/a b/it'\\''s'");
    }
}
