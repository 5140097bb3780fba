"""`fluxfarm bench` runs to its tables and JSON on the embedded default (no speed asserted:
the figures are the benchmark's to print, CI machines are too noisy to judge them)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

# a bench run may take its whole subprocess timeout on a machine another run shares
pytestmark = [pytest.mark.integration, pytest.mark.timeout(360)]

FIGURES = (
    "jobs_per_s",
    "single_jobs_per_s",
    "http_jobs_per_s",
    "http_single_jobs_per_s",
    "noop_per_s",
    "slow_jobs_per_s",
)


def _bench(tmp_path: Path, *argv: str) -> tuple[str, Any]:
    """`fluxfarm bench ARGV` in a work dir of its own: what it printed, and its JSON."""
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "fluxfarm.cli",
            "bench",
            *argv,
            "--work-dir",
            str(tmp_path / "work"),
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    return done.stdout, json.loads(out.read_text())


def test_bench_measures_every_figure_on_each_run(tmp_path: Path) -> None:
    printed, figures = _bench(
        tmp_path,
        "--brokers",
        "sqlite",
        "--sqlite-jobs",
        "30",
        "--submit-batch",
        "10",
        "--blocking-jobs",
        "4",
        "--blocking-latency-s",
        "0.5",
        "--repeat",
        "2",
    )

    assert "| sqlite | 30 |" in printed
    assert "HTTP one by one" in printed
    assert "| sqlite | 30 | 30 |" in printed, "every job's callback delivered"
    runs = figures["runs"]
    assert len(runs) == 2
    for run in runs:
        assert run["failed"] == 0
        assert all(run[figure] > 0 for figure in FIGURES)
        assert {"queue_wait", "submit_http", "webhook_to_succeeded"} <= set(run["stages"])
        assert run["callbacks_delivered"] == 30
        for processes in (
            "processes",
            "http_processes",
            "http_single_processes",
            "callback_processes",
        ):
            assert {"web", "worker", "simulator"} <= set(run[processes])
        # the HTTP phases' jobs went through web: it spent CPU on each of them
        assert run["http_single_processes"]["web"]["cpu_s_per_1k_jobs"] > 0


def test_bench_copy_measures_keeping_the_images(tmp_path: Path) -> None:
    printed, figures = _bench(tmp_path, "--copy", "--copy-jobs", "20", "--copy-modes", "s3-upload")

    assert "| s3-upload | 20 |" in printed
    [run] = figures
    assert run["images"] == 20
    assert run["copy_cpu_ms_per_image"] > 0
    assert run["noop_per_s"] > 0
