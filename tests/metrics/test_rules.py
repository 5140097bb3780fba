"""The alert rules pass their promtool tests, and every expression names a metric we export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from farmweb.gauges import exported_metric_names

OPS = Path(__file__).resolve().parents[2] / "ops"
ALERTS = OPS / "prometheus" / "alerts.yml"
DASHBOARD = OPS / "grafana" / "dashboard.json"
# series Prometheus itself provides
BUILTIN = {"up"}
_METRIC = re.compile(r"\b(fluxfarm_[a-z0-9_]+|up)\b(?!\s*\()")

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool comes with Debian's prometheus package"
)


def _alert_expressions() -> list[str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def _dashboard_expressions() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel["targets"]]


@needs_promtool
def test_alert_rules_are_valid_and_pass_their_promtool_tests() -> None:
    check = subprocess.run(
        ["promtool", "check", "rules", str(ALERTS)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    tests = sorted((OPS / "prometheus" / "tests").glob("*.yml"))
    assert tests
    run = subprocess.run(
        ["promtool", "test", "rules", *map(str, tests)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_every_alert_has_a_promtool_test() -> None:
    rules = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    tested = "".join(path.read_text() for path in (OPS / "prometheus" / "tests").glob("*.yml"))
    for rule in rules:
        assert f"alertname: {rule['alert']}" in tested, rule["alert"]


@pytest.mark.parametrize(
    "expressions",
    [_alert_expressions(), _dashboard_expressions()],
    ids=["alert rules", "dashboard"],
)
def test_every_expression_names_an_exported_metric(expressions: list[str]) -> None:
    exported = exported_metric_names() | BUILTIN
    assert expressions
    for expr in expressions:
        names = set(_METRIC.findall(expr))
        assert names, expr
        assert names <= exported, f"{expr}: {sorted(names - exported)} not exported"


def test_the_name_check_catches_a_misspelt_metric() -> None:
    assert "fluxfarm_jobs_finished_total" in exported_metric_names()
    assert "fluxfarm_job_duration_seconds_bucket" in exported_metric_names()
    assert "fluxfarm_jobs_finish_total" not in exported_metric_names()


def test_the_dashboard_shows_each_stage_spend_and_queue() -> None:
    text = " ".join(_dashboard_expressions())
    for name in [
        "fluxfarm_job_queue_wait_seconds_bucket",
        "fluxfarm_provider_submit_seconds_bucket",
        "fluxfarm_provider_generation_seconds_bucket",
        "fluxfarm_job_duration_seconds_bucket",
        "fluxfarm_job_failures_total",
        "fluxfarm_spend_usd_total",
        "fluxfarm_jobs_in_state",
        "fluxfarm_broker_queue_depth",
    ]:
        assert name in text, name
