"""A lean HTTP/1.1 transport for httpx over asyncio streams, for many small plain-HTTP requests.

httpcore's connection pool rescans its waiting requests on every change, so with hundreds of
webhooks in flight it falls to a few hundred requests per second. This transport keeps
keep-alive connections per origin behind a semaphore (waiting costs nothing) and does only
what webhooks and uploads need: send a request with a body, read status, headers and body.
HTTPS goes to httpx's own transport. Each request's read timeout bounds the whole exchange,
which is the "answer within N seconds" rule webhook senders apply.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

import httpx

Origin = tuple[str, int]


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def close(self) -> None:
        self.writer.close()


async def _read_body(
    reader: asyncio.StreamReader, status: int, headers: dict[bytes, bytes]
) -> tuple[bytes, bool]:
    """The response body, and whether the connection can carry another request."""
    if status in (204, 304) or status < 200:
        return b"", True
    if b"content-length" in headers:
        return await reader.readexactly(int(headers[b"content-length"])), True
    if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
        chunks: list[bytes] = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                return b"".join(chunks), True
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
    return await reader.read(), False


class StreamTransport(httpx.AsyncBaseTransport):
    """Pooled HTTP/1.1 over asyncio streams, at most `max_connections` requests at once."""

    def __init__(self, max_connections: int) -> None:
        self._slots = asyncio.Semaphore(max_connections)
        self._max_idle = max_connections
        self._idle: defaultdict[Origin, list[_Connection]] = defaultdict(list)
        self._tls = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=max_connections))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme != "http":
            return await self._tls.handle_async_request(request)
        timeouts = request.extensions.get("timeout", {})
        budget = timeouts.get("read") or timeouts.get("connect")
        async with self._slots:
            try:
                async with asyncio.timeout(budget):
                    return await self._exchange(request)
            except TimeoutError as exc:
                raise httpx.ReadTimeout("no response in time", request=request) from exc
            except (OSError, EOFError, ValueError, asyncio.LimitOverrunError) as exc:
                raise httpx.RemoteProtocolError(str(exc) or type(exc).__name__) from exc

    async def _exchange(self, request: httpx.Request) -> httpx.Response:
        origin = (request.url.host, request.url.port or 80)
        payload = self._serialize(request, await request.aread())
        idle = self._idle[origin]
        while idle:
            # A pooled connection may have been closed by the server meanwhile; then the
            # request never reached it and is sent again on another connection.
            connection = idle.pop()
            try:
                return await self._round_trip(origin, connection, request, payload)
            except (OSError, EOFError):
                connection.close()
        reader, writer = await asyncio.open_connection(*origin)
        return await self._round_trip(origin, _Connection(reader, writer), request, payload)

    @staticmethod
    def _serialize(request: httpx.Request, body: bytes) -> bytes:
        lines = [b"%s %s HTTP/1.1" % (request.method.encode(), request.url.raw_path)]
        lines += [b"%s: %s" % (name, value) for name, value in request.headers.raw]
        return b"\r\n".join(lines) + b"\r\n\r\n" + body

    async def _round_trip(
        self,
        origin: Origin,
        connection: _Connection,
        request: httpx.Request,
        payload: bytes,
    ) -> httpx.Response:
        try:
            connection.writer.write(payload)
            await connection.writer.drain()
            status_line = await connection.reader.readline()
            if not status_line:
                raise EOFError("connection closed before a response")
            status = int(status_line.split(b" ", 2)[1])
            raw_headers: list[tuple[bytes, bytes]] = []
            while (line := await connection.reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.partition(b":")
                raw_headers.append((name.strip(), value.strip()))
            headers = {name.lower(): value for name, value in raw_headers}
            body, reusable = await _read_body(connection.reader, status, headers)
        except BaseException:
            connection.close()
            raise
        reusable = reusable and headers.get(b"connection", b"").lower() != b"close"
        if reusable and len(self._idle[origin]) < self._max_idle:
            self._idle[origin].append(connection)
        else:
            connection.close()
        return httpx.Response(status, headers=raw_headers, content=body, request=request)

    async def aclose(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()
        await self._tls.aclose()
