"""A real `fluxfarm web` process on loopback, for what only a real server shows."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from fluxfarm.processes import free_port
from jobstore.migrations import upgrade
from tests.security.conftest import SECRET

START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class WebProcess:
    url: str
    host: str
    port: int
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def running_web(data_dir: Path, host: str = "127.0.0.1", **env: str) -> Iterator[WebProcess]:
    """`fluxfarm web --host HOST` on a free port with a SQLite store in `data_dir`;
    `env` adds FLUXFARM_* settings. Reached at 127.0.0.1 whatever it binds."""
    database_url = f"sqlite:///{data_dir / 'store.sqlite3'}"
    upgrade(database_url)
    port = free_port()
    log_path = data_dir / "web.log"
    child_env = {
        **os.environ,
        "FLUXFARM_DATA_DIR": str(data_dir),
        "FLUXFARM_DATABASE_URL": database_url,
        "FLUXFARM_WEBHOOK_SECRET": SECRET,
        "FLUXFARM_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "FLUXFARM_METRICS_DIR": str(data_dir / "metrics"),
        **env,
    }
    argv = [sys.executable, "-m", "fluxfarm.cli", "web", "--host", host, "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    with log_path.open("wb") as log_file:
        child = subprocess.Popen(argv, env=child_env, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert child.poll() is None, log_path.read_text(errors="replace")
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log_path.read_text(errors="replace")
            time.sleep(0.1)
        yield WebProcess(url, host, port, log_path)
    finally:
        child.terminate()
        try:
            child.wait(timeout=20)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
