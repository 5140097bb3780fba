"""The callback sender's HTTP/1.1: one POST and the first bytes of its answer, on keep-alive
connections of its own, spoken with h11 over asyncio streams.

A callback needs little of an HTTP client: one POST, redirects never followed, the
answer's first bytes, the whole exchange bounded by the caller's asyncio timeout. A request
through httpx's layers costs the worker several times the exchange itself, and a batch is
tens of exchanges at once.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import h11

# connections kept idle per receiver, each for at most IDLE_S: under the keep-alive timeout
# of common servers (uvicorn's is 5 s), so that a kept connection is rarely one they closed
IDLE_MAX = 100
IDLE_S = 4.0
READ_BYTES = 65536
REDIRECTS = frozenset({301, 302, 303, 307, 308})

# scheme, host, port
Origin = tuple[str, str, int]


@dataclass(frozen=True)
class Answer:
    """A receiver's answer: its status, its first bytes, and where a redirect points."""

    status: int
    body: bytes
    location: str | None


class _Unanswered(Exception):
    """The connection ended before any answer: a kept one may have been closed meanwhile."""


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    protocol: h11.Connection = field(default_factory=lambda: h11.Connection(h11.CLIENT))
    idle_since: float = 0.0

    async def event(self) -> object:
        while True:
            event = self.protocol.next_event()
            if event is not h11.NEED_DATA:
                return event
            # b"" at the end of the stream tells h11 the peer closed
            self.protocol.receive_data(await self.reader.read(READ_BYTES))


class Connections:
    """Keep-alive connections by origin; used from one event loop only."""

    def __init__(self, connect_timeout_s: float, tls: ssl.SSLContext) -> None:
        self._connect_timeout_s = connect_timeout_s
        self._tls = tls
        self._idle: dict[Origin, list[_Connection]] = {}

    async def post(
        self, url: str, headers: list[tuple[str, str]], body: bytes, limit: int
    ) -> Answer:
        """POST `body` to `url`; the answer, its body cut at `limit` bytes."""
        parts = urlsplit(url)
        origin = (parts.scheme, parts.hostname or "", parts.port or _default_port(parts.scheme))
        netloc = parts.netloc.rpartition("@")[2]
        host = netloc if netloc.isascii() else netloc.encode("idna").decode()
        request = h11.Request(
            method="POST",
            target=(parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
            headers=[("Host", host), *headers, ("Content-Length", str(len(body)))],
        )
        kept = self._take(origin)
        if kept is not None:
            try:
                return await self._exchange(origin, kept, request, body, limit)
            except _Unanswered:
                pass  # closed by the receiver while idle: once more, on a new connection
        try:
            return await self._exchange(origin, await self._connect(origin), request, body, limit)
        except _Unanswered as exc:
            raise ConnectionResetError("the connection closed before any answer") from exc

    async def close(self) -> None:
        idle = [connection for kept in self._idle.values() for connection in kept]
        self._idle.clear()
        for connection in idle:
            connection.writer.close()
        await asyncio.gather(*(c.writer.wait_closed() for c in idle), return_exceptions=True)
        # one more turn of the loop: connections cut short just before are closed too
        await asyncio.sleep(0)

    async def _exchange(
        self, origin: Origin, connection: _Connection, request: h11.Request, body: bytes, limit: int
    ) -> Answer:
        protocol = connection.protocol
        try:
            try:
                sent = protocol.send(request) or b""
                sent += protocol.send(h11.Data(data=body)) or b""
                sent += protocol.send(h11.EndOfMessage()) or b""
                connection.writer.write(sent)
                await connection.writer.drain()
                head = await connection.event()
                while isinstance(head, h11.InformationalResponse):
                    head = await connection.event()
            except (OSError, h11.RemoteProtocolError) as exc:
                raise _Unanswered from exc
            if not isinstance(head, h11.Response):
                raise _Unanswered
            answer = bytearray()
            event = await connection.event()
            while isinstance(event, h11.Data) and len(answer) < limit:
                answer += event.data
                if len(answer) < limit:
                    event = await connection.event()
        except BaseException:
            connection.writer.close()
            raise
        if isinstance(event, h11.EndOfMessage) and protocol.our_state is protocol.their_state:
            protocol.start_next_cycle()
            self._keep(origin, connection)
        else:
            # cut short (enough kept), or the receiver closes: not reusable
            connection.writer.close()
        location = dict(head.headers).get(b"location")
        redirect = head.status_code in REDIRECTS and location is not None
        return Answer(
            head.status_code,
            bytes(answer[:limit]),
            location.decode(errors="replace") if redirect and location is not None else None,
        )

    async def _connect(self, origin: Origin) -> _Connection:
        scheme, host, port = origin
        tls = self._tls if scheme == "https" else None
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=tls, server_hostname=host if tls else None
                )
        except TimeoutError as exc:
            raise ConnectionError(f"no connection within {self._connect_timeout_s:g}s") from exc
        return _Connection(reader, writer)

    def _take(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin, [])
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if not connection.reader.at_eof() and now - connection.idle_since < IDLE_S:
                return connection
            connection.writer.close()
        return None

    def _keep(self, origin: Origin, connection: _Connection) -> None:
        idle = self._idle.setdefault(origin, [])
        if len(idle) >= IDLE_MAX:
            connection.writer.close()
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80
