# carve's container image: one image for the node plugin (privileged, next to
# the host's LVM), the resizer endpoint (no privileges, no LVM) and the
# cluster agent (carve-agent, its own binary: only it links a Kubernetes
# client).
#
# Both base images are pinned by digest and can be replaced with build args:
#   RUST_IMAGE  the build stage: a Rust toolchain >= 1.89 on Debian 12 (glibc
#               2.36, the runtime's), with apt
#   BASE_IMAGE  the runtime: Debian 12
# hack/image/build.sh builds this file without a registry (buildah, base images
# made locally with debootstrap); see docs/image.md.
ARG RUST_IMAGE=docker.io/library/rust:1.90.0-slim-bookworm@sha256:64232e656c058f4468e8d024e990acff04f0fd5a5c0a88a574dc37773d7325c9
ARG BASE_IMAGE=docker.io/library/debian:12.12-slim@sha256:d5d3f9c23164ea16f31852f95bd5959aad1c5e854332fe00f7b3a20fcc9f635c

FROM ${RUST_IMAGE} AS build
# Extra apt options, e.g. for a mirror whose Release files are past their
# Valid-Until date: -o Acquire::Check-Valid-Until=false
ARG APT_OPTIONS=
# Extra cargo options, e.g. --offline when the builder mounts a filled registry.
ARG CARGO_OPTIONS=
RUN apt-get ${APT_OPTIONS} update \
 && apt-get ${APT_OPTIONS} install -y --no-install-recommends gcc libc6-dev libblkid-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
RUN rustc --version && cargo --version
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY proto proto
COPY crates crates
# The root package is the carve binary; its manifest also names the real-LVM
# test and the examples (demo, bench, image smoke), which cargo wants present.
COPY src src
COPY tests tests
COPY hack/demo hack/demo
COPY bench/bench.rs bench/bench.rs
COPY hack/image/smoke.rs hack/image/smoke.rs
# The commit carve_build_info reports (the context has no .git).
ARG CARVE_COMMIT=unknown
ENV CARVE_COMMIT=${CARVE_COMMIT}
RUN cargo build --release --locked -p carve --bin carve -p carve-agent --bin carve-agent ${CARGO_OPTIONS} \
 && install -D -m 0755 target/release/carve /out/carve \
 && install -D -m 0755 target/release/carve-agent /out/carve-agent

FROM ${BASE_IMAGE} AS runtime
ARG APT_OPTIONS=
# What carve runs: lvm2 (with thin-provisioning-tools for thin pools), mkfs and
# grow tools for ext4, xfs and btrfs, cryptsetup (LUKS2 volumes), util-linux
# (mount, blkid, losetup), kmod (lvm loads dm-thin-pool and dm-raid on first
# use). libblkid is linked.
# xfsprogs drags in Python and ICU (57 MB) for xfs_scrub and xfs_scrub_all
# alone, which carve never runs (mkfs.xfs and xfs_growfs use neither): they
# go, with those two programs.
RUN apt-get ${APT_OPTIONS} update \
 && apt-get ${APT_OPTIONS} install -y --no-install-recommends \
      lvm2 thin-provisioning-tools e2fsprogs xfsprogs btrfs-progs cryptsetup-bin util-linux libblkid1 kmod \
 && dpkg --purge --force-depends $(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' \
      'python3*' 'libpython3*' 'libicu*' media-types | awk '$1 == "ii" {print $2}') \
 && rm -f /usr/sbin/xfs_scrub /usr/sbin/xfs_scrub_all \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/debconf/*-old /var/log/apt /var/log/dpkg.log \
      /usr/share/doc /usr/share/man /usr/share/info /usr/share/locale /usr/share/lintian
# LVM inside a container, beside the host's LVM: see the file for each setting.
COPY deploy/image/lvm.conf /etc/lvm/lvm.conf
COPY --from=build /out/carve /usr/local/bin/carve
COPY --from=build /out/carve-agent /usr/local/bin/carve-agent

# One layer: what the step above removed is really gone from the image.
FROM scratch
COPY --from=runtime / /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# No udev in the container: libdevmapper (under cryptsetup, for LUKS2
# volumes) makes /dev/mapper nodes itself instead of waiting for udev, as
# lvm.conf has LVM do.
ENV DM_DISABLE_UDEV=1
ENTRYPOINT ["/usr/local/bin/carve"]
CMD ["--help"]
