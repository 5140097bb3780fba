"""The producer commands, run through main() against settings from the environment."""

from __future__ import annotations

import argparse
import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from structlog.typing import EventDict

from farmdomain.broker import SUBMIT_TASK
from farmdomain.jobs import JobState
from farmdomain.settings import Settings, get_settings
from farmdomain.values import Failure, IncomingResult
from jobstore.store import JobStore
from producers import cli
from tests.jobstore.conftest import keep_images
from tests.producers.conftest import CALLBACK_HOST

Run = Any


@pytest.fixture
def store(settings: Settings) -> JobStore:
    return JobStore.from_settings(settings)


@pytest.fixture
def run(
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    logs: list[EventDict],
) -> Run:
    """main(argv) with FLUXFARM_DATA_DIR set: (exit code, stdout, stderr); logs captured."""
    monkeypatch.setenv("FLUXFARM_DATA_DIR", str(settings.data_dir))
    get_settings.cache_clear()
    # configure_logging rewires the process's root logger; the tests only need to see the call
    configured: list[str] = []
    monkeypatch.setattr(
        cli, "configure_logging", lambda _settings, process: configured.append(process)
    )

    def invoke(*argv: str) -> tuple[int, str, str]:
        configured.clear()
        code = cli.main(list(argv))
        assert configured == ["cli"]
        out, err = capsys.readouterr()
        return code, out, err

    return invoke


def test_submit_with_flags_queues_the_job_and_prints_its_id(
    run: Run, store: JobStore, broker: Any
) -> None:
    code, out, _err = run(
        "submit",
        "--prompt", "a red fox",
        "--width", "512",
        "--height", "512",
        "--seed", "42",
        "--number-results", "2",
        "--output-type", "URL",
        "--output-format", "PNG",
        "--output-quality", "90",
        "--reference-image", "https://example.com/a.png",
        "--reference-image", "https://example.com/b.png",
        "--prompt-upsampling",
        "--safety-tolerance", "3",
        "--deadline", "60",
        "--idempotency-key", "cli-1",
    )  # fmt: skip

    assert code == 0
    job = store.get(out.strip())
    assert job.request == {
        "positivePrompt": "a red fox",
        "width": 512,
        "height": 512,
        "seed": 42,
        "numberResults": 2,
        "outputType": "URL",
        "outputFormat": "PNG",
        "outputQuality": 90,
        "inputs": {"referenceImages": ["https://example.com/a.png", "https://example.com/b.png"]},
        "providerSettings": {"bfl": {"promptUpsampling": True, "safetyTolerance": 3}},
    }
    assert job.idempotency_key == "cli-1"
    assert broker.drain() == [(SUBMIT_TASK, [job.id, 0])]


def test_submit_reads_request_json_and_flags_override_it(
    run: Run, store: JobStore, tmp_path: Path
) -> None:
    request_file = tmp_path / "request.json"
    request_file.write_text(
        json.dumps({"positivePrompt": "a cat", "seed": 1, "providerSettings": {"bfl": {}}})
    )

    code, out, _err = run(
        "submit", "--request-json", str(request_file), "--seed", "2", "--safety-tolerance", "0",
        "--json",
    )  # fmt: skip

    assert code == 0
    view = json.loads(out)
    assert view["state"] == "queued"
    assert view["request"] == {
        "positivePrompt": "a cat",
        "seed": 2,
        "providerSettings": {"bfl": {"safetyTolerance": 0}},
    }
    assert store.get(view["id"]).task_uuid == view["taskUUID"]


def test_submit_reads_request_json_from_stdin(
    run: Run, store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO('{"positivePrompt": "a cat"}'))

    code, out, _err = run("submit", "--request-json", "-")

    assert code == 0
    assert store.get(out.strip()).request == {"positivePrompt": "a cat"}


def test_invalid_request_prints_every_issue_and_exits_2(
    run: Run, store: JobStore, broker: Any
) -> None:
    code, out, err = run("submit", "--prompt", "", "--width", "500", "--output-format", "GIF")

    assert code == 2
    assert out == ""
    fields = {line.split(": ")[0] for line in err.splitlines()}
    assert fields == {"positivePrompt", "width", "height", "outputFormat"}
    assert "width: multiple_of_16: " in err
    assert store.count_by_state() == {}
    assert broker.size() == 0


def test_unreadable_request_json_exits_2(run: Run, tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{")

    code, _out, err = run("submit", "--request-json", str(broken))

    assert code == 2
    assert err.startswith("request-json: json: ")


def test_status_prints_a_summary_with_images_cost_and_events(run: Run, store: JobStore) -> None:
    job, _ = store.create_job({"positivePrompt": "x"}, tenant="default", deadline_s=60)
    store.claim(job.id, 0)
    store.mark_submitted(job.id, {})
    store.record_result(
        IncomingResult(job.task_uuid, "img-1", "https://im.example/1.jpg", None, 7,
                       Decimal("0.04"), False),
        source="webhook",
    )  # fmt: skip
    keep_images(store, job.id)

    code, out, _err = run("status", job.id)

    assert code == 0
    assert out.startswith(f"job {job.id}: succeeded")
    assert "images    1/1" in out
    assert "cost      $0.04" in out
    assert "img-1 https://im.example/1.jpg seed=7" in out
    kinds = [line.split()[1] for line in out.split("events:\n")[1].splitlines()]
    assert kinds == ["created", "claimed", "acknowledged", "completed"]


def test_status_json_prints_the_job_view(run: Run, store: JobStore) -> None:
    job, _ = store.create_job({"positivePrompt": "x"}, tenant="default", deadline_s=60)
    store.fail(job.id, Failure(reason="provider", message="no", code="badPrompt", parameter="p"))

    code, out, _err = run("status", job.id, "--json")

    assert code == 0
    view = json.loads(out)
    assert view["failure"] == {
        "reason": "provider",
        "code": "badPrompt",
        "message": "no",
        "parameter": "p",
    }


def test_status_of_an_unknown_job_exits_2(run: Run) -> None:
    code, _out, err = run("status", "nope")

    assert code == 2
    assert "job nope not found" in err


def test_wait_exit_codes_follow_the_outcome(run: Run, store: JobStore) -> None:
    queued, _ = store.create_job({"positivePrompt": "x"}, tenant="default", deadline_s=60)
    failed, _ = store.create_job({"positivePrompt": "y"}, tenant="default", deadline_s=60)
    store.fail(failed.id, Failure(reason="lost", message="gone"))

    timed_out = run("wait", queued.id, "--timeout", "0.2")
    finished = run("wait", failed.id, "--timeout", "1")

    assert timed_out[0] == 3
    assert "still queued" in timed_out[2]
    assert finished[0] == 1
    assert finished[1].startswith(f"job {failed.id}: failed")


def test_submit_wait_times_out_on_a_job_no_worker_takes(run: Run) -> None:
    code, out, err = run("submit", "--prompt", "a cat", "--wait", "0.2")

    assert code == 3
    assert f"job {out.strip()} still queued" in err


def test_cancel_cancels_a_queued_job(run: Run, store: JobStore) -> None:
    job, _ = store.create_job({"positivePrompt": "x"}, tenant="default", deadline_s=60)

    code, out, _err = run("cancel", job.id)

    assert code == 0
    assert out.startswith(f"job {job.id}: canceled")
    assert store.get(job.id).state is JobState.CANCELED


def test_migrate_creates_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "fresh"
    monkeypatch.setenv("FLUXFARM_DATA_DIR", str(data_dir))
    configured: list[str] = []
    monkeypatch.setattr(cli, "configure_logging", lambda _s, process: configured.append(process))
    get_settings.cache_clear()

    assert cli.main(["migrate"]) == 0
    assert cli.main(["migrate"]) == 0

    assert configured == ["cli", "cli"]
    store = JobStore.from_url(Settings(data_dir=data_dir).resolved_database_url())
    assert store.count_by_state() == {}
    assert "up to date" in capsys.readouterr().out


def test_add_commands_registers_the_commands_on_another_parser() -> None:
    parser = argparse.ArgumentParser(prog="fluxfarm")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo")
    cli.add_commands(commands)

    for argv in (["submit", "--prompt", "x"], ["status", "j"], ["wait", "j"], ["cancel", "j"],
                 ["migrate"]):  # fmt: skip
        assert callable(parser.parse_args(argv).handler)
    assert parser.parse_args(["wait", "j"]).timeout == cli.DEFAULT_WAIT_S


def test_submit_with_a_callback_url_keeps_it_and_refuses_one_off_the_allowed_hosts(
    run: Run, store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLUXFARM_CALLBACK_ALLOWED_HOSTS", CALLBACK_HOST)
    url = f"https://{CALLBACK_HOST}/done"
    flags = ("submit", "--prompt", "a red fox", "--width", "512", "--height", "512")

    code, out, _err = run(*flags, "--callback-url", url)
    assert code == 0
    assert store.get(out.strip()).callback_url == url

    code, out, err = run(*flags, "--callback-url", "https://evil.example.com/done")
    assert (code, out) == (2, "")
    assert err.startswith("callbackUrl: allowed_host: ")
    assert store.count_by_state() == {"queued": 1}


def test_submit_takes_a_priority_and_status_shows_it(run: Run, store: JobStore) -> None:
    code, out, _err = run("submit", "--prompt", "a fox", "--priority", "5")
    assert code == 0
    assert store.get(out.strip()).priority == 5
    code, out, _err = run("status", out.strip())
    assert "priority  5" in out

    code, _out, err = run("submit", "--prompt", "a fox", "--priority", "11")
    assert code == 2
    assert "priority: range: must be -10 to 10" in err


def test_ctrl_c_is_exit_130_without_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted(args: argparse.Namespace) -> int:
        raise KeyboardInterrupt

    assert cli.run(argparse.Namespace(handler=interrupted)) == cli.EXIT_INTERRUPTED == 130
    assert "Traceback" not in capsys.readouterr().err
