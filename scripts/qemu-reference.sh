#!/usr/bin/env bash
# Boot the reference guest under QEMU (the behaviour duvisor must match) and run commands in
# its shell.
#
#   scripts/qemu-reference.sh KERNEL INITRD [CPUS]
#
# KERNEL and INITRD are what guest_fetch::fetch_guest (crates/guest-fetch) returns (by default
# under ~/.cache/duvisor/debian/guest/). The script waits for the guest's "duvisor-guest: ready"
# line and its shell prompt, types $COMMANDS, and waits for QEMU to exit (the last command
# powers the guest off). The whole console output goes to stdout and to $LOG, followed by a
# summary line with the timings.
#
# Environment:
#   COMMANDS  shell commands to type (default: uname -a; count the CPUs; echo done; poweroff -f)
#   QEMU      emulator binary (default: qemu-system-riscv64)
#   MEM       guest memory (default: 512M)
#   APPEND    kernel command line (default: console=ttyS0)
#   TIMEOUT   seconds before QEMU is killed (default: 300)
#   LOG       where to keep the console output (default: a temporary file, kept)
#   EXPECT    a string the output must contain for success (default: done)
#   QEMU_EXTRA extra QEMU arguments, split on spaces (e.g. "-cpu rv64,sstc=false")
#
# Exit status: 0 if the guest came up, the output contains $EXPECT and QEMU exited by itself.
set -euo pipefail

if [[ $# -lt 2 || $# -gt 3 ]]; then
    sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
fi
KERNEL=$1
INITRD=$2
CPUS=${3:-1}
QEMU=${QEMU:-qemu-system-riscv64}
MEM=${MEM:-512M}
APPEND=${APPEND:-console=ttyS0}
TIMEOUT=${TIMEOUT:-300}
EXPECT=${EXPECT:-done}
COMMANDS=${COMMANDS:-'uname -a; grep -c ^processor /proc/cpuinfo; echo done; poweroff -f'}
READY='duvisor-guest: ready'
PROMPT='/ # '

for f in "$KERNEL" "$INITRD"; do
    [[ -r $f ]] || { echo "qemu-reference: cannot read $f" >&2; exit 2; }
done
command -v "$QEMU" >/dev/null || { echo "qemu-reference: $QEMU not found" >&2; exit 2; }

LOG=${LOG:-$(mktemp -t qemu-reference.XXXXXX.log)}
: >"$LOG"
work=$(mktemp -d -t qemu-reference.XXXXXX)
fifo=$work/stdin
mkfifo "$fifo"
# Opened read-write so neither side blocks, and QEMU never sees end-of-file on its stdin.
exec 3<>"$fifo"

qpid=
cleanup() {
    [[ -n $qpid ]] && kill "$qpid" 2>/dev/null || true
    exec 3>&-
    rm -rf "$work"
}
trap cleanup EXIT

now() { echo "$EPOCHREALTIME"; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

start=$(now)
"$QEMU" -M virt -m "$MEM" -smp "$CPUS" -nographic \
    -kernel "$KERNEL" -initrd "$INITRD" -append "$APPEND" ${QEMU_EXTRA:-} \
    <&3 > >(tee -a "$LOG") 2>&1 &
qpid=$!

# wait_for STRING: until the console shows STRING, QEMU exits or the time is up.
wait_for() {
    while ! grep -qF -- "$1" "$LOG"; do
        kill -0 "$qpid" 2>/dev/null || return 1
        [[ $(since "$start" | cut -d. -f1) -lt $TIMEOUT ]] || return 1
        sleep 0.05
    done
}

t_ready=- t_prompt=- status=0
if wait_for "$READY"; then
    t_ready=$(since "$start")
    if wait_for "$PROMPT"; then
        t_prompt=$(since "$start")
        printf '%s\n' "$COMMANDS" >&3
    else
        echo "qemu-reference: no shell prompt ('$PROMPT')" >&2
        status=1
    fi
else
    echo "qemu-reference: the guest never printed '$READY'" >&2
    status=1
fi

# Wait for QEMU to exit by itself, killing it at the timeout.
while kill -0 "$qpid" 2>/dev/null; do
    if [[ $(since "$start" | cut -d. -f1) -ge $TIMEOUT ]]; then
        echo "qemu-reference: timeout after ${TIMEOUT}s, killing QEMU" >&2
        kill "$qpid" 2>/dev/null || true
        status=1
        break
    fi
    sleep 0.05
done
qemu_status=0
wait "$qpid" || qemu_status=$?
qpid=
t_exit=$(since "$start")
sleep 0.2 # let tee drain

if [[ $status -eq 0 ]] && ! grep -qF -- "$EXPECT" "$LOG"; then
    echo "qemu-reference: output lacks '$EXPECT'" >&2
    status=1
fi
[[ $qemu_status -eq 0 ]] || status=1
echo
echo "qemu-reference: cpus=$CPUS ready=${t_ready}s prompt=${t_prompt}s exit=${t_exit}s" \
    "qemu_status=$qemu_status log=$LOG result=$([[ $status -eq 0 ]] && echo ok || echo FAILED)"
exit "$status"
