"""Result downloads: allow-listed hosts, public addresses, checked redirects, size and type."""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from farmdomain.errors import DownloadRefused
from farmdomain.settings import Settings
from runware_edge.downloads import SafeDownloader

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
PUBLIC = {"im.runware.ai": ["104.18.6.1"], "evil.example": ["104.18.6.66"]}


def downloader(handler: httpx.MockTransport, tmp_path: Path, **overrides: Any) -> SafeDownloader:
    settings = Settings(data_dir=tmp_path, runware_url="http://127.0.0.1:9/v1", **overrides)
    return SafeDownloader(
        settings, transport=handler, resolver=lambda host, _port: PUBLIC.get(host, ["10.0.0.5"])
    )


def serve(status: int = 200, content: bytes = PNG, **headers: str) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            status, content=content, headers={"content-type": "image/png", **headers}
        )

    return httpx.MockTransport(handle)


def test_an_allow_listed_image_is_fetched(tmp_path: Path) -> None:
    with downloader(serve(), tmp_path) as fetch:
        assert fetch.fetch("https://im.runware.ai/image/a.png") == (PNG, "image/png")
        # the simulator's literal loopback address is on the list through runware_url
        assert fetch.fetch("http://127.0.0.1:9/image/a.png")[1] == "image/png"


@pytest.mark.parametrize(
    ("url", "transport", "reason"),
    [
        ("https://evil.example/a.png", serve(), "host"),
        ("file:///etc/passwd", serve(), "scheme"),
        ("http://127.0.0.2:9/a.png", serve(), "host"),
        ("https://im.runware.ai/a.png", serve(302, location="https://evil.example/a"), "host"),
        ("https://im.runware.ai/a.png", serve(302, location="http://169.254.169.254/"), "host"),
        ("https://im.runware.ai/a.png", serve(**{"content-type": "text/html"}), "content_type"),
        ("https://im.runware.ai/a.png", serve(content=b"<html>"), "content_type"),
        ("https://im.runware.ai/a.png", serve(content=PNG * 1000), "too_large"),
        ("https://im.runware.ai/a.png", serve(404), "status"),
        ("https://im.runware.ai/a.png", serve(302, location="/again"), "redirects"),
        ("https://im.runware.ai:5432/a.png", serve(), "port"),
        ("http://im.runware.ai/a.png", serve(), "port"),
        ("http://127.0.0.1:6379/a.png", serve(), "port"),
        ("https://im.runware.ai/a.png", serve(302, location="http://127.0.0.1:5432/"), "port"),
    ],
    ids=[
        "other-host", "file-scheme", "other-loopback", "redirect-elsewhere",
        "redirect-to-metadata", "html", "wrong-bytes", "too-large", "404", "redirect-loop",
        "allowed-host-other-port", "allowed-host-other-scheme", "runware-host-other-port",
        "redirect-to-runware-host-other-port",
    ],
)  # fmt: skip
def test_a_refused_download(
    tmp_path: Path, url: str, transport: httpx.MockTransport, reason: str
) -> None:
    with (
        downloader(transport, tmp_path, download_max_bytes=4096) as fetch,
        pytest.raises(DownloadRefused) as refused,
    ):
        fetch.fetch(url)
    assert refused.value.reason == reason


def test_an_allow_listed_name_resolving_to_a_private_address_is_refused(tmp_path: Path) -> None:
    with (
        downloader(serve(), tmp_path, download_hosts="im.runware.ai,intranet.example") as fetch,
        pytest.raises(DownloadRefused, match=r"non-public 10\.0\.0\.5"),
    ):
        fetch.fetch("https://intranet.example/a.png")


def test_a_peer_that_does_not_speak_http_is_a_refusal_not_a_protocol_error(
    tmp_path: Path,
) -> None:
    # a Redis-like service on an allow-listed origin: it answers a line and hangs up
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def answer() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(4096)
                conn.sendall(b"-ERR unknown command 'GET'\r\n")

        thread = threading.Thread(target=answer)
        thread.start()
        settings = Settings(data_dir=tmp_path, runware_url=f"http://127.0.0.1:{port}/v1")
        with SafeDownloader(settings) as fetch, pytest.raises(DownloadRefused) as refused:
            fetch.fetch(f"http://127.0.0.1:{port}/image/a.png")
        thread.join()
    assert refused.value.reason == "transport"
