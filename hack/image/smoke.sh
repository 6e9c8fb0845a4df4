#!/usr/bin/env bash
# Tests a built carve image for real: its root filesystem becomes the root of
# a user-mode-linux guest, so the smoke test runs the image's own carve, lvm2,
# mkfs and /etc/lvm/lvm.conf (and no udev, as in a container) against
# loop-backed volume groups. Only the test client comes from this checkout.
#   hack/image/smoke.sh [IMAGE]        (default localhost/carve:ci)
set -euo pipefail
. "$(dirname "$0")/rebind-root.sh"
cd "$(dirname "$0")/../.."
image=${1:-localhost/carve:ci}
bah() { buildah --storage-driver vfs "$@"; }
# The client only: a debug build reuses what the test suite already built.
cargo build --quiet -p carve --example image-smoke
# A working container: its root is writable and thrown away afterwards.
ctr=$(bah from --pull=never --quiet "$image")
trap 'bah umount "$ctr" >/dev/null 2>&1 || true; bah rm "$ctr" >/dev/null 2>&1 || true' EXIT
root=$(bah mount "$ctr")
echo "smoke: $image's root at $root"
CARVE_UML_ROOT="$root" hack/uml/run.sh hack/image/smoke-guest.sh
