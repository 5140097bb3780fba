"""Real HTTP servers inside the test process: an ASGI app under uvicorn on a free port."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from starlette.types import ASGIApp

from simulator.server import bind, url_of


@contextmanager
def serve_asgi(app: ASGIApp, port: int = 0) -> Iterator[str]:
    """`app` listening on 127.0.0.1 (`port`, or a free one) from a thread; its base URL."""
    sock = bind("127.0.0.1", port)
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:  # waiting for startup, not asserting on time
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
