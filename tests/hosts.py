"""The farm's test hosts: network namespaces on a bridge of their own, the links that cut
them off, and the HAProxy that stands in front of the `web` hosts.

Each host is a namespace `ffh<pid>-<role>` with one veth into the bridge `ffh<pid>-br` in
the root namespace, on a /24 of 10.213.0.0/16 that no route of the machine uses yet. The
test process stays in the root namespace and reaches every host over the bridge. What a
run made is removed when it ends; what a run that died made (its pid gone) is removed by
the next one, by name.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fluxfarm.processes import Host
from tests.private_servers import ServerNotReady, ServerProcess

PREFIX = "ffh"
_OWNER = re.compile(rf"^{PREFIX}(\d+)-")
SUBNETS = "10.213"
PROXY_PORT = 8080
# HAProxy's health checks: a web is out after two failed checks half a second apart
CHECK_INTERVAL_MS = 500


class TopologyError(RuntimeError):
    """A namespace, link or route could not be made; the message ends with ip's answer."""


def ip(*args: str, netns: str | None = None) -> str:
    """Run `ip ARGS` (in `netns` if given); its output, or TopologyError."""
    argv = ["ip", *(["netns", "exec", netns, "ip"] if netns else []), *args]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise TopologyError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done.stdout


def unavailable_reason() -> str | None:
    """Why network namespaces cannot be made here (None: they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "`ip` (iproute2) is not installed"
    if shutil.which("haproxy") is None:
        return "HAProxy is not installed (ops/services.sh installs it)"
    probe = f"{PREFIX}{os.getpid()}-probe"
    try:
        ip("netns", "add", probe)
    except TopologyError as exc:
        return f"`ip netns add` is refused: {exc}"
    ip("netns", "delete", probe)
    return None


@dataclass(frozen=True)
class NetHost:
    """One host: its namespace, its address on the bridge and the root side of its link."""

    role: str
    netns: str
    address: str
    link: str

    @property
    def place(self) -> Host:
        """Where fluxfarm.processes runs a child on this host."""
        return Host(self.address, ("ip", "netns", "exec", self.netns))


@dataclass
class Network:
    """Hosts on one bridge: made by `up`, removed by `down`, cut and healed meanwhile."""

    roles: Sequence[str]
    hosts: dict[str, NetHost] = field(default_factory=dict)
    owner: str = field(default_factory=lambda: f"{PREFIX}{os.getpid()}")

    @property
    def bridge(self) -> str:
        return f"{self.owner}-br"

    def __getitem__(self, role: str) -> NetHost:
        return self.hosts[role]

    def up(self) -> None:
        remove_stale()
        with _subnet_lock():
            subnet = _free_subnet()
            ip("link", "add", self.bridge, "type", "bridge")
            ip("addr", "add", f"{subnet}.1/24", "dev", self.bridge)
            ip("link", "set", self.bridge, "up")
        for index, role in enumerate(self.roles):
            netns, link = f"{self.owner}-{role}", f"{self.owner}-{index}"
            host = NetHost(role, netns, f"{subnet}.{10 + index}", link)
            ip("netns", "add", host.netns)
            self.hosts[role] = host
            ip(
                "link",
                "add",
                host.link,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                host.netns,
            )
            ip("link", "set", host.link, "master", self.bridge, "up")
            ip("addr", "add", f"{host.address}/24", "dev", "eth0", netns=host.netns)
            ip("link", "set", "eth0", "up", netns=host.netns)
            ip("link", "set", "lo", "up", netns=host.netns)

    def down(self) -> None:
        remove_owned(self.owner)
        self.hosts.clear()

    def cut(self, role: str) -> None:
        """Take the host off the network, as a pulled cable: its link goes down."""
        ip("link", "set", self[role].link, "down")

    def reconnect(self, role: str) -> None:
        ip("link", "set", self[role].link, "up")

    def heal(self) -> None:
        """Every link up and every dropped path back, whatever a scenario left cut."""
        for host in self.hosts.values():
            ip("link", "set", host.link, "up")
            ip("route", "flush", "type", "blackhole", netns=host.netns)

    def drop_between(self, one: str, others: Sequence[str]) -> None:
        """Packets from `one` to each of `others` vanish; the other direction still flows.
        (Both directions: call it from each side.)"""
        for other in others:
            ip("route", "add", "blackhole", f"{self[other].address}/32", netns=self[one].netns)

    def restore_between(self, one: str, others: Sequence[str]) -> None:
        for other in others:
            ip("route", "del", "blackhole", f"{self[other].address}/32", netns=self[one].netns)


@contextlib.contextmanager
def network(roles: Sequence[str]) -> Iterator[Network]:
    """The hosts, up for the block and removed afterwards, whatever happens in it."""
    net = Network(roles)
    try:
        net.up()
        yield net
    finally:
        net.down()


@contextlib.contextmanager
def _subnet_lock() -> Iterator[None]:
    """Runs at once on one machine (xdist's workers, two suites) take their /24 one at a
    time: finding it free and giving it to the bridge is one step."""
    with (Path(tempfile.gettempdir()) / f"{PREFIX}-subnets.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _free_subnet() -> str:
    # an address given to a bridge that is not up yet has no route
    used = ip("-4", "route", "show") + ip("-4", "-o", "addr", "show")
    for third in range(256):
        candidate = f"{SUBNETS}.{third}"
        if f"{candidate}." not in used:
            return candidate
    raise TopologyError(f"every /24 of {SUBNETS}.0.0/16 is routed already")


def _namespaces() -> list[str]:
    return [line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()]


def _links() -> list[str]:
    # "7: ffh12-0@if2: <BROADCAST,...": the name, without its peer
    lines = ip("-o", "link", "show").splitlines()
    return [line.split(":")[1].strip().split("@")[0] for line in lines if line.strip()]


def remove_owned(owner: str) -> None:
    """Every namespace and link named for `owner` (a PREFIX and a pid)."""
    for name in _namespaces():
        if name.startswith(f"{owner}-"):
            _kill_inside(name)
            ip("netns", "delete", name)
    for name in _links():
        if name.startswith(f"{owner}-"):
            # a veth's peer went with its namespace; deleting the bridge last is enough
            with contextlib.suppress(TopologyError):
                ip("link", "delete", name)


def remove_stale() -> None:
    """What runs that are gone left behind: their pid names them."""
    names = _namespaces() + _links()
    owners = {found.group(1) for name in names if (found := _OWNER.match(name))}
    for pid in owners:
        if not Path(f"/proc/{pid}").exists():
            remove_owned(f"{PREFIX}{pid}")


def _kill_inside(netns: str) -> None:
    """Processes still in `netns` (a run that died left them) would keep it alive."""
    pids = subprocess.run(
        ["ip", "netns", "pids", netns], capture_output=True, text=True, check=False
    ).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)


@dataclass(frozen=True)
class ServerStat:
    """One line of HAProxy's `show stat`: a server of a backend, as HAProxy sees it."""

    backend: str
    server: str
    status: str
    sessions: int
    redispatched: int


class Proxy:
    """HAProxy on the proxy host, in front of the web hosts: the job API and Runware's
    webhooks each have a backend (so each can be counted), both over the same webs, each
    web taken out after two failed /healthz checks and put back after two good ones."""

    def __init__(self, directory: Path, host: NetHost, webs: Sequence[tuple[str, str]]) -> None:
        self.host = host
        self.socket = directory / "haproxy.sock"
        config = directory / "haproxy.cfg"
        config.write_text(_haproxy_config(host.address, webs, self.socket))
        self.server = ServerProcess(
            "haproxy",
            ["haproxy", "-db", "-f", str(config)],
            directory / "haproxy.log",
            host=host.place,
        )

    @property
    def url(self) -> str:
        return f"http://{self.host.address}:{PROXY_PORT}"

    def start(self) -> None:
        self.server.start()
        self.server.wait_until(self._answers, 15)

    def _answers(self) -> bool:
        try:
            self.stats()
        except OSError:
            return False
        return True

    def stop(self) -> None:
        self.server.signal(signal.SIGTERM)

    def kill(self) -> None:
        self.server.signal(signal.SIGKILL)

    def stats(self) -> dict[tuple[str, str], ServerStat]:
        """Every server of every backend, by (backend, server)."""
        with socket.socket(socket.AF_UNIX) as conn:
            conn.settimeout(5)
            conn.connect(str(self.socket))
            conn.sendall(b"show stat\n")
            chunks = []
            while chunk := conn.recv(65536):
                chunks.append(chunk)
        text = b"".join(chunks).decode().lstrip("# ")
        found = {}
        for row in csv.DictReader(io.StringIO(text)):
            if row["svname"] in ("FRONTEND", "BACKEND"):
                continue
            found[row["pxname"], row["svname"]] = ServerStat(
                row["pxname"],
                row["svname"],
                row["status"],
                int(row["stot"] or 0),
                int(row["wredis"] or 0),
            )
        return found

    def status(self, web: str) -> set[str]:
        """What each backend says of `web` (UP, DOWN, a transition like "UP 1/2")."""
        return {stat.status for (_, server), stat in self.stats().items() if server == web}

    def all_up(self) -> bool:
        try:
            return all(stat.status == "UP" for stat in self.stats().values())
        except OSError:
            return False


def _haproxy_config(address: str, webs: Sequence[tuple[str, str]], stats_socket: Path) -> str:
    servers = "\n".join(
        f"    server {name} {where} check inter {CHECK_INTERVAL_MS}ms fall 2 rise 2"
        for name, where in webs
    )
    backend = (
        "    balance roundrobin\n"
        "    option httpchk GET /healthz\n"
        "    http-check expect status 200\n"
        "    # a request that cannot reach a web goes to the other one\n"
        "    option redispatch 1\n"
        "    retries 3\n"
        f"{servers}\n"
    )
    return (
        "global\n"
        f"    stats socket {stats_socket} mode 600 level admin\n"
        "defaults\n"
        "    mode http\n"
        "    timeout connect 1s\n"
        "    timeout client 60s\n"
        # a web cut off mid-request answers 504 after this; nothing here holds a wait open
        "    timeout server 10s\n"
        "    timeout check 1s\n"
        "frontend farm\n"
        f"    bind {address}:{PROXY_PORT}\n"
        "    acl webhook path_beg /webhooks/\n"
        "    use_backend webhooks if webhook\n"
        "    default_backend api\n"
        f"backend api\n{backend}"
        f"backend webhooks\n{backend}"
    )


def wait_proxy_ready(proxy: Proxy, server: ServerProcess | None = None) -> None:
    """Until HAProxy has every web UP."""
    target = server or proxy.server
    try:
        target.wait_until(proxy.all_up, 30)
    except ServerNotReady as exc:
        raise ServerNotReady(f"{exc}\nstats: {proxy.stats()}") from exc
