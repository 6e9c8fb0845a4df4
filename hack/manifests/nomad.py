#!/usr/bin/env python3
"""Checks deploy/nomad/ without a Nomad binary: each file parses as Nomad
parses it (job specs are HCL2, volume specs HCL1), the plugin job is a
privileged monolith plugin pinned to one node with a per-node plugin ID, and
the volume names the plugin and topology of one and the same node with
parameters carve accepts."""
import os
import sys

import hcl  # pyhcl: HCL1, as `nomad volume create` reads volume specs
import hcl2  # python-hcl2: HCL2, as `nomad job run` reads jobs

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOMAD = os.path.join(REPO, "deploy/nomad")
CARVE_PARAMETERS = {"carve.dev/device-class", "csi.storage.k8s.io/fstype", "fsType"}


def unq(v):
    """python-hcl2 keeps string literals' quotes: drop them."""
    if isinstance(v, str) and len(v) >= 2 and v[0] == v[-1] == '"':
        return v[1:-1]
    return v


def block(blocks, label):
    """The body of the block labelled `label` in a list of labelled blocks."""
    for b in blocks:
        for k, v in b.items():
            if unq(k) == label:
                return v
    raise KeyError(label)


def main():
    errors = []
    job = hcl2.load(open(os.path.join(NOMAD, "carve-plugin.nomad.hcl")))
    (name, spec), = job["job"][0].items()
    task = block(block(spec["group"], "carve")["task"], "plugin")
    plugin = task["csi_plugin"][0]
    if unq(plugin["type"]) != "monolith":
        errors.append(f"plugin type {plugin['type']}, not monolith")
    if unq(plugin["id"]) != "carve-${var.node}" or unq(name) != "carve-plugin-${var.node}":
        errors.append("plugin ID and job name must be per node (carve-${var.node})")
    if unq(spec.get("constraint", [{}])[0].get("value")) != "${var.node}":
        errors.append("plugin job is not constrained to its node")
    if task["config"][0].get("privileged") is not True:
        errors.append("plugin task is not privileged")
    hcl2.load(open(os.path.join(NOMAD, "example-job.nomad.hcl")))
    vol = hcl.load(open(os.path.join(NOMAD, "volume.hcl")))
    node = vol["topology_request"]["required"]["topology"]["segments"]["topology.carve.dev/node"]
    if vol["plugin_id"] != f"carve-{node}":
        errors.append(f"volume plugin_id {vol['plugin_id']} is not the plugin of its topology node {node}")
    unknown = set(vol.get("parameters", {})) - CARVE_PARAMETERS
    if unknown:
        errors.append(f"volume parameters carve refuses: {sorted(unknown)}")
    for e in errors:
        print("NOMAD", e)
    print(f"nomad: plugin job, example job and volume spec parse; {len(errors)} error(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
