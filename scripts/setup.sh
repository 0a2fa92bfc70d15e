#!/usr/bin/env bash
# Installs the system packages the package builds and tests against, once.
# Idempotent: does nothing when everything is already installed.
set -euo pipefail
packages=(
  zlib1g-dev libzstd-dev libxxhash-dev libdeflate-dev libisal-dev libssl-dev libfuse3-dev fuse3
  golang-go golang-github-containerd-stargz-snapshotter-dev
  python3 tar attr containerd runc busybox-static stargz-snapshotter
  docker-registry skopeo apache2-utils openssl debootstrap time podman
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
