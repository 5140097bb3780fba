"""The directory store's images served by `web` under signed, expiring URLs: the URL is
the credential, and nothing else gets a byte."""

from __future__ import annotations

import base64
import hashlib
import io
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import uvicorn
from PIL import Image

from farmdomain.settings import Settings
from farmdomain.values import IncomingResult
from farmweb.app import create_app
from imagestore import ResultsStore, image_key, open_results_store
from imagestore.signing import signed_url
from jobstore.api_tokens import ApiTokenStore
from jobstore.migrations import upgrade
from jobstore.store import JobStore
from simulator.server import bind, url_of
from worker.copying import Copier

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


def test_a_kept_image_is_in_the_job_with_its_digest_size_and_a_durable_url(web: Web) -> None:
    store = JobStore.from_settings(web.settings)
    _, token = ApiTokenStore(store.engine).create("acme", "reader", can_write=False)
    params = {"positivePrompt": "a lamp", "width": 32, "height": 16, "outputFormat": "PNG"}
    job, _ = store.create_job(params, tenant="acme", deadline_s=600)
    out = io.BytesIO()
    Image.new("RGB", (32, 16), (10, 20, 30)).save(out, "PNG")
    inline = base64.b64encode(out.getvalue()).decode()
    image_uuid = str(uuid.uuid4())
    result = IncomingResult(job.task_uuid, image_uuid, None, inline, 1, None, False)
    store.record_result(result, "webhook")
    headers = {"authorization": f"Bearer {token}"}

    before = httpx.get(f"{web.url}/v1/jobs/{job.id}", headers=headers, timeout=10).json()
    copier = Copier(web.settings, store.engine)
    copier.copy_all([(job.task_uuid, image_uuid)])
    after = httpx.get(f"{web.url}/v1/jobs/{job.id}", headers=headers, timeout=10).json()

    [pending], [kept] = before["images"], after["images"]
    assert (pending["sha256"], pending["bytes"], pending["url"]) == (None, None, None)
    assert pending["hasInlineData"] is True
    assert (kept["sha256"], kept["bytes"]) == (
        hashlib.sha256(out.getvalue()).hexdigest(),
        len(out.getvalue()),
    )
    assert kept["hasInlineData"] is False
    fetched = httpx.get(kept["url"], timeout=10)  # no token: the URL is the credential
    assert fetched.status_code == 200
    assert fetched.content == out.getvalue()
    copier.close()
    store.engine.dispose()
