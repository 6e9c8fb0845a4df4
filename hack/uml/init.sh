#!/bin/sh
# PID 1 inside the user-mode-linux guest. The guest's root is the host's / (hostfs),
# so host-built binaries run unchanged. The kernel hands unknown `key=value` boot
# arguments to init as environment: CARVE_JOB names the job directory on the host
# that holds `job` (the script to run) and receives `rc` and `guest.log`.
#
# Everything here is defensive: if PID 1 exits the guest kernel panics, so no command
# may kill this shell, and the exit code travels back through a file, not UML's status.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/root/.cargo/bin
export HOME=/root LC_ALL=C
# The host's LVM configuration knows nothing of a udev-less guest: tell libdm.
# An image root (CARVE_UML_ROOT) brings its own lvm.conf, which must cope on
# its own: that is what its test proves.
[ "${CARVE_UML_ROOT:-/}" = / ] && export DM_DISABLE_UDEV=1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null || mount -t tmpfs tmpfs /dev
mkdir -p /dev/pts /dev/shm /dev/mapper
# Without devtmpfs the device nodes that lvm, losetup and mkfs need are made by hand.
[ -c /dev/null ] || mknod -m 666 /dev/null c 1 3
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd
[ -c /dev/zero ] || mknod -m 666 /dev/zero c 1 5
[ -c /dev/random ] || mknod -m 666 /dev/random c 1 8
[ -c /dev/urandom ] || mknod -m 666 /dev/urandom c 1 9
[ -c /dev/loop-control ] || mknod -m 660 /dev/loop-control c 10 237
[ -c /dev/mapper/control ] || mknod -m 600 /dev/mapper/control c 10 236
i=0
while [ $i -lt 16 ]; do
    [ -b /dev/loop$i ] || mknod -m 660 /dev/loop$i b 7 $i
    i=$((i + 1))
done
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /dev/shm
# Loopback up: the metrics tests scrape carve on 127.0.0.1.
ip link set lo up 2>/dev/null || ifconfig lo up 2>/dev/null

# An image root sees the host only where it needs to: the working directory,
# the job directory and the kernel modules, each at its host path (hostfs).
if [ "${CARVE_UML_ROOT:-/}" != / ]; then
    for host in "$CARVE_CWD" "$CARVE_JOB" "$CARVE_UML_MODULES"; do
        [ -d "$host" ] && continue
        mkdir -p "$host" && mount -t hostfs -o "$host" none "$host"
    done
fi

job="$CARVE_JOB"
rc_file="$job/rc"
echo 99 > "$rc_file" 2>/dev/null

# modprobe looks in <dir>/lib/modules/<release>; the kernel's modules live in
# CARVE_UML_MODULES (see install-kernel.sh), so point modprobe at a tmpfs tree
# that links there (nothing is created on the host's filesystem).
rel=$(uname -r)
mkdir -p /run/modroot/lib/modules
ln -s "$CARVE_UML_MODULES/$rel" "/run/modroot/lib/modules/$rel"
# The kernel loads some modules itself (dm-crypt's ciphers: cbc(aes),
# xts(aes)...) through kernel.modprobe: point that at the same tree.
printf '#!/bin/sh\nexec /sbin/modprobe -d /run/modroot "$@"\n' > /run/modprobe-uml
chmod +x /run/modprobe-uml
echo /run/modprobe-uml > /proc/sys/kernel/modprobe
missing=""
for m in loop dm-mod dm-snapshot dm-thin-pool dm-raid dm-mirror dm-delay dm-flakey dm-dust dm-zero dm-crypt raid0 raid1 raid10 raid456; do
    modprobe -d /run/modroot "$m" 2>>/run/modprobe.err || missing="$missing $m"
done
# Private scratch space: loop images, sockets, mount points. /etc/lvm is covered
# so LVM's archive/backup/cache writes never reach the host's /etc through hostfs.
# A checkout that itself lives under /tmp (a CI clone, say) must stay reachable
# once /tmp is covered: the host's /tmp is kept under /run and the checkout and
# job directory are bound back to their own paths. Recursive: under an image
# root the checkout is itself a hostfs mount below /tmp (mounted above), and a
# plain bind would leave an empty directory in its place.
mkdir -p /run/host-tmp
mount --rbind /tmp /run/host-tmp
mount -t tmpfs -o size=4g tmpfs /tmp
for keep in "$CARVE_CWD" "$job"; do
    case "$keep" in
        /tmp/*)
            rel=${keep#/tmp/}
            if ! mountpoint -q "/tmp/$rel" 2>/dev/null; then
                mkdir -p "/tmp/$rel"
                mount --bind "/run/host-tmp/$rel" "/tmp/$rel"
            fi
            ;;
    esac
done
mkdir -p /tmp/etc-lvm
cp -a /etc/lvm/. /tmp/etc-lvm/ 2>/dev/null
mount --bind /tmp/etc-lvm /etc/lvm

if [ -n "$missing" ]; then
    { echo "carve-uml: kernel modules missing:$missing"; cat /run/modprobe.err; } > "$job/guest.log"
    echo 98 > "$rc_file"
else
    cd "$CARVE_CWD" 2>/dev/null || cd /
    sh "$job/job" > "$job/guest.log" 2>&1
    echo $? > "$rc_file"
fi
sync
# An image root may have no halt: then power off through sysrq.
halt -f 2>/dev/null || echo o > /proc/sysrq-trigger
