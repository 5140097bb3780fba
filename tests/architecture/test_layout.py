"""The tree's rules, checked by machine: import contracts, what the wheel ships, and that
importing fluxfarm reads no settings."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from farmdomain.settings import Settings
from worker.app import create_app

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
INSTALLED = {
    name.rstrip("*") for name in PROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
}
PACKAGES = sorted(INSTALLED - {"simulator", "fluxfarm"})
CONTRACTS = PROJECT["tool"]["importlinter"]["contracts"]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(where: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=where,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(where)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_every_import_rule_of_the_architecture_holds() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(CONTRACTS)} kept, 0 broken" in result.stdout


def test_a_deliberate_violation_breaks_its_contract(tmp_path: Path) -> None:
    for name in INSTALLED:
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    (tmp_path / "farmdomain" / "leak.py").write_text("from worker import app\n")

    result = lint_imports(tmp_path)

    assert result.returncode != 0
    assert "the domain imports nothing of ours BROKEN" in result.stdout
    assert "farmdomain.leak -> worker.app" in result.stdout


@pytest.mark.integration
def test_the_wheel_ships_the_product_only(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), "."],
        cwd=ROOT,
        check=True,
        timeout=300,
    )
    [wheel] = tmp_path.glob("fluxfarm-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/", 1)[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == INSTALLED
    assert "jobstore/migrations/env.py" in names
    assert not [n for n in names if "bench" in n.split("/")[0] or n.startswith("tests/")]


def test_importing_every_module_reads_no_settings(tmp_path: Path) -> None:
    # settings that would fail to parse, and a data dir that cannot be made: an import that
    # read either would fail
    script = (
        "import importlib, pkgutil\n"
        f"for package in {[*PACKAGES, 'fluxfarm']!r}:\n"
        "    module = importlib.import_module(package)\n"
        "    for info in pkgutil.walk_packages(module.__path__, package + '.'):\n"
        "        if '.migrations.' not in info.name:\n"
        "            importlib.import_module(info.name)\n"
        "import worker.app\n"
        "print('imported')\n"
    )
    blocker = tmp_path / "file"
    blocker.write_text("")
    env = {
        "PATH": "/usr/bin:/bin",
        "FLUXFARM_DATABASE_POOL_SIZE": "not a number",
        "FLUXFARM_DATA_DIR": str(blocker / "data"),
    }
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "imported"


def test_two_apps_with_different_settings_live_in_one_process(tmp_path: Path) -> None:
    first = create_app(Settings(data_dir=tmp_path / "a", reaper_interval_s=5))
    second = create_app(Settings(data_dir=tmp_path / "b", reaper_interval_s=30))

    assert first.conf.broker_url != second.conf.broker_url
    assert str(tmp_path / "a") in first.conf.broker_url
    assert first.conf.beat_schedule["reap"]["schedule"] == 5
    assert second.conf.beat_schedule["reap"]["schedule"] == 30
    assert first.settings.data_dir != second.settings.data_dir
    assert set(first.tasks) >= {"fluxfarm.submit", "fluxfarm.submit_many", "fluxfarm.reap"}
