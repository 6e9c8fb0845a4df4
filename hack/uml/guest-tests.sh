#!/bin/bash
# Guest side of hack/test.sh: build the test ground, then run the real-LVM
# conformance test binary given as $1 (remaining args go to the test harness).
set -u
cd "$(dirname "$0")/../.."
. hack/uml/testbed.sh || { echo "guest-tests: testbed setup failed" >&2; exit 1; }
bin=$1
shift
# The metrics tests keep every /metrics scrape here for hack/metrics/check.py.
export CARVE_METRICS_SCRAPES=${CARVE_METRICS_SCRAPES:-$PWD/target/metrics-scrapes}
"$bin" --test-threads=1 "$@"
