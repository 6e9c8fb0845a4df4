#!/usr/bin/env bash
# The demo: carve on loop-backed volume groups inside user-mode-linux, walking
# a volume through capacity -> create -> expand -> list -> delete for a thick
# and a thin device class (and raid1), printing each step and the real `lvs`.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/setup.sh
cargo build --release -p carve --bin carve --example demo
hack/uml/run.sh hack/demo/guest.sh
