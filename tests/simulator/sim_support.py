"""Shared pieces of the simulator tests: task builders, a scripted HTTP receiver, waiting."""

from __future__ import annotations

import base64
import contextlib
import io
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image

from simulator.settings import SimulatorSettings

API_KEY = "sim-key"
# Quick retries so retry tests finish in well under a second.
QUICK = {
    "webhook_timeout_s": 0.5,
    "webhook_backoff_s": 0.01,
    "webhook_backoff_max_s": 0.05,
    "random_seed": 7,
}
DROP = object()


def quick_settings(**overrides: Any) -> SimulatorSettings:
    return SimulatorSettings(**{**QUICK, **overrides})


def image_task(**overrides: Any) -> dict[str, Any]:
    """A valid small FLUX.2 [pro] task; an override of DROP removes the key."""
    task: dict[str, Any] = {
        "taskType": "imageInference",
        "taskUUID": str(uuid.uuid4()),
        "model": "bfl:5@1",
        "positivePrompt": "a lighthouse in fog",
        "width": 256,
        "height": 256,
    }
    task.update(overrides)
    return {key: value for key, value in task.items() if value is not DROP}


def encoded_image(width: int, height: int, fmt: str = "PNG") -> str:
    """Bare base64 of a real image, for reference-image inputs."""
    out = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 200)).save(out, fmt)
    return base64.b64encode(out.getvalue()).decode()


def wait_until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A real HTTP endpoint for webhooks and uploads, answering from a scripted status list."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    delay_s: float = 0.0
    delayed_requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def respond(self, request: Received) -> tuple[int, float]:
        with self.lock:
            self.received.append(request)
            status = self.statuses.pop(0) if self.statuses else 200
            delay = self.delay_s if len(self.received) <= self.delayed_requests else 0.0
        return status, delay

    def wait_for(self, count: int, timeout_s: float = 10.0) -> list[Received]:
        wait_until(lambda: len(self.received) >= count, timeout_s)
        with self.lock:
            return list(self.received)


def _handler_for(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            request = Received(self.command, self.path, dict(self.headers.items()), body)
            status, delay = receiver.respond(request)
            time.sleep(delay)
            try:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
            except OSError:
                pass

        def do_POST(self) -> None:
            self._handle()

        def do_PUT(self) -> None:
            self._handle()

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


@contextlib.contextmanager
def serving_receiver() -> Iterator[Receiver]:
    target = Receiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(target))
    server.daemon_threads = True
    target.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield target
    finally:
        server.shutdown()
        server.server_close()
