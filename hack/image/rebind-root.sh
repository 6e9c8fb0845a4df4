# Sourced first by build.sh and smoke.sh, before they change directory.
# buildah (containers/storage) unpacks layers and runs chroot-isolated steps in
# a mount namespace where it first makes "/" rprivate. The kernel refuses that
# when "/" is not a mount point, as inside a plain chroot (a debootstrap root
# such as ../shared/tools/fresh-debian makes, some CI sandboxes):
#   remount /, flags: 0x44000: invalid argument
# There, this re-runs the calling script in its own mount namespace whose root
# is a recursive bind mount of the same tree: the same files and mounts, and
# "/" a mount point. The bind mount is private to that namespace and goes away
# with it; nothing is left on the machine. Where "/" is a mount point (any
# normal machine) it does nothing.
case "${CARVE_REBIND_ROOT:-}" in
"")
    if ! mountpoint -q /; then
        echo "$(basename "$0"): / is not a mount point (a chroot?); re-running in a mount namespace rooted at a bind mount of it" >&2
        exec env CARVE_REBIND_ROOT=mount unshare --mount --propagation unchanged -- bash "$(readlink -f "$0")" "$@"
    fi
    ;;
mount)
    # Propagation "unchanged" above because "/" cannot be made private yet;
    # the new root is made private at once, before anything mounts under it.
    rebound=/run/carve-rebound-root
    mkdir -p "$rebound"
    mount --rbind / "$rebound"
    mount --make-rprivate "$rebound"
    exec chroot "$rebound" /usr/bin/env CARVE_REBIND_ROOT=done \
        bash -c 'cd "$1" && shift && exec "$@"' rebind "$PWD" bash "$0" "$@"
    ;;
done)
    mountpoint -q / || { echo "$(basename "$0"): / is still not a mount point after rebinding" >&2; exit 1; }
    ;;
esac
