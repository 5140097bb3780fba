"""What a result must be to be kept: a decodable image of the format and size the job
asked for; inline data decoded within the size cap."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from farmdomain.errors import DownloadRefused
from imagestore.verify import check_image, decode_inline


def _encoded(fmt: str, size: tuple[int, int] = (64, 48)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 90)).save(out, fmt)
    return out.getvalue()


@pytest.mark.parametrize(
    ("output_format", "pil", "content_type"),
    [("JPG", "JPEG", "image/jpeg"), ("PNG", "PNG", "image/png"), ("WEBP", "WEBP", "image/webp")],
)
def test_an_image_of_the_asked_format_and_size_is_kept_with_its_type(
    output_format: str, pil: str, content_type: str
) -> None:
    data = _encoded(pil)
    assert check_image("u", data, content_type, output_format, (64, 48)) == content_type
    # no size asked (reference images decide it): any size is the right one
    assert check_image("u", data, None, output_format, None) == content_type


@pytest.mark.parametrize(
    ("data", "declared", "size", "reason"),
    [
        (b"<html>not an image</html>", None, (64, 48), "decode"),
        (_encoded("PNG")[:60], "image/png", (64, 48), "decode"),
        (_encoded("PNG", (32, 32)), "image/png", (64, 48), "size"),
        (_encoded("JPEG"), "image/jpeg", (64, 48), "format"),
        (_encoded("PNG"), "image/jpeg", (64, 48), "format"),
    ],
    ids=["not-an-image", "truncated", "wrong-size", "wrong-format", "type-mismatch"],
)
def test_anything_else_is_refused_naming_the_reason(
    data: bytes, declared: str | None, size: tuple[int, int], reason: str
) -> None:
    with pytest.raises(DownloadRefused) as refused:
        check_image("https://im.example/x.png", data, declared, "PNG", size)
    assert refused.value.reason == reason


@pytest.mark.parametrize("limit", [64 * 48 // 2 - 1, 64 * 48 - 1], ids=["error", "warning"])
def test_an_image_over_the_pixel_limit_is_refused_not_decoded(
    limit: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # past the limit Pillow warns, past twice the limit it raises: both are refusals
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    with pytest.raises(DownloadRefused) as refused:
        check_image("u", _encoded("PNG"), None, "PNG", None)
    assert refused.value.reason == "decode"


def test_inline_data_decodes_from_base64_and_from_a_data_uri() -> None:
    data = _encoded("PNG")
    text = base64.b64encode(data).decode()
    assert decode_inline("inline", text, 1 << 20) == (data, None)
    assert decode_inline("inline", f"data:image/png;base64,{text}", 1 << 20) == (data, "image/png")


@pytest.mark.parametrize(
    ("text", "reason"), [("not base64 at all!", "decode"), ("QUFB" * 1000, "too_large")]
)
def test_inline_data_that_is_not_base64_or_over_the_cap_is_refused(text: str, reason: str) -> None:
    with pytest.raises(DownloadRefused) as refused:
        decode_inline("inline", text, 1000)
    assert refused.value.reason == reason


@pytest.mark.parametrize("kept", [0.5, 0.9, 0.999], ids=["half", "most", "all-but-the-end"])
def test_a_truncated_jpeg_is_refused_though_it_decodes_at_an_eighth_of_its_scale(
    kept: float,
) -> None:
    whole = _encoded("JPEG", (1024, 768))
    assert check_image("u", whole, "image/jpeg", "JPG", (1024, 768)) == "image/jpeg"
    with pytest.raises(DownloadRefused) as refused:
        check_image("u", whole[: int(len(whole) * kept)], "image/jpeg", "JPG", (1024, 768))
    assert refused.value.reason == "decode"
