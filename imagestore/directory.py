"""The embedded results store: one file per image under a directory, written once.

A file is written beside its final name, flushed to disk, then hard-linked into place:
the link fails if the name exists, so two copies racing for one key write it once and
neither can leave a partial file under the key.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from collections.abc import Sequence
from pathlib import Path

from farmdomain.errors import ResultsStoreConflict, ResultsStoreError, ResultsStoreUnavailable
from imagestore.protocol import FORMATS, StoredObject
from imagestore.signing import signed_url

_CONTENT_TYPES = {extension: content_type for extension, content_type in FORMATS.values()}


class DirectoryStore:
    """Images as files under `root`; their URLs are signed ones that `web` serves."""

    kind = "directory"

    def __init__(self, root: Path, public_base_url: str, secrets: Sequence[bytes]) -> None:
        self.root = root
        self._base_url = public_base_url
        self._secret = secrets[0]

    def path(self, key: str) -> Path:
        return self.root / key

    def put(self, key: str, data: bytes, content_type: str, sha256: str) -> bool:
        path = self.path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                return self._write_once(path, data) or self._same(key, sha256)
        except OSError as exc:
            raise ResultsStoreUnavailable(key, "io", f"{type(exc).__name__}: {exc}") from exc
        return self._same(key, sha256)

    def _write_once(self, path: Path, data: bytes) -> bool:
        candidate = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            with candidate.open("xb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            try:
                os.link(candidate, path)
            except FileExistsError:
                return False
            _sync_directory(path.parent)
            return True
        finally:
            candidate.unlink(missing_ok=True)

    def _same(self, key: str, sha256: str) -> bool:
        found = self.head(key)
        if found is None or found.sha256 != sha256:
            raise ResultsStoreConflict(key, "conflict", "the key holds other bytes")
        return False

    def head(self, key: str) -> StoredObject | None:
        try:
            data = self.path(key).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ResultsStoreUnavailable(key, "io", f"{type(exc).__name__}: {exc}") from exc
        content_type = _CONTENT_TYPES.get(key.rsplit(".", 1)[-1], "application/octet-stream")
        return StoredObject(key, len(data), hashlib.sha256(data).hexdigest(), content_type)

    def get(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError as exc:
            raise ResultsStoreError(key, "missing", "no image under this key") from exc
        except OSError as exc:
            raise ResultsStoreUnavailable(key, "io", f"{type(exc).__name__}: {exc}") from exc

    def delete(self, key: str) -> None:
        try:
            self.path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise ResultsStoreUnavailable(key, "io", f"{type(exc).__name__}: {exc}") from exc

    def url(self, key: str, expires_s: int) -> str:
        return signed_url(self._base_url, self._secret, key, int(time.time()) + expires_s)

    def upload_url(self, key: str, content_type: str, expires_s: int) -> str | None:
        # nothing but `web` could take the PUT, and it would then be a copy of its own
        return None


def _sync_directory(directory: Path) -> None:
    """Make the new name itself durable, not only the file's bytes."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
