#!/usr/bin/env bash
# Installs carve's build and test prerequisites on Debian 12 (run as root):
# libblkid for signature probing, LVM and filesystem tools, and a user-mode-linux
# kernel (hack/uml/install-kernel.sh) that gives the tests real device-mapper
# without touching the host.
set -euo pipefail
pkgs=(libblkid-dev patchelf lvm2 thin-provisioning-tools kmod util-linux
      e2fsprogs xfsprogs btrfs-progs python3)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "setup: cargo not found; install Rust (rustup) first" >&2; exit 1; }
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
"$(dirname "$0")/uml/install-kernel.sh"
echo "setup: ok"
