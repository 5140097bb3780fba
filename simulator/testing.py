"""In-process simulator for test suites: a uvicorn thread on a free 127.0.0.1 port."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from simulator.server import bind, build_server, url_of
from simulator.settings import SimulatorSettings

STARTUP_TIMEOUT_S = 10.0

# the command-line flags for the older readings of Runware's answers, where the defaults are
# what runware-sdk 1.8.0 reads (settings.ShapeSettings)
OLD_SHAPE_FLAGS = (
    "--failed-items",
    "errors",
    "--ack-body",
    "empty",
    "--no-progress",
    "--cost",
    "always",
    "--webhook-body",
    "wrapped",
)


@dataclass(frozen=True)
class SimulatorHandle:
    """Where a running simulator listens, with synchronous shortcuts to its control routes."""

    url: str

    @property
    def api_url(self) -> str:
        return self.url + "/v1"

    @property
    def ws_url(self) -> str:
        """The WebSocket endpoint: /v1 on the same port as REST."""
        return "ws" + self.api_url.removeprefix("http")

    def _control(self, method: str, path: str, json: Any = None) -> Any:
        response = httpx.request(method, self.url + path, json=json, timeout=10.0)
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._control("GET", "/_sim/stats")
        return result

    def faults(self) -> dict[str, Any]:
        result: dict[str, Any] = self._control("GET", "/_sim/faults")
        return result

    def set_faults(self, **changes: Any) -> dict[str, Any]:
        """Partially update the fault config; returns the full config now in force."""
        result: dict[str, Any] = self._control("POST", "/_sim/faults", changes)
        return result

    def reset_faults(self) -> dict[str, Any]:
        result: dict[str, Any] = self._control("DELETE", "/_sim/faults")
        return result

    def shapes(self) -> dict[str, Any]:
        result: dict[str, Any] = self._control("GET", "/_sim/shapes")
        return result

    def set_shapes(self, **changes: Any) -> dict[str, Any]:
        """Partially update the answer shapes; returns every shape setting now in force."""
        result: dict[str, Any] = self._control("POST", "/_sim/shapes", changes)
        return result

    def reset_shapes(self) -> dict[str, Any]:
        result: dict[str, Any] = self._control("DELETE", "/_sim/shapes")
        return result

    def task(self, task_uuid: str) -> dict[str, Any]:
        result: dict[str, Any] = self._control("GET", f"/_sim/tasks/{task_uuid}")
        return result

    def disconnect(self) -> int:
        """Close every WebSocket as a network drop would; returns how many were open."""
        result: dict[str, int] = self._control("POST", "/_sim/disconnect")
        return result["dropped"]

    def reset(self) -> None:
        """Forget every task and zero the counters; faults stay as they are."""
        self._control("POST", "/_sim/reset")


@contextlib.contextmanager
def running_simulator(settings: SimulatorSettings | None = None) -> Iterator[SimulatorHandle]:
    """Run the simulator in a background thread for the duration of the block."""
    sock = bind("127.0.0.1", 0)
    ready = threading.Event()
    server = build_server(settings or SimulatorSettings(), sock, ready.set)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="simulator", daemon=True
    )
    thread.start()
    try:
        if not ready.wait(STARTUP_TIMEOUT_S):
            raise RuntimeError("the simulator did not start")
        yield SimulatorHandle(url_of(sock))
    finally:
        server.should_exit = True
        thread.join(STARTUP_TIMEOUT_S)
        sock.close()
