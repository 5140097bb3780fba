"""Starting and stopping a whole farm as child processes: simulator, web, workers, beat.

Used by `fluxfarm demo`, the benchmarks and the integration tests, so that all of them
run the same commands the Procfile gives.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx

from farmdomain.settings import Settings
from jobstore.migrations import upgrade

_T = TypeVar("_T")
_SIMULATOR_READY = re.compile(r"simulator listening on (http://\S+)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def settings_env(settings: Settings) -> dict[str, str]:
    """The FLUXFARM_* variables that make a child process see `settings`."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump(exclude_none=True).items():
        plain = value.get_secret_value() if hasattr(value, "get_secret_value") else value
        # pydantic-settings reads complex values (dicts, lists) from the environment as JSON
        text = json.dumps(plain) if isinstance(plain, dict | list) else str(plain)
        env[f"FLUXFARM_{name.upper()}"] = text
    return env


@dataclass(frozen=True)
class Host:
    """Where a child runs: the address it listens on, and the command prefix that puts it
    there (e.g. `ip netns exec NAME` for a network namespace; none for this machine)."""

    address: str = "127.0.0.1"
    prefix: tuple[str, ...] = ()


LOCAL = Host()


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    metrics_url: str | None = None
    argv: list[str] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)
    # restarted when it dies on its own, as a process supervisor would; not when we kill it
    supervised: bool = True
    log_offset: int = 0

    def log(self) -> str:
        """What this process wrote (the file also holds earlier processes of the same name)."""
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as log_file:
            log_file.seek(self.log_offset)
            return log_file.read().decode(errors="replace")


class ProcessFailed(RuntimeError):
    """A child process died or never became ready; the message ends with its log."""

    def __init__(self, child: Child, why: str) -> None:
        tail = "\n".join(child.log().splitlines()[-30:])
        super().__init__(f"{child.name} {why}; last log lines:\n{tail}")


@dataclass
class Farm:
    """A set of child processes that all stop together, on error and on Ctrl-C too."""

    settings: Settings
    log_dir: Path
    children: list[Child] = field(default_factory=list)
    restarts: int = 0
    _stopping: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def supervise(self, interval_s: float = 0.5) -> None:
        """Restart children that exit on their own, like systemd or a platform would.

        Celery workers exit on some broker failures (a Redis restart, for one) and count on
        their supervisor to start them again.
        """
        threading.Thread(target=self._restart_dead, args=(interval_s,), daemon=True).start()

    def _restart_dead(self, interval_s: float) -> None:
        while not self._stopping.wait(interval_s):
            with self._lock:
                dead = [c for c in self.children if c.supervised and c.process.poll() is not None]
            for child in dead:
                child.supervised = False
                self.restarts += 1
                self.spawn(child.name, child.argv, child.extra_env)

    def __enter__(self) -> Farm:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def spawn(
        self,
        name: str,
        argv: list[str],
        extra_env: dict[str, str] | None = None,
        host: Host = LOCAL,
    ) -> Child:
        # the prefix is kept in the child's argv: a restart runs on the same host
        argv = [*host.prefix, *argv]
        log_path = self.log_dir / f"{name}.log"
        env = {**os.environ, **settings_env(self.settings), **(extra_env or {})}
        env.setdefault("FLUXFARM_LOG_FORMAT", "json")
        env["FLUXFARM_METRICS_DIR"] = str(self._fresh_metrics_dir(name))
        # appended, so a restarted child keeps the log of the one that died
        offset = log_path.stat().st_size if log_path.exists() else 0
        with log_path.open("ab") as log_file:
            process = subprocess.Popen(  # noqa: S603 - argv is built here, never from input
                argv,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        child = Child(
            name, process, log_path, argv=argv, extra_env=extra_env or {}, log_offset=offset
        )
        with self._lock:
            self.children.append(child)
        return child

    def start_simulator(self, *flags: str, host: Host = LOCAL) -> str:
        """Start `python -m simulator`; returns its base URL."""
        child = self.spawn(
            "simulator",
            [sys.executable, "-m", "simulator", "--host", host.address, "--port", "0", *flags],
            host=host,
        )
        found = self._wait_for(child, lambda: _SIMULATOR_READY.search(child.log()))
        return found.group(1)

    def start_web(self, port: int, name: str = "web", host: Host = LOCAL) -> str:
        proxies = self.settings.forwarded_allow_ips
        forwarded = ["--forwarded-allow-ips", proxies] if proxies else ["--no-proxy-headers"]
        child = self.spawn(
            name,
            [
                sys.executable,
                "-m",
                "uvicorn",
                "farmweb.app:create_app",
                "--factory",
                "--host",
                host.address,
                "--port",
                str(port),
                "--no-access-log",
                *forwarded,
            ],
            {"FLUXFARM_BIND_HOST": host.address},
            host,
        )
        url = f"http://{host.address}:{port}"
        self._wait_for(child, lambda: _answers(f"{url}/healthz"))
        return url

    def _fresh_metrics_dir(self, name: str) -> Path:
        # one empty directory per process group: files of an earlier run would be summed in
        root = self.settings.metrics_dir or self.settings.data_dir / "metrics"
        path = root / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def start_worker(
        self,
        name: str = "worker",
        concurrency: int | None = None,
        pool: str | None = None,
        app: str = "worker.app",
        queues: tuple[str, ...] = (),
        extra_env: dict[str, str] | None = None,
        host: Host = LOCAL,
    ) -> Child:
        """A Celery worker; pool and concurrency default to the settings'."""
        metrics_port = free_port()
        child = self.spawn(
            name,
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                app,
                "worker",
                *(["--queues", ",".join(queues)] if queues else []),
                "--loglevel",
                "INFO",
                "--pool",
                pool or self.settings.worker_pool,
                "--concurrency",
                str(concurrency or self.settings.worker_concurrency),
                "--hostname",
                f"{name}@%h",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            {"FLUXFARM_WORKER_METRICS_PORT": str(metrics_port), **(extra_env or {})},
            host,
        )
        child.metrics_url = f"http://{host.address}:{metrics_port}/metrics"
        self._wait_for(child, lambda: " ready." in child.log())
        return child

    def start_beat(self, host: Host = LOCAL) -> Child:
        child = self.spawn(
            "beat",
            [sys.executable, "-m", "celery", "-A", "worker.app", "beat", "--loglevel", "INFO"],
            host=host,
        )
        self._wait_for(child, lambda: "beat: Starting" in child.log())
        return child

    def kill(self, child: Child, signum: int = signal.SIGKILL) -> None:
        """Signal one child's whole process group and wait for its leader to exit."""
        child.supervised = False
        _signal_group(child.process, signum)
        child.process.wait(60)

    def stop(self) -> None:
        """SIGTERM every child (warm shutdown), then SIGKILL what is still there."""
        self._stopping.set()
        for child in reversed(self.children):
            if child.process.poll() is None:
                _signal_group(child.process, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for child in reversed(self.children):
            remaining = max(0.1, deadline - time.monotonic())
            try:
                child.process.wait(remaining)
            except subprocess.TimeoutExpired:
                _signal_group(child.process, signal.SIGKILL)
                child.process.wait()
        self.children.clear()

    def _wait_for(self, child: Child, ready: Callable[[], _T | None], timeout: float = 60) -> _T:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = ready()
            if found:
                return found
            if child.process.poll() is not None:
                raise ProcessFailed(child, f"exited with {child.process.returncode}")
            time.sleep(0.05)
        raise ProcessFailed(child, f"not ready after {timeout:g}s")


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)


@dataclass(frozen=True)
class Pipeline:
    """A farm that is up: the settings its processes share and where they listen."""

    settings: Settings
    simulator_url: str
    web_url: str
    web_port: int
    worker: Child


def simulated(
    farm: Farm, simulator_url: str, api_key: str, web_port: int, **overrides: Any
) -> Settings:
    """The farm's settings from now on: the simulator at `simulator_url` as Runware, `web`
    on `web_port` of this machine, `overrides` on top; the processes it starts share them."""
    farm.settings = Settings(
        data_dir=farm.settings.data_dir,
        runware_url=f"{simulator_url}/v1",
        runware_api_key=api_key,
        public_base_url=f"http://127.0.0.1:{web_port}",
        **overrides,
    )
    return farm.settings


def start_pipeline(
    farm: Farm,
    *,
    api_key: str,
    simulator_flags: tuple[str, ...] = (),
    worker_name: str = "worker",
    concurrency: int | None = None,
    pool: str | None = None,
    **overrides: Any,
) -> Pipeline:
    """Simulator, store schema, web, a worker and beat, the way the Procfile runs them.

    `overrides` are settings (broker_url, database_url, clocks...) on top of the data
    directory the farm was made with and the simulator as Runware.
    """
    simulator_url = farm.start_simulator("--api-keys", api_key, *simulator_flags)
    web_port = free_port()
    settings = simulated(farm, simulator_url, api_key, web_port, **overrides)
    upgrade(settings.resolved_database_url())
    web_url = farm.start_web(web_port)
    worker = farm.start_worker(worker_name, concurrency, pool)
    farm.start_beat()
    return Pipeline(settings, simulator_url, web_url, web_port, worker)
