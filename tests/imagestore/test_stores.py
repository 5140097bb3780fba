"""Both results stores behind the one Protocol: write-once keys, URLs that fetch the bytes,
and storage that is down raising the error a copy retries on."""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from farmdomain.errors import (
    ConfigurationError,
    DownloadRefused,
    ResultsStoreConflict,
    ResultsStoreError,
    ResultsStoreUnavailable,
)
from farmdomain.settings import Settings
from fluxfarm.processes import Farm
from imagestore import ResultsStore, image_key, open_results_store
from imagestore.directory import DirectoryStore
from imagestore.signing import verify
from tests.s3server import MotoS3

SECRET = "store-test-secret"


@pytest.fixture(params=["directory", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ResultsStore:
    settings = Settings(data_dir=tmp_path, webhook_secret=SECRET)
    if request.param == "s3":
        moto: MotoS3 = request.getfixturevalue("moto_s3")
        settings = moto.settings(settings, prefix=f"t-{uuid.uuid4().hex[:8]}")
    return open_results_store(settings)


def _key() -> str:
    return image_key(str(uuid.uuid4()), str(uuid.uuid4()), "PNG")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_an_image_is_written_once_and_read_back_with_its_size_and_digest(
    store: ResultsStore,
) -> None:
    key, data = _key(), b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40

    assert store.put(key, data, "image/png", _sha(data)) is True
    assert store.put(key, data, "image/png", _sha(data)) is False

    assert store.get(key) == data
    found = store.head(key)
    assert found is not None
    assert (found.size, found.sha256, found.content_type) == (len(data), _sha(data), "image/png")


def test_other_bytes_under_a_used_key_are_refused_and_the_first_bytes_stay(
    store: ResultsStore,
) -> None:
    key, first, other = _key(), b"first image bytes", b"other image bytes"
    store.put(key, first, "image/png", _sha(first))

    with pytest.raises(ResultsStoreConflict):
        store.put(key, other, "image/png", _sha(other))
    assert store.get(key) == first


def test_racing_writers_of_one_key_write_it_once(store: ResultsStore) -> None:
    key, data = _key(), b"raced image" * 1000
    written: list[bool] = []
    start = threading.Barrier(8)

    def write() -> None:
        start.wait()
        written.append(store.put(key, data, "image/png", _sha(data)))

    threads = [threading.Thread(target=write) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(written) == [False] * 7 + [True]
    assert store.get(key) == data


def test_a_deleted_image_is_gone(store: ResultsStore) -> None:
    key, data = _key(), b"soon deleted"
    store.put(key, data, "image/png", _sha(data))
    store.delete(key)
    store.delete(key)
    assert store.head(key) is None
    with pytest.raises(ResultsStoreError) as refused:
        store.get(key)
    assert refused.value.reason == "missing"


def test_a_presigned_url_fetches_the_object_over_http(moto_s3: MotoS3, tmp_path: Path) -> None:
    store = open_results_store(moto_s3.settings(Settings(data_dir=tmp_path)))
    key, data = _key(), b"served by S3"
    store.put(key, data, "image/png", _sha(data))

    response = httpx.get(store.url(key, 60), timeout=10)
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-type"] == "image/png"


def test_a_presigned_put_url_takes_the_image(moto_s3: MotoS3, tmp_path: Path) -> None:
    store = open_results_store(moto_s3.settings(Settings(data_dir=tmp_path)))
    key, data = _key(), b"uploaded by PUT"
    url = store.upload_url(key, "image/png", 60)
    assert url is not None

    response = httpx.put(url, content=data, headers={"content-type": "image/png"}, timeout=10)
    assert response.status_code == 200
    assert store.get(key) == data


def test_a_directory_url_is_signed_for_its_key_until_it_expires(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, webhook_secret=SECRET)
    store = open_results_store(settings)
    assert isinstance(store, DirectoryStore)
    key = _key()

    url = httpx.URL(store.url(key, 60))
    assert url.path == f"/images/{key}"
    expires, signature = int(url.params["expires"]), url.params["signature"]
    secrets = settings.webhook_secrets()
    assert verify(secrets, key, expires, signature, time.time())
    assert not verify(secrets, key, expires, signature, expires + 1)
    assert not verify(secrets, _key(), expires, signature, time.time())
    assert not verify([b"another secret"], key, expires, signature, time.time())


def test_a_store_that_is_down_raises_what_a_copy_retries_on(tmp_path: Path) -> None:
    # nothing listens on this port
    down = Settings(
        data_dir=tmp_path,
        results_url="s3://bucket/p?endpoint=http://127.0.0.1:9&addressing=path",
        results_access_key_id="k",
        results_secret_access_key="s",
        connect_timeout_s=0.5,
    )
    store = open_results_store(down)
    with pytest.raises(ResultsStoreUnavailable) as refused:
        store.put(_key(), b"data", "image/png", _sha(b"data"))
    assert refused.value.reason == "s3_connection"


def test_a_stopped_then_restarted_server_keeps_its_objects(tmp_path: Path) -> None:
    with Farm(Settings(data_dir=tmp_path), log_dir=tmp_path / "logs") as farm:
        moto = MotoS3(farm, tmp_path)
        moto.start()
        store = open_results_store(moto.settings(Settings(data_dir=tmp_path, connect_timeout_s=1)))
        key, data = _key(), b"kept across a restart"
        store.put(key, data, "image/png", _sha(data))
        moto.stop()
        with pytest.raises(ResultsStoreUnavailable):
            store.put(_key(), data, "image/png", _sha(data))
        moto.start()
        assert store.get(key) == data
        assert store.put(key, data, "image/png", _sha(data)) is False


@pytest.mark.parametrize(
    ("url", "names"),
    [
        ("ftp://somewhere/x", "scheme"),
        ("s3://bucket/p?endpoint=http://x&colour=blue", "colour"),
        ("s3://bucket/p?addressing=sideways", "addressing"),
    ],
)
def test_a_results_url_that_cannot_work_is_refused_naming_the_setting(
    url: str, names: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigurationError, match=f"FLUXFARM_RESULTS_URL.*{names}"):
        open_results_store(Settings(data_dir=tmp_path, results_url=url))


@pytest.mark.parametrize("image_uuid", ["../../etc/passwd", "a/b", "", "x" * 65, ".hidden"])
def test_an_image_uuid_that_could_name_a_path_is_refused(image_uuid: str) -> None:
    with pytest.raises(DownloadRefused) as refused:
        image_key(str(uuid.uuid4()), image_uuid, "JPG")
    assert refused.value.reason == "name"
