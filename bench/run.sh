#!/usr/bin/env bash
# Boots one user-mode-linux guest and prints carve-vs-bare-lvm ratios measured
# in that boot. Knobs: BENCH_ROUNDS (30), BENCH_LVS (1000), BENCH_CAPACITY_CALLS (5000),
# BENCH_SCALE_LVS ("0 1000 5000"), BENCH_SCALE_ROUNDS (10), BENCH_SCALE_CALLS (2000),
# BENCH_PARTS (all; p2: only the P2 lines; luks: only the LUKS2 stage lines), BENCH_LOG (carve's --log filter).
set -euo pipefail
cd "$(dirname "$0")/.."
hack/setup.sh
cargo build --release -p carve --bin carve --example bench
# The guest starts with an empty environment: the knobs travel as arguments.
hack/uml/run.sh bench/guest.sh "${BENCH_ROUNDS:-30}" "${BENCH_LVS:-1000}" "${BENCH_CAPACITY_CALLS:-5000}" \
    "${BENCH_SCALE_LVS:-0 1000 5000}" "${BENCH_SCALE_ROUNDS:-10}" "${BENCH_SCALE_CALLS:-2000}" \
    "${BENCH_PARTS:-all}" "${BENCH_LOG:-warn,carve_core::engine::fill=info}"
