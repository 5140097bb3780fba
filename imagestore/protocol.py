"""The one interface both results stores meet, and the key every image is kept under."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from farmdomain.errors import DownloadRefused

# the extension of each format Runware produces (outputFormat), and its content type
FORMATS = {
    "JPG": ("jpg", "image/jpeg"),
    "PNG": ("png", "image/png"),
    "WEBP": ("webp", "image/webp"),
}
_SAFE_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,63}")


def image_key(job_id: str, image_uuid: str, output_format: str) -> str:
    """The key of one image: stable per (job, imageUUID), so a repeated copy finds it.

    Both parts come from outside (the imageUUID from a webhook body): neither may name a
    path of its own.
    """
    for name, part in (("job id", job_id), ("imageUUID", image_uuid)):
        if not _SAFE_PART.fullmatch(part):
            raise DownloadRefused(f"{job_id}/{image_uuid}", "name", f"{name} is not a safe name")
    extension, _ = FORMATS[output_format]
    return f"images/{job_id}/{image_uuid}.{extension}"


def upload_key(job_id: str, output_format: str) -> str:
    """The key of a job's one image as Runware uploads it: named before the image (and
    its imageUUID) exists, so by the job alone."""
    return image_key(job_id, "upload", output_format)


@dataclass(frozen=True)
class StoredObject:
    """What the store holds under a key."""

    key: str
    size: int
    sha256: str
    content_type: str


class ResultsStore(Protocol):
    """Write-once storage of result images. Every method raises ResultsStoreUnavailable
    when the storage cannot be reached."""

    # the store's label on metrics: directory or s3
    kind: str

    def put(self, key: str, data: bytes, content_type: str, sha256: str) -> bool:
        """Keep `data` under `key` unless the key exists: True if written now, False if
        these bytes were there already; ResultsStoreConflict if other bytes are."""

    def head(self, key: str) -> StoredObject | None:
        """What is kept under `key`, or None."""

    def get(self, key: str) -> bytes:
        """The bytes under `key`; ResultsStoreError (reason "missing") if there are none."""

    def delete(self, key: str) -> None:
        """Forget `key`; nothing happens if it is not there."""

    def url(self, key: str, expires_s: int) -> str:
        """A URL that fetches `key` for `expires_s` seconds, with no other credential."""

    def upload_url(self, key: str, content_type: str, expires_s: int) -> str | None:
        """A URL that takes the image by HTTP PUT, or None if this store has none."""
