#!/usr/bin/env python3
"""RBAC check of rendered manifests (hack/manifests/check.sh).

- No wildcard in any rule (verbs, resources, apiGroups, resourceNames).
- Every Role and ClusterRole belongs to one component, and each of its
  (apiGroup, resource, verb) triples is granted by that component's own
  published RBAC at the pinned version (hack/rbac/reference/), or is one of
  the conditional rules listed below with the reason upstream gives for it.
  carve-agent's reference is its own list of the API calls it makes
  (crates/carve-agent/src/kinds.rs), rendered into deploy/kubernetes/base/
  agent/rbac.yaml and components/agent-delete-claims/rbac.yaml; a cargo test
  holds those files equal to the list, and the agent's tests run against a
  fake API server that refuses any call not in it.
- Every binding binds its role to the service account of the workload that
  runs that component, and within the workload only that component's
  containers mount the account's token: carve itself makes no Kubernetes API
  call (its crates link no Kubernetes client, checked with cargo tree), so it
  gets no role and no token.

    check.py RENDERED.yaml...
"""
import os
import subprocess
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# Our role -> (component, reference file, workload kind/name, containers that
# may hold the token).
COMPONENTS = {
    "carve-external-provisioner": "external-provisioner",
    "carve-external-provisioner-capacity": "external-provisioner",
    "carve-csi-snapshotter": "csi-snapshotter",
    "carve-csi-resizer": "csi-resizer",
    "carve-csi-resizer-leader-election": "csi-resizer",
    "carve-snapshot-controller": "snapshot-controller",
    "carve-snapshot-controller-leader-election": "snapshot-controller",
    "carve-agent": "carve-agent",
    "carve-agent-delete-claims": "carve-agent",
}
REFERENCE = {
    "external-provisioner": "external-provisioner-v6.3.0.yaml",
    "csi-snapshotter": "csi-snapshotter-v8.6.0.yaml",
    "csi-resizer": "external-resizer-v2.2.1.yaml",
    "snapshot-controller": "snapshot-controller-v8.6.0.yaml",
    "carve-agent": [
        os.path.join(REPO, "deploy/kubernetes/base/agent/rbac.yaml"),
        os.path.join(REPO, "deploy/kubernetes/components/agent-delete-claims/rbac.yaml"),
    ],
}
# Where each component runs: (workload kind, name) and its container.
RUNS_IN = {
    "external-provisioner": ("DaemonSet", "carve-node", "csi-provisioner"),
    "csi-snapshotter": ("DaemonSet", "carve-node", "csi-snapshotter"),
    "csi-resizer": ("Deployment", "carve-resizer", "csi-resizer"),
    "snapshot-controller": ("Deployment", "carve-snapshot-controller", "snapshot-controller"),
    "carve-agent": ("Deployment", "carve-agent", "carve-agent"),
}
# Rules a reference file leaves commented out for a setup carve uses.
CONDITIONAL = {
    # rbac-snapshot-controller.yaml: "Enable this RBAC rule only when using
    # distributed snapshotting, i.e. when the enable-distributed-snapshotting
    # flag is set to true" (carve's component sets it).
    "snapshot-controller": {("", "nodes", v) for v in ("get", "list", "watch")},
}


def triples(rules):
    out = set()
    for r in rules or []:
        for g in r.get("apiGroups", []):
            for res in r.get("resources", []):
                for v in r.get("verbs", []):
                    out.add((g, res, v))
    return out


def reference(component):
    files = REFERENCE[component]
    if isinstance(files, str):
        files = [os.path.join(HERE, "reference", files)]
    allowed = set()
    for f in files:
        for d in yaml.safe_load_all(open(f)):
            if d and d.get("kind") in ("ClusterRole", "Role"):
                allowed |= triples(d.get("rules"))
    return allowed | CONDITIONAL.get(component, set())


def carve_links_no_kubernetes_client():
    tree = subprocess.run(
        ["cargo", "tree", "-p", "carve", "-e", "normal", "--prefix", "none"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout
    crates = {line.split()[0] for line in tree.splitlines() if line.strip()}
    return sorted(crates & {"kube", "kube-client", "k8s-openapi"})


def token_containers(pod):
    """Containers that can read the pod's service account token."""
    if pod.get("automountServiceAccountToken", True):
        return {c["name"] for c in pod["containers"] + pod.get("initContainers", [])}
    token_vols = {
        v["name"] for v in pod.get("volumes", [])
        if any("serviceAccountToken" in s for s in v.get("projected", {}).get("sources", []))
    }
    return {
        c["name"] for c in pod["containers"] + pod.get("initContainers", [])
        if any(m["name"] in token_vols for m in c.get("volumeMounts", []))
    }


def check(path, errors):
    docs = [d for d in yaml.safe_load_all(open(path)) if d]
    name = os.path.basename(path)
    roles = {(d["kind"], d["metadata"]["name"]): d for d in docs if d["kind"] in ("Role", "ClusterRole")}
    workloads = {(d["kind"], d["metadata"]["name"]): d for d in docs if d["kind"] in ("DaemonSet", "Deployment")}
    def err(msg):
        errors.append(f"{name}: {msg}")
    for (kind, rname), role in roles.items():
        for r in role.get("rules", []):
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                if "*" in (r.get(field) or []):
                    err(f"{kind} {rname}: wildcard in {field}")
        component = COMPONENTS.get(rname)
        if component is None:
            err(f"{kind} {rname}: belongs to no known component")
            continue
        extra = triples(role.get("rules")) - reference(component)
        for g, res, v in sorted(extra):
            err(f"{kind} {rname}: {v} {g or 'core'}/{res} is not in {REFERENCE[component]}")
        if component == "carve-agent" and rname != "carve-agent-delete-claims" and ("", "persistentvolumeclaims", "delete") in triples(role.get("rules")):
            err(f"{kind} {rname}: deleting claims is granted only by components/agent-delete-claims")
    for d in docs:
        if d["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        ref = d["roleRef"]
        component = COMPONENTS.get(ref["name"])
        if component is None:
            err(f'{d["kind"]} {d["metadata"]["name"]}: binds unknown role {ref["name"]}')
            continue
        wkind, wname, container = RUNS_IN[component]
        w = workloads.get((wkind, wname))
        if w is None:
            err(f"{ref['name']}: its component's {wkind} {wname} is not in this rendering")
            continue
        pod = w["spec"]["template"]["spec"]
        sa = (pod.get("serviceAccountName"), w["metadata"].get("namespace"))
        for s in d.get("subjects", []):
            if (s.get("kind"), s.get("name"), s.get("namespace")) != ("ServiceAccount", *sa):
                err(f'{d["kind"]} {d["metadata"]["name"]}: subject {s} is not {wkind} {wname}\'s service account {sa}')
        if container not in token_containers(pod):
            err(f"{wkind} {wname}: container {container} has no API token but holds role {ref['name']}")
    # Within each workload, only containers of components bound to its account
    # may read the token.
    for (wkind, wname), w in workloads.items():
        allowed = {c for comp, (k, n, c) in RUNS_IN.items() if (k, n) == (wkind, wname)}
        extra = token_containers(w["spec"]["template"]["spec"]) - allowed
        if extra:
            err(f"{wkind} {wname}: containers {sorted(extra)} can read the API token but need none")
    return len(roles)


def main(paths):
    errors = []
    linked = carve_links_no_kubernetes_client()
    if linked:
        errors.append(f"carve links {linked}: it calls the Kubernetes API, so its RBAC must be written and checked")
    roles = sum(check(p, errors) for p in paths)
    for e in errors:
        print("RBAC", e)
    print(f"rbac: {roles} roles in {len(paths)} renderings checked against {len(REFERENCE) - 1} upstream files and carve-agent's declared calls; carve links no Kubernetes client: {len(errors)} error(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
