"""`python -m simulator`: flags generated from the settings, the readiness line, port 0."""

from __future__ import annotations

import re
import subprocess
import sys

import httpx
from sim_support import image_task


def test_help_lists_every_setting() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "simulator", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    for flag in (
        "--api-keys",
        "--public-base-url",
        "--fast-images",
        "--latency-dist",
        "--webhook-drop-share",
        "--accepted-error-mode",
        "--random-seed",
    ):
        assert flag in result.stdout


def test_port_zero_prints_the_real_address_and_serves() -> None:
    command = [
        sys.executable,
        "-m",
        "simulator",
        "--port",
        "0",
        "--api-keys",
        "one,two",
        "--public-base-url",
        "https://im.sim.example",
        "--fast-images",
    ]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            match = re.fullmatch(r"simulator listening on (http://127\.0\.0\.1:(\d+))\n", line)
            assert match is not None, line
            assert int(match.group(2)) > 0
            response = httpx.post(
                match.group(1) + "/v1", json=[image_task()], headers={"Authorization": "Bearer two"}
            )
            assert response.status_code == 200
            image_url = response.json()["data"][0]["imageURL"]
            assert image_url.startswith("https://im.sim.example/image/")
        finally:
            process.terminate()
            assert process.wait(timeout=10) == 0


def test_invalid_setting_is_a_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "simulator", "--ack-body", "loud"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "ack_body" in result.stderr
