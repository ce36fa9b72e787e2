//! Guests for duvisor, built from Debian packages; not hypervisor code.
//!
//! Fetching the reference guest: the stock Debian riscv64 kernel and a busybox initramfs.
//!
//! [`fetch_guest`] downloads `linux-image-riscv64` (resolved to the versioned kernel package and
//! the packages it is split into) and `busybox-static` from Debian with the host's `apt-get`,
//! run against a private riscv64-only index (see [`apt`]); it tries `trixie` first and falls
//! back to `sid` when the mirror's trixie index is unusable (it is often out of step with its
//! Release file). It then unpacks the packages with `dpkg-deb`, checks the kernel `Image`
//! header, and builds a gzip-compressed newc initramfs holding busybox, an `/init` script and
//! the virtio modules (decompressed, in load order).
//!
//! Everything lands under `<cache_dir>/debian/`:
//!
//! ```text
//! guest/Image-<version>                  the kernel (a RISC-V Image), what GuestFiles::kernel names
//! guest/initramfs-<version>.cpio.gz      the initramfs, what GuestFiles::initrd names
//! guest/manifest                         what was built from what; written last
//! debs/<suite>/*.deb, debs/selection     the downloaded packages (rebuilds need no network)
//! apt/<suite>/                           the private apt state (index, sources, status)
//! ```
//!
//! A complete cache is returned without touching the network. Delete the directory to fetch
//! the newest packages again. `DUVISOR_DEBIAN_MIRROR` replaces the mirror and
//! `DUVISOR_DEBIAN_SUITES` (e.g. `sid` or `trixie,sid`) the suites tried, in order.
//!
//! The guest prints [`READY_MARKER`] on the console once it has mounted its file systems and
//! loaded its modules, then starts a shell (prompt `/ # `) with job control on the console.

mod apt;
mod cpio;
pub mod disk;
mod image;
mod initramfs;
mod lock;

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use apt::{AptEnv, PackageInfo};
pub use image::ImageHeader;
pub use initramfs::{READY_MARKER, SHELL_BANNER};

/// What the reference guest prints when its console is ready for input, either of them: kernel
/// messages on other CPUs can land in the middle of the marker line, so the shell's own banner
/// also counts.
pub const READY_MARKERS: &[&str] = &[READY_MARKER, SHELL_BANNER];

/// Check that `bytes` start with a RISC-V Linux `Image` header.
pub fn parse_image_header(bytes: &[u8]) -> Result<ImageHeader> {
    ImageHeader::parse(bytes)
}

/// The files to boot the reference guest with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestFiles {
    /// The Linux kernel, a RISC-V `Image` (header magic checked).
    pub kernel: PathBuf,
    /// The gzip-compressed newc initramfs.
    pub initrd: PathBuf,
    /// The kernel's release string (`uname -r`), e.g. `6.12.48+deb13-riscv64`.
    pub kernel_version: String,
}

/// Bump when what the initramfs holds changes: older caches are then rebuilt (from the
/// downloaded packages, without network).
const FORMAT: u32 = 2;
/// The metapackage naming the current kernel.
const KERNEL_META: &str = "linux-image-riscv64";
const BUSYBOX: &str = "busybox-static";
const DEFAULT_SUITES: &[&str] = &["trixie", "sid"];

/// `$DUVISOR_CACHE`, else `~/.cache/duvisor`, else (no `$HOME`) `/tmp/duvisor-cache`.
pub fn default_cache_dir() -> PathBuf {
    cache_dir_from(std::env::var_os("DUVISOR_CACHE"), std::env::var_os("HOME"))
}

fn cache_dir_from(duvisor_cache: Option<OsString>, home: Option<OsString>) -> PathBuf {
    match (duvisor_cache, home) {
        (Some(dir), _) if !dir.is_empty() => PathBuf::from(dir),
        (_, Some(home)) if !home.is_empty() => PathBuf::from(home).join(".cache").join("duvisor"),
        _ => PathBuf::from("/tmp/duvisor-cache"),
    }
}

/// Returns the reference guest's kernel and initramfs, fetching and building them into
/// `cache_dir` first unless they are already there. With `progress`, shows what it is doing
/// on the terminal.
pub fn fetch_guest(cache_dir: &Path, progress: bool) -> Result<GuestFiles> {
    let root = cache_dir.join("debian");
    if let Some(files) = cached(&root) {
        tracing::debug!("guest files cached in {}", root.display());
        return Ok(files);
    }
    let ui = Ui::new(progress);
    let result = (|| {
        fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        let _lock = lock::CacheLock::acquire(&root.join(".lock"), |pid| {
            ui.step(format!(
                "waiting for another fetch (pid {}) to finish",
                pid.map_or("?".to_string(), |p| p.to_string())
            ))
        })?;
        if let Some(files) = cached(&root) {
            return Ok(files);
        }
        let selection = match Selection::load(&root) {
            Some(sel) => {
                ui.note(format!(
                    "rebuilding from the packages downloaded earlier (Debian {})",
                    sel.suite
                ));
                sel
            }
            None => download(&root, &ui)?,
        };
        build(&root, &selection, &ui)
    })();
    let files = result.with_context(|| {
        format!(
            "fetching the guest kernel and initramfs into {}",
            root.display()
        )
    })?;
    ui.finish(format!(
        "guest ready: Linux {} in {}",
        files.kernel_version,
        root.join("guest").display()
    ));
    Ok(files)
}

/// Progress display: a spinner with the current step and a line per finished step.
pub(crate) struct Ui {
    bar: Option<ProgressBar>,
    current: std::cell::RefCell<Option<(String, Instant)>>,
}

impl Ui {
    fn new(enabled: bool) -> Self {
        let bar = enabled.then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner:.cyan} {msg} [{elapsed}]")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self {
            bar,
            current: std::cell::RefCell::new(None),
        }
    }

    fn end_step(&self) {
        self.end_step_with('✓');
    }

    /// Ends the current step as failed.
    fn fail_step(&self) {
        self.end_step_with('✗');
    }

    fn end_step_with(&self, mark: char) {
        if let Some((msg, start)) = self.current.borrow_mut().take() {
            if let Some(bar) = &self.bar {
                bar.println(format!(
                    "  {mark} {msg} ({:.1}s)",
                    start.elapsed().as_secs_f64()
                ));
            }
        }
    }

    fn step(&self, msg: impl Into<String>) {
        self.end_step();
        let msg = msg.into();
        tracing::info!("{msg}");
        if let Some(bar) = &self.bar {
            bar.reset_elapsed();
            bar.set_message(msg.clone());
        }
        *self.current.borrow_mut() = Some((msg, Instant::now()));
    }

    /// Shows `detail` after the current step's message (a tool's latest line, say).
    fn detail(&self, detail: &str) {
        if let (Some(bar), Some((msg, _))) = (&self.bar, &*self.current.borrow()) {
            let detail: String = detail.chars().take(60).collect();
            bar.set_message(format!("{msg}: {detail}"));
        }
    }

    fn note(&self, msg: impl Into<String>) {
        let msg = msg.into();
        tracing::info!("{msg}");
        if let Some(bar) = &self.bar {
            bar.println(format!("  {msg}"));
        }
    }

    fn warn(&self, msg: impl Into<String>) {
        let msg = msg.into();
        tracing::warn!("{msg}");
        if let Some(bar) = &self.bar {
            bar.println(format!("  ! {msg}"));
        }
    }

    fn finish(&self, msg: String) {
        self.end_step();
        tracing::info!("{msg}");
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
            eprintln!("{msg}");
        }
    }
}

impl Drop for Ui {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Simple `key=value` files (the manifest and the package selection).
fn parse_kv(text: &str) -> HashMap<String, Vec<String>> {
    let mut map: HashMap<String, Vec<String>> = HashMap::new();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once('=') {
            map.entry(k.trim().to_string())
                .or_default()
                .push(v.trim().to_string());
        }
    }
    map
}

fn kv_one<'a>(map: &'a HashMap<String, Vec<String>>, key: &str) -> Option<&'a str> {
    map.get(key).and_then(|v| v.first()).map(String::as_str)
}

/// The packages chosen and downloaded for a build.
#[derive(Debug, Clone)]
struct Selection {
    suite: String,
    kernel_package: PackageInfo,
    busybox: PackageInfo,
    /// Every .deb to unpack, relative to `debs/<suite>/`.
    debs: Vec<String>,
}

impl Selection {
    fn file(root: &Path) -> PathBuf {
        root.join("debs").join("selection")
    }

    fn dir(&self, root: &Path) -> PathBuf {
        root.join("debs").join(&self.suite)
    }

    /// The kernel ABI name (`uname -r`) the package name carries.
    fn abi(&self) -> &str {
        self.kernel_package
            .name
            .strip_prefix("linux-image-")
            .unwrap_or(&self.kernel_package.name)
    }

    fn to_text(&self) -> String {
        let mut s = format!(
            "format={FORMAT}\nsuite={}\nkernel_package={} {}\nbusybox={} {}\n",
            self.suite,
            self.kernel_package.name,
            self.kernel_package.version,
            self.busybox.name,
            self.busybox.version
        );
        for d in &self.debs {
            s.push_str(&format!("deb={d}\n"));
        }
        s
    }

    fn from_text(text: &str) -> Option<Self> {
        let kv = parse_kv(text);
        let pkg = |key: &str| {
            let (name, version) = kv_one(&kv, key)?.split_once(' ')?;
            Some(PackageInfo {
                name: name.to_string(),
                version: version.to_string(),
                size: 0,
            })
        };
        Some(Self {
            suite: kv_one(&kv, "suite")?.to_string(),
            kernel_package: pkg("kernel_package")?,
            busybox: pkg("busybox")?,
            debs: kv.get("deb")?.clone(),
        })
    }

    /// A selection saved earlier whose .debs are all still there.
    fn load(root: &Path) -> Option<Self> {
        let sel = Self::from_text(&fs::read_to_string(Self::file(root)).ok()?)?;
        let dir = sel.dir(root);
        sel.debs
            .iter()
            .all(|d| !d.contains('/') && dir.join(d).is_file())
            .then_some(sel)
    }
}

fn suites() -> Vec<String> {
    match std::env::var("DUVISOR_DEBIAN_SUITES") {
        Ok(s) if !s.trim().is_empty() => s
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        _ => DEFAULT_SUITES.iter().map(|s| s.to_string()).collect(),
    }
}

/// Downloads the packages from the first suite that works.
fn download(root: &Path, ui: &Ui) -> Result<Selection> {
    let mirror =
        std::env::var("DUVISOR_DEBIAN_MIRROR").unwrap_or_else(|_| apt::DEFAULT_MIRROR.to_string());
    let suites = suites();
    let mut failures: Vec<(String, anyhow::Error)> = Vec::new();
    for suite in &suites {
        match try_suite(root, suite, &mirror, ui) {
            Ok(sel) => {
                let tried: Vec<&str> = failures.iter().map(|(s, _)| s.as_str()).collect();
                let why = if tried.is_empty() {
                    String::new()
                } else {
                    format!(" ({} unusable)", tried.join(", "))
                };
                ui.note(format!(
                    "using Debian {suite}{why}: {} {}, {} {}",
                    sel.kernel_package.name,
                    sel.kernel_package.version,
                    sel.busybox.name,
                    sel.busybox.version
                ));
                write_atomic(&Selection::file(root), sel.to_text().as_bytes())?;
                return Ok(sel);
            }
            Err(e) => {
                ui.fail_step();
                ui.warn(format!("Debian {suite} unusable: {}", one_line(&e)));
                failures.push((suite.clone(), e));
            }
        }
    }
    let all_update = failures
        .iter()
        .all(|(_, e)| e.to_string().starts_with("apt-get update"));
    let names: Vec<&str> = suites.iter().map(String::as_str).collect();
    let what = if all_update {
        format!("apt-get update failed for {}", names.join(" and "))
    } else {
        format!(
            "no Debian suite ({}) provided the guest packages",
            names.join(", ")
        )
    };
    let details: Vec<String> = failures
        .iter()
        .map(|(s, e)| format!("{s}: {e:#}"))
        .collect();
    bail!("{what}:\n{}", details.join("\n"))
}

/// A short, one-line account of an error: its first line, plus the first apt error line.
fn one_line(e: &anyhow::Error) -> String {
    let text = format!("{e:#}");
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or_default().trim_end_matches(':');
    let mut out = first.to_string();
    if let Some(detail) = lines.find(|l| l.starts_with("E:")) {
        out.push_str(": ");
        out.push_str(detail);
    }
    if out.chars().count() > 200 {
        out = out.chars().take(197).collect::<String>() + "...";
    }
    out
}

fn is_versioned_image(name: &str) -> bool {
    name.strip_prefix("linux-image-")
        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
}

/// Updates the index of `suite`, resolves the packages and downloads them.
fn try_suite(root: &Path, suite: &str, mirror: &str, ui: &Ui) -> Result<Selection> {
    let env = AptEnv::new(root.join("apt").join(suite), suite, mirror);
    env.prepare()?;
    ui.step(format!("updating package index ({suite})"));
    env.update()?;
    ui.step(format!("resolving {KERNEL_META} ({suite})"));

    let image = env
        .depends(KERNEL_META)?
        .into_iter()
        .find(|d| is_versioned_image(d))
        .with_context(|| format!("{KERNEL_META} in {suite} depends on no linux-image-<version>"))?;
    let abi = image.trim_start_matches("linux-image-").to_string();
    // Newer kernels are split into linux-{base,binary,modules}-<abi>; older ones ship everything
    // in linux-image-<abi> and depend on nothing carrying the ABI name.
    let mut names = vec![image.clone()];
    names.extend(
        env.depends(&image)?
            .into_iter()
            .filter(|d| d.starts_with("linux-") && d.ends_with(&abi) && *d != image),
    );
    names.push(BUSYBOX.to_string());
    let infos = env.show(&names)?;

    let dir = root.join("debs").join(suite);
    let present = |i: &PackageInfo| {
        fs::metadata(dir.join(i.deb_file_name())).is_ok_and(|m| i.size == 0 || m.len() == i.size)
    };
    let wanted: Vec<String> = infos
        .iter()
        .filter(|i| !present(i))
        .map(|i| format!("{}={}", i.name, i.version))
        .collect();
    if !wanted.is_empty() {
        let total: u64 = infos.iter().filter(|i| !present(i)).map(|i| i.size).sum();
        ui.step(format!(
            "downloading {image} and {BUSYBOX} ({:.1} MB)",
            total as f64 / 1e6
        ));
        env.download(&dir, &wanted)?;
    }
    for i in &infos {
        if !present(i) {
            bail!(
                "apt-get download left no {} of the expected size in {}",
                i.deb_file_name(),
                dir.display()
            );
        }
    }
    // Drop packages of other versions downloaded earlier.
    let keep: Vec<String> = infos.iter().map(PackageInfo::deb_file_name).collect();
    if let Ok(entries) = fs::read_dir(&dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".deb") && !keep.contains(&name) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    let busybox = infos.last().cloned().context("no busybox package")?;
    Ok(Selection {
        suite: suite.to_string(),
        kernel_package: infos[0].clone(),
        busybox,
        debs: keep,
    })
}

/// A directory removed when dropped.
struct Staging(PathBuf);

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Finds the kernel Image in the unpacked packages.
fn find_kernel(staging: &Path, abi: &str) -> Result<PathBuf> {
    let fixed = [
        format!("boot/vmlinux-{abi}"),
        format!("boot/vmlinuz-{abi}"),
        format!("usr/lib/modules/{abi}/vmlinuz"),
        format!("usr/lib/modules/{abi}/vmlinux"),
        format!("lib/modules/{abi}/vmlinuz"),
    ];
    if let Some(p) = fixed.iter().map(|p| staging.join(p)).find(|p| p.is_file()) {
        return Ok(p);
    }
    // Any other vmlinu[xz]* under /boot.
    let boot = staging.join("boot");
    if let Ok(entries) = fs::read_dir(&boot) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with("vmlinu") {
                return Ok(e.path());
            }
        }
    }
    bail!(
        "no kernel (boot/vmlinux-*, usr/lib/modules/*/vmlinuz) in the unpacked packages at {}",
        staging.display()
    )
}

/// The modules directory of the unpacked kernel and its name (the kernel release).
fn find_moddir(staging: &Path, abi: &str) -> Option<(PathBuf, String)> {
    for base in ["usr/lib/modules", "lib/modules"] {
        let exact = staging.join(base).join(abi);
        if exact.join("kernel").is_dir() {
            return Some((exact, abi.to_string()));
        }
    }
    for base in ["usr/lib/modules", "lib/modules"] {
        for e in fs::read_dir(staging.join(base)).ok()?.flatten() {
            if e.path().join("kernel").is_dir() {
                return Some((e.path(), e.file_name().to_string_lossy().into_owned()));
            }
        }
    }
    None
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    initramfs::write_atomic(path, data)
}

/// Unpacks the selected packages and builds the files in `guest/`.
fn build(root: &Path, sel: &Selection, ui: &Ui) -> Result<GuestFiles> {
    ui.step(format!("unpacking {}", sel.kernel_package.name));
    let staging = Staging(root.join(format!("staging-{}", std::process::id())));
    if staging.0.exists() {
        fs::remove_dir_all(&staging.0)
            .with_context(|| format!("removing {}", staging.0.display()))?;
    }
    fs::create_dir_all(&staging.0)?;
    let debs_dir = sel.dir(root);
    for deb in &sel.debs {
        let mut cmd = Command::new("dpkg-deb");
        cmd.arg("-x").arg(debs_dir.join(deb)).arg(&staging.0);
        apt::run(cmd, &format!("dpkg-deb -x {deb}"))?;
    }

    let abi = sel.abi();
    let kernel_path = find_kernel(&staging.0, abi)?;
    let mut kernel =
        fs::read(&kernel_path).with_context(|| format!("reading {}", kernel_path.display()))?;
    if kernel.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(kernel.as_slice())
            .read_to_end(&mut out)
            .with_context(|| format!("decompressing {}", kernel_path.display()))?;
        kernel = out;
    }
    let header = parse_image_header(&kernel)
        .with_context(|| format!("checking {}", kernel_path.display()))?;

    ui.step("building initramfs");
    let (modules, version) = match find_moddir(&staging.0, abi) {
        Some((dir, version)) => {
            let plan = initramfs::resolve_modules(&dir, initramfs::WANTED_MODULES)?;
            if !plan.builtin.is_empty() {
                tracing::info!("built into the kernel: {}", plan.builtin.join(", "));
            }
            if !plan.missing.is_empty() {
                ui.warn(format!(
                    "modules not found (the guest goes on without them): {}",
                    plan.missing.join(", ")
                ));
            }
            (plan.modules, version)
        }
        None => {
            ui.warn("the kernel package has no modules; the guest gets none");
            (Vec::new(), abi.to_string())
        }
    };
    let busybox_path = initramfs::find_busybox(&staging.0)?;
    let busybox = fs::read(&busybox_path)?;
    let initrd = initramfs::build_initramfs(&busybox, &version, &modules)?;

    let guest = root.join("guest");
    fs::create_dir_all(&guest).with_context(|| format!("creating {}", guest.display()))?;
    let manifest_path = guest.join("manifest");
    let _ = fs::remove_file(&manifest_path);
    let kernel_name = format!("Image-{version}");
    let initrd_name = format!("initramfs-{version}.cpio.gz");
    write_atomic(&guest.join(&kernel_name), &kernel)?;
    write_atomic(&guest.join(&initrd_name), &initrd)?;
    let module_names: Vec<&str> = modules.iter().map(|m| m.name.as_str()).collect();
    let manifest = format!(
        "format={FORMAT}\nsuite={}\nkernel_version={version}\nkernel_package={} {}\n\
         busybox={} {}\nkernel={kernel_name}\nkernel_size={}\ntext_offset={:#x}\nimage_size={:#x}\n\
         initrd={initrd_name}\ninitrd_size={}\nmodules={}\n",
        sel.suite,
        sel.kernel_package.name,
        sel.kernel_package.version,
        sel.busybox.name,
        sel.busybox.version,
        kernel.len(),
        header.text_offset,
        header.image_size,
        initrd.len(),
        module_names.join(" "),
    );
    write_atomic(&manifest_path, manifest.as_bytes())?;
    // Files of earlier builds.
    for e in fs::read_dir(&guest)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name != kernel_name && name != initrd_name && name != "manifest" {
            let _ = fs::remove_file(e.path());
        }
    }
    cached(root).context("the guest files just written do not check out")
}

/// The guest files, if `root/guest/manifest` describes complete files of the current format.
fn cached(root: &Path) -> Option<GuestFiles> {
    let guest = root.join("guest");
    let kv = parse_kv(&fs::read_to_string(guest.join("manifest")).ok()?);
    if kv_one(&kv, "format")? != FORMAT.to_string() {
        return None;
    }
    let file = |name: &str, size: &str| -> Option<PathBuf> {
        let name = kv_one(&kv, name)?;
        if name.contains('/') {
            return None;
        }
        let path = guest.join(name);
        let want: u64 = kv_one(&kv, size)?.parse().ok()?;
        (fs::metadata(&path).ok()?.len() == want).then_some(path)
    };
    let kernel = file("kernel", "kernel_size")?;
    let initrd = file("initrd", "initrd_size")?;
    let mut head = [0u8; image::IMAGE_HEADER_SIZE];
    fs::File::open(&kernel).ok()?.read_exact(&mut head).ok()?;
    parse_image_header(&head).ok()?;
    Some(GuestFiles {
        kernel,
        initrd,
        kernel_version: kv_one(&kv, "kernel_version")?.to_string(),
    })
}

#[cfg(test)]
pub(crate) mod testutil {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A directory under the system temp dir, removed when dropped.
    pub struct TempDir(PathBuf);

    impl TempDir {
        pub fn new(prefix: &str) -> Self {
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "duvisor-test-{prefix}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Self(p)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::TempDir;
    use super::*;

    #[test]
    fn cache_dir_choice() {
        let s = |v: &str| Some(OsString::from(v));
        assert_eq!(cache_dir_from(s("/c"), s("/home/u")), PathBuf::from("/c"));
        assert_eq!(
            cache_dir_from(None, s("/home/u")),
            PathBuf::from("/home/u/.cache/duvisor")
        );
        assert_eq!(
            cache_dir_from(s(""), s("/home/u")),
            PathBuf::from("/home/u/.cache/duvisor")
        );
        assert_eq!(
            cache_dir_from(None, None),
            PathBuf::from("/tmp/duvisor-cache")
        );
        assert_eq!(
            cache_dir_from(None, s("")),
            PathBuf::from("/tmp/duvisor-cache")
        );
    }

    fn fake_image() -> Vec<u8> {
        let mut k = vec![0u8; 4096];
        k[0x38..0x3c].copy_from_slice(image::IMAGE_MAGIC2);
        k
    }

    #[test]
    fn cache_hit_needs_a_complete_manifest() {
        let dir = TempDir::new("cache");
        let root = dir.path().join("debian");
        let guest = root.join("guest");
        fs::create_dir_all(&guest).unwrap();
        assert!(cached(&root).is_none());
        fs::write(guest.join("Image-6.1"), fake_image()).unwrap();
        fs::write(guest.join("initramfs-6.1.cpio.gz"), b"12345").unwrap();
        let manifest = |fmt: u32, isize: u64| {
            format!(
                "format={fmt}\nkernel_version=6.1\nkernel=Image-6.1\nkernel_size=4096\n\
                 initrd=initramfs-6.1.cpio.gz\ninitrd_size={isize}\n"
            )
        };
        fs::write(guest.join("manifest"), manifest(FORMAT, 5)).unwrap();
        let files = cached(&root).unwrap();
        assert_eq!(files.kernel, guest.join("Image-6.1"));
        assert_eq!(files.initrd, guest.join("initramfs-6.1.cpio.gz"));
        assert_eq!(files.kernel_version, "6.1");
        // And fetch_guest answers from the cache without doing anything else.
        assert_eq!(fetch_guest(dir.path(), false).unwrap(), files);

        fs::write(guest.join("manifest"), manifest(FORMAT, 6)).unwrap();
        assert!(cached(&root).is_none(), "truncated initrd");
        fs::write(guest.join("manifest"), manifest(FORMAT + 1, 5)).unwrap();
        assert!(cached(&root).is_none(), "other format");
        fs::write(guest.join("manifest"), manifest(FORMAT, 5)).unwrap();
        fs::write(guest.join("Image-6.1"), vec![0u8; 4096]).unwrap();
        assert!(cached(&root).is_none(), "not an Image");
    }

    #[test]
    fn one_line_errors() {
        let e = anyhow::anyhow!(
            "apt-get update (trixie) failed (exit status: 100):\n  Err:2 http://x trixie/main \
             riscv64 Packages\n  E: Failed to fetch http://x/Packages.xz  File has unexpected \
             size (1 != 2). Mirror sync in progress?"
        );
        assert_eq!(
            one_line(&e),
            "apt-get update (trixie) failed (exit status: 100): E: Failed to fetch \
             http://x/Packages.xz  File has unexpected size (1 != 2). Mirror sync in progress?"
        );
        assert_eq!(one_line(&anyhow::anyhow!("plain")), "plain");
    }

    #[test]
    fn selection_round_trip() {
        let sel = Selection {
            suite: "sid".into(),
            kernel_package: PackageInfo {
                name: "linux-image-7.2.13+deb14-riscv64".into(),
                version: "7.2.13-1".into(),
                size: 0,
            },
            busybox: PackageInfo {
                name: "busybox-static".into(),
                version: "1:1.38.0-3+b1".into(),
                size: 0,
            },
            debs: vec!["a.deb".into(), "b.deb".into()],
        };
        let back = Selection::from_text(&sel.to_text()).unwrap();
        assert_eq!(back.suite, "sid");
        assert_eq!(back.kernel_package, sel.kernel_package);
        assert_eq!(back.busybox, sel.busybox);
        assert_eq!(back.debs, sel.debs);
        assert_eq!(back.abi(), "7.2.13+deb14-riscv64");
        assert!(is_versioned_image("linux-image-6.12.48+deb13-riscv64"));
        assert!(!is_versioned_image("linux-image-riscv64"));
    }

    #[test]
    fn finds_kernels_in_old_and_new_layouts() {
        let dir = TempDir::new("layout");
        let s = dir.path();
        fs::create_dir_all(s.join("usr/lib/modules/7.2.13+deb14-riscv64/kernel")).unwrap();
        fs::write(s.join("usr/lib/modules/7.2.13+deb14-riscv64/vmlinuz"), b"k").unwrap();
        assert_eq!(
            find_kernel(s, "7.2.13+deb14-riscv64").unwrap(),
            s.join("usr/lib/modules/7.2.13+deb14-riscv64/vmlinuz")
        );
        assert_eq!(
            find_moddir(s, "7.2.13+deb14-riscv64").unwrap().1,
            "7.2.13+deb14-riscv64"
        );
        fs::create_dir_all(s.join("boot")).unwrap();
        fs::write(s.join("boot/vmlinux-6.12.48+deb13-riscv64"), b"k").unwrap();
        assert_eq!(
            find_kernel(s, "6.12.48+deb13-riscv64").unwrap(),
            s.join("boot/vmlinux-6.12.48+deb13-riscv64")
        );
        // The modules directory's own name wins over the package's.
        assert_eq!(find_moddir(s, "other").unwrap().1, "7.2.13+deb14-riscv64");
    }

    /// Fetches for real (network). `cargo test -p guest-fetch -- --ignored`
    #[test]
    #[ignore]
    fn fetch_for_real() {
        let files = fetch_guest(&default_cache_dir(), true).unwrap();
        println!("{files:?}");
        let k = fs::read(&files.kernel).unwrap();
        parse_image_header(&k).unwrap();
    }
}
