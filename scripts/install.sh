#!/usr/bin/env bash
# Builds atomfs in release mode and installs the three tools under their
# real names, where mount(8), mkfs(8) and fsck(8) find them:
#   PREFIX/sbin/atomfs        (mount -t fuse.atomfs, fstab via mount.fuse3)
#   PREFIX/sbin/mkfs.atomfs   (mkfs -t atomfs)
#   PREFIX/sbin/fsck.atomfs   (fsck -t atomfs)
# mount(8) runs mount.fuse3 with a fixed PATH (/usr/local/sbin:/usr/local/bin:
# /usr/sbin:/usr/bin:/sbin:/bin), so the default PREFIX is /usr/local.
# Usage: sudo scripts/install.sh [PREFIX]
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${1:-/usr/local}
target=${CARGO_TARGET_DIR:-target}
cargo build --release -p atomfs -p mkfs-atomfs -p fsck-atomfs
install -d "$prefix/sbin"
install -m 0755 "$target/release/atomfs" "$prefix/sbin/atomfs"
install -m 0755 "$target/release/mkfs-atomfs" "$prefix/sbin/mkfs.atomfs"
install -m 0755 "$target/release/fsck-atomfs" "$prefix/sbin/fsck.atomfs"
# mount.fuse3 (Debian package fuse3) turns `mount -t fuse.atomfs` and fstab
# lines into `atomfs DEVICE MOUNTPOINT -o OPTIONS`.
command -v mount.fuse3 >/dev/null || echo "note: mount.fuse3 not found (apt-get install fuse3) — needed for mount -t fuse.atomfs and fstab" >&2
echo "installed atomfs, mkfs.atomfs, fsck.atomfs in $prefix/sbin"
