#!/bin/bash
# Guest side of hack/demo.sh.
set -u
cd "$(dirname "$0")/../.."
. hack/uml/testbed.sh || exit 1
sock=/tmp/carve-demo/csi.sock
mkdir -p /tmp/carve-demo
target/release/carve serve --node-id demo-node --endpoint "unix://$sock" \
    --config "$CARVE_TESTBED_CONFIG" 2> /tmp/carve-demo/carve.log &
carve=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
[ -S "$sock" ] || { echo "demo: carve did not start:"; cat /tmp/carve-demo/carve.log; exit 1; }
echo "== carve is serving on $sock (config: $CARVE_TESTBED_CONFIG)"
target/release/examples/demo "$sock" thick thin mirrored
rc=$?
echo
echo "== lvs after the demo: only the test ground's own LVs remain, foreign LVs untouched"
lvm lvs -o vg_name,lv_name,lv_size,lv_tags carve-thick carve-thin carve-raid
kill -TERM $carve; wait $carve
echo "== carve log"
cat /tmp/carve-demo/carve.log
exit $rc
