"""Choosing the results store from FLUXFARM_RESULTS_URL."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, cast
from urllib.parse import parse_qs, urlsplit

from farmdomain.errors import ConfigurationError
from farmdomain.settings import Settings
from imagestore.directory import DirectoryStore
from imagestore.protocol import ResultsStore

SETTING = "FLUXFARM_RESULTS_URL"
_S3_OPTIONS = {"endpoint", "region", "addressing"}
_ADDRESSING = ("auto", "path", "virtual")
Addressing = Literal["auto", "path", "virtual"]


def open_results_store(settings: Settings, *, pool_size: int = 10) -> ResultsStore:
    """The store `settings` name: file:///DIR, or s3://BUCKET/PREFIX?endpoint=&region=
    (addressing=path for servers without virtual-host buckets). `pool_size` bounds the
    connections an S3 store keeps open, one per thread that writes at once."""
    url = settings.resolved_results_url()
    parts = urlsplit(url)
    if parts.scheme == "file":
        root = Path(parts.path)
        root.mkdir(parents=True, exist_ok=True)
        return DirectoryStore(root, settings.public_base_url, settings.webhook_secrets())
    if parts.scheme != "s3" or not parts.netloc:
        raise ConfigurationError(
            SETTING,
            f"{parts.scheme or 'no'} scheme; expected file:///DIR or s3://BUCKET/PREFIX",
        )
    options = {name: values[-1] for name, values in parse_qs(parts.query).items()}
    unknown = set(options) - _S3_OPTIONS
    if unknown:
        raise ConfigurationError(
            SETTING,
            f"unknown option(s) {', '.join(sorted(unknown))};"
            f" known: {', '.join(sorted(_S3_OPTIONS))}",
        )
    if options.get("addressing", "auto") not in _ADDRESSING:
        raise ConfigurationError(SETTING, f"addressing must be one of {', '.join(_ADDRESSING)}")
    return _s3_store(settings, parts.netloc, parts.path, options, pool_size)


def _s3_store(
    settings: Settings, bucket: str, prefix: str, options: dict[str, str], pool_size: int
) -> ResultsStore:
    # imported here: a farm on the directory store never loads the SDK (tens of MB)
    import boto3  # noqa: PLC0415
    from botocore.config import Config  # noqa: PLC0415

    from imagestore.s3 import S3Store  # noqa: PLC0415

    key_id, secret = settings.results_access_key_id, settings.results_secret_access_key
    client = boto3.session.Session().client(
        "s3",
        endpoint_url=options.get("endpoint"),
        region_name=options.get("region", "us-east-1"),
        aws_access_key_id=key_id.get_secret_value() if key_id else None,
        aws_secret_access_key=secret.get_secret_value() if secret else None,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": cast(Addressing, options.get("addressing", "auto"))},
            # a failed copy is retried by its task with backoff, not here for long
            retries={"max_attempts": 2, "mode": "standard"},
            connect_timeout=settings.connect_timeout_s,
            read_timeout=30,
            max_pool_connections=pool_size,
        ),
    )
    return S3Store(client, bucket, prefix)
