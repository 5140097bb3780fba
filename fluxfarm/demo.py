"""`fluxfarm demo`: a whole farm on this machine, a batch of jobs through it, and the bill."""

from __future__ import annotations

import argparse
import base64
import io
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from farmdomain.jobs import Job, JobState
from farmdomain.logs import configure_logging
from farmdomain.settings import Settings
from fluxfarm.processes import Farm, start_pipeline
from producers.cli import EXIT_INTERRUPTED
from producers.client import FluxfarmClient
from runware_edge.downloads import SafeDownloader

SIMULATOR_KEY = "sim-key"
DEMO_MARKER = ".fluxfarm-demo"
# generation takes a while, as it does on Runware, so the progress bar has something to show
DEMO_LATENCY = ("--latency-dist", "uniform", "--latency-min-s", "0.5", "--latency-max-s", "3")
_PROMPTS = [
    "A vast sunken library atrium beneath clear seawater, shafts of sunlight, drifting kelp",
    "A monumental cathedral of white salt on a dried lakebed at sunrise, pilgrims for scale",
    "A harbor city built around colossal tidal clockwork, brass gears above the waterline",
    "A volcanic glasshouse with an orchid procession crossing black basalt paths",
]
_SIZES = [(1024, 1024), (1536, 1024), (768, 1344), (512, 512), (2048, 1152), (1024, 768)]


def add_command(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo", help="run simulator, web, worker and beat locally and push jobs through them"
    )
    parser.add_argument("--jobs", type=int, default=12, help="how many jobs to submit")
    parser.add_argument("--data-dir", type=Path, default=Path(".fluxfarm/demo"))
    parser.add_argument("--broker-url", help="use this broker instead of the embedded SQLite one")
    parser.add_argument("--database-url", help="use this store instead of the embedded SQLite one")
    parser.add_argument(
        "--concurrency", type=int, help="worker threads (default: FLUXFARM_WORKER_CONCURRENCY)"
    )
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for the jobs")
    parser.set_defaults(handler=run)


def demo_requests(count: int) -> list[dict[str, Any]]:
    """A mixed batch: several sizes, some with several images, some with references."""
    requests = []
    for i in range(count):
        width, height = _SIZES[i % len(_SIZES)]
        request: dict[str, Any] = {
            "positivePrompt": _PROMPTS[i % len(_PROMPTS)],
            "width": width,
            "height": height,
            "seed": 1000 + i,
            "numberResults": 1 + (i % 3 == 2) + (i % 6 == 5),
            "providerSettings": {"bfl": {"promptUpsampling": True, "safetyTolerance": 2}},
        }
        if i % 4 == 3:
            request["inputs"] = {"referenceImages": [_reference_image(i, k) for k in range(2)]}
        if i % 5 == 4:
            request["outputFormat"] = "PNG"
        requests.append(request)
    return requests


def _reference_image(i: int, k: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (256, 256), (40 * i % 256, 90 * k % 256, 160)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


@dataclass
class Outcome:
    job: Job
    saved: list[Path]


class _CtrlC:
    """Ctrl-C as a flag as well as KeyboardInterrupt: Python drops an exception raised in a
    garbage-collector callback ("Exception ignored in ..."), so a KeyboardInterrupt that lands
    there is lost; the demo's loops check the flag and raise it again.

    Only the first press raises: a later one, landing while the farm is being stopped,
    would cut that short and leave children running."""

    def __init__(self) -> None:
        self.pressed = False

    def __call__(self, signum: int, frame: object) -> None:
        if self.pressed:
            return
        self.pressed = True
        raise KeyboardInterrupt

    def check(self) -> None:
        if self.pressed:
            raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    """The demo; Ctrl-C stops every child process and exits 130."""
    ctrl_c = _CtrlC()
    previous = signal.signal(signal.SIGINT, ctrl_c)
    try:
        code = _run(args, ctrl_c)
        ctrl_c.check()
        return code
    except KeyboardInterrupt:
        print("\ninterrupted: every farm process was stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGINT, previous)


def _fresh_data_dir(data_dir: Path) -> None:
    """Start from an empty directory, removing only one an earlier demo made."""
    marker = data_dir / DEMO_MARKER
    if data_dir.exists() and any(data_dir.iterdir()):
        if not marker.exists():
            raise SystemExit(
                f"{data_dir} is not empty and was not made by the demo; not touching it"
            )
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    marker.touch()


def _run(args: argparse.Namespace, ctrl_c: _CtrlC) -> int:
    data_dir: Path = args.data_dir.resolve()
    # the demo's own screen is the progress bar and the table; the farm's logs go to files
    configure_logging(Settings(log_level="WARNING"), "demo")
    _fresh_data_dir(data_dir)
    with Farm(Settings(data_dir=data_dir), log_dir=data_dir / "logs") as farm:
        pipeline = start_pipeline(
            farm,
            api_key=SIMULATOR_KEY,
            simulator_flags=DEMO_LATENCY,
            concurrency=args.concurrency,
            broker_url=args.broker_url,
            database_url=args.database_url,
            reaper_interval_s=5,
            submitted_poll_after_s=30,
        )
        farm.supervise()
        settings, simulator_url = pipeline.settings, pipeline.simulator_url
        print(f"farm up: simulator {simulator_url}, web {pipeline.web_url}, logs in {farm.log_dir}")
        with FluxfarmClient(settings, tenant="demo") as client:
            job_ids = []
            for request in demo_requests(args.jobs):
                ctrl_c.check()
                job_ids.append(client.submit(request))
            jobs = _watch(client, job_ids, args.timeout, ctrl_c)
        with SafeDownloader(settings) as downloader:
            images = data_dir / "images"
            outcomes = [Outcome(job, downloader.save_job(job, images)) for job in jobs]
        charged = httpx.get(f"{simulator_url}/_sim/stats", timeout=5).json()["charged_usd_exact"]
    _print_table(outcomes, Decimal(charged))
    return 0 if all(o.job.state is JobState.SUCCEEDED for o in outcomes) else 1


def _watch(client: FluxfarmClient, job_ids: list[str], timeout: float, ctrl_c: _CtrlC) -> list[Job]:
    deadline = time.monotonic() + timeout
    started = time.monotonic()
    while True:
        ctrl_c.check()
        jobs = [client.get(job_id) for job_id in job_ids]
        done = sum(job.state.terminal for job in jobs)
        _progress(done, len(jobs), time.monotonic() - started)
        if done == len(jobs) or time.monotonic() > deadline:
            sys.stderr.write("\n")
            return jobs
        time.sleep(0.25)


def _progress(done: int, total: int, elapsed: float) -> None:
    width = 40
    filled = width * done // max(total, 1)
    bar = "#" * filled + "-" * (width - filled)
    sys.stderr.write(f"\r[{bar}] {done}/{total} jobs finished  {elapsed:5.1f}s")
    sys.stderr.flush()


def _print_table(outcomes: list[Outcome], charged: Decimal) -> None:
    header = (
        f"{'job':<10} {'status':<10} {'size':<10} {'images':>7} {'cost USD':>10} {'latency':>9}"
    )
    print(header)
    print("-" * len(header))
    for outcome in outcomes:
        job = outcome.job
        size = f"{job.request.get('width', '-')}x{job.request.get('height', '-')}"
        latency = (
            f"{(job.finished_at - job.created_at).total_seconds():8.2f}s"
            if job.finished_at
            else "        -"
        )
        images = f"{len(outcome.saved)}/{job.number_results}"
        print(
            f"{job.id[:8]:<10} {job.state.value:<10} {size:<10} {images:>7} "
            f"{job.cost_usd:>10.3f} {latency}"
        )
    total = sum((o.job.cost_usd for o in outcomes), Decimal(0))
    print("-" * len(header))
    print(f"total spend: ${total:.3f} over {len(outcomes)} jobs (Runware charged ${charged:.3f})")
    if outcomes:
        print(f"images saved under {outcomes[0].saved[0].parents[1] if outcomes[0].saved else '-'}")
