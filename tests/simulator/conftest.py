"""Fixtures for the simulator tests: a running simulator, an authenticated client, a receiver,
and for the SDK tests the official SDKs' drivers and simulator processes shared by a session."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from sdk_support import CURRENT_SDK, LEGACY_SDK, Driver, sdk_venv_python, simulator_process
from sim_support import API_KEY, Receiver, quick_settings, serving_receiver

from simulator.testing import SimulatorHandle, running_simulator


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with serving_receiver() as target:
        yield target


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorHandle]:
    with running_simulator(quick_settings()) as handle:
        yield handle


@pytest.fixture
def shaped(sim: SimulatorHandle) -> Iterator[SimulatorHandle]:
    """The module's simulator; the answer shapes a test sets are reset after it."""
    yield sim
    sim.reset_shapes()


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30.0) as http:
        yield http


@pytest.fixture(scope="session")
def current_sdk() -> Iterator[Driver]:
    """runware-sdk 1.8.0 in its own venv, driven over REST and WebSocket."""
    driver = Driver(sdk_venv_python(CURRENT_SDK), "drive_runware_sdk.py")
    yield driver
    driver.close()


@pytest.fixture(scope="session")
def legacy_sdk() -> Iterator[Driver]:
    """runware 0.5.24 in its own venv, WebSocket only; its waits for an image task's first
    answer and for a poll are shortened through its own environment variables, so that a
    wait the simulator leaves unanswered ends within the test."""
    env = {"RUNWARE_IMAGE_INITIAL_TIMEOUT": "3000", "RUNWARE_VIDEO_INITIAL_TIMEOUT": "3000"}
    driver = Driver(sdk_venv_python(LEGACY_SDK), "drive_runware_legacy.py", env)
    yield driver
    driver.close()


@pytest.fixture(scope="session")
def sdk_sim() -> Iterator[SimulatorHandle]:
    """A simulator process with the default shapes and no faults, shared by the SDK tests
    that change nothing in it (every task has its own taskUUID)."""
    with simulator_process("--random-seed", "17") as handle:
        yield handle


@pytest.fixture(scope="session")
def fault_sim() -> Iterator[SimulatorHandle]:
    with simulator_process("--random-seed", "23") as handle:
        yield handle


@pytest.fixture
def faulty(fault_sim: SimulatorHandle) -> Iterator[SimulatorHandle]:
    """A simulator process whose faults and shapes a test may set, its tasks and counters
    forgotten before the test and its faults and shapes reset after it."""
    fault_sim.reset()
    yield fault_sim
    fault_sim.reset_faults()
    fault_sim.reset_shapes()


@pytest.fixture(scope="session")
def old_shapes_sim() -> Iterator[SimulatorHandle]:
    """A simulator process started with every older reading of the answer shapes."""
    flags = (
        "--failed-items",
        "errors",
        "--ack-body",
        "empty",
        "--sync-webhook",
        "ack",
        "--no-progress",
        "--ws-sync-frames",
        "each",
    )
    with simulator_process(*flags) as handle:
        yield handle
