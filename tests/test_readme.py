"""README stays true to the code: every setting is documented under its variable name."""

from __future__ import annotations

from pathlib import Path

import pytest

from farmdomain.settings import Settings

README = (Path(__file__).parents[1] / "README.md").read_text()


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_every_setting_is_documented(field: str) -> None:
    assert f"FLUXFARM_{field.upper()}" in README
