#!/usr/bin/env python3
"""carve's metrics against their documentation, dashboard and alerts.

    check.py --scrapes DIR [--docs docs/metrics.md]
             [--dashboard deploy/grafana/carve.json]
             [--rules deploy/kubernetes/components/alerts]

DIR holds *.txt files, each the body of one /metrics scrape of carve (the
real-LVM tests save them). The check fails when

- DIR has no scrape, or a scrape is not valid OpenMetrics: every file goes
  through prometheus_client's strict OpenMetrics parser, whole;
- a metric of docs/metrics.md's tables (those whose first column is
  `metric`) appears in no scrape (as a family or a sample name), or a scrape
  exports a carve_ or process_ family the tables do not list;
- a query of the dashboard (every panel's targets, rows' nested panels
  included, the templating queries, annotation queries) or an expression of
  the alert rules (the PrometheusRule files of the alerts component; their
  annotations' templates too) does not parse as PromQL, or names a metric no
  scrape exported as a series: a sample name such as carve_rpc_requests_total
  or carve_rpc_duration_seconds_bucket (an OpenMetrics family name such as
  carve_rpc_requests is no series in Prometheus), or `up`;
- a dashboard query names no carve_ or process_ metric.

Needs hack/setup.sh's Python environment (prometheus-client, promql-parser,
PyYAML).
"""
import argparse
import glob
import json
import os
import re
import sys

import promql_parser
import yaml
from prometheus_client.openmetrics.parser import text_string_to_metric_families

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PREFIXES = ("carve_", "process_")
# Series Prometheus makes for every target itself.
SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped",
             "scrape_samples_post_metric_relabeling", "scrape_series_added"}
NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
# A carve_/process_ identifier not inside a longer identifier or after `$`.
PREFIXED = re.compile(r"(?<![a-zA-Z0-9_:$.])(?:carve_|process_)[a-zA-Z0-9_:]*")
STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
# Grafana's global variables in a query, and values that parse as PromQL.
GRAFANA_MACROS = [
    (re.compile(r"\$(?:__range_ms|\{__range_ms\})"), "300000"),
    (re.compile(r"\$(?:__range_s|\{__range_s\})"), "300"),
    (re.compile(r"\$(?:__interval_ms|\{__interval_ms\})"), "15000"),
    (re.compile(r"\$(?:__rate_interval|__interval|__range|\{__rate_interval\}|\{__interval\}|\{__range\})"), "5m"),
]


class Failures(list):
    def add(self, msg):
        self.append(msg)


def read_scrapes(directory, fail):
    """-> ({family name: (type, {sample names})}, {sample names}, scrape count)"""
    files = sorted(glob.glob(os.path.join(directory, "*.txt")))
    if not files:
        fail.add(f"no scrape: {directory} has no *.txt file")
    families, samples = {}, set()
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
            parsed = list(text_string_to_metric_families(text))
        except Exception as e:  # the parser raises ValueError and others
            fail.add(f"{path}: not valid OpenMetrics: {type(e).__name__}: {e}")
            continue
        if not parsed:
            fail.add(f"{path}: no metric family")
        for fam in parsed:
            kind, names = families.setdefault(fam.name, (fam.type, set()))
            for s in fam.samples:
                names.add(s.name)
                samples.add(s.name)
    return families, samples, len(files)


def documented(path, fail):
    """Backticked names in the first column of tables headed `| metric |`."""
    names = {}
    in_table = False
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for no, line in enumerate(lines, 1):
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.lstrip().startswith("|") else None
        if cells is None:
            in_table = False
            continue
        if not in_table:
            in_table = cells[0].lower() == "metric"
            continue
        if set(cells[0]) <= set("-: "):
            continue  # the separator row
        m = re.fullmatch(rf"`({NAME})`", cells[0])
        if not m:
            fail.add(f"{path}:{no}: first column {cells[0]!r} is not one backticked metric name")
            continue
        names[m.group(1)] = no
    if not names:
        fail.add(f"{path}: no table headed `| metric |`: nothing to check the scrapes against")
    return names


def grafana_to_promql(expr):
    for pattern, value in GRAFANA_MACROS:
        expr = pattern.sub(value, expr)
    return expr


def names_in(expr):
    """Metric names a PromQL expression selects (raises ValueError when it
    does not parse), plus every carve_/process_ identifier outside strings."""
    tree = promql_parser.parse(expr)
    names, nameless = set(), []

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector):
            name = node.name
            if not name:
                eq = [m.value for m in node.matchers.matchers
                      if m.name == "__name__" and m.op == promql_parser.MatchOp.Equal]
                name = eq[0] if eq else None
            if name:
                names.add(name)
            else:
                nameless.append(str(node))

    promql_parser.walk(tree, visit)
    if nameless:
        raise ValueError(f"selector {nameless[0]} names no metric plainly")
    names |= set(PREFIXED.findall(STRINGS.sub('""', expr)))
    return names


def dashboard_queries(path, fail):
    """[(where, expr, is_panel_query)] of a Grafana dashboard."""
    with open(path, encoding="utf-8") as f:
        dash = json.load(f)
    out = []

    def panels(items, parent=""):
        for p in items or []:
            where = f"{parent}panel {p.get('title', '')!r} (id {p.get('id')})"
            if p.get("type") == "row":
                panels(p.get("panels"), f"row {p.get('title', '')!r} / ")
                continue
            exprs = [t for t in p.get("targets", []) if t.get("expr")]
            if not exprs:
                fail.add(f"{path}: {where} has no query")
            for t in exprs:
                out.append((f"{where} query {t.get('refId')}", t["expr"], True))
            panels(p.get("panels"), where + " / ")

    panels(dash.get("panels"))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query", "") if isinstance(q, dict) else (q or "")
        where = f"variable ${v.get('name')}"
        m = re.fullmatch(rf"\s*(?:label_values\((.*),\s*{NAME}\s*\)|query_result\((.*)\))\s*", q, re.S)
        if not m:
            fail.add(f"{path}: {where}: {q!r} is not label_values(QUERY, LABEL) or query_result(QUERY)")
            continue
        out.append((where, m.group(1) or m.group(2), True))
    for a in dash.get("annotations", {}).get("list", []):
        if a.get("expr"):
            out.append((f"annotation {a.get('name')!r}", a["expr"], False))
    if not out:
        fail.add(f"{path}: no query")
    return out


def rule_expressions(directory, fail):
    """[(where, expr)] and [(where, template)] of the PrometheusRules there."""
    exprs, templates = [], []
    files = sorted(glob.glob(os.path.join(directory, "*.yaml")) + glob.glob(os.path.join(directory, "*.yml")))
    for path in files:
        with open(path, encoding="utf-8") as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        for d in docs:
            if d.get("kind") != "PrometheusRule":
                continue
            for g in d.get("spec", {}).get("groups", []):
                for r in g.get("rules", []):
                    where = f"{os.path.basename(path)}: group {g.get('name')} " + (
                        f"alert {r['alert']}" if "alert" in r else f"record {r.get('record')}")
                    exprs.append((where, str(r.get("expr", ""))))
                    for k, v in (r.get("annotations") or {}).items():
                        templates.append((f"{where} annotation {k}", str(v)))
    if not exprs:
        fail.add(f"{directory}: no PrometheusRule with rules")
    return exprs, templates


def check_names(where, names, samples, families, fail):
    for n in sorted(names):
        if n in samples or n in SYNTHETIC:
            continue
        if n in families:
            fail.add(f"{where}: names {n}, an OpenMetrics family, which is no series in Prometheus: "
                     f"use one of {sorted(families[n][1])}")
        else:
            fail.add(f"{where}: names {n}, which no scrape exported")


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scrapes", required=True, help="directory of *.txt /metrics bodies")
    ap.add_argument("--docs", default=os.path.join(REPO, "docs/metrics.md"))
    ap.add_argument("--dashboard", default=os.path.join(REPO, "deploy/grafana/carve.json"))
    ap.add_argument("--rules", default=os.path.join(REPO, "deploy/kubernetes/components/alerts"))
    args = ap.parse_args(argv)
    fail = Failures()

    families, samples, scrapes = read_scrapes(args.scrapes, fail)
    exported = set(families) | samples

    docs = documented(args.docs, fail)
    missing = sorted(n for n in docs if n not in exported)
    if scrapes and missing:
        fail.add(f"documented in {os.path.relpath(args.docs, REPO)} but in no scrape: " + ", ".join(
            f"{n} (line {docs[n]})" for n in missing))
    undocumented = sorted(
        f for f, (_, names) in families.items()
        if f.startswith(PREFIXES) and f not in docs and not (names & set(docs)))
    if undocumented:
        fail.add(f"exported but not in {os.path.relpath(args.docs, REPO)}'s tables: {', '.join(undocumented)}")

    queries = dashboard_queries(args.dashboard, fail)
    for where, expr, must_name_carve in queries:
        where = f"{os.path.relpath(args.dashboard, REPO)}: {where}"
        try:
            names = names_in(grafana_to_promql(expr))
        except ValueError as e:
            fail.add(f"{where}: {expr!r} is not PromQL: {e}")
            continue
        if must_name_carve and not any(n.startswith(PREFIXES) for n in names):
            fail.add(f"{where}: {expr!r} names no carve_ or process_ metric")
        check_names(where, names, samples, families, fail)

    exprs, templates = rule_expressions(args.rules, fail)
    for where, expr in exprs:
        try:
            names = names_in(expr)
        except ValueError as e:
            fail.add(f"{where}: {expr!r} is not PromQL: {e}")
            continue
        check_names(where, names, samples, families, fail)
    for where, text in templates:
        # Queries inside Go templates ({{ query "..." }}): carve_ names only.
        check_names(where, set(PREFIXED.findall(text)), samples, families, fail)

    for f in fail:
        print("METRICS", f)
    if fail:
        print(f"metrics: {len(fail)} failure(s)")
        return 1
    print(f"metrics: {scrapes} scrapes parse as OpenMetrics ({len(families)} families); "
          f"all {len(docs)} documented metrics exported; {len(queries)} dashboard queries and "
          f"{len(exprs)} alert expressions name only exported series: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
