"""Fixtures for the simulator tests: a running simulator, an authenticated client, a receiver."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
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
