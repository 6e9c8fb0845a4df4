#!/usr/bin/env python3
"""What carve's manifests promise beyond their schemas (hack/manifests/check.sh):

- every image is pinned by tag and digest, except carve's own (built by the
  user; set by the overlay) and images listed in UNPINNED with the reason;
- every container has CPU and memory requests and a memory limit;
- every container that is not carve's node plugin runs without privileges;
- the DaemonSet never runs two carves on a node (maxSurge 0) and runs at
  system-node-critical priority;
- external-provisioner in node mode never takes claims of Immediate binding
  (--node-deployment-immediate-binding=false): carve's classes wait for the
  first consumer, and a local volume placed on a random node pins its pod there;
- no rendering holds both a CustomResourceDefinition and an object of the kind
  it defines: one `kubectl apply` of both fails the first time, because the
  kind is not served until the CRD is established.

    policy.py RENDERED.yaml...
"""
import os
import sys

import yaml

CARVE_IMAGE = "localhost/carve"
# Images pinned by tag only, and why.
UNPINNED = {
    "registry.k8s.io/sig-storage/snapshot-controller:v8.6.0":
        "no digest for this tag could be confirmed (docs/install.md)",
}
PRIVILEGED = {("DaemonSet", "carve-node", "carve")}
WORKLOADS = ("DaemonSet", "Deployment", "StatefulSet", "ReplicaSet", "Job")


def workloads(docs):
    for d in docs:
        if d["kind"] in WORKLOADS:
            yield d, d["spec"]["template"]["spec"]


def containers(pod):
    return pod.get("containers", []) + pod.get("initContainers", [])


def images_resources_privileges(name, docs, err):
    for d, pod in workloads(docs):
        w = (d["kind"], d["metadata"]["name"])
        for c in containers(pod):
            where = f"{w[0]} {w[1]} container {c['name']}"
            image = c["image"]
            if not image.startswith(CARVE_IMAGE + ":") and "@sha256:" not in image and image not in UNPINNED:
                err(f"{where}: image {image} is not pinned by digest")
            res = c.get("resources", {})
            for key in ("requests.cpu", "requests.memory", "limits.memory"):
                a, b = key.split(".")
                if b not in res.get(a, {}):
                    err(f"{where}: no {key}")
            privileged = c.get("securityContext", {}).get("privileged", False)
            if privileged and (w[0], w[1], c["name"]) not in PRIVILEGED:
                err(f"{where}: privileged")
        if w == ("DaemonSet", "carve-node"):
            ru = d["spec"]["updateStrategy"]["rollingUpdate"]
            if ru.get("maxSurge", 0) not in (0, "0", "0%"):
                err("carve-node may surge: two carves would share a node")
            if pod.get("priorityClassName") != "system-node-critical":
                err("carve-node is not system-node-critical")


def node_provisioner(name, docs, err):
    """Finding 19 (second half): node-mode provisioners take no Immediate claims."""
    for d, pod in workloads(docs):
        for c in pod["containers"]:
            args = c.get("args", [])
            if "csi-provisioner" in c["image"] and "--node-deployment" in args \
                    and "--node-deployment-immediate-binding=false" not in args:
                err(f"{d['kind']} {d['metadata']['name']} container {c['name']}: --node-deployment without "
                    "--node-deployment-immediate-binding=false: every node races for claims of Immediate "
                    "binding and the volume lands on a random node")


def crd_and_instances(name, docs, err):
    """Finding 19: a CRD and an object of its kind must not be applied together."""
    defined = {}
    for d in docs:
        if d["kind"] == "CustomResourceDefinition":
            defined[(d["spec"]["group"], d["spec"]["names"]["kind"])] = d["metadata"]["name"]
    for d in docs:
        group = d["apiVersion"].split("/")[0] if "/" in d["apiVersion"] else ""
        crd = defined.get((group, d["kind"]))
        if crd:
            err(f"{d['kind']} {d['metadata']['name']} is in the same rendering as CRD {crd}: "
                "a first `kubectl apply` fails (no matches for kind) until the CRD is established; "
                "apply the CRDs (deploy/kubernetes/crds) first")


def main(paths):
    errors = []
    for path in paths:
        name = os.path.basename(path)
        docs = [d for d in yaml.safe_load_all(open(path)) if d]
        def err(msg, name=name):
            errors.append(f"{name}: {msg}")
        images_resources_privileges(name, docs, err)
        node_provisioner(name, docs, err)
        crd_and_instances(name, docs, err)
    for e in errors:
        print("POLICY", e)
    print(f"policy: {len(paths)} renderings: {len(errors)} error(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
