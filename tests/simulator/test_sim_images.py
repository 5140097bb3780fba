"""Generated images: real files of the requested size and format, deterministic, hosted for ttl."""

from __future__ import annotations

import base64
import io

import httpx
import pytest
from PIL import Image
from sim_support import image_task, quick_settings, wait_until

from simulator.testing import SimulatorHandle, running_simulator

PIL_FORMATS = {"JPG": "JPEG", "PNG": "PNG", "WEBP": "WEBP"}
MEDIA_TYPES = {"JPG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}


def decode(data: bytes) -> tuple[str | None, tuple[int, int]]:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.format, image.size


@pytest.mark.parametrize("fmt", ["JPG", "PNG", "WEBP"])
@pytest.mark.parametrize(("width", "height"), [(256, 256), (1536, 1024), (272, 2048)])
def test_image_url_serves_the_requested_size_and_format(
    client: httpx.Client, sim: SimulatorHandle, fmt: str, width: int, height: int
) -> None:
    task = image_task(width=width, height=height, outputFormat=fmt)
    item = client.post(sim.api_url, json=[task]).json()["data"][0]
    assert item["imageURL"] == f"{sim.url}/image/{item['imageUUID']}.{fmt.lower()}"
    response = client.get(item["imageURL"])
    assert response.headers["content-type"] == MEDIA_TYPES[fmt]
    assert decode(response.content) == (PIL_FORMATS[fmt], (width, height))


def test_base64_and_data_uri_outputs(client: httpx.Client, sim: SimulatorHandle) -> None:
    raw = client.post(
        sim.api_url, json=[image_task(outputType="base64Data", outputFormat="WEBP")]
    ).json()["data"][0]
    assert "imageURL" not in raw
    assert decode(base64.b64decode(raw["imageBase64Data"])) == ("WEBP", (256, 256))
    uri = client.post(
        sim.api_url, json=[image_task(outputType="dataURI", outputFormat="PNG")]
    ).json()["data"][0]
    prefix, payload = uri["imageDataURI"].split(",", 1)
    assert prefix == "data:image/png;base64"
    assert decode(base64.b64decode(payload)) == ("PNG", (256, 256))


def fetch_base64(client: httpx.Client, sim: SimulatorHandle, **overrides: object) -> bytes:
    task = image_task(outputType="base64Data", **overrides)
    return base64.b64decode(
        client.post(sim.api_url, json=[task]).json()["data"][0]["imageBase64Data"]
    )


def test_same_prompt_and_seed_give_the_same_bytes(
    client: httpx.Client, sim: SimulatorHandle
) -> None:
    first = fetch_base64(client, sim, seed=99, positivePrompt="red fox")
    second = fetch_base64(client, sim, seed=99, positivePrompt="red fox")
    other_seed = fetch_base64(client, sim, seed=100, positivePrompt="red fox")
    other_prompt = fetch_base64(client, sim, seed=99, positivePrompt="blue fox")
    assert first == second
    assert first not in (other_seed, other_prompt)


def test_output_quality_changes_the_encoding(client: httpx.Client, sim: SimulatorHandle) -> None:
    low = fetch_base64(client, sim, seed=1, outputQuality=20, width=1024, height=1024)
    high = fetch_base64(client, sim, seed=1, outputQuality=99, width=1024, height=1024)
    assert len(low) < len(high)


def test_fast_images_serve_one_image_per_size_and_format() -> None:
    with (
        running_simulator(quick_settings(fast_images=True)) as sim,
        httpx.Client(headers={"Authorization": "Bearer sim-key"}) as client,
    ):
        first = fetch_base64(client, sim, seed=1, positivePrompt="a")
        second = fetch_base64(client, sim, seed=2, positivePrompt="b")
        assert first == second
        assert decode(first) == ("JPEG", (256, 256))


def test_image_url_expires_after_ttl() -> None:
    # ttl_scale turns the 60 s minimum ttl into 0.3 s.
    with (
        running_simulator(quick_settings(ttl_scale=0.005)) as sim,
        httpx.Client(headers={"Authorization": "Bearer sim-key"}) as client,
    ):
        item = client.post(sim.api_url, json=[image_task(ttl=60)]).json()["data"][0]
        assert client.get(item["imageURL"]).status_code == 200
        wait_until(lambda: client.get(item["imageURL"]).status_code == 404)
        assert client.get(item["imageURL"]).json()["errors"][0]["code"] == "imageNotFound"
        wait_until(lambda: sim.stats()["images_hosted"] == 0)


def test_unknown_image_is_404(client: httpx.Client, sim: SimulatorHandle) -> None:
    assert (
        client.get(f"{sim.url}/image/00000000-0000-4000-8000-000000000000.jpg").status_code == 404
    )
