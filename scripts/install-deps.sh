#!/usr/bin/env bash
# Install what building and testing duvisor needs on a Debian bookworm host: the riscv64
# binutils (the dvext tests assemble their guest programs), cpio (initramfs round-trip test),
# QEMU 10 from bookworm-backports (the reference the boot tests and benchmarks compare to),
# qemu-utils (qemu-img and qemu-io: the qcow2 tests' reference),
# passt (the user-mode networking back end of `duvisor run --net passt`), Debian's S-mode
# U-Boot (u-boot-qemu) with mkfs.ext4 and sfdisk to make the disks the firmware tests boot, and
# what `duvisor fetch-guest --disk` builds Debian disk images with: mmdebstrap and
# qemu-user-static (the riscv64 second stage; both from bookworm-backports), e2fsprogs and
# fdisk, plus openssh-client for the disk image test.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

need=()
command -v riscv64-linux-gnu-as >/dev/null || need+=(binutils-riscv64-linux-gnu)
command -v cpio >/dev/null || need+=(cpio)
command -v dpkg-deb >/dev/null || need+=(dpkg)
command -v passt >/dev/null || need+=(passt)  # user-mode networking back end of --net passt
command -v qemu-img >/dev/null && command -v qemu-io >/dev/null || need+=(qemu-utils)  # qcow2 tests compare with qemu-img/qemu-io
[ -e /usr/lib/u-boot/qemu-riscv64_smode/u-boot.bin ] || need+=(u-boot-qemu)  # duvisor run --firmware tests
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v sfdisk >/dev/null || need+=(fdisk)
command -v ip >/dev/null || need+=(iproute2)  # the network tests and benchmark rows create namespaces, TAP and veth interfaces
command -v ssh-keygen >/dev/null || need+=(openssh-client)  # the disk image test logs in over ssh
want_qemu=0
if ! command -v qemu-system-riscv64 >/dev/null; then want_qemu=1; fi
# Disk images: mmdebstrap 1.5 and QEMU 10's user-mode emulator for the riscv64 second stage.
backports=()
command -v mmdebstrap >/dev/null || backports+=(mmdebstrap)
[ -e /usr/lib/binfmt.d/qemu-riscv64.conf ] || backports+=(qemu-user-static)

if [ ${#need[@]} -gt 0 ] || [ $want_qemu = 1 ] || [ ${#backports[@]} -gt 0 ]; then
    if ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
        printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
            | $SUDO tee /etc/apt/sources.list.d/duvisor-backports.sources >/dev/null
    fi
    $SUDO apt-get update -qq
    [ ${#need[@]} -gt 0 ] && $SUDO apt-get install -y -qq "${need[@]}"
    [ $want_qemu = 1 ] && $SUDO apt-get install -y -qq -t bookworm-backports qemu-system-misc
    [ ${#backports[@]} -gt 0 ] && $SUDO apt-get install -y -qq -t bookworm-backports "${backports[@]}"
fi

# bookworm's passt (snapshot 2023-03-09) never completes the handshake of a TCP connection to a
# forwarded port (it ignores the guest's SYN-ACK; QEMU with it fails alike), so
# `--net passt,hostfwd=tcp:...` needs a newer one. Build trixie's from Debian's source tarball
# (pinned by checksum) into /usr/local/bin, which comes first on PATH, with its AVX2 twin that
# it runs when the CPU has AVX2. About 45 s. (passt --version prints nothing when run without a
# terminal, so the check reads the version built into the binary.)
PASST_VERSION=0.0~git20250503.587980c
PASST_SHA256=69d5eb843f7d648c2cc60bfbca6ea7b5014c6b6f07cdee362c2a8cf490515a49
if ! grep -qaF "$PASST_VERSION" /usr/local/bin/passt 2>/dev/null; then
    command -v make >/dev/null && command -v cc >/dev/null && command -v curl >/dev/null \
        || $SUDO apt-get install -y -qq make gcc curl
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    curl -fsSL -o "$tmp/passt.tar.xz" \
        "http://deb.debian.org/debian/pool/main/p/passt/passt_${PASST_VERSION}.orig.tar.xz"
    echo "$PASST_SHA256  $tmp/passt.tar.xz" | sha256sum -c --quiet
    tar -C "$tmp" -xJf "$tmp/passt.tar.xz"
    make -C "$tmp"/passt-* -s passt passt.avx2 VERSION="$PASST_VERSION" >/dev/null
    $SUDO install -m 0755 "$tmp"/passt-*/passt "$tmp"/passt-*/passt.avx2 /usr/local/bin/
fi
echo "dependencies ready: $(riscv64-linux-gnu-as --version | head -1); $(qemu-system-riscv64 --version | head -1); passt $PASST_VERSION"
