"""README's first command: `fluxfarm demo` runs to a green table and cleans up after itself."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

from fluxfarm.demo import _CtrlC, demo_requests

pytestmark = pytest.mark.integration

DEMO = [sys.executable, "-m", "fluxfarm.cli", "demo"]


def _farm_processes(data_dir: Path) -> list[int]:
    """Processes still running with this demo's data directory in their environment."""
    wanted = f"FLUXFARM_DATA_DIR={data_dir}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environment = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if wanted in environment:
            found.append(int(proc.name))
    return found


def test_demo_runs_every_job_to_a_green_table(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    jobs = 5

    done = subprocess.run(
        [*DEMO, "--jobs", str(jobs), "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if " succeeded " in line]
    assert len(rows) == jobs
    images = sorted((data_dir / "images").rglob("*.*"))
    assert len(images) == sum(r["numberResults"] for r in demo_requests(jobs))
    spend = re.search(
        r"total spend: \$(\S+) over \d+ jobs \(Runware charged \$(\S+)\)", done.stdout
    )
    assert spend is not None
    assert Decimal(spend.group(1)) == Decimal(spend.group(2)) > 0
    assert _farm_processes(data_dir) == []


def test_ctrl_c_stops_every_child_process(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    with subprocess.Popen(
        [*DEMO, "--jobs", "60", "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as demo:
        assert demo.stdout is not None
        while "farm up" not in demo.stdout.readline():
            assert demo.poll() is None, "the demo exited before its farm was up"
        assert len(_farm_processes(data_dir)) >= 4

        demo.send_signal(signal.SIGINT)

        assert demo.wait(timeout=60) == 130
    deadline = time.monotonic() + 10
    while _farm_processes(data_dir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _farm_processes(data_dir) == []


def test_demo_refuses_to_clear_a_directory_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")

    done = subprocess.run(
        [*DEMO, "--jobs", "1", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode != 0
    assert "not made by the demo" in done.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_only_the_first_ctrl_c_raises_so_a_second_cannot_cut_the_farm_stop_short() -> None:
    ctrl_c = _CtrlC()
    with pytest.raises(KeyboardInterrupt):
        ctrl_c(signal.SIGINT, None)
    ctrl_c(signal.SIGINT, None)
    with pytest.raises(KeyboardInterrupt):
        ctrl_c.check()
