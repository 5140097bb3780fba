"""Runware's own upload into the results store (`uploadEndpoint`): which jobs get one, the
presigned PUT URL their task carries, and the check of what arrived.

Only where it is safe: an S3 store (a presigned URL needs no credential of ours on
Runware's side) and a job of one image, since where several images go to one endpoint
Runware's behaviour is undocumented (each overwriting the last, or only one) and those
jobs keep the copy. The key is named before the image exists, by the job alone
(`upload_key`). What Runware uploaded is checked exactly as a copy is (decodes, format,
size) and hashed; a refused upload is deleted, so nothing of it stays in the store.
"""

from __future__ import annotations

import hashlib

from farmdomain.errors import DownloadRefused
from farmdomain.settings import Settings
from imagestore import ResultsStore, upload_key
from imagestore.protocol import FORMATS
from imagestore.verify import check_image
from jobstore.copies import Kept


def expects_upload(
    settings: Settings, results: ResultsStore, output_type: str, number_results: int
) -> bool:
    """Whether a job of this output type and image count has Runware upload its image."""
    if settings.results_upload == "never" or results.kind != "s3" or number_results != 1:
        return False
    return settings.results_upload == "all" or output_type == "URL"


def upload_endpoint(
    settings: Settings, results: ResultsStore, job_id: str, request: dict[str, object]
) -> str | None:
    """The presigned PUT URL a job's task carries as `uploadEndpoint`, or None."""
    output_type = str(request.get("outputType") or "URL")
    number_results = int(str(request.get("numberResults") or 1))
    if not expects_upload(settings, results, output_type, number_results):
        return None
    output_format = str(request.get("outputFormat") or "JPG")
    _, content_type = FORMATS[output_format]
    # valid as long as Runware keeps the image: the upload comes with it or not at all
    key = upload_key(job_id, output_format)
    return results.upload_url(key, content_type, settings.runware_ttl_s)


def uploaded(
    results: ResultsStore,
    where: str,
    key: str,
    output_format: str,
    size: tuple[int, int] | None,
) -> Kept | None:
    """What Runware uploaded under `key`, checked and hashed; None while nothing is there.
    DownloadRefused (the object deleted) if it is not the image the job asked for."""
    if results.head(key) is None:
        return None
    data = results.get(key)
    try:
        # the uploader's Content-Type is its own say: the bytes decide
        content_type = check_image(where, data, None, output_format, size)
    except DownloadRefused:
        results.delete(key)
        raise
    return Kept(key, hashlib.sha256(data).hexdigest(), len(data), content_type)
