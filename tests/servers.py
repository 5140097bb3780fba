"""Throwaway servers that benchmarks and tests run against: a PostgreSQL database, a Redis."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import redis

from fluxfarm.processes import Child, Farm, free_port
from jobstore.migrations import upgrade


@contextmanager
def fresh_postgres_database(server_url: str, prefix: str = "fluxfarm_t_") -> Iterator[str]:
    """A migrated database of its own on the server at `server_url`; dropped afterwards."""
    admin = server_url.replace("postgresql+psycopg://", "postgresql://")
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = server_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class PrivateRedis:
    """A Redis of the caller's own (no persistence): restarting it disturbs nobody else."""

    servers: Farm
    port: int
    argv: list[str]
    server: Child | None = None

    @classmethod
    def on_free_port(cls, servers: Farm, directory: Path) -> PrivateRedis:
        port = free_port()
        argv = [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
        ]
        return cls(servers, port, argv)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.server = self.servers.spawn("redis", self.argv)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.ConnectionError):
                redis.Redis(port=self.port).ping()
                return
            time.sleep(0.05)
        raise RuntimeError("private redis did not start")

    def restart(self) -> None:
        if self.server is not None:
            self.servers.kill(self.server)
        time.sleep(3)
        self.start()
