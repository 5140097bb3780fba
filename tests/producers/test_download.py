"""`fluxfarm download JOB DIR`: the job's images from the results store, sha256-checked."""

from __future__ import annotations

import base64
import io
import uuid
from pathlib import Path

import pytest
from PIL import Image

from farmdomain.settings import Settings, get_settings
from farmdomain.values import IncomingResult
from imagestore.directory import DirectoryStore
from imagestore.opening import open_results_store
from jobstore.store import JobStore
from producers import cli, download_cli
from worker.copying import Copier


def _kept_job(settings: Settings) -> tuple[str, bytes, str]:
    """A job with one image copied into the results store: its id, bytes and key."""
    store = JobStore.from_settings(settings)
    params = {"positivePrompt": "a kite", "width": 24, "height": 16, "outputFormat": "PNG"}
    job, _ = store.create_job(params, tenant="local", deadline_s=600)
    out = io.BytesIO()
    Image.new("RGB", (24, 16), (1, 2, 3)).save(out, "PNG")
    inline = base64.b64encode(out.getvalue()).decode()
    image_uuid = str(uuid.uuid4())
    store.record_result(
        IncomingResult(job.task_uuid, image_uuid, None, inline, 1, None, False), "webhook"
    )
    copier = Copier(settings, store.engine)
    [copied] = copier.copy_all([(job.task_uuid, image_uuid)])
    copier.close()
    store.engine.dispose()
    assert copied.kept is not None
    return job.id, out.getvalue(), copied.kept.key


@pytest.fixture
def download(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> object:
    monkeypatch.setenv("FLUXFARM_DATA_DIR", str(settings.data_dir))
    get_settings.cache_clear()
    monkeypatch.setattr(download_cli, "configure_logging", lambda _settings, _process: None)

    def invoke(job_id: str, directory: Path) -> tuple[int, str, str]:
        capsys.readouterr()  # what the copy logged before
        code = cli.main(["download", job_id, str(directory)])
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def test_download_saves_every_kept_image_checked_against_its_sha256(
    settings: Settings, download: object, tmp_path: Path
) -> None:
    job_id, data, key = _kept_job(settings)

    code, out, _ = download(job_id, tmp_path / "out")  # type: ignore[operator]

    assert code == 0
    saved = tmp_path / "out" / job_id / key.rsplit("/", 1)[-1]
    assert out.split() == [str(saved)]
    assert saved.read_bytes() == data


def test_download_refuses_bytes_that_no_longer_match_their_sha256(
    settings: Settings, download: object, tmp_path: Path
) -> None:
    job_id, _, key = _kept_job(settings)
    results = open_results_store(settings)
    assert isinstance(results, DirectoryStore)
    results.path(key).write_bytes(b"\x89PNG\r\n\x1a\nnot what was kept")

    code, _, err = download(job_id, tmp_path / "out")  # type: ignore[operator]

    assert code == 1
    assert "do not match their sha256" in err
    assert not (tmp_path / "out" / job_id).exists()
