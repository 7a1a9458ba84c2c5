#!/usr/bin/env bash
# Installs the system packages and test tools atomfs's tests and benchmarks
# use. Idempotent: skips what is already present.
set -euo pipefail

need_apt=()
command -v fusermount3 >/dev/null || need_apt+=(fuse3)
[ -e /usr/include/sys/acl.h ] || need_apt+=(libacl1-dev)
command -v mkfs.ext4 >/dev/null || need_apt+=(e2fsprogs)
command -v mkfs.xfs >/dev/null || need_apt+=(xfsprogs)
command -v mkfs.btrfs >/dev/null || need_apt+=(btrfs-progs)
command -v losetup >/dev/null || need_apt+=(mount)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
# Two POSIX test tools written by other people, run against a real mount by
# fs/tests/fuse_posix_tools.rs (pjdfstest needs libacl1-dev, above).
command -v pjdfstest >/dev/null || cargo install --locked pjdfstest@0.2.2
command -v fsx >/dev/null || cargo install --locked fsx@0.3.2
echo "dependencies present"
