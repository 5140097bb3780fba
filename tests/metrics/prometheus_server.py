"""A real Prometheus server (Debian's /usr/bin/prometheus) scraping given targets, for tests."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from fluxfarm.processes import free_port

RULES = Path(__file__).resolve().parents[2] / "ops" / "prometheus" / "alerts.yml"


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


def _config(targets: dict[str, list[str]]) -> str:
    """Scrape config: one job per target group, every metrics URL as its own target."""
    lines = [
        "global:",
        "  scrape_interval: 1s",
        "  evaluation_interval: 1s",
        f"rule_files: ['{RULES}']",
        "scrape_configs:",
    ]
    for job, urls in targets.items():
        lines += [f"  - job_name: {job}", "    static_configs:", "      - targets:"]
        lines += [f"          - '{urlsplit(url).netloc}'" for url in urls]
    return "\n".join(lines) + "\n"


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

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


@contextmanager
def running_prometheus(workdir: Path, targets: dict[str, list[str]]) -> Iterator[Prometheus]:
    binary = prometheus_binary()
    assert binary is not None, "install Debian's prometheus package (ops/services.sh does)"
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(_config(targets))
    port = free_port()
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
    url = f"http://127.0.0.1:{port}"
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
        yield Prometheus(url)
    finally:
        process.terminate()
        process.wait(15)
        log.close()
