"""A real Prometheus server (Debian's /usr/bin/prometheus) scraping given targets and
evaluating our alert rules, for tests; `compressed_rules` makes their clocks test-sized."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import yaml

from fluxfarm.processes import free_port

RULES = Path(__file__).resolve().parents[2] / "ops" / "prometheus" / "alerts.yml"
SCRAPE_INTERVAL_S = 1.0

# a duration literal of PromQL and of the rule file: 1h30m, 5m, 90s, 500ms
_UNITS_MS = {"y": 365 * 86_400_000, "w": 7 * 86_400_000, "d": 86_400_000, "h": 3_600_000,
             "m": 60_000, "s": 1_000, "ms": 1}  # fmt: skip
_DURATION = re.compile(r"(?:\d+(?:ms|[ywdhms]))+")
_PART = re.compile(r"(\d+)(ms|[ywdhms])")
# a range selector or subquery ([10m], [30m:], [30m:1m]), and an offset
_RANGE = re.compile(r"\[(" + _DURATION.pattern + r")(:(" + _DURATION.pattern + r")?)?\]")
_OFFSET = re.compile(r"\boffset\s+(" + _DURATION.pattern + r")")
# the rule keys that hold a duration
_DURATION_KEYS = ("for", "keep_firing_for")


class RulesNotCompressed(ValueError):
    """The compressed copy of a rule file would not hold the same alerts as the original."""


def duration_s(text: str) -> float:
    """Seconds in a Prometheus duration (`1h30m`, `7500ms`)."""
    if not _DURATION.fullmatch(text):
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(int(n) * _UNITS_MS[unit] for n, unit in _PART.findall(text)) / 1000


def _compressed(text: str, factor: float, floor_s: float) -> str:
    return f"{round(max(duration_s(text) / factor, floor_s) * 1000)}ms"


def _compressed_range(match: re.Match[str], factor: float, floor_s: float) -> str:
    window, colon, step = match.groups()
    step_text = _compressed(step, factor, floor_s) if step else ""
    return f"[{_compressed(window, factor, floor_s)}{':' if colon else ''}{step_text}]"


def compressed_rules(rules: str, factor: float, floor_s: float) -> str:
    """The rule file with every time window divided by `factor`: each `for:` and each
    range (and subquery) selector of each expression, none shorter than `floor_s`.

    Thresholds stay as they are: the test must meet the rule's real condition, only
    sooner. Raises RulesNotCompressed unless the copy has every alert of the original, in
    order, with the same labels, annotations and expression apart from its windows.
    """
    copy = yaml.safe_load(rules)
    for group in copy["groups"]:
        for rule in group["rules"]:
            for key in _DURATION_KEYS:
                if key in rule:
                    rule[key] = _compressed(str(rule[key]), factor, floor_s)
            rule["expr"] = _OFFSET.sub(
                lambda m: f"offset {_compressed(m.group(1), factor, floor_s)}",
                _RANGE.sub(lambda m: _compressed_range(m, factor, floor_s), rule["expr"]),
            )
    text = str(yaml.safe_dump(copy, sort_keys=False))
    check_same_alerts(rules, text)
    return text


def check_same_alerts(original: str, copy: str) -> None:
    """Raises RulesNotCompressed unless `copy` has the alerts of `original`, in order, each
    the same but for the durations in its expression."""

    def shape(text: str) -> list[tuple[str, str, str, str]]:
        rules = yaml.safe_load(text)
        return [
            (
                str(rule.get("alert")),
                json.dumps(rule.get("labels"), sort_keys=True),
                json.dumps(rule.get("annotations"), sort_keys=True),
                _OFFSET.sub("offset", _RANGE.sub("[]", rule["expr"])),
            )
            for group in rules["groups"]
            for rule in group["rules"]
        ]

    before, after = shape(original), shape(copy)
    if before != after:
        changed = sorted(
            {a[0] for a in before} ^ {a[0] for a in after}
            or {a[0] for a, b in zip(before, after, strict=False) if a != b}
        )
        raise RulesNotCompressed(f"the compressed rules differ from the original: {changed}")


def rule_windows(rules: str) -> dict[str, float]:
    """Each alert's own delay in seconds: its `for:` plus its longest range selector, the
    time its condition takes to show and to hold."""
    windows: dict[str, float] = {}
    for group in yaml.safe_load(rules)["groups"]:
        for rule in group["rules"]:
            ranges = [duration_s(m.group(1)) for m in _RANGE.finditer(rule["expr"])]
            held = duration_s(str(rule["for"])) if "for" in rule else 0.0
            windows[rule["alert"]] = held + max(ranges, default=0.0)
    return windows


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


def _config(jobs: list[str], rules: Path, workdir: Path, bearer_token: str | None) -> str:
    """Scrape config: one job per target group, its targets read from a file that
    `Prometheus.set_targets` rewrites while the server runs; `bearer_token` sent with every
    scrape (web's FLUXFARM_OPS_TOKEN on a non-loopback bind)."""
    lines = [
        "global:",
        f"  scrape_interval: {SCRAPE_INTERVAL_S:g}s",
        f"  evaluation_interval: {SCRAPE_INTERVAL_S:g}s",
        f"rule_files: ['{rules}']",
        "scrape_configs:",
    ]
    for job in jobs:
        lines += [
            f"  - job_name: {job}",
            "    file_sd_configs:",
            f"      - files: ['{_targets_file(workdir, job)}']",
            "        refresh_interval: 1s",
        ]
        if bearer_token is not None:
            lines += ["    authorization:", f"      credentials: '{bearer_token}'"]
    return "\n".join(lines) + "\n"


def _targets_file(workdir: Path, job: str) -> Path:
    return workdir / f"targets-{job}.json"


class Prometheus:
    def __init__(self, url: str, workdir: Path) -> None:
        self.url = url
        self.workdir = workdir
        self.started = time.monotonic()

    def set_targets(self, job: str, urls: list[str]) -> None:
        """Scrape exactly these metrics URLs as `job` from now on (file discovery)."""
        path = _targets_file(self.workdir, job)
        staged = path.with_suffix(".tmp")
        staged.write_text(json.dumps([{"targets": [urlsplit(url).netloc for url in urls]}]))
        staged.replace(path)  # whole, or Prometheus may read half a file

    def query(self, promql: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5)
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()["data"]["result"]
        return result

    def scalar(self, promql: str) -> float | None:
        found = self.query(promql)
        return float(found[0]["value"][1]) if found else None

    def wait_for(self, promql: str, expected: float, timeout: float = 60) -> float | None:
        """Poll until `promql` equals `expected` (scrapes lag); returns the last value."""
        deadline = time.monotonic() + timeout
        value = self.scalar(promql)
        while value != expected and time.monotonic() < deadline:
            time.sleep(0.5)
            value = self.scalar(promql)
        return value

    def active_alerts(self) -> dict[str, str]:
        """Alerts pending or firing now, by name: their state."""
        response = httpx.get(f"{self.url}/api/v1/alerts", timeout=5)
        response.raise_for_status()
        active: dict[str, str] = {}
        for alert in response.json()["data"]["alerts"]:
            name = alert["labels"]["alertname"]
            if active.get(name) != "firing":
                active[name] = alert["state"]
        return active

    def raised(self, state: str = "firing") -> list[str]:
        """Every alert that was in `state` at some point since the server started."""
        since = f"{int(time.monotonic() - self.started) + 1}s"
        found = self.query(
            f'count by (alertname) (count_over_time(ALERTS{{alertstate="{state}"}}[{since}]))'
        )
        return sorted(series["metric"]["alertname"] for series in found)


@contextmanager
def running_prometheus(
    workdir: Path,
    targets: dict[str, list[str]],
    rules: str | None = None,
    bearer_token: str | None = None,
) -> Iterator[Prometheus]:
    """Prometheus scraping `targets` (job -> metrics URLs), with `bearer_token` if given,
    and evaluating `rules` (the text of a rule file; ops/prometheus/alerts.yml by
    default)."""
    binary = prometheus_binary()
    assert binary is not None, "install Debian's prometheus package (ops/services.sh does)"
    workdir.mkdir(parents=True, exist_ok=True)
    rule_file = workdir / "alerts.yml"
    rule_file.write_text(RULES.read_text() if rules is None else rules)
    config = workdir / "prometheus.yml"
    config.write_text(_config(list(targets), rule_file, workdir, bearer_token))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = Prometheus(url, workdir)
    for job, urls in targets.items():
        server.set_targets(job, urls)
    log = (workdir / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, (workdir / "prometheus.log").read_text()
            assert time.monotonic() < deadline, "prometheus not ready after 30 s"
            time.sleep(0.1)
        server.started = time.monotonic()
        yield server
    finally:
        process.terminate()
        process.wait(15)
        log.close()
