"""Serving the directory store's images under their signed, expiring URLs.

The URL is the credential (imagestore.signing): no bearer token, so a caller can hand it
to a browser or another service. Object storage serves its own presigned URLs; with it
configured this route answers 404.
"""

from __future__ import annotations

import re
import time

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from farmweb.context import WebContext
from imagestore.directory import DirectoryStore
from imagestore.protocol import FORMATS
from imagestore.signing import IMAGES_PATH, verify

ROUTE = IMAGES_PATH + "{key:path}"
_PART = "[A-Za-z0-9][A-Za-z0-9-]{0,63}"
_KEY = re.compile(rf"images/{_PART}/{_PART}\.(?P<extension>jpg|png|webp)")
_CONTENT_TYPES = dict(FORMATS.values())


def _refused(status_code: int, reason: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"reason": reason, "message": message}}, status_code)


async def serve_image(request: Request) -> Response:
    context: WebContext = request.app.state.context
    key = request.path_params["key"]
    matched = _KEY.fullmatch(key)
    if matched is None:
        return _refused(404, "unknown_key", "no image has this key")
    try:
        expires = int(request.query_params.get("expires", ""))
    except ValueError:
        return _refused(403, "signature", "the URL carries no expiry")
    signature = request.query_params.get("signature", "")
    if not verify(context.webhook_secrets, key, expires, signature, time.time()):
        return _refused(403, "signature", "the URL is not signed for this key, or expired")
    store = context.results
    if not isinstance(store, DirectoryStore):
        return _refused(404, "unknown_key", "images are served by the object store")
    path = store.path(key)
    if not path.is_file():
        return _refused(404, "deleted", "the image is no longer kept")
    return FileResponse(
        path,
        media_type=_CONTENT_TYPES[matched.group("extension")],
        # the bytes under a key never change: a cache may keep them while the URL lives
        headers={"cache-control": f"private, max-age={max(0, expires - int(time.time()))}"},
    )
