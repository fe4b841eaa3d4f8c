"""Alert rules, the Alertmanager example and the Grafana dashboard name only metrics the
code exports and updates, and no series carries an org label."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from orzbob.kit import metrics

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
RUNBOOK_BASE = "https://github.com/orzbob/orzbob-billing/blob/main/"
METRIC = re.compile(r"\borzbob_[a-z0-9_]+")
ORG_LABELS = {"org", "org_id", "organization", "organization_id", "customer", "customer_id"}
HIGH_CARDINALITY = ORG_LABELS | {"instance_id", "record_id", "email", "user", "token", "path"}


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((MONITORING / "prometheus-rules.yaml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    dash = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    return [t["expr"] for p in dash["panels"] for t in p["targets"]]


def collectors() -> dict[str, tuple[str, MetricWrapperBase]]:
    """Every exposed sample name -> (python name in kit.metrics, collector)."""
    out = {}
    for attr, value in vars(metrics).items():
        if not isinstance(value, MetricWrapperBase):
            continue
        base = value._name
        kind = value._type
        names = {
            "counter": [f"{base}_total"],
            "gauge": [base],
            "histogram": [f"{base}_bucket", f"{base}_sum", f"{base}_count"],
        }[kind]
        for name in names:
            out[name] = (attr, value)
    return out


def updated_in_source(attr: str) -> bool:
    """Some module other than the registry sets or increments it."""
    pattern = re.compile(rf"(\bmetrics|\bm)\.{attr}\b|import [^\n]*\b{attr}\b")
    for path in (ROOT / "src" / "orzbob").rglob("*.py"):
        if path.name == "metrics.py" and path.parent.name == "kit":
            continue
        if pattern.search(path.read_text()):
            return True
    return False


def named_metrics() -> set[str]:
    exprs = [r["expr"] for r in rules()] + dashboard_exprs()
    return {m for e in exprs for m in METRIC.findall(e)}


@pytest.mark.parametrize("name", sorted(named_metrics()))
def test_every_metric_named_is_exported_and_updated_by_the_code(name: str) -> None:
    exported = collectors()
    assert name in exported, f"{name} is named in deploy/monitoring but not exported"
    attr, _ = exported[name]
    assert updated_in_source(attr), f"{name} is exported but nothing ever updates it"


def test_no_series_carries_an_org_or_other_unbounded_label() -> None:
    for _, collector in collectors().values():
        labels = set(collector._labelnames)
        assert not labels & HIGH_CARDINALITY, (collector._name, labels)
    for expr in [r["expr"] for r in rules()] + dashboard_exprs():
        assert not re.search(r"\b(org|org_id|organization|customer)\b", expr), expr


def test_every_alert_has_a_severity_and_a_runbook_section_that_exists() -> None:
    for rule in rules():
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        url = rule["annotations"]["runbook_url"]
        assert url.startswith(RUNBOOK_BASE), url
        path, _, anchor = url.removeprefix(RUNBOOK_BASE).partition("#")
        text = (ROOT / path).read_text()
        slugs = {slug(h) for h in re.findall(r"^#+\s+(.+)$", text, re.M)}
        assert anchor in slugs, f"{rule['alert']}: no heading for #{anchor} in {path}"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_the_money_path_is_covered() -> None:
    exprs = {r["alert"]: r["expr"] for r in rules()}
    wanted = {
        "orzbob_usage_meter_queue": "the usage queue growing",
        "orzbob_usage_meter_oldest_unsent_seconds": "oldest unsent record",
        "orzbob_usage_meter_failures_total": "flush error ratio",
        "orzbob_usage_meter_dead_records": "records dead-lettered",
        "orzbob_alerts_failed_total": "alert e-mails failing",
        "orzbob_alerts_unsent": "alert e-mails piling up",
        "orzbob_polar_webhooks_total": "webhook deliveries failing",
        "orzbob_cap_sweep_last_success_timestamp_seconds": "the sweep not completing",
        'orzbob_reconcile_drift_minutes{scope="closed_period"}': "drift at period close",
        'orzbob_http_requests_total{status="5xx"}': "the API error rate",
    }
    for needle, what in wanted.items():
        assert any(needle in e for e in exprs.values()), what
    oldest = exprs["OrzbobOldestUnsentUsage"]
    assert "> 600" in oldest  # ten minutes


def test_alertmanager_pages_critical_alerts_with_a_key_from_a_secret() -> None:
    config = yaml.safe_load((MONITORING / "alertmanager.example.yaml").read_text())
    receivers = {r["name"]: r for r in config["receivers"]}
    assert "email_configs" in receivers[config["route"]["receiver"]]
    [page] = [r for r in config["route"]["routes"] if 'severity="critical"' in r["matchers"]]
    [pd] = receivers[page["receiver"]]["pagerduty_configs"]
    assert "routing_key" not in pd and "service_key" not in pd
    secret = yaml.safe_load((MONITORING / "alertmanager-pagerduty.secret.yaml").read_text())
    name, [key] = secret["metadata"]["name"], list(secret["stringData"])
    assert pd["routing_key_file"].endswith(f"/{name}/{key}")
    severities = {r["labels"]["severity"] for r in rules()}
    assert severities == {"critical", "warning"}


def test_the_dashboard_is_grafana_json_with_one_query_per_panel() -> None:
    dash = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    assert dash["uid"] and dash["panels"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        assert panel["targets"] and all(t["expr"] for t in panel["targets"])
