//! The guest's initramfs: busybox, an `/init` script, and the virtio modules (decompressed, in
//! load order), as a gzip-compressed newc cpio archive.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use flate2::write::GzEncoder;
use flate2::Compression;

use super::cpio::CpioWriter;

/// The modules the guest loads (their dependencies come along).
pub const WANTED_MODULES: &[&str] = &["virtio_mmio", "virtio_blk", "virtio_net", "virtio_rng"];

/// The line `/init` prints once the guest is set up, just before the shell starts.
pub const READY_MARKER: &str = "duvisor-guest: ready";

/// Printed by busybox ash when the guest's interactive shell starts.
pub const SHELL_BANNER: &str = "built-in shell (ash)";

/// A kernel module picked for the initramfs.
#[derive(Debug, Clone)]
pub struct Module {
    /// Normalised name (`-` replaced by `_`), as in `/proc/modules`.
    pub name: String,
    /// Path relative to `/lib/modules/<version>/`, without a compression suffix.
    pub rel_path: String,
    /// The decompressed ELF object.
    pub data: Vec<u8>,
    /// Names of the modules it needs (already earlier in the load order).
    pub deps: Vec<String>,
}

/// The modules to load, dependencies first, and what could not be included.
#[derive(Debug, Default)]
pub struct ModulePlan {
    pub modules: Vec<Module>,
    /// Wanted or needed modules that are built into the kernel.
    pub builtin: Vec<String>,
    /// Wanted or needed modules found neither as files nor as built-ins.
    pub missing: Vec<String>,
}

fn normalise(name: &str) -> String {
    name.replace('-', "_")
}

/// The module name of a file name like `virtio-rng.ko.xz`.
fn module_name_of(file: &str) -> Option<String> {
    let stem = [".ko.xz", ".ko.gz", ".ko.zst", ".ko"]
        .iter()
        .find_map(|suffix| file.strip_suffix(suffix))?;
    Some(normalise(stem))
}

/// Strips the compression suffix: `a/b.ko.xz` becomes `a/b.ko`.
fn uncompressed_path(rel: &str) -> String {
    for suffix in [".xz", ".gz", ".zst"] {
        if let Some(p) = rel.strip_suffix(suffix) {
            return p.to_string();
        }
    }
    rel.to_string()
}

/// Decompresses a module file according to its suffix and checks that it is an ELF object.
pub fn decompress_module(rel: &str, raw: Vec<u8>) -> Result<Vec<u8>> {
    let data = if rel.ends_with(".xz") {
        let mut out = Vec::new();
        lzma_rs::xz_decompress(&mut raw.as_slice(), &mut out)
            .map_err(|e| anyhow::anyhow!("xz: {e}"))
            .with_context(|| format!("decompressing {rel}"))?;
        out
    } else if rel.ends_with(".gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .with_context(|| format!("decompressing {rel}"))?;
        out
    } else if rel.ends_with(".zst") {
        bail!("{rel}: zstd-compressed modules are not supported");
    } else {
        raw
    };
    if !data.starts_with(b"\x7fELF") {
        bail!("{rel} is not an ELF object");
    }
    Ok(data)
}

/// The `.modinfo` strings (`key=value`) of a 64-bit little-endian ELF module.
pub fn modinfo(elf: &[u8]) -> Result<Vec<String>> {
    let rd = |off: usize, len: usize| -> Result<u64> {
        let b = elf
            .get(off..off + len)
            .context("ELF header out of bounds")?;
        let mut v = [0u8; 8];
        v[..len].copy_from_slice(b);
        Ok(u64::from_le_bytes(v))
    };
    if !elf.starts_with(b"\x7fELF") || elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        bail!("not a 64-bit little-endian ELF file");
    }
    let shoff = rd(0x28, 8)? as usize;
    let shentsize = rd(0x3a, 2)? as usize;
    let shnum = rd(0x3c, 2)? as usize;
    let shstrndx = rd(0x3e, 2)? as usize;
    let section = |i: usize| -> Result<(u64, usize, usize)> {
        let base = shoff + i * shentsize;
        Ok((
            rd(base, 4)?,
            rd(base + 0x18, 8)? as usize,
            rd(base + 0x20, 8)? as usize,
        ))
    };
    let (_, stroff, strsize) = section(shstrndx)?;
    let strtab = elf
        .get(stroff..stroff + strsize)
        .context("section name table out of bounds")?;
    for i in 0..shnum {
        let (name_off, off, size) = section(i)?;
        let name = strtab
            .get(name_off as usize..)
            .and_then(|s| s.split(|&b| b == 0).next())
            .unwrap_or_default();
        if name == b".modinfo" {
            let body = elf.get(off..off + size).context(".modinfo out of bounds")?;
            return Ok(body
                .split(|&b| b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect());
        }
    }
    bail!("no .modinfo section")
}

/// The modules named in the `depends=` entry of `.modinfo`.
pub fn modinfo_depends(elf: &[u8]) -> Result<Vec<String>> {
    Ok(modinfo(elf)?
        .iter()
        .filter_map(|kv| kv.strip_prefix("depends="))
        .flat_map(|v| v.split(','))
        .filter(|s| !s.is_empty())
        .map(normalise)
        .collect())
}

/// Parses `modules.dep` (`kernel/a.ko.xz: kernel/b.ko.xz kernel/c.ko.xz`) into name → deps.
pub fn parse_modules_dep(text: &str) -> HashMap<String, Vec<String>> {
    let name_of = |p: &str| p.rsplit('/').next().and_then(module_name_of);
    let mut map = HashMap::new();
    for line in text.lines() {
        let Some((module, deps)) = line.split_once(':') else {
            continue;
        };
        if let Some(name) = name_of(module.trim()) {
            map.insert(name, deps.split_whitespace().filter_map(name_of).collect());
        }
    }
    map
}

/// Finds `wanted` and everything they need under `moddir` (`/usr/lib/modules/<version>`),
/// dependencies first. Dependencies come from `modules.dep` when the package ships one (it
/// is usually made by `depmod` at install time), otherwise from each module's `.modinfo`.
pub fn resolve_modules(moddir: &Path, wanted: &[&str]) -> Result<ModulePlan> {
    // name -> path relative to moddir
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    index_modules(moddir, Path::new("kernel"), &mut files)?;
    let builtin: HashSet<String> = fs::read_to_string(moddir.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.rsplit('/').next().and_then(module_name_of))
        .collect();
    let dep_file = fs::read_to_string(moddir.join("modules.dep"))
        .ok()
        .map(|t| parse_modules_dep(&t));

    struct Walk<'a> {
        moddir: &'a Path,
        files: &'a BTreeMap<String, String>,
        builtin: &'a HashSet<String>,
        dep_file: Option<&'a HashMap<String, Vec<String>>>,
        seen: HashSet<String>,
        plan: ModulePlan,
    }
    impl Walk<'_> {
        fn visit(&mut self, name: &str) -> Result<()> {
            if !self.seen.insert(name.to_string()) {
                return Ok(());
            }
            let Some(rel) = self.files.get(name) else {
                if self.builtin.contains(name) {
                    self.plan.builtin.push(name.to_string());
                } else {
                    self.plan.missing.push(name.to_string());
                }
                return Ok(());
            };
            let path = self.moddir.join(rel);
            let raw = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            let data = decompress_module(rel, raw)?;
            let deps = match self.dep_file.and_then(|m| m.get(name)) {
                Some(deps) => deps.clone(),
                None => modinfo_depends(&data).with_context(|| format!("reading {rel}"))?,
            };
            for dep in &deps {
                self.visit(dep)?;
            }
            self.plan.modules.push(Module {
                name: name.to_string(),
                rel_path: uncompressed_path(rel),
                data,
                deps,
            });
            Ok(())
        }
    }
    let mut walk = Walk {
        moddir,
        files: &files,
        builtin: &builtin,
        dep_file: dep_file.as_ref(),
        seen: HashSet::new(),
        plan: ModulePlan::default(),
    };
    for name in wanted {
        walk.visit(&normalise(name))?;
    }
    Ok(walk.plan)
}

fn index_modules(moddir: &Path, rel: &Path, out: &mut BTreeMap<String, String>) -> Result<()> {
    let dir = moddir.join(rel);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for entry in entries {
        let entry = entry?;
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let child = rel.join(&file_name);
        if entry.file_type()?.is_dir() {
            index_modules(moddir, &child, out)?;
        } else if let Some(name) = module_name_of(&file_name) {
            out.entry(name)
                .or_insert_with(|| child.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

/// The `/init` script.
pub fn init_script(kernel_version: &str, modules: &[Module]) -> String {
    let mut loads = String::new();
    for m in modules {
        loads.push_str(&format!(
            "load {} /lib/modules/{kernel_version}/{}\n",
            m.name, m.rel_path
        ));
    }
    format!(
        r#"#!/bin/sh
# /init of the duvisor guest initramfs (made by duvisor's guest_fetch for Linux {kernel_version}).
/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
umask 022

mkdir -p /proc /sys /dev /tmp /run
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev || echo "duvisor-guest: cannot mount devtmpfs on /dev"
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts 2>/dev/null
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=0755 tmpfs /run
hostname -F /etc/hostname 2>/dev/null

# load NAME FILE: insmod, tolerating a missing file or a failure.
load() {{
    if grep -q "^$1 " /proc/modules 2>/dev/null; then
        return 0
    elif [ ! -e "$2" ]; then
        echo "duvisor-guest: module $1 is not in the initramfs, skipped"
    elif ! msg=$(insmod "$2" 2>&1); then
        echo "duvisor-guest: insmod $1 failed: $msg"
    fi
}}
{loads}
echo "{READY_MARKER}"

# An interactive shell with job control on the console (ttyS0, hvc0, ...): busybox init
# respawns `cttyhack sh` (see /etc/inittab) and handles poweroff/reboot.
if [ -x /sbin/init ] && [ -f /etc/inittab ]; then
    exec /sbin/init
fi
exec setsid cttyhack sh -l
"#
    )
}

const INITTAB: &str = "\
# duvisor guest: a login shell on the console, respawned when it exits.
::respawn:/bin/cttyhack /bin/sh -l
::ctrlaltdel:/sbin/reboot
::shutdown:/bin/umount -a -r
::restart:/sbin/init
";

const PROFILE: &str = r#"export PATH=/sbin:/bin:/usr/sbin:/usr/bin
export HOME=/root
export TERM=${TERM:-vt100}
export PS1='\w \$ '
"#;

/// `modules.dep` for the modules in the initramfs (lets `modprobe` work too).
fn modules_dep(modules: &[Module]) -> String {
    let by_name: HashMap<&str, &str> = modules
        .iter()
        .map(|m| (m.name.as_str(), m.rel_path.as_str()))
        .collect();
    let mut out = String::new();
    for m in modules {
        // modules.dep lists the whole closure, deepest last.
        let mut closure = Vec::new();
        let mut stack: Vec<&str> = m.deps.iter().map(String::as_str).collect();
        while let Some(d) = stack.pop() {
            if let Some(p) = by_name.get(d) {
                if !closure.contains(p) {
                    closure.push(*p);
                    if let Some(dm) = modules.iter().find(|x| x.name == d) {
                        stack.extend(dm.deps.iter().map(String::as_str));
                    }
                }
            }
        }
        out.push_str(&format!("{}:", m.rel_path));
        for p in closure {
            out.push(' ');
            out.push_str(p);
        }
        out.push('\n');
    }
    out
}

/// Builds the gzip-compressed newc initramfs.
pub fn build_initramfs(
    busybox: &[u8],
    kernel_version: &str,
    modules: &[Module],
) -> Result<Vec<u8>> {
    let gz = GzEncoder::new(Vec::new(), Compression::best());
    let mut w = CpioWriter::new(gz);
    for (dir, perm) in [
        ("bin", 0o755),
        ("sbin", 0o755),
        ("usr", 0o755),
        ("usr/bin", 0o755),
        ("usr/sbin", 0o755),
        ("dev", 0o755),
        ("proc", 0o555),
        ("sys", 0o555),
        ("tmp", 0o1777),
        ("run", 0o755),
        ("etc", 0o755),
        ("root", 0o700),
        ("mnt", 0o755),
        ("var", 0o755),
        ("var/log", 0o755),
        ("lib", 0o755),
    ] {
        w.dir(dir, perm)?;
    }
    w.char_dev("dev/console", 0o600, 5, 1)?;
    w.char_dev("dev/null", 0o666, 1, 3)?;
    w.char_dev("dev/tty", 0o666, 5, 0)?;
    w.file("bin/busybox", 0o755, busybox)?;
    w.symlink("bin/sh", "busybox")?;
    w.file(
        "init",
        0o755,
        init_script(kernel_version, modules).as_bytes(),
    )?;
    w.file("etc/inittab", 0o644, INITTAB.as_bytes())?;
    w.file("etc/profile", 0o644, PROFILE.as_bytes())?;
    w.file("etc/hostname", 0o644, b"duvisor\n")?;
    w.file(
        "etc/hosts",
        0o644,
        b"127.0.0.1\tlocalhost\n127.0.1.1\tduvisor\n",
    )?;
    w.file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n")?;
    w.file("etc/group", 0o644, b"root:x:0:\ntty:x:5:\n")?;
    w.file("etc/shells", 0o644, b"/bin/sh\n")?;
    let base = format!("lib/modules/{kernel_version}");
    w.dir(&base, 0o755)?;
    for m in modules {
        w.file(&format!("{base}/{}", m.rel_path), 0o644, &m.data)?;
    }
    w.file(
        &format!("{base}/modules.dep"),
        0o644,
        modules_dep(modules).as_bytes(),
    )?;
    let gz = w.finish()?;
    Ok(gz.finish()?)
}

/// Finds the busybox binary in an unpacked `busybox-static` package.
pub fn find_busybox(root: &Path) -> Result<PathBuf> {
    ["usr/bin/busybox", "bin/busybox"]
        .iter()
        .map(|p| root.join(p))
        .find(|p| p.is_file())
        .with_context(|| format!("no busybox binary under {}", root.display()))
}

/// Writes `data` to `path` atomically (temporary file, fsync, rename).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let result = (|| -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpio::tests::parse_newc;

    /// A minimal ELF64 LE relocatable with a `.modinfo` section.
    fn fake_module(modinfo: &[&str]) -> Vec<u8> {
        let mut info = Vec::new();
        for kv in modinfo {
            info.extend_from_slice(kv.as_bytes());
            info.push(0);
        }
        let shstr = b"\0.modinfo\0.shstrtab\0";
        let info_off = 0x40;
        let str_off = info_off + info.len();
        let shoff = (str_off + shstr.len()).div_ceil(8) * 8;
        let mut elf = vec![0u8; shoff + 3 * 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        elf[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&2u16.to_le_bytes());
        elf[info_off..str_off].copy_from_slice(&info);
        elf[str_off..str_off + shstr.len()].copy_from_slice(shstr);
        let mut sh = |i: usize, name: u32, off: usize, size: usize| {
            let b = shoff + i * 64;
            elf[b..b + 4].copy_from_slice(&name.to_le_bytes());
            elf[b + 0x18..b + 0x20].copy_from_slice(&(off as u64).to_le_bytes());
            elf[b + 0x20..b + 0x28].copy_from_slice(&(size as u64).to_le_bytes());
        };
        sh(1, 1, info_off, info.len());
        sh(2, 10, str_off, shstr.len());
        elf
    }

    #[test]
    fn reads_modinfo_depends() {
        let m = fake_module(&[
            "license=GPL",
            "depends=net_failover,virtio-ring",
            "name=virtio_net",
        ]);
        assert_eq!(
            modinfo_depends(&m).unwrap(),
            ["net_failover", "virtio_ring"]
        );
        let none = fake_module(&["depends=", "name=failover"]);
        assert!(modinfo_depends(&none).unwrap().is_empty());
        assert!(modinfo_depends(b"\x7fELF").is_err());
    }

    #[test]
    fn parses_modules_dep() {
        let dep = "kernel/drivers/net/virtio_net.ko.xz: kernel/drivers/net/net_failover.ko.xz kernel/net/core/failover.ko.xz\n\
                   kernel/net/core/failover.ko.xz:\n";
        let m = parse_modules_dep(dep);
        assert_eq!(m["virtio_net"], ["net_failover", "failover"]);
        assert!(m["failover"].is_empty());
    }

    fn xz(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        lzma_rs::xz_compress(&mut &data[..], &mut out).unwrap();
        out
    }

    #[test]
    fn resolves_in_dependency_order() {
        let dir = crate::testutil::TempDir::new("mods");
        let md = dir.path();
        fs::create_dir_all(md.join("kernel/drivers/net")).unwrap();
        fs::create_dir_all(md.join("kernel/net/core")).unwrap();
        fs::create_dir_all(md.join("kernel/drivers/virtio")).unwrap();
        let put = |rel: &str, deps: &str| {
            let m = fake_module(&[&format!("depends={deps}")]);
            fs::write(md.join(rel), xz(&m)).unwrap();
        };
        put("kernel/drivers/net/virtio_net.ko.xz", "net_failover");
        put("kernel/drivers/net/net_failover.ko.xz", "failover");
        put("kernel/net/core/failover.ko.xz", "");
        put("kernel/drivers/virtio/virtio_mmio.ko.xz", "virtio_ring");
        fs::write(
            md.join("modules.builtin"),
            "kernel/drivers/virtio/virtio_ring.ko\n",
        )
        .unwrap();

        let plan = resolve_modules(md, &["virtio_mmio", "virtio_blk", "virtio_net"]).unwrap();
        let names: Vec<&str> = plan.modules.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            ["virtio_mmio", "failover", "net_failover", "virtio_net"]
        );
        assert_eq!(plan.builtin, ["virtio_ring"]);
        assert_eq!(plan.missing, ["virtio_blk"]);
        assert_eq!(plan.modules[3].rel_path, "kernel/drivers/net/virtio_net.ko");
        assert!(plan.modules[3].data.starts_with(b"\x7fELF"));

        let dep = modules_dep(&plan.modules);
        assert!(dep.contains(
            "kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko\n"
        ));

        // The initramfs holds the decompressed modules and loads them in order.
        let gz = build_initramfs(b"\x7fELF busybox", "6.1.0-test", &plan.modules).unwrap();
        let mut cpio = Vec::new();
        flate2::read::GzDecoder::new(gz.as_slice())
            .read_to_end(&mut cpio)
            .unwrap();
        let entries = parse_newc(&cpio);
        let get = |n: &str| {
            entries
                .iter()
                .find(|e| e.0 == n)
                .unwrap_or_else(|| panic!("{n} missing"))
        };
        assert_eq!(get("bin/busybox").4, b"\x7fELF busybox");
        assert_eq!(get("dev/console").2, 5);
        let init = String::from_utf8(get("init").4.clone()).unwrap();
        assert_eq!(get("init").1 & 0o777, 0o755);
        let order: Vec<usize> = ["failover", "net_failover", "virtio_net"]
            .iter()
            .map(|n| init.find(&format!("load {n} ")).unwrap())
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]));
        assert!(
            init.contains("load failover /lib/modules/6.1.0-test/kernel/net/core/failover.ko\n")
        );
        assert!(init.contains(READY_MARKER));
        assert!(get("lib/modules/6.1.0-test/kernel/net/core/failover.ko")
            .4
            .starts_with(b"\x7fELF"));
    }

    #[test]
    fn init_script_is_valid_sh() {
        let script = init_script("6.1.0-test", &[]);
        assert!(script.starts_with("#!/bin/sh\n"));
        let Ok(out) = std::process::Command::new("sh")
            .args(["-n", "-c", &script])
            .output()
        else {
            return;
        };
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn atomic_write_replaces() {
        let dir = crate::testutil::TempDir::new("atomic");
        let p = dir.path().join("f");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
