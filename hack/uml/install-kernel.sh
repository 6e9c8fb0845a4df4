#!/usr/bin/env bash
# Installs the user-mode-linux kernel that carve's tests, demo and benchmarks
# boot, into /opt/carve-uml/<version> (linked as /opt/carve-uml/current).
# Nothing is installed into the system: the packages are unpacked privately.
#
# Why not Debian 12's own user-mode-linux package: its kernel (6.1; Debian 13's
# 6.12 too) panics at the guest's first process on hosts whose CPU has AMX
# ("userspace - ptrace set fp regs failed, errno = 14"): the host kernel
# refuses a PTRACE_SETREGSET of an XSAVE area smaller than the host's full
# xstate size, and those kernels pass a fixed-size one. UML 7.x sizes it from
# the host. So this takes the user-mode-linux package of Debian testing and the
# glibc it was built against, downloaded by apt from Debian's own mirror with a
# private state directory (signatures checked against debian-archive-keyring),
# and points the kernel binary at that glibc with patchelf.
set -euo pipefail
root=/opt/carve-uml
if [ -x "$root/current/linux" ] && [ -d "$root/current/modules" ]; then
    exit 0
fi
for tool in apt-get dpkg-deb patchelf; do
    command -v "$tool" >/dev/null || { echo "install-kernel: $tool not found (hack/setup.sh installs it)" >&2; exit 1; }
done
mirror=$(grep -rh '^URIs' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | grep -m1 '/debian/\?$' || true)
[ -n "$mirror" ] || mirror=$(grep -h '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | head -1)
[ -n "$mirror" ] || mirror=http://deb.debian.org/debian
work=$(mktemp -d /var/tmp/carve-uml.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/debs"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror testing main" > "$work/sources.list"
apt_opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o Dir::State::Status=/dev/null
    -o APT::Architecture=amd64 -o Debug::NoLocking=1 -o APT::Sandbox::User=root -qq
    # Signatures are checked; the Release file's expiry date is not: a mirror
    # that serves a frozen snapshot of the archive (as here) would fail it.
    -o Acquire::Check-Valid-Until=false -o Acquire::Check-Date=false)
echo "install-kernel: fetching user-mode-linux and its glibc from Debian testing ($mirror)"
apt-get "${apt_opts[@]}" update
(cd "$work/debs" && apt-get "${apt_opts[@]}" download user-mode-linux libc6)
version=$(dpkg-deb -f "$work"/debs/user-mode-linux_*.deb Version)
dest="$root/$version"
rm -rf "$dest.tmp"
mkdir -p "$dest.tmp/pkg"
for deb in "$work"/debs/*.deb; do dpkg-deb -x "$deb" "$dest.tmp/pkg"; done
libdir="$dest/pkg/usr/lib/x86_64-linux-gnu"
cp "$dest.tmp/pkg/usr/bin/linux.uml" "$dest.tmp/linux"
patchelf --set-interpreter "$libdir/ld-linux-x86-64.so.2" --set-rpath "$libdir" "$dest.tmp/linux"
ln -s pkg/usr/lib/uml/modules "$dest.tmp/modules"
rm -rf "$dest"
mv "$dest.tmp" "$dest"
ln -sfn "$version" "$root/current"
echo "install-kernel: user-mode-linux $version ready in $dest (kernel $(ls "$dest/modules"))"
