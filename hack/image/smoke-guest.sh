#!/bin/bash
# Guest side of hack/image/smoke.sh, inside the image's root filesystem: show
# which lvm and lvm.conf are in use, build the test ground, run the image's
# carve and the smoke client against it.
set -u
cd "$(dirname "$0")/../.."
echo "smoke-guest: lvm $(command -v lvm) ($(lvm version | sed -n 's/^ *LVM version: *//p')), mkfs.ext4 $(command -v mkfs.ext4)"
echo "smoke-guest: $(command -v cryptsetup || echo 'no cryptsetup in the image') ($(cryptsetup --version 2>&1))"
echo "smoke-guest: the image's lvm.conf in effect: $(lvm config activation/udev_sync activation/udev_rules devices/obtain_device_list_from_udev | tr '\n' ' ')(DM_DISABLE_UDEV ${DM_DISABLE_UDEV:-unset})"
# The agent runs from the same image: it must start (flags parse, libraries
# resolve) on the image's root. It needs an API server to do anything more,
# which cannot run here; its reconcilers are tested against a fake one.
agent=$(/usr/local/bin/carve-agent --version) || { echo "smoke-guest: carve-agent does not run from the image" >&2; exit 1; }
echo "smoke-guest: $agent"
. hack/uml/testbed.sh || { echo "smoke-guest: testbed setup failed" >&2; exit 1; }
sock=/tmp/smoke/csi.sock
mkdir -p /tmp/smoke
/usr/local/bin/carve serve --node-id smoke-node --endpoint "unix://$sock" \
    --config "$CARVE_TESTBED_CONFIG" 2>/tmp/smoke/carve.log &
carve=$!
for _ in $(seq 200); do [ -S "$sock" ] && break; sleep 0.1; done
target/debug/examples/image-smoke "$sock"
rc=$?
kill -TERM "$carve"; wait "$carve"
[ $rc = 0 ] || { echo "smoke-guest: failed; carve's log:"; tail -40 /tmp/smoke/carve.log; }
# The image's lvm2 ships the lvmdbusd command profile the lvm shells need:
# carve must run its commands through them, not fall back to processes.
if ! grep -q "lvm commands run through lvm shells" /tmp/smoke/carve.log; then
    echo "smoke-guest: carve did not run lvm through its shells on the image:" >&2
    grep -i "lvm" /tmp/smoke/carve.log | tail -5 >&2
    rc=1
else
    echo "smoke-guest: lvm commands ran through carve's lvm shells"
fi
leftover=$(lvm lvs --noheadings -o lv_name --select 'lv_tags=~"^carve.dev/owner="' 2>/dev/null | wc -l)
[ "$leftover" = 0 ] || { echo "smoke-guest: $leftover carve LV(s) left in LVM" >&2; lvm lvs -a; rc=1; }
exit $rc
