#!/usr/bin/env bash
# The README's first command. On a fresh Debian machine of this kind, as
# root: installs what it needs, builds everything in release mode, formats an
# image file with mkfs.atomfs, mounts it with atomfs (FUSE), does a little
# visible work on it, unmounts, runs `atomfs-bench --quick` against atomfs,
# ext4, xfs and btrfs, prints the table, and checks the image with
# `fsck.atomfs -n`.
#
# Environment: DEMO_DIR (default /var/tmp/atomfs-demo; must be on a real
# disk, not tmpfs), BENCH_OUT (default $DEMO_DIR/bench-results), CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

if [ "$(id -u)" != 0 ]; then
  echo "demo.sh needs root (loop devices, mounts, FUSE): run it as root or with sudo" >&2
  exit 1
fi

DEMO_DIR=${DEMO_DIR:-/var/tmp/atomfs-demo}
BENCH_OUT=${BENCH_OUT:-$DEMO_DIR/bench-results}
IMG=$DEMO_DIR/demo.img
MNT=$DEMO_DIR/mnt
BIN=${CARGO_TARGET_DIR:-target}/release

step "1/7 install dependencies (fuse3, e2fsprogs, xfsprogs, btrfs-progs, ...)"
run bash scripts/install-deps.sh

step "2/7 build everything in release mode"
run cargo build --release --workspace
for b in mkfs-atomfs atomfs fsck-atomfs atomfs-bench; do
  if [ ! -x "$BIN/$b" ]; then
    echo "missing $BIN/$b: that binary is not built by this checkout yet" >&2
    exit 1
  fi
done
# Cargo cannot name a binary with a dot: link mkfs.atomfs and fsck.atomfs.
run sh scripts/link-tools.sh "$BIN"

# The image's daemon, if it is still running, holds the image open.
image_in_use() {
  local fd
  for fd in /proc/[0-9]*/fd/*; do
    [ "$(readlink "$fd" 2>/dev/null)" = "$IMG" ] && return 0
  done
  return 1
}
wait_daemon_exit() {
  local i
  for i in $(seq 600); do
    image_in_use || return 0
    sleep 0.1
  done
  echo "the atomfs daemon still holds $IMG 60 s after unmount" >&2
  return 1
}
cleanup() {
  if mountpoint -q "$MNT" 2>/dev/null; then umount "$MNT" || umount -l "$MNT" || true; fi
}
trap cleanup EXIT

step "3/7 format a 1 GiB image file with mkfs.atomfs"
mkdir -p "$DEMO_DIR" "$MNT"
cleanup
rm -f "$IMG"
run truncate -s 1G "$IMG"
run "$BIN/mkfs.atomfs" "$IMG"

step "4/7 mount it with atomfs and do a little work on it"
run "$BIN/atomfs" "$IMG" "$MNT"
run findmnt "$MNT"
run mkdir -p "$MNT/docs/notes"
printf '$ echo "hello from atomfs" > %s\n' "$MNT/docs/hello.txt"
echo "hello from atomfs" >"$MNT/docs/hello.txt"
run cp -r bench/src "$MNT/docs/bench-src"
run mv "$MNT/docs/hello.txt" "$MNT/docs/notes/hello.txt"
run ln -s notes/hello.txt "$MNT/docs/link"
run cat "$MNT/docs/link"
run ls -lR "$MNT/docs"
run df -h "$MNT"

step "5/7 unmount (the daemon flushes and exits)"
run umount "$MNT"
wait_daemon_exit
echo "daemon exited; $IMG is closed"

step "6/7 atomfs-bench --quick: atomfs vs ext4, xfs, btrfs (bytes counted at each loop device)"
bench_rc=0
run "$BIN/atomfs-bench" --quick --fs atomfs,ext4,xfs,btrfs --out "$BENCH_OUT" --atomfs-bin-dir "$BIN" || bench_rc=$?
echo
echo "table: $BENCH_OUT/bench.md; raw figures: $BENCH_OUT/bench.json; chart: $BENCH_OUT/bench-wa.svg"

step "7/7 fsck.atomfs -n on the demo image"
fsck_rc=0
run "$BIN/fsck.atomfs" -n "$IMG" || fsck_rc=$?
case $fsck_rc in
  0) echo "fsck: clean" ;;
  *) echo "fsck.atomfs exited $fsck_rc (e2fsck codes: 1 corrected, 4 uncorrected errors, 8 operational error)" >&2 ;;
esac

if [ "$bench_rc" != 0 ] || [ "$fsck_rc" != 0 ]; then
  echo "demo finished with errors (bench exit $bench_rc, fsck exit $fsck_rc)" >&2
  exit 1
fi
echo
echo "demo finished: atomfs formatted, mounted, used, unmounted, benchmarked and checked"
