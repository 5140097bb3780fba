"""Structured logging, configured once per process: JSON off a TTY, console on one.

Every line that concerns a job carries `job_id` and `task_uuid` (bound with
contextvars), and secrets never print: webhook tokens are cut out of any URL and
fields whose name says secret are masked.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
from collections.abc import Callable
from typing import Any

import orjson
import structlog
from structlog.typing import EventDict

from farmdomain.settings import Settings

_SECRET_FIELDS = re.compile(r"(api_?key|secret|token|password|authorization)", re.IGNORECASE)
_TOKEN_IN_URL = re.compile(r"([?&]token=)[^&\s\"']+")
# job API tokens (jobstore.api_tokens) are recognisable by their prefix wherever they appear
_API_TOKEN = re.compile(r"(ffk_)[A-Za-z0-9_\-]+")
MASK = "[redacted]"


def scrub(text: str) -> str:
    """A string with webhook tokens (in URLs) and job API tokens removed."""
    # every string of every log line passes here: most hold neither pattern's literal part
    if "token=" in text:
        text = _TOKEN_IN_URL.sub(r"\1" + MASK, text)
    if "ffk_" in text:
        text = _API_TOKEN.sub(r"\1" + MASK, text)
    return text


@functools.lru_cache(maxsize=1024)
def _secret_field(key: str) -> bool:
    return _SECRET_FIELDS.search(key) is not None


def _masked(key: str, value: Any) -> Any:
    """`value` with secrets masked, looking inside dicts and lists (headers, task bodies)."""
    if _secret_field(key):
        return MASK
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: _masked(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_masked("", v) for v in value]
    return value


def _redact(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    for key, value in event.items():
        event[key] = _masked(key, value)
    return event


def _dumps(event: dict[str, Any], default: Callable[[Any], Any]) -> str:
    """A log line's JSON: orjson, with the stdlib's rendering of what it does not take."""
    try:
        # datetimes go through `default` (repr), as they did with the stdlib's json
        options = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME
        return orjson.dumps(event, default=default, option=options).decode()
    except orjson.JSONEncodeError:  # e.g. an integer over 64 bits
        return json.dumps(event, default=default)


def _kind_of_process(process: str) -> Callable[[Any, str, EventDict], EventDict]:
    def add_process(_logger: Any, _method: str, event: EventDict) -> EventDict:
        event.setdefault("process", process)
        return event

    return add_process


class _LineWriter:
    """Where structlog's rendered lines go: straight onto the stream of the handler that
    prints stdlib records (Celery's, uvicorn's), under that handler's lock.

    Our own lines skip the stdlib's record, logger and formatter machinery, which cost
    about two thirds of each line's time; sharing the handler's stream and lock keeps one
    output whose lines never interleave.
    """

    def __init__(self, handler: logging.StreamHandler[Any], name: str) -> None:
        self._handler = handler
        # read by structlog.stdlib.add_logger_name
        self.name = name

    def msg(self, line: str) -> None:
        with self._handler.lock:  # type: ignore[union-attr]  # every Handler makes its lock
            try:
                self._handler.stream.write(line + "\n")
                self._handler.stream.flush()
            except (OSError, ValueError):
                # a closed or broken stream must not fail the work being logged (the
                # stdlib's handlers swallow these too)
                pass

    debug = info = warning = error = critical = exception = log = msg


def configure_logging(settings: Settings, process: str) -> None:
    """Route structlog and stdlib logging (Celery, uvicorn) through one renderer."""
    json_lines = settings.log_format == "json" or (
        settings.log_format == "auto" and not sys.stderr.isatty()
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        # a processor, not a context variable: lines from threads the process starts later
        # (batch flushers, pools) start with an empty context
        _kind_of_process(process),
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _redact,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(_dumps) if json_lines else structlog.dev.ConsoleRenderer()
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=shared,
        )
    )
    level = logging.getLevelNamesMapping()[settings.log_level.upper()]
    structlog.configure(
        processors=[*shared, renderer],
        logger_factory=lambda name="", *_: _LineWriter(handler, name),
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # not cached: a logger made before configuration (at import) must follow it, and
        # tests capture logs by reconfiguring
        cache_logger_on_first_use=False,
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn gives its loggers handlers of their own, which print plain text past the
    # renderer and the scrubbing (its "Exception in ASGI application" tracebacks too)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    # httpx logs every request URL at INFO, and our URLs carry webhook tokens
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Celery's two lines per message ("received", "succeeded in") say less than our
    # job.transition lines and cost a worker about a tenth of its CPU; failures still show
    if root.level > logging.DEBUG:
        for name in ("celery.worker.strategy", "celery.app.trace"):
            logging.getLogger(name).setLevel(logging.WARNING)
