"""`download` keeps only what checks out: the sha256 the farm recorded, an image type, a
size cap; and the tenant's token goes to the farm alone, never to another host.

The farm here is a real HTTP server answering as a farm that keeps durable copies does
(images with `url` and `sha256`), with the image bytes on it and on a second host.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from fluxfarm_client import AsyncClient, ChecksumMismatch, Client, DownloadError
from tests.fluxfarm_client.conftest import job_json
from tests.http_servers import serve_asgi

TOKEN = "tenant-token"
PNG = b"\x89PNG\r\n\x1a\n" + b"farm-copy" * 100
JPEG = b"\xff\xd8\xff" + b"cdn-copy" * 100


@dataclass
class Host:
    """A real HTTP server serving `files`; it notes the Authorization header of each GET."""

    files: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    authorizations: list[str | None] = field(default_factory=list)
    url: str = ""

    def app(self) -> Starlette:
        async def job(request: Request) -> Response:
            return JSONResponse(self.jobs[request.path_params["job_id"]])

        async def file(request: Request) -> Response:
            self.authorizations.append(request.headers.get("authorization"))
            content, media_type = self.files[request.path_params["name"]]
            if request.query_params.get("chunked"):
                # no Content-Length: the size is only known as the bytes arrive
                chunks = iter([content[i : i + 64] for i in range(0, len(content), 64)])
                return StreamingResponse(chunks, media_type=media_type)
            return Response(content, media_type=media_type)

        return Starlette(routes=[Route("/v1/jobs/{job_id}", job), Route("/files/{name}", file)])


@pytest.fixture
def hosts() -> Iterator[tuple[Host, Host]]:
    farm, cdn = Host(), Host()
    with ExitStack() as stack:
        farm.url = stack.enter_context(serve_asgi(farm.app()))
        cdn.url = stack.enter_context(serve_asgi(cdn.app()))
        farm.files["a"] = (PNG, "image/png")
        cdn.files["b"] = (JPEG, "image/jpeg")
        cdn.files["page"] = (b"<html>", "text/html")
        yield farm, cdn


def _sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def test_images_are_kept_when_their_sha256_matches_and_the_token_stays_home(
    hosts: tuple[Host, Host], tmp_path: Path
) -> None:
    farm, cdn = hosts
    farm.jobs["j1"] = job_json(
        "j1",
        [
            {"url": f"{farm.url}/files/a", "sha256": _sha(PNG)},
            {"url": f"{cdn.url}/files/b", "sha256": _sha(JPEG).upper()},
        ],
    )
    with Client(farm.url, token=TOKEN) as client:
        paths = client.download("j1", tmp_path)

    assert [p.name for p in paths] == ["img-0.png", "img-1.jpg"]
    assert [p.read_bytes() for p in paths] == [PNG, JPEG]
    assert farm.authorizations == [f"Bearer {TOKEN}"]
    assert cdn.authorizations == [None]


def test_a_checksum_mismatch_keeps_nothing(hosts: tuple[Host, Host], tmp_path: Path) -> None:
    farm, _cdn = hosts
    farm.jobs["j2"] = job_json("j2", [{"url": f"{farm.url}/files/a", "sha256": _sha(b"other")}])
    with Client(farm.url) as client, pytest.raises(ChecksumMismatch, match="sha256"):
        client.download("j2", tmp_path)

    async def again() -> None:
        async with AsyncClient(farm.url) as client:
            await client.download("j2", tmp_path)

    with pytest.raises(ChecksumMismatch):
        asyncio.run(again())
    assert list((tmp_path / "j2").iterdir()) == []


@pytest.mark.parametrize(
    ("image", "reason"),
    [
        ({"url": "{cdn}/files/page"}, "not an image"),
        ({"url": "{cdn}/files/b"}, "803 bytes, over the limit of 100 bytes"),
        ({"url": "{cdn}/files/b?chunked=1"}, "over the limit of 100 bytes"),
        ({"imageURL": None, "hasInlineData": True}, "gives no URL"),
        (
            {"deleted": True, "deletedAt": "2026-12-01T00:00:00Z"},
            "deleted by the farm's retention at 2026-12-01T00:00:00",
        ),
        ({"url": "{cdn}/files/b", "imageUUID": "../escape"}, "not a safe file name"),
    ],
)
def test_what_cannot_be_kept_is_refused_with_the_reason(
    hosts: tuple[Host, Host], tmp_path: Path, image: dict[str, Any], reason: str
) -> None:
    farm, cdn = hosts
    if "url" in image:
        image = {**image, "url": image["url"].format(cdn=cdn.url)}
    farm.jobs["j3"] = job_json("j3", [image])
    with (
        Client(farm.url, max_image_bytes=100) as client,
        pytest.raises(DownloadError, match=reason),
    ):
        client.download("j3", tmp_path)
    assert not any(tmp_path.rglob("*.*"))
