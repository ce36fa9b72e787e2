#!/usr/bin/env bash
# The whole test suite: installs what the tests need, then runs every test of the workspace
# (unit tests, ISA tests of the hardware model, and Debian guests booted under duvisor and
# compared with QEMU). Tests are built with optimisation (see [profile.test]).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo test --workspace --no-fail-fast "$@"
