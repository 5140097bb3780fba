"""Running the app under uvicorn on a socket bound beforehand, so port 0 yields a known port."""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Callable

import uvicorn

from simulator.app import create_app
from simulator.settings import SimulatorSettings

GRACEFUL_SHUTDOWN_S = 1


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket; with port 0 the OS picks a free port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class SimulatorServer(uvicorn.Server):
    """A uvicorn server that calls `on_ready` once it accepts connections."""

    def __init__(self, config: uvicorn.Config, on_ready: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_ready = on_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._on_ready()


def build_server(
    settings: SimulatorSettings,
    sock: socket.socket,
    on_ready: Callable[[], None],
    log_level: str = "warning",
) -> SimulatorServer:
    """The app with imageURL rooted at the socket's address unless a public URL is set."""
    if settings.public_base_url is None:
        settings = dataclasses.replace(settings, public_base_url=url_of(sock))
    config = uvicorn.Config(
        create_app(settings),
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        # Runware's clients keep connections open between submits and polls.
        timeout_keep_alive=30,
        # above the app's own limit, so that an oversized message is answered with an error
        # frame naming the limit rather than by closing the socket
        ws_max_size=2 * settings.max_body_bytes,
    )
    return SimulatorServer(config, on_ready)
