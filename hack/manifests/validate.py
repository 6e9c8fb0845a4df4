#!/usr/bin/env python3
"""Strict schema validation of rendered manifests (hack/manifests/check.sh).

Every object must validate, with no unknown and no missing fields, against the
Kubernetes OpenAPI schemas of every supported version (kubernetes-validate,
offline). Objects of a kind those schemas do not know are errors, except
instances of a CustomResourceDefinition shipped in deploy/ or vendored for
validation only in hack/manifests/schemas/ (the Prometheus Operator's
PodMonitor and PrometheusRule, which carve's monitoring components use but
never install): those validate against that CRD's own openAPIV3Schema, made
strict the way the API server prunes (no field outside the schema). A CRD of
hack/manifests/schemas/ in a rendering is an error: it belongs to the
cluster's Prometheus Operator, not to carve.

    validate.py RENDERED.yaml... (versions from KUBERNETES_VERSIONS)
"""
import copy
import glob
import os
import sys

import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate.utils import SchemaNotFoundError, ValidationError

VERSIONS = os.environ.get("KUBERNETES_VERSIONS", "1.31 1.32 1.33 1.34 1.35 1.36 1.37").split()
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CRD_FILES = glob.glob(os.path.join(REPO, "deploy/kubernetes/crds/crd-*.yaml"))
# Third-party CRDs, for validating carve's objects of their kinds only.
SCHEMA_ONLY_CRD_FILES = sorted(glob.glob(os.path.join(REPO, "hack/manifests/schemas/*.yaml")))


def python_pattern(pattern):
    """A CRD's (Go RE2) pattern as Python's re reads it: RE2 takes a flag group
    after `^` (`^(?i)(abort|warn)?$` in PrometheusRule), Python only at the
    start, where it means the same."""
    if pattern.startswith("^(?i)"):
        return "(?i)^" + pattern[len("^(?i)"):]
    return pattern


def strict(schema):
    """The schema with additionalProperties false wherever it lists properties
    and does not keep unknown fields: what the API server's pruning allows."""
    s = copy.deepcopy(schema)
    if isinstance(s, dict):
        for k, v in list(s.items()):
            if isinstance(v, (dict, list)):
                s[k] = strict(v)
        if isinstance(s.get("pattern"), str):
            s["pattern"] = python_pattern(s["pattern"])
        if "properties" in s and not s.get("x-kubernetes-preserve-unknown-fields"):
            s.setdefault("additionalProperties", False)
    elif isinstance(s, list):
        s = [strict(x) for x in s]
    return s


def crd_schemas():
    """(apiVersion, kind) -> strict JSON schema, for every served CRD version."""
    out = {}
    for path in CRD_FILES + SCHEMA_ONLY_CRD_FILES:
        for crd in yaml.safe_load_all(open(path)):
            if not crd:
                continue
            if crd.get("kind") != "CustomResourceDefinition":
                sys.exit(f"validate: {path}: a {crd.get('kind')}, not a CustomResourceDefinition")
            spec = crd["spec"]
            for v in spec["versions"]:
                if not v.get("served"):
                    continue
                schema = strict(v["schema"]["openAPIV3Schema"])
                # Object metadata is the API server's, not the CRD's.
                schema.setdefault("properties", {})["metadata"] = {"type": "object"}
                out[(f'{spec["group"]}/{v["name"]}', spec["names"]["kind"])] = schema
    return out


def schema_only_crd_names():
    return {crd["metadata"]["name"]
            for path in SCHEMA_ONLY_CRD_FILES
            for crd in yaml.safe_load_all(open(path)) if crd}


def main(paths):
    crds = crd_schemas()
    not_ours = schema_only_crd_names()
    errors = 0
    objects = 0
    for path in paths:
        for doc in yaml.safe_load_all(open(path)):
            if not doc:
                continue
            objects += 1
            what = f'{os.path.basename(path)}: {doc.get("kind")} {doc.get("metadata", {}).get("name")}'
            key = (doc.get("apiVersion"), doc.get("kind"))
            if doc.get("kind") == "CustomResourceDefinition" and doc.get("metadata", {}).get("name") in not_ours:
                print(f"NOT OURS {what}: vendored in hack/manifests/schemas/ for validation only; "
                      "it belongs to the cluster's Prometheus Operator and must not be rendered")
                errors += 1
            if key in crds:
                try:
                    jsonschema.validate(doc, crds[key])
                except jsonschema.ValidationError as e:
                    print(f"INVALID {what}: {'.'.join(map(str, e.path))}: {e.message}")
                    errors += 1
                continue
            for version in VERSIONS:
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                except SchemaNotFoundError:
                    print(f"UNKNOWN {what}: no schema for {key[0]} {key[1]} in Kubernetes {version}")
                    errors += 1
                except ValidationError as e:
                    print(f"INVALID {what} (Kubernetes {version}): {'.'.join(map(str, e.path))}: {e.message}")
                    errors += 1
    print(f"validate: {objects} objects in {len(paths)} renderings, Kubernetes {VERSIONS[0]}-{VERSIONS[-1]} (strict): {errors} error(s)")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
