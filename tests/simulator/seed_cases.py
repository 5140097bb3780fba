"""The model page's four examples (the seed's), shared by the REST and the SDK tests."""

from __future__ import annotations

import base64
import io

from PIL import Image


def data_uri(width: int, height: int) -> str:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (30, 30, 30)).save(out, "JPEG", quality=60)
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode()


REFERENCES = [data_uri(1000, 1000), data_uri(1024, 768), data_uri(640, 480)]
BFL = {"bfl": {"promptUpsampling": True, "safetyTolerance": 2}}
EXAMPLES = [
    (
        "95a328fa-7359-4afd-91f9-6fc8d09071b5",
        "Create a grand scene inside a volcanic glasshouse where a ceremonial orchid procession"
        " crosses black basalt paths between terraced pools and towering panes of curved glass.",
        15903,
        True,
        0.09,
    ),
    (
        "57dfe0a1-910d-4be7-ba1a-bdc5c876e655",
        "A vast sunken library atrium beneath clear seawater, seen from inside the structure.",
        16070,
        False,
        0.045,
    ),
    (
        "f897e528-4f85-4abe-9457-3c2dd09ba9ce",
        "A grand panoramic harbor city built around colossal tidal clockwork, terraced quays.",
        27270,
        True,
        0.09,
    ),
    (
        "4dd729da-e356-413b-8e48-794bee98a888",
        "A monumental cathedral formed entirely from white salt and translucent mineral crystal.",
        73410,
        False,
        0.045,
    ),
]
