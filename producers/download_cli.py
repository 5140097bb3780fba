"""`fluxfarm download JOB DIR`: a job's images from the farm's own results store, each
checked against the sha256 recorded when it was copied."""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from pathlib import Path
from typing import Any

from farmdomain.errors import FluxfarmError
from farmdomain.logs import configure_logging
from farmdomain.settings import get_settings
from imagestore import open_results_store
from jobstore.store import JobStore

_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")


def add_command(subparsers: Any) -> None:
    download = subparsers.add_parser(
        "download", help="save a job's images from the results store, each sha256-checked"
    )
    download.add_argument("job_id", metavar="JOB")
    download.add_argument("directory", metavar="DIR", type=Path)
    download.set_defaults(handler=_download)


def _download(args: argparse.Namespace) -> int:
    settings = get_settings()
    configure_logging(settings, "cli")
    results = open_results_store(settings)
    store = JobStore.from_settings(settings)
    try:
        # an operator's command, like `spend`: any tenant's job
        job = store.get(args.job_id)
        if not _SAFE_NAME.fullmatch(job.id):
            raise FluxfarmError(f"job {job.id!r}: not a safe folder name")
        folder: Path = args.directory / job.id
        for image in job.images:
            where = f"job {job.id} image {image.image_uuid}"
            if image.deleted_at is not None:
                when = image.deleted_at.isoformat(timespec="seconds")
                raise FluxfarmError(f"{where}: deleted by the tenant's retention at {when}")
            if image.storage_key is None or image.sha256 is None:
                raise FluxfarmError(f"{where}: not kept in the results store (yet)")
            data = results.get(image.storage_key)
            if hashlib.sha256(data).hexdigest() != image.sha256:
                raise FluxfarmError(f"{where}: the stored bytes do not match their sha256")
            # the key's last part is <imageUUID>.<ext>, a name image_key made safe
            path = folder / image.storage_key.rsplit("/", 1)[-1]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            print(path)
    except FluxfarmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        store.engine.dispose()
    return 0
