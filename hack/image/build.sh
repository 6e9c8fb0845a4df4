#!/usr/bin/env bash
# Builds carve's container image from the Dockerfile, both stages, without a
# Docker engine or a registry: buildah (vfs storage, chroot isolation), with
# the two base images made here instead of pulled:
#   localhost/carve-base:bookworm    Debian 12 minbase from debootstrap
#   localhost/carve-rust:<version>   that plus this machine's Rust toolchain
# The crates come from this machine's cargo registry (cargo fetch, then an
# offline build in the stage), so the build needs no HTTPS from inside.
#   hack/image/build.sh [IMAGE]        (default localhost/carve:ci)
# Prints the image's size. hack/image/smoke.sh tests the result.
set -euo pipefail
. "$(dirname "$0")/rebind-root.sh"
cd "$(dirname "$0")/../.."
image=${1:-localhost/carve:ci}
work=target/image
mkdir -p "$work"
bah() { buildah --storage-driver vfs "$@"; }
build() { bah build --isolation chroot --pull=never --quiet "$@"; }
apt_options="-o Acquire::Check-Valid-Until=false -o Acquire::Check-Date=false"
t0=$SECONDS

base=localhost/carve-base:bookworm
if ! bah inspect --type image "$base" >/dev/null 2>&1; then
    echo "image: debootstrap Debian 12 minbase"
    rm -rf "$work/base" && mkdir -p "$work/base"
    debootstrap --variant=minbase bookworm "$work/base/root" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 ||
        { tail -20 "$work/debootstrap.log" >&2; exit 1; }
    rm -rf "$work/base/root/var/cache/apt/archives/"*.deb "$work/base/root/var/lib/apt/lists/"*
    tar --numeric-owner -C "$work/base/root" -cf "$work/base/rootfs.tar" .
    rm -rf "$work/base/root"
    printf 'FROM scratch\nADD rootfs.tar /\nCMD ["bash"]\n' >"$work/base/Dockerfile"
    build -t "$base" "$work/base" >/dev/null
    rm -f "$work/base/rootfs.tar"
fi

# The Rust toolchain that builds carve on this machine, without its docs.
sysroot=$(rustc --print sysroot)
rust_version=$(rustc --version | awk '{print $2}')
rust=localhost/carve-rust:$rust_version
if ! bah inspect --type image "$rust" >/dev/null 2>&1; then
    echo "image: Rust $rust_version toolchain image from $sysroot"
    rm -rf "$work/rust" && mkdir -p "$work/rust"
    tar -C "$sysroot" --exclude=./share -cf "$work/rust/toolchain.tar" .
    cat >"$work/rust/Dockerfile" <<DOCKERFILE
FROM $base
ADD toolchain.tar /usr/local/rust
ENV PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
DOCKERFILE
    build -t "$rust" "$work/rust" >/dev/null
    rm -f "$work/rust/toolchain.tar"
fi

echo "image: cargo fetch (the build stage runs offline on this registry)"
cargo fetch --locked --quiet
cargo_home=${CARGO_HOME:-$HOME/.cargo}

echo "image: building $image from Dockerfile (build stage: $rust, runtime: $base)"
build -t "$image" \
    --build-arg RUST_IMAGE="$rust" \
    --build-arg BASE_IMAGE="$base" \
    --build-arg APT_OPTIONS="$apt_options" \
    --build-arg CARGO_OPTIONS=--offline \
    --build-arg CARVE_COMMIT="$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)" \
    --volume "$cargo_home/registry:/root/.cargo/registry" \
    -f Dockerfile . >"$work/build.log" 2>&1 ||
    { tail -40 "$work/build.log" >&2; echo "image: build failed (full log: $work/build.log)" >&2; exit 1; }
size=$(bah images --format '{{.Size}}' "$image" | head -1)
echo "image: $image built in $((SECONDS - t0)) s; size $size"
