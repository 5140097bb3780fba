"""The test-sized copy of the alert rules keeps every alert and only shortens its windows."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.metrics.prometheus_server import (
    RULES,
    RulesNotCompressed,
    check_same_alerts,
    compressed_rules,
    duration_s,
    rule_windows,
)


def _rules(text: str) -> list[dict[str, object]]:
    return [rule for group in yaml.safe_load(text)["groups"] for rule in group["rules"]]


def test_every_alert_survives_with_its_windows_divided_and_floored() -> None:
    original = RULES.read_text()
    copy = compressed_rules(original, factor=120, floor_s=10)
    before, after = _rules(original), _rules(copy)
    assert [r["alert"] for r in after] == [r["alert"] for r in before]
    assert len(after) >= 16
    for old, new in zip(before, after, strict=True):
        assert new["labels"] == old["labels"]
        assert new["annotations"] == old["annotations"]
        assert ("for" in new) == ("for" in old)
        if "for" in old:
            assert duration_s(str(new["for"])) == max(duration_s(str(old["for"])) / 120, 10)
    windows = rule_windows(copy)
    # 15m for + [30m] ranges: 7.5 s floored to 10 s, and 15 s
    assert windows["FluxfarmWebhooksLost"] == 25
    assert windows["FluxfarmQueueBacklog"] == 10
    assert windows["FluxfarmResultNotStoredNearExpiry"] == 0
    assert rule_windows(original)["FluxfarmWebhooksLost"] == 45 * 60


def test_ranges_subqueries_and_offsets_are_all_compressed() -> None:
    rules = """groups:
  - name: g
    rules:
      - alert: A
        expr: rate(x[1h]) > 0 and max_over_time(y[30m:1m]) > 0 and z offset 2h > 0 and w[10m:]
        for: 1h30m
"""
    (rule,) = _rules(compressed_rules(rules, factor=60, floor_s=2))
    assert rule["expr"] == (
        "rate(x[60000ms]) > 0 and max_over_time(y[30000ms:2000ms]) > 0"
        " and z offset 120000ms > 0 and w[10000ms:]"
    )
    assert rule["for"] == "90000ms"


def test_a_copy_that_lost_or_changed_an_alert_is_refused() -> None:
    original = RULES.read_text()
    loaded = yaml.safe_load(compressed_rules(original, factor=120, floor_s=10))
    rules = loaded["groups"][0]["rules"]
    dropped = rules.pop()
    with pytest.raises(RulesNotCompressed, match=dropped["alert"]):
        check_same_alerts(original, yaml.safe_dump(loaded))
    rules.append(dropped | {"expr": "vector(1)"})
    with pytest.raises(RulesNotCompressed, match=dropped["alert"]):
        check_same_alerts(original, yaml.safe_dump(loaded))


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool comes with prometheus")
def test_the_copy_is_a_valid_rule_file(tmp_path: Path) -> None:
    path = tmp_path / "alerts.yml"
    path.write_text(compressed_rules(RULES.read_text(), factor=120, floor_s=10))
    check = subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(_rules(RULES.read_text()))} rules found" in check.stdout
