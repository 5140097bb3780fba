"""The directory store's images served by `web` under signed, expiring URLs: the URL is
the credential, and nothing else gets a byte."""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import uvicorn

from farmdomain.settings import Settings
from farmweb.app import create_app
from imagestore import ResultsStore, image_key, open_results_store
from imagestore.signing import signed_url
from jobstore.migrations import upgrade
from simulator.server import bind, url_of

PNG = b"\x89PNG\r\n\x1a\n" + b"pixels" * 100


@dataclass
class Web:
    url: str
    settings: Settings
    results: ResultsStore


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    sock = bind("127.0.0.1", 0)
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("images"),
        webhook_secret="images-secret",
        public_base_url=url_of(sock),
        # the job API wants a token: images still need none
        api_auth="required",
    )
    upgrade(settings.resolved_database_url())
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:  # waiting for startup, not asserting on time
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("web did not start")
            time.sleep(0.01)
        yield Web(url_of(sock), settings, open_results_store(settings))
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def _stored(web: Web) -> str:
    key = image_key(str(uuid.uuid4()), str(uuid.uuid4()), "PNG")
    web.results.put(key, PNG, "image/png", hashlib.sha256(PNG).hexdigest())
    return key


def test_a_signed_url_serves_the_image_with_no_bearer_token(web: Web) -> None:
    key = _stored(web)
    assert httpx.get(f"{web.url}/v1/jobs/{uuid.uuid4()}", timeout=10).status_code == 401
    response = httpx.get(web.results.url(key, 60), timeout=10)
    assert response.status_code == 200
    assert response.content == PNG
    assert response.headers["content-type"] == "image/png"


def test_an_expired_url_is_refused(web: Web) -> None:
    key = _stored(web)
    secret = web.settings.webhook_secrets()[0]
    expired = signed_url(web.url, secret, key, int(time.time()) - 1)
    response = httpx.get(expired, timeout=10)
    assert response.status_code == 403
    assert response.json()["error"]["reason"] == "signature"


def test_a_url_signed_for_another_key_or_with_another_secret_is_refused(web: Web) -> None:
    key, other = _stored(web), _stored(web)
    expires = int(time.time()) + 60
    secret = web.settings.webhook_secrets()[0]
    borrowed = httpx.URL(signed_url(web.url, secret, other, expires))
    for url in (
        f"{web.url}/images/{key}?{borrowed.query.decode()}",
        signed_url(web.url, b"not the farm's secret", key, expires),
        f"{web.url}/images/{key}",
    ):
        response = httpx.get(url, timeout=10)
        assert response.status_code == 403, url
        assert response.content != PNG


@pytest.mark.parametrize(
    "path", ["images/../jobs.sqlite", "images/x/y.txt", "webhook.secret", "images/a/b/c.png"]
)
def test_a_key_that_is_not_an_image_key_names_nothing(web: Web, path: str) -> None:
    secret = web.settings.webhook_secrets()[0]
    url = signed_url(web.url, secret, path, int(time.time()) + 60)
    response = httpx.get(url, timeout=10)
    assert response.status_code == 404
    assert response.json()["error"]["reason"] == "unknown_key"


def test_a_deleted_image_is_gone_even_under_a_valid_url(web: Web) -> None:
    key = _stored(web)
    url = web.results.url(key, 60)
    web.results.delete(key)
    response = httpx.get(url, timeout=10)
    assert response.status_code == 404
    assert response.json()["error"]["reason"] == "deleted"
