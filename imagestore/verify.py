"""What makes bytes a result worth keeping: a real image of the format and size the job
asked for, and inline base64 data turned into those bytes."""

from __future__ import annotations

import base64
import binascii
import io
import warnings

from PIL import Image, UnidentifiedImageError

from farmdomain.errors import DownloadRefused
from imagestore.protocol import FORMATS

_PIL_FORMATS = {"JPG": "JPEG", "PNG": "PNG", "WEBP": "WEBP"}


def decode_inline(where: str, data: str, max_bytes: int) -> tuple[bytes, str | None]:
    """The bytes of an imageBase64Data or imageDataURI value, and the content type a data
    URI declares (None for bare base64)."""
    content_type = None
    if data.startswith("data:"):
        header, _, data = data.partition(",")
        content_type = header.removeprefix("data:").split(";")[0].strip().lower() or None
    # base64 is 4 characters for 3 bytes: refuse before decoding more than the cap
    if len(data) * 3 // 4 > max_bytes:
        raise DownloadRefused(where, "too_large", f"over {max_bytes} bytes")
    try:
        return base64.b64decode(data, validate=True), content_type
    except (binascii.Error, ValueError) as exc:
        raise DownloadRefused(where, "decode", "the inline data is not base64") from exc


def check_image(
    where: str,
    data: bytes,
    content_type: str | None,
    output_format: str,
    size: tuple[int, int] | None,
) -> str:
    """The content type of `data` if it decodes as an `output_format` image of exactly
    `size` (when the job named one) and matches the declared `content_type`;
    DownloadRefused otherwise."""
    _, expected_type = FORMATS[output_format]
    if content_type is not None and content_type != expected_type:
        raise DownloadRefused(where, "format", f"{content_type}, but {output_format} was asked")
    try:
        with warnings.catch_warnings():
            # a decompression bomb is refused like any other bad image, not warned about
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                if image.format != _PIL_FORMATS[output_format]:
                    found = image.format or "unknown"
                    raise DownloadRefused(where, "format", f"{found}, but {output_format} asked")
                if size is not None and image.size != size:
                    found, asked = (f"{w}x{h}" for w, h in (image.size, size))
                    raise DownloadRefused(where, "size", f"{found}, but {asked} was asked")
                # the header alone can lie: the pixels must decode too. A JPEG's coded data
                # is all read, to the end, at an eighth of the scale too (truncation fails
                # alike), for a third of the decoding work; other formats ignore the draft
                image.draft(image.mode, (image.width // 8, image.height // 8))
                image.load()
    except DownloadRefused:
        raise
    except (
        UnidentifiedImageError,
        OSError,
        ValueError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as exc:
        raise DownloadRefused(where, "decode", f"not a decodable image: {exc}") from exc
    return expected_type
