"""Runware's official SDKs against a real simulator process: a venv per pinned SDK, made once
and cached under .fluxfarm/sdk-venvs/, a long-lived driver process per SDK speaking JSON lines
(sdk_drivers/protocol.py), simulator processes, and scenario builders."""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import os
import queue
import re
import select
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sim_support import API_KEY

from simulator.testing import SimulatorHandle

REPO = Path(__file__).resolve().parents[2]
DRIVERS = Path(__file__).resolve().parent / "sdk_drivers"
CURRENT_SDK = "runware-sdk==1.8.0"
LEGACY_SDK = "runware==0.5.24"
MARKER = "@@driver@@ "
READY = re.compile(r"simulator listening on (http://\S+)")
# the simulator's webhook retries made quick, as in the in-process tests
QUICK_FLAGS = (
    "--webhook-timeout-s",
    "2",
    "--webhook-backoff-s",
    "0.01",
    "--webhook-backoff-max-s",
    "0.05",
)


def sdk_venv_python(pin: str) -> Path:
    """The python of a venv holding exactly `pin` (and its dependencies), installed with
    pip from the registry on first use and reused while the pin and python stay the same."""
    root = REPO / ".fluxfarm" / "sdk-venvs"
    root.mkdir(parents=True, exist_ok=True)
    key = f"{pin.replace('==', '-')}-py{sys.version_info.major}{sys.version_info.minor}"
    venv = root / key
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    with (root / f"{key}.lock").open("w") as lock:
        # another pytest run may be installing the same venv
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not marker.exists():
            shutil.rmtree(venv, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
            subprocess.run(
                [
                    str(python),
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    pin,
                ],
                check=True,
                timeout=600,
            )
            marker.write_text(pin + "\n")
    return python


class Driver:
    """One SDK's driver process; `run` sends scenarios and returns their outcomes in order."""

    def __init__(self, python: Path, script: str, env: dict[str, str] | None = None) -> None:
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._answers: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.process = subprocess.Popen(
            [str(python), str(DRIVERS / script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        threading.Thread(target=self._read, name=f"{script} reader", daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            # anything the SDK itself prints is passed over
            if line.startswith(MARKER):
                self._answers.put(json.loads(line[len(MARKER) :]))
        self._answers.put(None)

    def run(self, *scenarios: dict[str, Any], timeout_s: float = 120.0) -> list[dict[str, Any]]:
        assert self.process.stdin is not None
        with self._lock:
            request_id = next(self._ids)
            self.process.stdin.write(json.dumps({"id": request_id, "scenarios": scenarios}) + "\n")
            self.process.stdin.flush()
            try:
                answer = self._answers.get(timeout=timeout_s)
            except queue.Empty:
                raise AssertionError("the SDK driver gave no answer in time") from None
            if answer is None:
                raise AssertionError(f"the SDK driver exited ({self.process.poll()})")
            assert answer["id"] == request_id
            outcomes: list[dict[str, Any]] = answer["outcomes"]
            return outcomes

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        _stop(self.process)


@contextlib.contextmanager
def simulator_process(*flags: str) -> Iterator[SimulatorHandle]:
    """`python -m simulator` on a free port with these flags, stopped at the end."""
    command = [sys.executable, "-m", "simulator", "--host", "127.0.0.1", "--port", "0"]
    process = subprocess.Popen(
        [*command, "--api-keys", API_KEY, *QUICK_FLAGS, *flags],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 30)
        match = READY.search(process.stdout.readline()) if ready else None
        if match is None:
            raise AssertionError("the simulator did not start")
        yield SimulatorHandle(match.group(1))
    finally:
        process.terminate()
        _stop(process)


def _stop(process: subprocess.Popen[str]) -> None:
    """Wait for the process to end (killing it after 10 s) and close its output pipe."""
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
    if process.stdout is not None:
        process.stdout.close()


def current(
    sim: SimulatorHandle,
    transport: str,
    params: dict[str, Any],
    *,
    call: str = "run",
    config: dict[str, Any] | None = None,
    api_key: str = API_KEY,
    timeout_s: float = 60.0,
) -> dict[str, Any]:
    """A runware-sdk scenario; `params` as a user passes them to `run` (taskType included,
    which spares the SDK its model registry)."""
    return {
        "transport": transport,
        "http_url": sim.api_url,
        "ws_url": sim.ws_url,
        "api_key": api_key,
        "call": call,
        "params": params,
        "config": config or {},
        "timeout_s": timeout_s,
    }


def legacy(
    sim: SimulatorHandle,
    params: dict[str, Any],
    *,
    call: str = "imageInference",
    api_key: str = API_KEY,
    timeout_s: float = 60.0,
) -> dict[str, Any]:
    """A scenario for the older `runware` SDK, WebSocket only."""
    return {
        "ws_url": sim.ws_url,
        "api_key": api_key,
        "call": call,
        "params": params,
        "timeout_s": timeout_s,
    }


def failure(outcome: dict[str, Any]) -> dict[str, Any]:
    """The error of an outcome that must have failed."""
    assert not outcome["ok"], outcome
    error: dict[str, Any] = outcome["error"]
    return error


def results(outcome: dict[str, Any]) -> list[dict[str, Any]]:
    """The results of an outcome that must have succeeded."""
    assert outcome["ok"], outcome
    items: list[dict[str, Any]] = outcome["results"]
    return items


# what IImageInference carries as typed fields; anything else goes into its extraArgs
LEGACY_TYPED = frozenset(
    {
        "model",
        "taskUUID",
        "positivePrompt",
        "width",
        "height",
        "seed",
        "numberResults",
        "outputType",
        "outputFormat",
        "outputQuality",
        "includeCost",
        "deliveryMethod",
        "webhookURL",
        "uploadEndpoint",
        "ttl",
        "inputs",
    }
)


def legacy_params(task: dict[str, Any]) -> dict[str, Any]:
    """A task for the older SDK: typed fields where it has them (its deliveryMethod defaults
    to sync), the rest (providerSettings: its BFL settings lack promptUpsampling) as extra."""
    typed = {key: value for key, value in task.items() if key in LEGACY_TYPED}
    extra = {key: value for key, value in task.items() if key not in LEGACY_TYPED}
    extra.pop("taskType", None)
    return {**typed, "extra": extra}
