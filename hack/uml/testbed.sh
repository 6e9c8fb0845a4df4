#!/bin/bash
# Guest side: builds carve's real-LVM test ground from loop devices on the
# guest's private tmpfs and writes a carve config for it.
#   . hack/uml/testbed.sh      (sets CARVE_TESTBED and CARVE_TESTBED_CONFIG)
# Volume groups (sparse images: only written blocks use memory):
#   carve-thick  one 8 GiB PV, plus foreign LVs carve must never touch
#   carve-thin   one 8 GiB PV with thin pool "pool0" (2 GiB), plus a foreign thin LV
#   carve-raid   two 2 GiB PVs, for raid1 and striped classes
[ "$(id -u)" = 0 ] || { echo "testbed: must run as root inside the UML guest" >&2; exit 1; }
[ -c /dev/mapper/control ] || { echo "testbed: no device-mapper (run through hack/uml/run.sh)" >&2; exit 1; }
CARVE_TESTBED=/tmp/carve-testbed
CARVE_TESTBED_CONFIG="$CARVE_TESTBED/config.toml"
export CARVE_TESTBED CARVE_TESTBED_CONFIG
# The setup runs in a subshell with errexit, so any failed step stops it even
# though this file is sourced (where `. file || ...` would disable errexit).
(
set -euo pipefail
mkdir -p "$CARVE_TESTBED/img"
lvmq() { LVM_SUPPRESS_FD_WARNINGS=1 lvm "$@" --config 'backup { backup = 0 archive = 0 }' >/dev/null 2> >(grep -v 'NOT backed up' >&2); }
mkpv() { # name size -> loop device
    truncate -s "$2" "$CARVE_TESTBED/img/$1.img"
    losetup -f --show "$CARVE_TESTBED/img/$1.img"
}
T=$(mkpv thick 8G); N=$(mkpv thin 8G); R1=$(mkpv raid1 2G); R2=$(mkpv raid2 2G)
lvmq vgcreate -q carve-thick "$T"
lvmq vgcreate -q carve-thin "$N"
lvmq vgcreate -q carve-raid "$R1" "$R2"
lvmq lvcreate -q -y -T -L 2G carve-thin/pool0
# Foreign LVs: no carve owner tag. One even has a carve-looking name.
lvmq lvcreate -q -y -n foreign-data -L 64M carve-thick
lvmq lvcreate -q -y -n cv-foreign-0000000000000000 -L 8M carve-thick
lvmq lvcreate -q -y -V 256M -T carve-thin/pool0 -n foreign-thin
# Known content in the foreign LV so tests can prove it was never written.
head -c 1048576 /dev/urandom > "$CARVE_TESTBED/foreign.bin"
dd if="$CARVE_TESTBED/foreign.bin" of=/dev/carve-thick/foreign-data bs=1M count=1 conv=fsync status=none
# The look-alike (a carve-style name, no owner tag) gets the same bytes: a
# carve that took it for its own and formatted or copied into it shows.
dd if="$CARVE_TESTBED/foreign.bin" of=/dev/carve-thick/cv-foreign-0000000000000000 bs=1M count=1 conv=fsync status=none
cat > "$CARVE_TESTBED/config.toml" <<'TOML'
capacity_refresh_seconds = 5
# The tests stage and publish under the guest's private /tmp.
node_path_roots = ["/tmp"]
lvm_timeout_seconds = 60

[[device_class]]
name = "thick"
volume_group = "carve-thick"
type = "thick"
default = true
spare = "256Mi"

[[device_class]]
name = "thin"
volume_group = "carve-thin"
type = "thin"
thin_pool = "pool0"
over_provision_ratio = 4.0

[[device_class]]
name = "mirrored"
volume_group = "carve-raid"
type = "thick"
raid = "raid1"

[[device_class]]
name = "striped"
volume_group = "carve-raid"
type = "thick"
stripes = 2
stripe_size = "64Ki"
TOML
echo "testbed: carve-thick ($T), carve-thin ($N, pool0), carve-raid ($R1 $R2) ready"
) || { echo "testbed: setup failed" >&2; return 1 2>/dev/null || exit 1; }
