#!/bin/bash
# Guest side of bench/run.sh.
set -u
cd "$(dirname "$0")/.."
. hack/uml/testbed.sh || exit 1
rounds=${1:-30}; lvcount=${2:-1000}; calls=${3:-5000}
scale_lvs=${4:-0 1000 5000}; scale_rounds=${5:-10}; scale_calls=${6:-2000}
parts=${7:-all}; log=${8:-warn,carve_core::engine::fill=info}
# A VG holding $lvcount carve-owned (inactive) LVs for the GetCapacity test; a
# large metadata area keeps lvm from running out of room for 1,000 LVs.
truncate -s 64G /tmp/bench.img
pv=$(losetup -f --show /tmp/bench.img)
lvm vgcreate -q --metadatasize 16m carve-bench "$pv" >/dev/null
echo "bench: adding $lvcount carve-owned LVs to carve-bench (vgcfgbackup, edit, vgcfgrestore)..."
lvm vgcfgbackup -q -f /tmp/bench-vg.txt carve-bench >/dev/null
python3 bench/add_lvs.py /tmp/bench-vg.txt /tmp/bench-vg-lvs.txt "$lvcount" bench
lvm vgcfgrestore -q -f /tmp/bench-vg-lvs.txt carve-bench >/dev/null || exit 1
echo "bench: $(lvm lvs --noheadings carve-bench | wc -l) LVs in carve-bench"
cfg=/tmp/bench-config.toml
# The default refresh period (30 s), not the test ground's 5 s.
sed 's/^capacity_refresh_seconds = .*/capacity_refresh_seconds = 30/' "$CARVE_TESTBED_CONFIG" > "$cfg"
printf '\n[[device_class]]\nname = "bench"\nvolume_group = "carve-bench"\ntype = "thick"\n' >> "$cfg"
sock=/tmp/bench/csi.sock; mkdir -p /tmp/bench
target/release/carve serve --node-id bench --endpoint "unix://$sock" --config "$cfg" --log "$log" 2>/tmp/bench/carve.log &
carve=$!
for _ in $(seq 200); do [ -S "$sock" ] && break; sleep 0.1; done
sleep 1
echo "bench: $rounds create/delete rounds on carve-thick, interleaved with bare lvcreate/lvremove"
target/release/examples/bench "$sock" "$carve" "$rounds" "$calls" "$cfg" "$parts"
rc=$?
[ "$parts" = all ] || cp /tmp/bench/carve.log "target/bench-carve-$parts.log"
kill -TERM $carve; wait $carve
[ $rc = 0 ] || exit $rc
[ "$parts" = all ] || exit 0

# The scale table: a fresh carve per row, on a VG that holds N carve LVs
# (thick, inactive, one extent each: vgcfgrestore adds thousands in one
# metadata write, and inactive LVs cost no memory).
echo "bench: scale table ($scale_rounds create/delete rounds, $scale_calls GetCapacity calls per row; times in ms)"
target/release/examples/bench scale-header
for n in $scale_lvs; do
    truncate -s 128G /tmp/scale.img
    spv=$(losetup -f --show /tmp/scale.img)
    lvm vgcreate -q --metadatasize 64m carve-scale "$spv" >/dev/null
    if [ "$n" -gt 0 ]; then
        lvm vgcfgbackup -q -f /tmp/scale-vg.txt carve-scale >/dev/null
        python3 bench/add_lvs.py /tmp/scale-vg.txt /tmp/scale-vg-lvs.txt "$n" scale
        lvm vgcfgrestore -q -f /tmp/scale-vg-lvs.txt carve-scale >/dev/null || exit 1
    fi
    scfg=/tmp/scale-$n.toml
    printf 'capacity_refresh_seconds = 30\nnode_path_roots = ["/tmp"]\nlvm_timeout_seconds = 300\n\n[[device_class]]\nname = "scale"\nvolume_group = "carve-scale"\ntype = "thick"\n' > "$scfg"
    target/release/examples/bench scale "$n" "$scfg" "$scale_rounds" "$scale_calls" || exit 1
    lvm vgremove -q -f carve-scale >/dev/null
    losetup -d "$spv"; rm -f /tmp/scale.img
done
