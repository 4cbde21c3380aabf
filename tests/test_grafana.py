"""examples/grafana/prngd.json: every metric its queries name is one a running daemon exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import ROOT, egd_read
from prngd import admin, config

DASHBOARD = ROOT / "examples" / "grafana" / "prngd.json"
# PromQL functions and aggregations the dashboard may call, and its keywords.
FUNCTIONS = {"rate", "irate", "increase", "sum", "max", "min", "avg", "count", "time", "delta",
             "deriv", "clamp_min", "topk"}
KEYWORDS = {"and", "or", "unless", "offset", "bool"}
SCRAPE_LABELS = {"instance", "job"}  # added by Prometheus, not by the daemon


def panels(items: list) -> list:
    out = []
    for p in items:
        out.append(p)
        out += panels(p.get("panels", []))  # rows may hold panels
    return out


def expressions(dash: dict) -> list[str]:
    """Every PromQL expression: the panels' queries, and the selectors of label_values() variables."""
    exprs = [t["expr"] for p in panels(dash["panels"]) for t in p.get("targets", [])]
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            # Grafana's label_values(SELECTOR, LABEL): the selector is PromQL, the label a scrape label here.
            m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
            assert m and m.group(2) in SCRAPE_LABELS, f"unexpected variable query {query!r}"
            exprs.append(m.group(1))
    return exprs


def metric_names(expr: str) -> set[str]:
    """The series names an expression selects, checking that every other word is a function or keyword."""
    bare = re.sub(r'"[^"]*"', '""', expr)
    bare = re.sub(r"\{[^}]*\}", "", bare)
    bare = re.sub(r"\[[^\]]*\]", "", bare)
    bare = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", bare)
    bare = re.sub(r"\$\{?\w+\}?", "", bare)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", bare):
        word = m.group()
        called = bare[m.end():].lstrip().startswith("(")
        if called:
            assert word in FUNCTIONS, f"{expr}: unknown function {word}"
        elif word not in KEYWORDS:
            assert word.startswith("prngd_"), f"{expr}: {word} is not a prngd metric"
            names.add(word)
    return names


def selector_labels(expr: str) -> dict[str, set[str]]:
    return {m.group(1): {lm.group(1) for lm in re.finditer(r"(\w+)\s*=~?", m.group(2))}
            for m in re.finditer(r"(prngd_\w+)\{([^}]*)\}", expr)}


@pytest.fixture(scope="module")
def dash() -> dict:
    return json.loads(DASHBOARD.read_text())


def test_the_dashboard_is_well_formed(dash):
    all_panels = panels(dash["panels"])
    ids = [p["id"] for p in all_panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 30
    variables = {v["name"] for v in dash["templating"]["list"]}
    for p in all_panels:
        assert p["title"] and {"h", "w", "x", "y"} <= set(p["gridPos"])
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        for t in p.get("targets", []):
            assert t["refId"] and t["expr"]
            assert t["datasource"]["uid"] == "${datasource}", "queries go to the chosen data source"
            for used in re.findall(r"\$\{?(\w+)\}?", t["expr"]):
                assert used in variables or used.startswith("__"), f"{t['expr']}: no variable {used}"
    assert len([p for p in all_panels if p.get("targets")]) >= 10


def test_the_name_check_catches_a_foreign_or_unknown_word():
    assert metric_names('sum by (command) (rate(prngd_requests_total{instance=~"$i"}[$__rate_interval]))') == \
        {"prngd_requests_total"}
    with pytest.raises(AssertionError):
        metric_names("rate(node_entropy_available_bits[5m])")
    with pytest.raises(AssertionError):
        metric_names("histogram_quantile(0.99, prngd_x)")


def test_every_metric_the_dashboard_uses_is_exported(start_daemon, tmp_path, dash):
    # A seed file and an exchange file, so their metrics are exported too.
    d = start_daemon(config=f"[exchange]\nexchange_file = {tmp_path / 'exch'}\n", seed=tmp_path / "seed")
    egd_read(d.socket, 32)
    code, _, body = admin.parse_response(admin.request(config.admin_socket_for(d.socket), "/metrics"))
    assert code == 200
    exported: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            exported.setdefault(sample.name, set()).update(sample.labels)

    used = set()
    for expr in expressions(dash):
        used |= metric_names(expr)
        for name, labels in selector_labels(expr).items():
            assert name in exported, f"{expr}: {name} is not exported"
            assert labels <= exported[name] | SCRAPE_LABELS, f"{expr}: {name} has no label {labels - exported[name]}"
    missing = used - set(exported)
    assert not missing, f"the dashboard uses metrics the daemon does not export: {sorted(missing)}"
    # What the issue asks the dashboard to show.
    for wanted in ("prngd_entropy_bits", "prngd_requests_total", "prngd_connections",
                   "prngd_connections_rejected_total", "prngd_reseeds_total", "prngd_seed_saves_total",
                   "prngd_seed_save_failures_total"):
        assert wanted in used, f"the dashboard does not show {wanted}"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Prometheus) is not installed")
def test_promtool_parses_every_query(dash, tmp_path):
    """The expressions are valid PromQL once Grafana has put in its variables (promtool check rules)."""
    rules = []
    for i, expr in enumerate(expressions(dash)):
        concrete = expr.replace("$__rate_interval", "2m").replace("$instance", ".*")
        assert "$" not in concrete, f"{expr}: a variable this test does not fill in"
        rules.append(f"      - record: prngd:dashboard_query_{i}\n        expr: {json.dumps(concrete)}\n")
    path = tmp_path / "dashboard-queries.yml"
    path.write_text("groups:\n  - name: prngd-dashboard\n    rules:\n" + "".join(rules))
    out = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(rules)} rules found" in out.stdout + out.stderr
