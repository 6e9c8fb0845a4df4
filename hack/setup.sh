#!/usr/bin/env bash
# Installs carve's build and test prerequisites on Debian 12 (run as root):
# libblkid for signature probing, LVM and filesystem tools, a user-mode-linux
# kernel (hack/uml/install-kernel.sh) that gives the tests real device-mapper
# without touching the host, and a Python environment with grpcio (the suite
# drives carve from a grpc-core client too).
set -euo pipefail
pkgs=(libblkid-dev patchelf lvm2 thin-provisioning-tools kmod util-linux
      e2fsprogs xfsprogs btrfs-progs python3 python3-venv)
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
# grpcio from PyPI, pinned, in its own environment (Debian's python3 is
# externally managed).
pyenv=${CARVE_PYENV:-/opt/carve-pyenv}
if ! "$pyenv/bin/python3" -c 'import grpc, grpc_tools' 2>/dev/null; then
    echo "setup: installing grpcio into $pyenv"
    /usr/bin/python3 -m venv "$pyenv"
    "$pyenv/bin/pip" install -q --disable-pip-version-check grpcio==1.85.1 grpcio-tools==1.85.1
fi
echo "setup: ok"
