#!/bin/sh
# Creates the dotted tool names in a cargo target profile directory:
#   mkfs.atomfs -> mkfs-atomfs, fsck.atomfs -> fsck-atomfs
# (rustc refuses dots in binary names, users and fsck(8)/mkfs(8) expect them).
# Usage: scripts/link-tools.sh TARGET_DIR   e.g. target/release
set -eu
if [ $# -ne 1 ]; then
    echo "usage: $0 TARGET_DIR (e.g. target/release)" >&2
    exit 2
fi
dir=$1
if [ ! -d "$dir" ]; then
    echo "$0: $dir: no such directory" >&2
    exit 1
fi
for tool in mkfs fsck; do
    if [ ! -e "$dir/$tool-atomfs" ]; then
        echo "$0: $dir/$tool-atomfs does not exist (build it first: cargo build -p $tool-atomfs)" >&2
        exit 1
    fi
    # Relative link, so the directory can be moved or copied as a whole.
    ln -sfn "$tool-atomfs" "$dir/$tool.atomfs"
    echo "$dir/$tool.atomfs -> $tool-atomfs"
done
