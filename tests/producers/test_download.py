"""`fluxfarm download JOB DIR`: the job's images from the results store, sha256-checked; and
`fluxfarm results retention`, which decides how long they stay there."""

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
from jobstore.retention import Retention
from jobstore.store import JobStore
from producers import cli, download_cli, results_cli
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
    monkeypatch.setattr(results_cli, "configure_logging", lambda _settings, _process: None)

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


def test_download_of_an_image_deleted_by_retention_names_it_and_when(
    settings: Settings, download: object, tmp_path: Path
) -> None:
    job_id, _, key = _kept_job(settings)
    store = JobStore.from_settings(settings)
    image = store.get(job_id).images[0]
    open_results_store(settings).delete(key)
    assert Retention(store.engine).mark_deleted([(store.get(job_id).task_uuid, image.image_uuid)])
    store.engine.dispose()

    code, _, err = download(job_id, tmp_path / "out")  # type: ignore[operator]

    assert code == 1
    assert f"image {image.image_uuid}: deleted by the tenant's retention at " in err
    assert not (tmp_path / "out" / job_id).exists()


def test_results_retention_sets_and_shows_a_tenants_days(
    settings: Settings, download: object, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["results", "retention", "acme", "7"]) == 0
    assert capsys.readouterr().out == "acme: images kept 7 days\n"
    assert cli.main(["results", "retention", "acme"]) == 0
    assert capsys.readouterr().out == "acme: images kept 7 days\n"
    assert cli.main(["results", "retention", "globex"]) == 0
    assert capsys.readouterr().out == "globex: images kept for ever\n"
    with pytest.raises(SystemExit):
        cli.main(["results", "retention", "acme", "-1"])
    assert "DAYS must be 0 (for ever)" in capsys.readouterr().err
