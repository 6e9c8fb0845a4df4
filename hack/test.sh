#!/usr/bin/env bash
# The whole test suite: formatting and lints, the Kubernetes manifests
# (rendered, strictly validated, RBAC checked), unit tests on the host,
# carve's real-LVM conformance tests inside a user-mode-linux guest (and
# their /metrics scrapes against docs, dashboard and alerts), then the
# container image: built from the Dockerfile and smoke-tested on its own root.
#   hack/test.sh [--no-lint]
set -euo pipefail
cd "$(dirname "$0")/.."
lint=1
[ "${1:-}" = "--no-lint" ] && lint=0

hack/setup.sh

if [ $lint = 1 ]; then
    echo "== cargo fmt --check"
    cargo fmt --all -- --check
    echo "== cargo clippy"
    cargo clippy --workspace --all-targets --features carve/real-lvm -- -D warnings
fi

echo "== Kubernetes manifests"
hack/manifests/check.sh

echo "== unit tests (host)"
# The fuzzing tier (property tests, corpus in fuzz/corpus) runs with the unit
# tests; its seed is chosen here and printed, so any run can be replayed.
export CARVE_FUZZ_SEED=${CARVE_FUZZ_SEED:-$(date +%s%N | cut -c1-18)}
echo "== fuzz seed: $CARVE_FUZZ_SEED (replay: CARVE_FUZZ_SEED=$CARVE_FUZZ_SEED cargo test --workspace --lib)"
cargo test --workspace --lib --bins

echo "== real-LVM tests (user-mode-linux guest)"
bin=$(cargo test -p carve --features real-lvm --test real_lvm --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "real_lvm":
        print(m["executable"])')
[ -n "$bin" ] || { echo "test.sh: could not build the real_lvm test binary" >&2; exit 1; }
# The metrics tests keep every /metrics scrape here; check.py puts each
# through the strict OpenMetrics parser and holds docs/metrics.md, the
# Grafana dashboard and the alert rules to what the scrapes exported.
rm -rf target/metrics-scrapes
hack/uml/run.sh hack/uml/guest-tests.sh "$bin"

echo "== metrics: OpenMetrics parse, docs, dashboard and alert queries"
"${CARVE_PYENV:-/opt/carve-pyenv}/bin/python3" hack/metrics/check.py --scrapes target/metrics-scrapes

echo "== container image (buildah) and its smoke test (user-mode-linux on the image's root)"
hack/image/build.sh localhost/carve:ci
hack/image/smoke.sh localhost/carve:ci
