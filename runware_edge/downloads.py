"""Fetching result images safely: allow-listed hosts, public addresses, capped size, images.

An `imageURL` comes from a webhook body, so it is input like any other. Only the origins
(scheme, host and port) on FLUXFARM_DOWNLOAD_HOSTS (Runware's image host over https by
default) and runware_url's own are fetched: an allowed host on another port may be any
service of that machine. A host name must resolve to public addresses only; a private or
loopback address (the simulator's 127.0.0.1) is reached only when that literal address,
or `localhost`, is the allow-listed host. Redirects are followed by hand, each hop checked
the same way. Every refusal, a failed connection or a peer that does not speak HTTP
included, is DownloadRefused with its reason.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx

from farmdomain.errors import DownloadRefused
from farmdomain.jobs import Job
from farmdomain.settings import Settings, origin_of

MAX_REDIRECTS = 3
# the image types Runware produces, with the bytes each file starts with
_SIGNATURES = {
    "image/jpeg": (b"\xff\xd8\xff", "jpg"),
    "image/png": (b"\x89PNG\r\n\x1a\n", "png"),
    "image/webp": (b"RIFF", "webp"),
}
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")

Resolver = Callable[[str, int], list[str]]


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to."""
    found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in found})


def _literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


class SafeDownloader:
    """Fetches result images under the download rules of `settings`; one per batch."""

    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx.BaseTransport | None = None,
        resolver: Resolver = resolve,
    ) -> None:
        self.allowed = settings.download_allow_list()
        self.max_bytes = settings.download_max_bytes
        self._resolve = resolver
        self._http = httpx.Client(
            transport=transport,
            follow_redirects=False,
            timeout=httpx.Timeout(30.0, connect=settings.connect_timeout_s),
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def fetch(self, url: str) -> tuple[bytes, str]:
        """The image at `url` and its content type; DownloadRefused for anything else."""
        for _ in range(MAX_REDIRECTS + 1):
            self._check(url)
            try:
                with self._http.stream("GET", url) as response:
                    if response.is_redirect:
                        url = str(response.url.join(response.headers.get("location", "")))
                        continue
                    return self._image(url, response)
            except httpx.HTTPError as exc:
                raise DownloadRefused(url, "transport", type(exc).__name__) from exc
        raise DownloadRefused(url, "redirects", f"more than {MAX_REDIRECTS} redirects")

    def save_job(self, job: Job, directory: Path) -> list[Path]:
        """Save every URL image of `job` as directory/<job id>/<imageUUID>.<ext>."""
        saved = []
        for image in job.images:
            if image.image_url is None:
                continue
            if not _SAFE_NAME.fullmatch(image.image_uuid):
                # the name comes from a webhook body: never let it pick a path
                raise DownloadRefused(image.image_url, "name", "imageUUID is not a safe name")
            content, content_type = self.fetch(image.image_url)
            path = directory / job.id / f"{image.image_uuid}.{_SIGNATURES[content_type][1]}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            saved.append(path)
        return saved

    def _check(self, url: str) -> None:
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise DownloadRefused(url, "url", "not a URL") from exc
        if parsed.scheme not in ("http", "https"):
            raise DownloadRefused(url, "scheme", "only http and https are fetched")
        origin = origin_of(url)
        if origin is None:
            raise DownloadRefused(url, "url", "no host or port")
        _scheme, host, port = origin
        if origin not in self.allowed:
            if all(allowed[1] != host for allowed in self.allowed):
                raise DownloadRefused(url, "host", f"host {host!r} is not on the download list")
            listed = ", ".join(sorted(f"{s}:{p}" for s, h, p in self.allowed if h == host))
            raise DownloadRefused(url, "port", f"{host} is listed for {listed} only")
        if _literal(host.strip("[]")) is not None or host == "localhost":
            return  # the operator named this very address
        try:
            addresses = self._resolve(host, port)
        except OSError as exc:
            raise DownloadRefused(url, "address", f"{host} does not resolve") from exc
        for address in addresses:
            if not ipaddress.ip_address(address.split("%")[0]).is_global:
                raise DownloadRefused(url, "address", f"{host} resolves to non-public {address}")

    def _image(self, url: str, response: httpx.Response) -> tuple[bytes, str]:
        if response.status_code != 200:
            raise DownloadRefused(url, "status", f"answered HTTP {response.status_code}")
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in _SIGNATURES:
            raise DownloadRefused(url, "content_type", f"{content_type or 'no type'} is no image")
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise DownloadRefused(url, "too_large", f"over {self.max_bytes} bytes")
        chunks, size = [], 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > self.max_bytes:
                raise DownloadRefused(url, "too_large", f"over {self.max_bytes} bytes")
            chunks.append(chunk)
        content = b"".join(chunks)
        if not content.startswith(_SIGNATURES[content_type][0]):
            raise DownloadRefused(url, "content_type", f"the bytes are not {content_type}")
        return content, content_type
