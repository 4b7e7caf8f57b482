"""monitoring/alerts.yml and monitoring/grafana-dashboard.json: valid, and every metric they name
is one the scheduler really exports (scheduler/metrics.py), every runbook link lands on a heading
of docs/runbook.md.

promtool (Debian package `prometheus`) checks the rules and runs the rule unit tests in
alerts_test.yml when it is installed; the structural checks run everywhere.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from scheduler.metrics import NodeMetrics

REPO = Path(__file__).resolve().parents[3]
ALERTS = REPO / "monitoring" / "alerts.yml"
DASHBOARD = REPO / "monitoring" / "grafana-dashboard.json"
PROMETHEUS_CFG = REPO / "monitoring" / "prometheus.yml"
RUNBOOK = REPO / "docs" / "runbook.md"
HERE = Path(__file__).resolve().parent

# Names that are not luigi-ha's but Prometheus' own (the scrape health series).
PROMETHEUS_BUILTINS = {"up"}
# PromQL words that look like identifiers.
PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "by", "without", "on", "ignoring", "group_left", "group_right", "and",
    "or", "unless", "rate", "increase", "irate", "delta", "histogram_quantile", "absent", "changes", "le",
    "offset", "bool", "topk", "bottomk", "vector", "scalar", "time", "resets", "label_values",
}


def _load_yaml(path: Path):
    yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read the alert rules")
    return yaml.safe_load(path.read_text())


def exported_metric_names() -> set[str]:
    """Every sample name NodeMetrics exposes, with every labelled child created first."""
    metrics = NodeMetrics(lambda: {"PENDING": 1, "RUNNING": 1, "DONE": 1})
    for family_metric in (metrics.task_started, metrics.task_done, metrics.task_failed, metrics.task_disabled,
                          metrics.execution_time, metrics.tasks_success, metrics.tasks_failed):
        family_metric.labels(family="F")
    metrics.rpc_seconds.labels(method="ping")
    metrics.rpc_errors.labels(method="ping", code="500")
    metrics.stepdowns.labels(reason="switchover")
    body, _ = metrics.exposition()
    names = set()
    for line in body.decode().splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])  # the family name (counters: without _total)
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def referenced_metrics(expr: str) -> set[str]:
    expr = re.sub(r'"[^"]*"', '""', expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)  # label lists
    idents = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b", expr))
    return {i for i in idents if i not in PROMQL_WORDS and not i.startswith("__")}


def _rules() -> list[dict]:
    doc = _load_yaml(ALERTS)
    return [rule for group in doc["groups"] for rule in group["rules"]]


def _dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [a["expr"] for a in dash["annotations"]["list"] if "expr" in a]
    return exprs


def test_exported_names_cover_the_documented_list() -> None:
    names = exported_metric_names()
    documented = {
        "luigi_task_started_total", "luigi_task_done_total", "luigi_task_failed_total", "luigi_task_disabled_total",
        "luigi_task_execution_time_seconds", "luigi_tasks_success_total", "luigi_tasks_failed_total",
        "luigi_task_running", "luigi_pending_tasks", "luigi_ha_tasks", "luigi_ha_rpc_duration_seconds_bucket",
        "luigi_ha_rpc_errors_total", "luigi_ha_commit_duration_seconds_bucket", "luigi_ha_commit_batch_requests_count",
        "luigi_ha_is_leader", "luigi_ha_lease_epoch", "luigi_ha_takeovers_total", "luigi_ha_stepdowns_total",
        "luigi_ha_lease_renew_duration_seconds_bucket", "luigi_ha_seconds_since_renew",
        "luigi_ha_takeover_load_seconds",
    }
    assert documented <= names, documented - names


def test_alert_rules_are_complete() -> None:
    rules = _rules()
    assert len(rules) >= 10
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)), names
    for rule in rules:
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]
        assert rule["annotations"]["runbook"].startswith("docs/runbook.md#"), rule["alert"]
    # What the brief asked for, by the expressions that implement it.
    exprs = {r["alert"]: " ".join(r["expr"].split()) for r in rules}
    assert "increase(luigi_tasks_failed_total[5m])) > 0" in exprs["LuigiTaskFailed"]
    assert exprs["LuigiHANoLeader"].startswith("sum(luigi_ha_is_leader) == 0")
    assert exprs["LuigiHAMultipleLeaders"] == "sum(luigi_ha_is_leader) > 1"
    assert exprs["LuigiHALeadershipFlapping"] == "sum(increase(luigi_ha_takeovers_total[15m])) > 3"


def test_every_metric_in_the_alerts_is_exported() -> None:
    exported = exported_metric_names() | PROMETHEUS_BUILTINS
    for rule in _rules():
        missing = referenced_metrics(rule["expr"]) - exported
        assert not missing, (rule["alert"], missing)


def test_every_metric_in_the_dashboard_is_exported() -> None:
    exported = exported_metric_names() | PROMETHEUS_BUILTINS
    exprs = _dashboard_exprs()
    assert len(exprs) >= 15
    for expr in exprs:
        missing = referenced_metrics(expr.replace("$__rate_interval", "5m")) - exported
        assert not missing, (expr, missing)


def test_dashboard_is_importable_json() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 30
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "instance"} <= variables
    for panel in dash["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], panel["title"]


def _github_anchor(heading: str) -> str:
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def test_runbook_links_resolve() -> None:
    anchors = {_github_anchor(m) for m in re.findall(r"^#+ (.+)$", RUNBOOK.read_text(), re.M)}
    for rule in _rules():
        anchor = rule["annotations"]["runbook"].split("#", 1)[1]
        assert anchor in anchors, (rule["alert"], anchor)
    # Every alert is named in the runbook.
    text = RUNBOOK.read_text()
    for rule in _rules():
        assert rule["alert"] in text, rule["alert"]


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (Debian package: prometheus, --no-install-recommends)")
    return path


def test_promtool_check_rules(promtool: str) -> None:
    result = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


def test_promtool_check_example_config(promtool: str) -> None:
    result = subprocess.run([promtool, "check", "config", str(PROMETHEUS_CFG)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests(promtool: str) -> None:
    """alerts_test.yml: the alerts fire (and stay quiet) on synthetic series as intended."""
    result = subprocess.run([promtool, "test", "rules", "alerts_test.yml"], cwd=HERE, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
