#!/usr/bin/env bash
# carve end to end on a kind cluster: PVC -> pod -> write -> snapshot ->
# restore -> clone -> expand -> delete, checking the data at each step. The
# restore's pod is not pinned to a node: carve-agent places the claim on the
# snapshot's node (selected-node, a "Placed" Event) before any pod exists,
# and the pod follows the volume.
#
# THIS SCRIPT CANNOT RUN ON CARVE'S DEVELOPMENT MACHINES: they have no Docker
# engine and no access to image registries, so it has never been run there.
# It needs a Linux machine with docker, kind, kubectl, losetup and the
# dm-thin-pool/dm-snapshot modules, as root (loop devices), and it leaves the
# machine as it found it (KEEP=1 keeps the cluster).
#
# One worker only: kind nodes share the host's kernel, whose device-mapper
# names are global, so two workers' VGs of the same name (one ConfigMap
# configures every node) would collide there.
set -euo pipefail
cd "$(dirname "$0")/../.."
cluster=${KIND_CLUSTER:-carve-e2e}
image=localhost/carve:kind
work=$(mktemp -d)
k() { kubectl --context "kind-$cluster" "$@"; }

cleanup() {
    [ "${KEEP:-0}" = 1 ] && { echo "e2e: kept cluster $cluster"; return; }
    kind delete cluster --name "$cluster" >/dev/null 2>&1 || true
    [ -n "${loop:-}" ] && losetup -d "$loop" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

echo "e2e: a 4 GiB loop device with VG carve and thin pool carve-pool"
truncate -s 4G "$work/disk.img"
loop=$(losetup -f --show "$work/disk.img")
modprobe dm-thin-pool dm-snapshot
docker build -t "$image" .
# The image's own lvm, confined to this one device (--devices), so nothing
# else on this machine is scanned or touched.
lvm() { docker run --rm --privileged -v /dev:/dev --entrypoint lvm "$image" "$@" --devices "$loop"; }
lvm vgcreate carve "$loop"
lvm lvcreate -T -L 1G carve/carve-pool
lvm vgchange -an carve

echo "e2e: kind cluster $cluster (the loop device passed to the worker)"
cat >"$work/kind.yaml" <<YAML
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
  - role: control-plane
  - role: worker
    labels:
      carve.dev/node: "true"
    extraMounts:
      - hostPath: $loop
        containerPath: $loop
YAML
kind create cluster --name "$cluster" --config "$work/kind.yaml" --wait 120s
kind load docker-image "$image" --name "$cluster"

echo "e2e: installing deploy/kubernetes/crds, then deploy/kubernetes/overlays/kind"
# As docs/install.md: the CRDs first, established before the overlay's
# VolumeSnapshotClass is created.
k apply -k deploy/kubernetes/crds
k wait --for condition=established --timeout=60s \
    crd/volumesnapshotclasses.snapshot.storage.k8s.io \
    crd/volumesnapshotcontents.snapshot.storage.k8s.io \
    crd/volumesnapshots.snapshot.storage.k8s.io
k apply -k deploy/kubernetes/overlays/kind
k -n carve-system rollout status ds/carve-node --timeout=180s
k -n carve-system rollout status deploy/carve-resizer --timeout=180s
k -n carve-system rollout status deploy/carve-agent --timeout=180s
until [ "$(k -n carve-system get csistoragecapacities --no-headers 2>/dev/null | wc -l)" -ge 2 ]; do sleep 2; done

# A claim of CLASS and SIZE, optionally from a dataSource (kind/name).
pvc() { # name class size [kind source]
    local ds=""
    [ $# -gt 3 ] && ds="  dataSource: {kind: $4, name: $5${6:+, apiGroup: $6}}"
    k apply -f - <<YAML
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: $1}
spec:
  storageClassName: $2
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: $3}}
$ds
YAML
}
# A pod with the claim at /data running COMMAND; waits until it succeeds.
# Pinned to carve's node unless PIN=0.
run() { # pod claim command
    local pin='  nodeSelector: {carve.dev/node: "true"}'
    [ "${PIN:-1}" = 0 ] && pin=""
    k apply -f - <<YAML
apiVersion: v1
kind: Pod
metadata: {name: $1}
spec:
  restartPolicy: Never
$pin
  containers:
    - name: c
      image: $image
      imagePullPolicy: Never
      command:
        - /bin/sh
        - -c
        - |
          $3
      volumeMounts: [{name: d, mountPath: /data}]
  volumes: [{name: d, persistentVolumeClaim: {claimName: $2}}]
YAML
    k wait --for=jsonpath='{.status.phase}'=Succeeded --timeout=300s "pod/$1"
    k delete pod "$1" --wait
}

for class in carve-thick carve-thin; do
    echo "e2e: $class: write"
    pvc "src-$class" "$class" 256Mi
    run "write-$class" "src-$class" 'head -c 50000000 /dev/urandom > /data/f && sha256sum /data/f | cut -d\  -f1 > /data/f.sum && sync'
    echo "e2e: $class: snapshot"
    k apply -f - <<YAML
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata: {name: snap-$class}
spec: {volumeSnapshotClassName: carve, source: {persistentVolumeClaimName: src-$class}}
YAML
    k wait --for=jsonpath='{.status.readyToUse}'=true --timeout=120s "volumesnapshot/snap-$class"
    echo "e2e: $class: restore and clone hold the data"
    pvc "restore-$class" "$class" 256Mi VolumeSnapshot "snap-$class" snapshot.storage.k8s.io
    echo "e2e: $class: carve-agent places the restore on the snapshot's node before any pod exists"
    k wait --for=jsonpath='{.metadata.annotations.volume\.kubernetes\.io/selected-node}'="$cluster-worker" \
        --timeout=60s "pvc/restore-$class"
    k get events --field-selector "involvedObject.name=restore-$class,reason=Placed" -o name | grep -q . ||
        { echo "e2e: no Placed event on restore-$class" >&2; exit 1; }
    PIN=0 run "check-restore-$class" "restore-$class" 'test "$(sha256sum /data/f | cut -d\  -f1)" = "$(cat /data/f.sum)"'
    pvc "clone-$class" "$class" 256Mi PersistentVolumeClaim "src-$class"
    run "check-clone-$class" "clone-$class" 'test "$(sha256sum /data/f | cut -d\  -f1)" = "$(cat /data/f.sum)"'
    echo "e2e: $class: expand to 512Mi, data kept"
    k patch pvc "src-$class" -p '{"spec":{"resources":{"requests":{"storage":"512Mi"}}}}'
    run "check-expand-$class" "src-$class" 'test "$(df -m /data | awk "NR==2{print \$2}")" -gt 400 && test "$(sha256sum /data/f | cut -d\  -f1)" = "$(cat /data/f.sum)"'
    k wait --for=jsonpath='{.status.capacity.storage}'=512Mi --timeout=120s "pvc/src-$class"
    echo "e2e: $class: delete"
    k delete volumesnapshot "snap-$class" --wait
    k delete pvc "restore-$class" "clone-$class" "src-$class" --wait
done
until [ -z "$(k get pv -o name)" ]; do sleep 2; done
left=$(docker exec "$cluster-worker" sh -c "ls /dev/carve 2>/dev/null | grep -c '^cv-'" || true)
[ "${left:-0}" = 0 ] || { echo "e2e: $left carve LV(s) left on the worker" >&2; exit 1; }
echo "e2e: ok"
