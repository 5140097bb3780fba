"""The HTTP side shared by both clients: retrying a call, reading the farm's answers and
refusals, and keeping a fetched image only once its size, type and sha256 check out."""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from fluxfarm_client._errors import (
    ChecksumMismatch,
    DownloadError,
    ErrorItem,
    TransportError,
    api_error,
)
from fluxfarm_client._operations import Call, Sleep
from fluxfarm_client._retry import Retries

# connect and pool waits stay short; a read may take as long as the farm's slowest answer
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0, pool=10.0)
USER_AGENT = "fluxfarm-client/0.1"
_SUFFIXES = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}


@dataclass(frozen=True)
class Send:
    """One HTTP request, sent once; its outcome is the httpx.Response, or the
    httpx.TransportError that stopped it."""

    method: str
    path: str
    json: Any
    params: Any
    timeout: httpx.Timeout


def read_timeout(base: httpx.Timeout, wait_s: float) -> httpx.Timeout:
    """`base` with `wait_s` more to read, for an answer the farm holds back on purpose."""
    if not wait_s:
        return base
    return httpx.Timeout(
        connect=base.connect,
        read=None if base.read is None else base.read + wait_s,
        write=base.write,
        pool=base.pool,
    )


def retrying(
    call: Call, retries: Retries, timeout: httpx.Timeout
) -> Generator[Send | Sleep, Any, Any]:
    """`call` sent until it is answered, or refused for good: the answer's JSON, else the
    ApiError of its refusal (or TransportError). Every attempt sends the very same body,
    idempotency key included."""
    send = Send(
        call.method, call.path, call.json, list(call.params), read_timeout(timeout, call.wait_s)
    )
    attempt = 0
    while True:
        attempt += 1
        outcome = yield send
        if isinstance(outcome, httpx.Response) and outcome.is_success:
            return outcome.json()
        response = outcome if isinstance(outcome, httpx.Response) else None
        delay = retries.delay_s(attempt, response)
        if delay is None:
            if response is None:
                reason = f"{type(outcome).__name__}: {outcome}"
                raise TransportError(f"{call.method} {call.path}: {reason}") from outcome
            raise refusal(response)
        yield Sleep(delay)


def refusal(response: httpx.Response) -> Exception:
    """The ApiError a refused answer means, with every reason its error body gives."""
    errors: list[ErrorItem] = []
    try:
        body = response.json()
        items = body.get("errors", []) if isinstance(body, dict) else []
        errors = [
            ErrorItem(str(i.get("field", "")), str(i.get("rule", "")), str(i.get("message", "")))
            for i in items
            if isinstance(i, dict)
        ]
    except ValueError:
        text = response.text[:200]
        errors = [ErrorItem("body", "http", text)] if text else []
    return api_error(response.status_code, errors, response.headers.get("x-request-id"))


def same_origin(url: str, base_url: httpx.URL) -> bool:
    """Whether `url` is on the farm itself: only there does the token go along."""
    target = urlsplit(url)
    if not target.scheme:
        return True
    return (target.scheme, target.hostname, target.port or _default_port(target.scheme)) == (
        base_url.scheme,
        base_url.host,
        base_url.port or _default_port(base_url.scheme),
    )


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


class ImageSink:
    """One image being fetched: written to a temporary file beside its place, moved there
    only once its size, type and sha256 check out."""

    def __init__(self, url: str, stem: Path, sha256: str | None, max_bytes: int) -> None:
        self.url = url
        self.stem = stem
        self.sha256 = sha256.lower() if sha256 else None
        self.max_bytes = max_bytes
        self._digest = hashlib.sha256()
        self._size = 0
        self._suffix = ""
        self._partial = stem.with_name(f".{stem.name}.{secrets.token_hex(4)}.part")
        self._file: Any = None

    def start(self, response: httpx.Response) -> None:
        if response.status_code != 200:
            raise DownloadError(self.url, f"answered {response.status_code}")
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in _SUFFIXES:
            raise DownloadError(self.url, f"not an image: content type {content_type!r}")
        self._suffix = _SUFFIXES[content_type]
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise DownloadError(
                self.url, f"{declared} bytes, over the limit of {self.max_bytes} bytes"
            )
        self.stem.parent.mkdir(parents=True, exist_ok=True)
        self._file = self._partial.open("wb")

    def write(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size > self.max_bytes:
            raise DownloadError(self.url, f"over the limit of {self.max_bytes} bytes")
        self._digest.update(chunk)
        self._file.write(chunk)

    def finish(self) -> Path:
        self._file.close()
        found = self._digest.hexdigest()
        if self.sha256 is not None and found != self.sha256:
            raise ChecksumMismatch(self.url, f"sha256 {found}, the farm recorded {self.sha256}")
        path = self.stem.with_name(self.stem.name + self._suffix)
        os.replace(self._partial, path)
        return path

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
        self._partial.unlink(missing_ok=True)
