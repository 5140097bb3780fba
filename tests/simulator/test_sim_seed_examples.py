"""The model page's four example requests, answered with its fields, seeds and costs."""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest
from seed_cases import BFL, EXAMPLES, REFERENCES, data_uri
from sim_support import API_KEY, image_task

from simulator.pricing import image_cost
from simulator.testing import SimulatorHandle


@pytest.mark.parametrize(
    ("task_uuid", "prompt", "seed", "with_references", "cost"),
    EXAMPLES,
    ids=["glasshouse", "library", "harbor", "cathedral"],
)
def test_seed_example_is_answered_as_documented(
    client: httpx.Client,
    sim: SimulatorHandle,
    task_uuid: str,
    prompt: str,
    seed: int,
    with_references: bool,
    cost: float,
) -> None:
    task = {
        "taskType": "imageInference",
        "taskUUID": task_uuid,
        "model": "bfl:5@1",
        "positivePrompt": prompt,
        "width": 1536,
        "height": 1024,
        "seed": seed,
        "includeCost": True,
        "providerSettings": BFL,
    }
    if with_references:
        task["inputs"] = {"referenceImages": REFERENCES}
    before = Decimal(sim.stats()["charged_usd_exact"])
    response = client.post(sim.api_url, json=[task])
    assert response.status_code == 200
    [item] = response.json()["data"]
    assert item["taskType"] == "imageInference"
    assert item["taskUUID"] == task_uuid
    assert item["imageURL"].endswith(f"/image/{item['imageUUID']}.jpg")
    assert item["seed"] == seed
    assert item["cost"] == cost
    charged = Decimal(sim.stats()["charged_usd_exact"]) - before
    assert charged == Decimal(str(cost))


@pytest.mark.parametrize(
    ("width", "height", "references", "expected"),
    [
        # the model page's "1k: $0.03"
        (1024, 1024, [], "0.03"),
        (1040, 1024, [], "0.045"),
        (1008, 992, [], "0.03"),
        (2048, 2048, [], "0.075"),
        (1536, 1024, [1, 1, 1], "0.09"),
        (256, 256, [2], "0.06"),
    ],
)
def test_cost_estimate_rounds_megapixels_up(
    width: int, height: int, references: list[int], expected: str
) -> None:
    assert image_cost(width, height, references) == Decimal(expected)


def test_large_data_uri_reference_is_measured(client: httpx.Client, sim: SimulatorHandle) -> None:
    task = image_task(includeCost=True, inputs={"referenceImages": [data_uri(1200, 1000)]})
    [item] = client.post(sim.api_url, json=[task]).json()["data"]
    assert item["cost"] == 0.06


def test_charged_usd_is_the_sum_of_generated_image_costs(sim: SimulatorHandle) -> None:
    sim.reset()
    tasks = [
        image_task(includeCost=True, numberResults=2, width=1536, height=1024),
        image_task(numberResults=3),
        image_task(includeCost=True, inputs={"referenceImages": ["https://a.example/x.png"]}),
    ]
    costs: list[Decimal] = []
    with httpx.Client(headers={"Authorization": f"Bearer {API_KEY}"}) as client:
        for task in tasks:
            items = client.post(sim.api_url, json=[task]).json()["data"]
            costs += [Decimal(str(item.get("cost", "0.03"))) for item in items]
    stats = sim.stats()
    assert Decimal(stats["charged_usd_exact"]) == sum(costs) == Decimal("0.225")
    assert stats["charged_usd"] == 0.225
    assert stats["images_generated"] == 6
