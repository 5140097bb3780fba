"""Structured logging, configured once per process: JSON off a TTY, console on one.

Every line that concerns a job carries `job_id` and `task_uuid` (bound with
contextvars), and secrets never print: webhook tokens are cut out of any URL and
fields whose name says secret are masked.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog

from core.settings import Settings

_SECRET_FIELDS = re.compile(r"(api_?key|secret|token|password|authorization)", re.IGNORECASE)
_TOKEN_IN_URL = re.compile(r"([?&]token=)[^&\s\"']+")
# job API tokens (core.api_tokens) are recognisable by their prefix wherever they appear
_API_TOKEN = re.compile(r"(ffk_)[A-Za-z0-9_\-]+")
MASK = "[redacted]"


def scrub(text: str) -> str:
    """A string with webhook tokens (in URLs) and job API tokens removed."""
    return _API_TOKEN.sub(r"\1" + MASK, _TOKEN_IN_URL.sub(r"\1" + MASK, text))


def _masked(key: str, value: Any) -> Any:
    """`value` with secrets masked, looking inside dicts and lists (headers, task bodies)."""
    if _SECRET_FIELDS.search(key):
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


def configure_logging(settings: Settings, process: str) -> None:
    """Route structlog and stdlib logging (Celery, uvicorn) through one renderer."""
    json_lines = settings.log_format == "json" or (
        settings.log_format == "auto" and not sys.stderr.isatty()
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _redact,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if json_lines else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # not cached: a logger made before configuration (at import) must follow it, and
        # tests capture logs by reconfiguring
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=shared,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    structlog.contextvars.bind_contextvars(process=process)
    # httpx logs every request URL at INFO, and our URLs carry webhook tokens
    logging.getLogger("httpx").setLevel(logging.WARNING)
