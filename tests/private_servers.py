"""Servers of a test's own: a PostgreSQL, a Redis and RabbitMQ nodes on private data dirs
and ports, that the test may kill, restart or cut off without touching the machine's own.

Each server runs in the foreground as a child in a session of its own, so stopping it is
signalling one process group, and a context manager stops it however the test ends.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import psycopg
import redis
from kombu import Connection

from fluxfarm.processes import LOCAL, Host, free_port
from jobstore.migrations import upgrade

PG_BIN = Path("/usr/lib/postgresql/15/bin")
RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
# the machine's epmd and node answer on localhost: private nodes share epmd, not the node
RABBITMQ_HOST = "localhost"


class ServerNotReady(RuntimeError):
    """A private server exited or did not answer in time; the message ends with its log."""


@dataclass
class ServerProcess:
    """One server process (and its children) run as `user` on `host`, logging to `log_path`."""

    name: str
    argv: Sequence[str]
    log_path: Path
    user: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    process: subprocess.Popen[bytes] | None = None
    host: Host = LOCAL

    def start(self) -> None:
        argv = list(self.argv)
        account = pwd.getpwnam(self.user) if self.user else None
        if self.host.prefix and self.user:
            # entering a namespace needs root: the prefix runs first, then drops to the user
            argv = [*self.host.prefix, *_as_user(self.user), *argv]
            account = None
        elif self.host.prefix:
            argv = [*self.host.prefix, *argv]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **self.env},
                cwd=self.cwd,
                user=account.pw_uid if account else None,
                group=account.pw_gid if account else None,
                extra_groups=[] if account else None,
                start_new_session=True,
            )

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int, wait_s: float = 60) -> None:
        """Signal the whole process group; wait for the leader, SIGKILL it past `wait_s`."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)
        try:
            self.process.wait(wait_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        # helpers of the server (erl_child_setup, a forked postgres) may outlive the leader
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def wait_until(self, ready: Callable[[], bool], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            if not self.running():
                raise ServerNotReady(f"{self.name} exited; log:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise ServerNotReady(
                    f"{self.name} not ready in {timeout_s:g} s:\n{self.log_tail()}"
                )
            time.sleep(0.05)

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def _as_user(user: str) -> list[str]:
    """A command prefix that runs what follows as `user` (and its groups), by exec."""
    return ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups"]


class PrivateServer(Protocol):
    """What a fault does to a server: stop it cleanly, kill it, start it again."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def kill(self) -> None: ...


def restart(server: PrivateServer) -> None:
    server.stop()
    server.start()


def _owned_dir(path: Path, user: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    shutil.chown(path, user, user)
    return path


def _can(probe: Callable[[], object], *errors: type[Exception]) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            probe()
        except errors:
            return False
        return True

    return ready


class PrivatePostgres:
    """A PostgreSQL cluster of its own (initdb'd as the postgres user), on the host's
    address (127.0.0.1 by default) and a port of its own."""

    def __init__(self, directory: Path, host: Host = LOCAL) -> None:
        self.host = host
        self.directory = _owned_dir(directory, "postgres")
        self.data = self.directory / "data"
        self.port = free_port()
        self.server = ServerProcess(
            "postgres",
            [
                str(PG_BIN / "postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-k",
                str(self.directory),
                "-c",
                f"listen_addresses={host.address}",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=200",
            ],
            self.directory / "postgres.log",
            user="postgres",
            host=host,
        )

    @property
    def url(self) -> str:
        """The maintenance database, for making the test's own databases."""
        return f"postgresql+psycopg://postgres@{self.host.address}:{self.port}/postgres"

    def start(self) -> None:
        if not self.data.exists():
            initdb = [
                str(PG_BIN / "initdb"),
                "-D",
                str(self.data),
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ]
            subprocess.run(
                initdb, check=True, capture_output=True, user="postgres", cwd=self.directory
            )
            if self.host != LOCAL:
                # initdb trusts loopback only; the other hosts of a test network come too
                with (self.data / "pg_hba.conf").open("a") as hba:
                    hba.write("host all all 0.0.0.0/0 trust\n")
        self.server.start()
        probe = _can(lambda: psycopg.connect(self._plain_url()).close(), psycopg.Error)
        self.server.wait_until(probe, 30)

    def create_database(self, name: str = "fluxfarm") -> str:
        """A new database, migrated; nothing drops it, since the server is the test's own."""
        with psycopg.connect(self._plain_url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = self.url.rsplit("/", 1)[0] + f"/{name}"
        upgrade(url)
        return url

    def _plain_url(self) -> str:
        return self.url.replace("postgresql+psycopg://", "postgresql://")

    def stop(self) -> None:
        self.server.signal(signal.SIGINT)  # "fast" shutdown: abort sessions, checkpoint

    def kill(self) -> None:
        self.server.signal(signal.SIGKILL)  # the next start runs crash recovery


class PrivateRedis:
    """A Redis of its own, without persistence: a restart loses what it held."""

    def __init__(self, directory: Path, host: Host = LOCAL) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = free_port()
        self.server = ServerProcess(
            "redis",
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                host.address,
                # reachable from the other hosts of a test network, without a password
                "--protected-mode",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(directory),
            ],
            directory / "redis.log",
            host=host,
        )

    @property
    def url(self) -> str:
        return f"redis://{self.host.address}:{self.port}/0"

    def start(self) -> None:
        self.server.start()
        client = redis.Redis(host=self.host.address, port=self.port)
        self.server.wait_until(_can(client.ping, redis.ConnectionError), 10)
        client.close()

    def stop(self) -> None:
        self.server.signal(signal.SIGTERM)

    def kill(self) -> None:
        self.server.signal(signal.SIGKILL)


class PrivateRabbitMQ:
    """A RabbitMQ node of its own beside the machine's: its own config file (the machine's
    pins the listener to 5672), node name, distribution port, data, logs and cookie."""

    def __init__(self, directory: Path, name: str, cookie: str = "fluxfarm-chaos") -> None:
        self.directory = _owned_dir(directory, "rabbitmq")
        # node names are machine-wide (one epmd): two test runs at once must not clash
        self.node = f"fluxfarm-{name}-{uuid.uuid4().hex[:8]}@{RABBITMQ_HOST}"
        self.port = free_port()
        home = _owned_dir(self.directory / "home", "rabbitmq")
        cookie_file = home / ".erlang.cookie"
        cookie_file.write_text(cookie)
        cookie_file.chmod(0o400)
        config = self.directory / "rabbitmq.conf"
        config.write_text(f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users = none\n")
        plugins = self.directory / "enabled_plugins"
        plugins.write_text("[].\n")
        for path in (cookie_file, config, plugins):
            shutil.chown(path, "rabbitmq", "rabbitmq")
        self.env = {
            "HOME": str(home),
            "RABBITMQ_CONFIG_FILE": str(config),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_DIST_PORT": str(free_port()),
            "RABBITMQ_MNESIA_BASE": str(_owned_dir(self.directory / "mnesia", "rabbitmq")),
            "RABBITMQ_LOG_BASE": str(_owned_dir(self.directory / "log", "rabbitmq")),
            "RABBITMQ_PID_FILE": str(self.directory / "rabbitmq.pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(plugins),
        }
        self.server = ServerProcess(
            self.node,
            [str(RABBITMQ_BIN / "rabbitmq-server")],
            self.directory / "console.log",
            user="rabbitmq",
            env=self.env,
            cwd=self.directory,
        )

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def start(self) -> None:
        self.server.start()
        probe = _can(lambda: Connection(self.url, connect_timeout=1).connect().close(), OSError)
        self.server.wait_until(probe, 90)

    def stop(self) -> None:
        self.server.signal(signal.SIGTERM)

    def kill(self) -> None:
        self.server.signal(signal.SIGKILL)

    def ctl(self, *args: str, tool: str = "rabbitmqctl") -> str:
        """Run a RabbitMQ CLI tool against this node, with the node's cookie."""
        found = subprocess.run(
            [str(RABBITMQ_BIN / tool), "-q", "-n", self.node, *args],
            check=True,
            capture_output=True,
            text=True,
            env={"PATH": os.environ.get("PATH", ""), **self.env},
            cwd=self.directory,
            user="rabbitmq",
        )
        return found.stdout


@contextlib.contextmanager
def server_dir(name: str) -> Iterator[Path]:
    """A folder the server's own user can reach (pytest's tmp_path is root's alone);
    removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=f"fluxfarm-{name}-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def running(server: PrivateServer) -> Iterator[None]:
    """Start `server`; stop it when the block ends, also on failure or a restart gone wrong."""
    try:
        server.start()
        yield
    finally:
        server.kill()
