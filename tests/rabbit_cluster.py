"""A RabbitMQ cluster of a test's own: three private nodes on loopback (their own ports,
data dirs and one cookie of their own), started at once and joined into one cluster; a
node may be killed, and every node is killed when the block ends, however it ends."""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.private_servers import PrivateRabbitMQ, server_dir


class RabbitCluster:
    """Nodes of one cluster; the first is the one the others join."""

    def __init__(self, directory: Path, size: int = 3) -> None:
        cookie = secrets.token_hex(16)
        self.nodes = [
            PrivateRabbitMQ(directory / f"node-{i}", f"cluster{i}", cookie=cookie)
            for i in range(size)
        ]

    @property
    def url(self) -> str:
        """Every node's URL, `;`-separated: a client fails over to the next one."""
        return ";".join(node.url for node in self.nodes)

    def start(self) -> None:
        self._each(lambda node: node.start(), self.nodes)
        first, others = self.nodes[0], self.nodes[1:]
        self._each(lambda node: node.ctl("stop_app"), others)
        # joins one at a time: each changes the cluster's membership
        for node in others:
            node.ctl("join_cluster", first.node)
        self._each(lambda node: node.ctl("start_app"), others)
        self._each(lambda node: node.ctl("await_startup"), others)

    def kill(self) -> None:
        self._each(lambda node: node.kill(), self.nodes)

    def live(self) -> list[PrivateRabbitMQ]:
        return [node for node in self.nodes if node.server.running()]

    def members(self) -> list[str]:
        """Nodes running in the cluster, as a live node sees them."""
        status = self.live()[0].ctl("cluster_status", "--formatter", "json")
        return sorted(json.loads(status)["running_nodes"])

    def leader(self, queue: str) -> str:
        """The node leading quorum queue `queue` as a live node sees it; "" while electing."""
        listing = self.live()[0].ctl("list_queues", "name", "leader", "--no-table-headers")
        # classic queues (a worker's pidbox) list no leader
        rows = (line.split("\t") for line in listing.splitlines())
        return {row[0]: row[1].strip() for row in rows if len(row) == 2}.get(queue, "")

    def node(self, name: str) -> PrivateRabbitMQ:
        return next(node for node in self.nodes if node.node == name)

    @staticmethod
    def _each(action: Callable[[PrivateRabbitMQ], object], nodes: list[PrivateRabbitMQ]) -> None:
        """`action` on every node at once (a node takes seconds to start or stop)."""
        with ThreadPoolExecutor(len(nodes)) as pool:
            for done in [pool.submit(action, node) for node in nodes]:
                done.result()


@contextlib.contextmanager
def rabbit_cluster(size: int = 3) -> Iterator[RabbitCluster]:
    with server_dir("rabbit-cluster") as directory:
        cluster = RabbitCluster(directory, size)
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.kill()
