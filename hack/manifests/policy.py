#!/usr/bin/env python3
"""What carve's manifests promise beyond their schemas (hack/manifests/check.sh):

- every image is pinned by tag and digest, except carve's own (built by the
  user; set by the overlay) and images listed in UNPINNED with the reason;
- every container has CPU and memory requests and a memory limit;
- every container that is not carve's node plugin runs without privileges;
- the DaemonSet never runs two carves on a node (maxSurge 0) and runs at
  system-node-critical priority;
- a pod at a system-* priority outside kube-system comes with a ResourceQuota
  in its namespace scoped to that priority class, admitting at least
  MIN_CRITICAL_PODS pods (clusters that limit those classes, GKE among them,
  refuse the pods otherwise);
- the base runs carve on every node; a rendering that narrows it does so with
  the documented opt-in label only (components/node-selector), and some
  rendering uses that component;
- rollouts are guarded: carve has a readiness probe on the livenessprobe
  sidecar's /healthz, every workload has minReadySeconds, and the DaemonSet's
  maxUnavailable is a percentage;
- a container that shares a volume (the CSI socket's directory) with a
  privileged container runs as SELinux type spc_t, as the privileged one does
  (on enforcing hosts a confined container_t cannot connect to the socket);
- external-provisioner in node mode never takes claims of Immediate binding
  (--node-deployment-immediate-binding=false): carve's classes wait for the
  first consumer, and a local volume placed on a random node pins its pod there;
- no rendering holds both a CustomResourceDefinition and an object of the kind
  it defines: one `kubectl apply` of both fails the first time, because the
  kind is not served until the CRD is established.

    policy.py RENDERED.yaml...
"""
import os
import re
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
# A DaemonSet has one pod per node: the quota for critical pods must not be
# what limits it.
MIN_CRITICAL_PODS = 10000
# The opt-in label of components/node-selector (docs/install.md).
NODE_LABEL = {"carve.dev/node": "true"}
# The only label a rendering of the base may select nodes by, besides the opt-in.
ALWAYS_OK_NODE_LABELS = {"kubernetes.io/os"}
SPC = "spc_t"


def quantity(q):
    """A Kubernetes quantity as a number (enough for counts: 10k, 1G, 5Ki)."""
    m = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(q).strip())
    if not m:
        return 0
    mult = {"": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
            "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
    return float(m.group(1)) * mult.get(m.group(2), 0)


def ns_of(d):
    return d["metadata"].get("namespace", "default")


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


def critical_priority_quota(name, docs, err):
    """Finding 13: system-* priority classes outside kube-system need a quota."""
    covered = {}  # namespace -> priority classes a generous quota admits
    small = {}
    for d in docs:
        if d["kind"] != "ResourceQuota":
            continue
        spec = d.get("spec", {})
        pods = quantity(spec.get("hard", {}).get("pods", "0"))
        for e in (spec.get("scopeSelector") or {}).get("matchExpressions", []):
            if e.get("scopeName") == "PriorityClass" and e.get("operator") == "In":
                target = covered if pods >= MIN_CRITICAL_PODS else small
                target.setdefault(ns_of(d), set()).update(e.get("values", []))
    for d, pod in workloads(docs):
        pc = pod.get("priorityClassName", "")
        ns = ns_of(d)
        if not pc.startswith("system-") or ns == "kube-system" or pc in covered.get(ns, ()):
            continue
        why = (f"its quota there admits fewer than {MIN_CRITICAL_PODS} pods"
               if pc in small.get(ns, ()) else
               f"no ResourceQuota there with scopeSelector PriorityClass In [{pc}]")
        err(f"{d['kind']} {d['metadata']['name']} runs at {pc} in namespace {ns}, {why}: "
            "clusters that limit system priority classes (GKE) refuse its pods "
            "(insufficient quota to match these scopes)")


def node_selection(name, docs, err, uses_opt_in):
    """Finding 14: carve on every node by default; the opt-in label otherwise."""
    for d, pod in workloads(docs):
        if (d["kind"], d["metadata"]["name"]) != ("DaemonSet", "carve-node"):
            continue
        sel = dict(pod.get("nodeSelector") or {})
        narrowing = {k: v for k, v in sel.items() if k not in ALWAYS_OK_NODE_LABELS}
        if name == "base.yaml":
            if narrowing or pod.get("affinity", {}).get("nodeAffinity"):
                err(f"carve-node in the base selects nodes ({narrowing or 'nodeAffinity'}): the base runs carve on every node")
        elif narrowing and narrowing != NODE_LABEL:
            err(f"carve-node selects nodes by {narrowing}, not by the documented opt-in "
                f"{NODE_LABEL} (components/node-selector)")
        if narrowing == NODE_LABEL:
            uses_opt_in.append(name)


def http_endpoint_port(c):
    for a in c.get("args", []):
        if a.startswith("--http-endpoint="):
            return int(a.rsplit(":", 1)[1])
    return None


def probe_port(c, probe):
    port = probe.get("httpGet", {}).get("port")
    if isinstance(port, int):
        return port
    for p in c.get("ports", []):
        if p.get("name") == port:
            return p["containerPort"]
    return None


def rollouts(name, docs, err):
    """Finding 15: readiness, minReadySeconds, a percentage maxUnavailable."""
    for d, pod in workloads(docs):
        kind, wname = d["kind"], d["metadata"]["name"]
        if kind in ("DaemonSet", "Deployment", "StatefulSet") and not d["spec"].get("minReadySeconds"):
            err(f"{kind} {wname}: no minReadySeconds: a pod that crashes right after it starts counts as available")
        if (kind, wname) != ("DaemonSet", "carve-node"):
            continue
        mu = d["spec"].get("updateStrategy", {}).get("rollingUpdate", {}).get("maxUnavailable")
        if not (isinstance(mu, str) and re.fullmatch(r"[1-9][0-9]?%", mu)):
            err(f"carve-node: updateStrategy.rollingUpdate.maxUnavailable is {mu!r}, not a percentage of the nodes")
        by_name = {c["name"]: c for c in pod["containers"]}
        carve = by_name.get("carve")
        lp = next((c for c in pod["containers"] if "livenessprobe" in c["image"]), None)
        endpoint = http_endpoint_port(lp) if lp else None
        for kindp in ("readinessProbe", "livenessProbe"):
            probe = (carve or {}).get(kindp)
            if not probe:
                err(f"carve-node container carve: no {kindp}")
                continue
            path = probe.get("httpGet", {}).get("path")
            port = probe_port(carve, probe)
            if path != "/healthz" or port is None or port != endpoint:
                err(f"carve-node container carve: {kindp} asks {path} on port {port}, "
                    f"not /healthz of the livenessprobe sidecar (port {endpoint})")


def selinux(name, docs, err):
    """Finding 16: containers sharing a volume with a privileged one run as spc_t."""
    for d, pod in workloads(docs):
        cs = containers(pod)
        priv = [c for c in cs if c.get("securityContext", {}).get("privileged")]
        if not priv:
            continue
        shared = {m["name"] for c in priv for m in c.get("volumeMounts", [])}
        pod_type = (pod.get("securityContext", {}).get("seLinuxOptions") or {}).get("type")
        for c in cs:
            if any(c is p for p in priv):
                continue
            vols = sorted({m["name"] for m in c.get("volumeMounts", [])} & shared)
            if not vols:
                continue
            t = (c.get("securityContext", {}).get("seLinuxOptions") or {}).get("type", pod_type)
            if t != SPC:
                err(f"{d['kind']} {d['metadata']['name']} container {c['name']} shares {vols} with a "
                    f"privileged container but runs as SELinux type {t or 'container_t (default)'}, "
                    f"not {SPC}: on enforcing hosts it cannot connect to the socket the privileged container made")


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
    uses_opt_in = []
    for path in paths:
        name = os.path.basename(path)
        docs = [d for d in yaml.safe_load_all(open(path)) if d]
        def err(msg, name=name):
            errors.append(f"{name}: {msg}")
        images_resources_privileges(name, docs, err)
        critical_priority_quota(name, docs, err)
        node_selection(name, docs, err, uses_opt_in)
        rollouts(name, docs, err)
        selinux(name, docs, err)
        node_provisioner(name, docs, err)
        crd_and_instances(name, docs, err)
    if not uses_opt_in:
        errors.append(f"no rendering selects nodes by {NODE_LABEL}: components/node-selector is not rendered")
    for e in errors:
        print("POLICY", e)
    print(f"policy: {len(paths)} renderings: {len(errors)} error(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
