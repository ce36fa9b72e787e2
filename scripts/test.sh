#!/usr/bin/env bash
# The whole test suite: installs what the tests need, then runs every test of the workspace
# (unit tests, ISA tests of the hardware model, and Debian guests booted under duvisor and
# compared with QEMU). Tests are built with optimisation (see [profile.test]).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
status=0
cargo test --workspace --no-fail-fast "$@" || status=$?
# The hardware model's ISA tests once more with every block compiled on its first run, so the
# same programs check the compiling tier against the same expected results.
DVEXT_TEST_JIT=1 cargo test -p dvext --no-fail-fast "$@" || status=$?
exit $status
