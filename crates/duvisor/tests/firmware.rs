//! `--firmware`: Debian's S-mode U-Boot (package u-boot-qemu) boots under duvisor, finds the
//! virtio disk, reads `extlinux.conf` from it and boots the kernel, initramfs and command line
//! that file names; QEMU's `virt` machine booting the same U-Boot and disk gets the same guest.
//! And the option's errors.

#[allow(unused_imports)] // common re-exports more than this test uses
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

/// Debian's S-mode U-Boot for QEMU `virt` (scripts/install-deps.sh installs it).
use guest_fetch::disk::UBOOT;
const TIMEOUT: Duration = Duration::from_secs(240);

fn run_ok(cmd: &mut Command) {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A GPT disk whose one partition (ext4, marked legacy-BIOS-bootable, which U-Boot's distro
/// boot looks for) holds the guest's kernel and initramfs and an `extlinux.conf` booting them
/// with `append`.
fn extlinux_disk(dir: &Path, kernel: &Path, initrd: &Path, append: &str) -> PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("boot/extlinux")).unwrap();
    std::fs::copy(kernel, root.join("boot/vmlinux")).unwrap();
    std::fs::copy(initrd, root.join("boot/initrd.img")).unwrap();
    std::fs::write(
        root.join("boot/extlinux/extlinux.conf"),
        format!(
            "default debian\ntimeout 0\n\nlabel debian\n    kernel /boot/vmlinux\n    \
             initrd /boot/initrd.img\n    append {append}\n"
        ),
    )
    .unwrap();
    const PART_MIB: u64 = 64;
    let part = dir.join("part.img");
    std::fs::File::create(&part)
        .unwrap()
        .set_len(PART_MIB << 20)
        .unwrap();
    run_ok(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "boot", "-d"])
            .arg(&root)
            .arg(&part),
    );
    // 1 MiB before the partition for the GPT, 1 MiB after it for its backup.
    let disk = dir.join("disk.img");
    let img = std::fs::File::create(&disk).unwrap();
    img.set_len((PART_MIB + 2) << 20).unwrap();
    use std::os::unix::fs::FileExt;
    img.write_all_at(&std::fs::read(&part).unwrap(), 1 << 20)
        .unwrap();
    drop(img);
    let table = format!(
        "label: gpt\nstart=2048, size={}, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, \
         attrs=\"LegacyBIOSBootable\"\n",
        (PART_MIB << 20) / 512
    );
    let mut sfdisk = Command::new("sfdisk")
        .args(["-q", "--no-reread", "--no-tell-kernel"])
        .arg(&disk)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("sfdisk (package fdisk)");
    use std::io::Write;
    sfdisk
        .stdin
        .take()
        .unwrap()
        .write_all(table.as_bytes())
        .unwrap();
    assert!(sfdisk.wait().unwrap().success(), "sfdisk failed");
    disk
}

const SCRIPT: &str = r#"echo "CMD""LINE=$(cat /proc/cmdline)"
echo "KER""NEL=$(uname -sr)"
echo "PA""RTS=$(cat /proc/partitions | grep -c vda)"
echo "CHO""SEN=$(ls /sys/firmware/devicetree/base/chosen | grep -c initrd)"
echo "DO""NE=1"
poweroff -f"#;

#[test]
fn uboot_boots_the_kernel_its_extlinux_conf_names_as_under_qemu() {
    let g = guest();
    let dir = tempfile::tempdir().unwrap();
    // A token only extlinux.conf holds: seeing it in /proc/cmdline shows U-Boot read the file.
    let token = format!("duvisor.extlinux={}", std::process::id());
    let append = format!("console=ttyS0 panic=-1 {token}");
    let disk = extlinux_disk(dir.path(), &g.kernel, &g.initrd, &append);
    let disk_arg = format!("path={},readonly", disk.display());

    let mut ours = Command::new(duvisor_bin());
    ours.args([
        "run",
        "--firmware",
        UBOOT,
        "--memory",
        "512M",
        "--disk",
        &disk_arg,
    ]);
    let d = run_console(ours, SCRIPT, TIMEOUT);

    let mut qemu = Command::new("qemu-system-riscv64");
    qemu.args([
        "-M",
        "virt",
        "-m",
        "512M",
        "-smp",
        "1",
        "-nographic",
        "-kernel",
        UBOOT,
    ])
    .arg("-drive")
    .arg(format!(
        "file={},format=raw,if=virtio,readonly=on",
        disk.display()
    ));
    let q = run_console(qemu, SCRIPT, TIMEOUT);

    for (who, r) in [("duvisor", &d), ("QEMU", &q)] {
        assert_eq!(
            r.value("DONE").as_deref(),
            Some("1"),
            "{who}:\n{}",
            r.output
        );
        for line in [
            "U-Boot 20",
            "Found /boot/extlinux/extlinux.conf",
            "Retrieving file: /boot/initrd.img",
            "Retrieving file: /boot/vmlinux",
            "Starting kernel ...",
        ] {
            assert!(r.output.contains(line), "{who}: no {line:?}:\n{}", r.output);
        }
        assert_eq!(r.expect_value("CMDLINE"), append, "{who}");
    }
    for tag in ["KERNEL", "PARTS", "CHOSEN"] {
        assert_eq!(d.expect_value(tag), q.expect_value(tag), "{tag}");
    }
    // The disk and its one partition; U-Boot told the kernel where it put the initramfs.
    assert_eq!(d.expect_value("PARTS"), "2");
    assert_eq!(d.expect_value("CHOSEN"), "2");
}

#[test]
fn firmware_option_errors_are_one_line() {
    let bin = duvisor_bin();
    // With a kernel, an initrd or a command line: a usage error (clap's status 2).
    for extra in [
        &["--kernel", "/k"][..],
        &["--initrd", "/i"][..],
        &["--cmdline", "x"][..],
    ] {
        let mut c = Command::new(&bin);
        c.args(["run", "--firmware", UBOOT]).args(extra);
        let (code, err) = run_bounded(c, 30);
        assert_eq!(code, Some(2), "{extra:?}: {err}");
        assert!(err.contains("cannot be used with"), "{extra:?}: {err}");
    }
    let empty = TempPath::with("empty.bin", b"");
    let cases: [(&Path, &str); 3] = [
        (
            Path::new("/nonexistent/u-boot.bin"),
            "firmware /nonexistent/u-boot.bin: No such file",
        ),
        (
            Path::new("/tmp"),
            "firmware /tmp is a directory, not a regular file",
        ),
        (&empty, "the firmware file is empty"),
    ];
    for (path, needle) in cases {
        let mut c = Command::new(&bin);
        c.args(["run", "--no-sandbox", "--firmware"]).arg(path);
        assert_bounded_one_line_error(c, needle);
    }
}
