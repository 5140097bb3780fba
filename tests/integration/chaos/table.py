"""README's reliability table: one row per chaos scenario, printed at the end of the run
and written to .fluxfarm/chaos-results.md.

Rows travel as each test's user properties, so that xdist workers hand them to the
process that prints the summary; tests/conftest.py calls the two hooks below, since a
conftest this deep is never loaded by that process.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _pytest.terminal import TerminalReporter

ROW_PROPERTY = "chaos_row"
HEADER = (
    "| scenario | jobs | hit | lost | paid twice | duplicate results | p99 time to terminal "
    "| alerts raised |\n"
    "|---|---|---|---|---|---|---|---|"
)
_ROWS: list[str] = []


def collect(report: pytest.TestReport) -> None:
    if report.when == "call":
        _ROWS.extend(str(value) for name, value in report.user_properties if name == ROW_PROPERTY)


def summarize(terminalreporter: TerminalReporter) -> None:
    if not _ROWS:
        return
    table = "\n".join([HEADER, *_ROWS])
    terminalreporter.write_sep("=", "chaos results")
    terminalreporter.write_line(table)
    target = Path(".fluxfarm/chaos-results.md")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(table + "\n")
