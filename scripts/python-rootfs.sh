#!/usr/bin/env bash
# Makes (once) the Python rootfs tar of issue 4's lazy-mount test and prints its path on stdout:
# `debootstrap --variant=minbase --include=python3-minimal bookworm` from deb.debian.org, tarred
# with numeric owners and xattrs. Everything else goes to stderr.
#
# Where the tar comes from, first found wins:
#   1. $ESTARGZ_PYTHON_ROOTFS_TAR, when it names a readable file (nothing is made);
#   2. /work/bench/rootfs.tar (the benchmark machines' copy of the same debootstrap);
#   3. the cache, $ESTARGZ_CACHE_DIR (default ${XDG_CACHE_HOME:-~/.cache}/swift-estargz)/python-rootfs.tar,
#      made here on the first run (needs root, debootstrap and the network; ~2-4 minutes).
# Exits non-zero, saying why, when none is there and it cannot be made.
set -euo pipefail

if [ -n "${ESTARGZ_PYTHON_ROOTFS_TAR:-}" ]; then
  if [ -r "$ESTARGZ_PYTHON_ROOTFS_TAR" ]; then
    echo "$ESTARGZ_PYTHON_ROOTFS_TAR"
    exit 0
  fi
  echo "python-rootfs: ESTARGZ_PYTHON_ROOTFS_TAR=$ESTARGZ_PYTHON_ROOTFS_TAR is not a readable file" >&2
  exit 1
fi
if [ -r /work/bench/rootfs.tar ]; then
  echo /work/bench/rootfs.tar
  exit 0
fi

cache="${ESTARGZ_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/swift-estargz}"
tar_path="$cache/python-rootfs.tar"
mkdir -p "$cache"
# One maker at a time (make test and the test itself may both ask); the others wait for its tar.
exec 9>"$cache/python-rootfs.lock"
flock 9
if [ -s "$tar_path" ]; then
  echo "$tar_path"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "python-rootfs: debootstrap needs root (or set ESTARGZ_PYTHON_ROOTFS_TAR to an existing rootfs tar)" >&2
  exit 1
fi
if ! command -v debootstrap >/dev/null; then
  echo "python-rootfs: installing debootstrap" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >&2 ||
    { echo "python-rootfs: cannot install debootstrap" >&2; exit 1; }
fi

root="$cache/python-rootfs.tmp"
rm -rf "$root" "$tar_path.tmp"
trap 'rm -rf "$root" "$tar_path.tmp"' EXIT
started=$(date +%s)
mirror="${ESTARGZ_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
echo "python-rootfs: debootstrap --variant=minbase --include=python3-minimal bookworm from $mirror" >&2
if ! debootstrap --variant=minbase --include=python3-minimal bookworm "$root" "$mirror" >"$cache/debootstrap.log" 2>&1; then
  tail -n 20 "$cache/debootstrap.log" >&2
  echo "python-rootfs: debootstrap failed (full log: $cache/debootstrap.log)" >&2
  exit 1
fi
if [ ! -x "$root/usr/bin/python3" ]; then
  echo "python-rootfs: debootstrap finished but $root/usr/bin/python3 is missing" >&2
  exit 1
fi
tar --numeric-owner --xattrs --xattrs-include='*' -C "$root" -cf "$tar_path.tmp" .
mv "$tar_path.tmp" "$tar_path"
echo "python-rootfs: made $tar_path ($(stat -c %s "$tar_path") bytes) in $(( $(date +%s) - started )) s" >&2
echo "$tar_path"
