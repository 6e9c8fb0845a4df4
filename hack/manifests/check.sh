#!/usr/bin/env bash
# Renders every kustomization under deploy/kubernetes offline (the base, the
# snapshot CRDs applied before the overlays, each overlay) and checks the
# result: strict schema validation for each supported Kubernetes version
# (validate.py), what policy.py's docstring lists (pins, resources,
# privileges, install order and more), RBAC against the sidecars' own
# published rules (hack/rbac/check.py), and the vendored snapshot CRDs and
# the Prometheus Operator CRDs (hack/manifests/schemas/: validation of the
# monitoring components' PodMonitor and PrometheusRule only, never rendered)
# against their upstream sha256 sums; then deploy/nomad/ (nomad.py).
# Renderings are kept in target/manifests/. Needs hack/setup.sh's Python
# environment (kubectl, kubernetes-validate, HCL parsers).
set -euo pipefail
cd "$(dirname "$0")/../.."
pyenv=${CARVE_PYENV:-/opt/carve-pyenv}
out=target/manifests
rm -rf "$out" && mkdir -p "$out"
rendered=()
for dir in deploy/kubernetes/base deploy/kubernetes/crds deploy/kubernetes/overlays/*/; do
    dir=${dir%/}
    name=$(basename "$dir")
    # A warning (a deprecated field, say) fails the check too.
    if ! "$pyenv/bin/kubectl" kustomize "$dir" >"$out/$name.yaml" 2>"$out/$name.err" || [ -s "$out/$name.err" ]; then
        echo "manifests: kubectl kustomize $dir:" >&2; cat "$out/$name.err" >&2; exit 1
    fi
    rendered+=("$out/$name.yaml")
done
echo "manifests: rendered ${rendered[*]}"
"$pyenv/bin/python3" hack/manifests/validate.py "${rendered[@]}"
"$pyenv/bin/python3" hack/manifests/policy.py "${rendered[@]}"
"$pyenv/bin/python3" hack/rbac/check.py "${rendered[@]}"
# external-snapshotter v8.6.0 client/config/crd/ (78e32cd84e0abec2621924a30e38c755f93e180a)
(cd deploy/kubernetes/crds && sha256sum --quiet -c -) <<'SUMS'
75e6565aac2c0f2949ed13ea884bbaa388cb7be576b558b709cf1168e011828d  crd-volumesnapshotclasses.yaml
895a3c1e73b60f06a0deb566dd123d01bdf1b2efc5d5ff5231ff8bbcf42dafc7  crd-volumesnapshotcontents.yaml
b032116e987fb1d7d93cec7d942833adeb9d95c9bdc7e00c10b280c2fe4a6c33  crd-volumesnapshots.yaml
SUMS
echo "manifests: snapshot CRDs match external-snapshotter v8.6.0"
# prometheus-operator v0.93.0 example/prometheus-operator-crd/ (f8fafd475f3d132e239432ae6172de60a6cb6516)
(cd hack/manifests/schemas && sha256sum --quiet -c -) <<'SUMS'
45a93443daa687d3654f7e9631909ff7edcdf3ec09c5e60251b74aa2722aee5d  monitoring.coreos.com_podmonitors.yaml
78be98554b9c8506ab2b4f4feb91c5f3a56e536a0a510f3a8e876a459970d56d  monitoring.coreos.com_prometheusrules.yaml
SUMS
echo "manifests: PodMonitor and PrometheusRule CRDs match prometheus-operator v0.93.0"
"$pyenv/bin/python3" hack/manifests/nomad.py
