#!/usr/bin/env bash
# Run a shell script inside a fresh user-mode-linux guest and propagate its exit code.
#   hack/uml/run.sh SCRIPT [ARGS...]
# The script runs as root in the guest with the current directory unchanged, real
# device-mapper, loop devices and a private tmpfs on /tmp. Its output is streamed
# back to this terminal and kept in target/uml/<run>/guest.log.
# The guest's root is the host's / unless CARVE_UML_ROOT names another tree (a
# container image's root filesystem, say): then the guest runs that tree's
# programs, and sees of the host only the current directory, the job directory
# and the kernel modules (mounted at their host paths).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
script=${1:?usage: hack/uml/run.sh SCRIPT [ARGS...]}
shift

# The kernel hack/uml/install-kernel.sh installs (hack/setup.sh runs it).
uml=${CARVE_UML_DIR:-/opt/carve-uml/current}
[ -x "$uml/linux" ] && [ -d "$uml/modules" ] || { echo "carve-uml: no user-mode-linux kernel in $uml: run hack/setup.sh" >&2; exit 97; }

mem=${CARVE_UML_MEM:-6G}
root=${CARVE_UML_ROOT:-/}
init="$here/init.sh"
if [ "$root" != / ]; then
    # The kernel looks for init in the guest's root: put a copy there.
    install -D -m 0755 "$here/init.sh" "$root/.carve-uml/init.sh"
    init=/.carve-uml/init.sh
fi
job=$(mktemp -d "$repo/target/uml/run.XXXXXX" 2>/dev/null || { mkdir -p "$repo/target/uml"; mktemp -d "$repo/target/uml/run.XXXXXX"; })
script_abs=$(cd "$(dirname "$script")" && pwd)/$(basename "$script")
{
    printf 'set -u\n'
    printf 'exec bash %q' "$script_abs"
    for a in "$@"; do printf ' %q' "$a"; done
    printf '\n'
} > "$job/job"
: > "$job/guest.log"

# Stream the guest's log while it runs.
tail -n +1 -f "$job/guest.log" &
tailer=$!
trap 'kill $tailer 2>/dev/null || true' EXIT

# UML keeps its RAM in a file under TMPDIR; /dev/shm is fast and sized for it.
# The guest's verdict is $job/rc, not the kernel's exit status: after a long
# run the kernel can die by SIGABRT once it has halted, and the shell's
# "Aborted" notice for that goes to console.log (the subshell's stderr), not to
# the terminal, where it would read as a failure.
(
    TMPDIR=/dev/shm "$uml/linux" mem="$mem" rootfstype=hostfs rootflags="$root" rw \
        init="$init" CARVE_JOB="$job" CARVE_CWD="$PWD" CARVE_UML_MODULES="$(cd "$uml/modules" && pwd -P)" \
        CARVE_UML_ROOT="$root" con=null con0=fd:0,fd:1 </dev/null >"$job/console.log" 2>&1
    echo "carve-uml: kernel exited with status $?" >&2
) 2>>"$job/console.log" || true
sleep 0.3
kill $tailer 2>/dev/null || true
rc=$(cat "$job/rc" 2>/dev/null || echo 96)
case "$rc" in
    99) echo "carve-uml: guest job did not finish (see $job/console.log)" >&2; tail -20 "$job/console.log" >&2 ;;
    98) echo "carve-uml: guest could not load required kernel modules" >&2 ;;
    96) echo "carve-uml: guest never started (see $job/console.log)" >&2; tail -20 "$job/console.log" >&2 ;;
esac
exit "$rc"
