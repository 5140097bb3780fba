"""The webhook transport against a raw HTTP/1.1 server: body framings, reuse, closes, timeouts."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from simulator.transport import StreamTransport

RESPONSES = {
    b"/no-content": b"HTTP/1.1 204 No Content\r\n\r\n",
    b"/chunked": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    ),
    b"/length": b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
    b"/close": b"HTTP/1.1 500 Oops\r\nConnection: close\r\n\r\nbye",
}


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            request_line = await reader.readline()
            if not request_line:
                break
            length = 0
            while (line := await reader.readline()) != b"\r\n":
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            path = request_line.split(b" ")[1].split(b"?")[0]
            if path == b"/slow":
                await asyncio.sleep(0.5)
            writer.write(RESPONSES.get(path, RESPONSES[b"/length"]))
            await writer.drain()
            if path in (b"/close", b"/hangup"):
                break
    except ConnectionError:
        pass
    finally:
        writer.close()


async def _exercise() -> list[tuple[int, bytes]]:
    server = await asyncio.start_server(_serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    results = []
    async with httpx.AsyncClient(transport=StreamTransport(4), timeout=0.3) as client:
        for path in ("/no-content", "/chunked", "/length", "/close", "/length", "/hangup"):
            response = await client.post(f"http://127.0.0.1:{port}{path}?t=1", content=b"{}")
            results.append((response.status_code, response.content))
        # The server hung up after /hangup: the pooled connection is dead, a new one is used.
        response = await client.post(f"http://127.0.0.1:{port}/length", content=b"x")
        results.append((response.status_code, response.content))
        with pytest.raises(httpx.ReadTimeout):
            await client.post(f"http://127.0.0.1:{port}/slow", content=b"x")
        await asyncio.sleep(0.4)
    server.close()
    await server.wait_closed()
    return results


def test_transport_reads_every_framing_and_survives_closed_connections() -> None:
    assert asyncio.run(_exercise()) == [
        (204, b""),
        (200, b"hello world"),
        (201, b"ok"),
        (500, b"bye"),
        (201, b"ok"),
        (201, b"ok"),
        (201, b"ok"),
    ]


def test_transport_reports_refused_connections() -> None:
    async def post() -> None:
        async with httpx.AsyncClient(transport=StreamTransport(1), timeout=1) as client:
            await client.post("http://127.0.0.1:9/", content=b"x")

    with pytest.raises(httpx.TransportError):
        asyncio.run(post())
