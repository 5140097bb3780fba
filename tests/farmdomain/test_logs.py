"""Logging: one JSON line per event, job context from contextvars, and no secret ever printed."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import logging.config
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
import uvicorn.config

from farmdomain.logs import MASK, configure_logging, scrub
from farmdomain.settings import Settings

TOKEN = "s3cr3t-t0ken_value"
HOOK = f"http://127.0.0.1:8000/webhooks/runware/T-1?token={TOKEN}"


@contextlib.contextmanager
def logging_to_buffer(settings: Settings) -> Iterator[io.StringIO]:
    """configure_logging, with its one stderr handler pointed at a buffer; undone after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    httpx_level = logging.getLogger("httpx").level
    buffer = io.StringIO()
    try:
        configure_logging(settings, "test")
        [handler] = root.handlers
        assert isinstance(handler, logging.StreamHandler)
        assert handler.stream is sys.stderr
        handler.setStream(buffer)
        yield buffer
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.getLogger("httpx").setLevel(httpx_level)
        structlog.contextvars.clear_contextvars()
        structlog.reset_defaults()


@pytest.fixture
def output(tmp_path: Path) -> Iterator[io.StringIO]:
    with logging_to_buffer(Settings(data_dir=tmp_path, log_format="json")) as buffer:
        yield buffer


def lines(output: io.StringIO) -> list[dict[str, Any]]:
    text = output.getvalue()
    output.seek(0)
    output.truncate()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_token_query_strings_are_scrubbed_from_every_string_field(
    output: io.StringIO,
) -> None:
    structlog.get_logger("t").info(f"posting to {HOOK}", url=HOOK, note=f"see {HOOK}&x=1")
    [line] = lines(output)
    text = json.dumps(line)
    assert TOKEN not in text
    assert line["url"] == f"http://127.0.0.1:8000/webhooks/runware/T-1?token={MASK}"
    assert line["note"].endswith(f"?token={MASK}&x=1")
    assert line["event"] == f"posting to http://127.0.0.1:8000/webhooks/runware/T-1?token={MASK}"


def test_job_api_tokens_are_scrubbed_wherever_they_appear(output: io.StringIO) -> None:
    api_token = "ffk_" + "Zx9-_q" * 7
    structlog.get_logger("t").warning(f"refused {api_token}", header=f"Bearer {api_token}")
    [line] = lines(output)
    assert api_token not in json.dumps(line)
    assert line["header"] == f"Bearer ffk_{MASK}"


@pytest.mark.parametrize(
    "name", ["api_key", "apiKey", "webhook_secret", "token", "password", "Authorization"]
)
def test_fields_named_like_secrets_are_masked(output: io.StringIO, name: str) -> None:
    structlog.get_logger("t").info("configured", **{name: "hunter2-secret"})
    [line] = lines(output)
    assert line[name] == MASK
    assert "hunter2-secret" not in json.dumps(line)


def test_secrets_nested_in_a_field_are_masked_too(output: io.StringIO) -> None:
    structlog.get_logger("t").info(
        "request",
        headers={"Authorization": "Bearer hunter2-secret", "Accept": "json"},
        tasks=[{"webhookURL": HOOK, "apiKey": "hunter2-secret"}],
    )
    [line] = lines(output)
    assert "hunter2-secret" not in json.dumps(line)
    assert TOKEN not in json.dumps(line)
    assert line["headers"] == {"Authorization": MASK, "Accept": "json"}
    assert line["tasks"][0]["apiKey"] == MASK


def test_job_context_from_contextvars_is_on_every_line(output: io.StringIO) -> None:
    log = structlog.get_logger("t")
    with structlog.contextvars.bound_contextvars(job_id="job-1", task_uuid="task-1"):
        log.info("job.submitted", status="submitted", duration_ms=12.5)
        logging.getLogger("celery").warning("stdlib line")
    log.info("outside")
    first, second, third = lines(output)
    for line in (first, second):
        assert (line["job_id"], line["task_uuid"], line["process"]) == ("job-1", "task-1", "test")
    assert first["level"] == "info"
    assert first["status"] == "submitted"
    assert "timestamp" in first
    assert second["event"] == "stdlib line"
    assert second["logger"] == "celery"
    assert "job_id" not in third


def test_stdlib_records_and_exceptions_are_scrubbed(
    output: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    access_log = logging.getLogger("uvicorn.access")
    # a test server run earlier may have set it to WARNING (`log_level="warning"`)
    monkeypatch.setattr(access_log, "level", logging.NOTSET)
    access_log.info("POST %s 200", HOOK)
    try:
        raise RuntimeError(f"could not reach {HOOK}")
    except RuntimeError:
        structlog.get_logger("t").exception("failed")
    access, failed = lines(output)
    assert TOKEN not in json.dumps(access)
    assert TOKEN not in json.dumps(failed)
    assert "RuntimeError" in failed["exception"]


def test_httpx_request_lines_are_kept_out(output: io.StringIO) -> None:
    logging.getLogger("httpx").info("HTTP Request: POST %s", HOOK)
    assert lines(output) == []


def test_console_rendering_masks_secrets_too(tmp_path: Path) -> None:
    with logging_to_buffer(Settings(data_dir=tmp_path, log_format="console")) as buffer:
        structlog.get_logger("t").info("hello", url=HOOK, api_key="hunter2-secret")
    err = buffer.getvalue()
    assert "hello" in err
    assert TOKEN not in err
    assert "hunter2-secret" not in err


def test_scrub_leaves_urls_without_a_token_alone() -> None:
    assert scrub("https://a.example/x?y=1") == "https://a.example/x?y=1"
    assert scrub(f"a {HOOK} b {HOOK}").count(MASK) == 2


def test_lines_below_the_level_are_dropped_and_each_line_names_its_logger(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path, log_format="json", log_level="WARNING")
    with logging_to_buffer(settings) as buffer:
        structlog.get_logger("fluxfarm.jobs").info("job.transition")
        structlog.get_logger("fluxfarm.jobs").warning("job.slow")
        logging.getLogger("celery").info("stdlib below the level")
    [line] = lines(buffer)
    assert (line["event"], line["logger"], line["level"]) == (
        "job.slow",
        "fluxfarm.jobs",
        "warning",
    )


def test_a_closed_output_never_fails_the_caller(output: io.StringIO) -> None:
    output.close()
    structlog.get_logger("t").info("job.transition", job_id="job-1")
    logging.getLogger("celery").warning("stdlib line")


def test_uvicorn_lines_go_through_the_one_handler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        for attribute in ("handlers", "propagate", "level"):
            monkeypatch.setattr(
                logging.getLogger(name), attribute, getattr(logging.getLogger(name), attribute)
            )
    # what `uvicorn` sets up before it loads the app, which then configures ours
    logging.config.dictConfig(uvicorn.config.LOGGING_CONFIG)
    with logging_to_buffer(Settings(data_dir=tmp_path, log_format="json")) as buffer:
        logging.getLogger("uvicorn.error").error("Exception in ASGI application, url %s", HOOK)
        [line] = lines(buffer)
    assert line["event"].startswith("Exception in ASGI application")
    assert TOKEN not in json.dumps(line)
