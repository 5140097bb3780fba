"""CPU time and memory of a child process and its descendants, read from /proc."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Usage:
    """One process tree at one moment: CPU seconds so far, and its memory."""

    cpu_s: float
    peak_rss_bytes: int  # sum of every process's VmHWM: pool children count too
    rss_bytes: int

    def __sub__(self, earlier: Usage) -> Usage:
        return Usage(self.cpu_s - earlier.cpu_s, self.peak_rss_bytes, self.rss_bytes)

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.cpu_s + other.cpu_s,
            self.peak_rss_bytes + other.peak_rss_bytes,
            self.rss_bytes + other.rss_bytes,
        )


ZERO = Usage(0.0, 0, 0)


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    # the command name may hold spaces and parentheses; the fields follow the last ")"
    return text[text.rindex(")") + 2 :].split()


def _parents() -> dict[int, int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(_stat_fields(int(entry.name))[1])
            except (FileNotFoundError, ProcessLookupError, ValueError):
                continue
    return parents


def _tree(root: int, parents: dict[int, int]) -> list[int]:
    found, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        found.extend(frontier)
    return found


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def tree_usage(root: int) -> Usage:
    """CPU (of live processes and of the children they reaped) and memory of a tree."""
    total = ZERO
    for pid in _tree(root, _parents()):
        try:
            fields = _stat_fields(pid)
            # utime, stime, then cutime, cstime: what reaped pool children used
            ticks = sum(int(f) for f in fields[11:15])
            total += Usage(
                ticks / _TICKS, _status_kb(pid, "VmHWM") * 1024, _status_kb(pid, "VmRSS") * 1024
            )
        except (FileNotFoundError, ProcessLookupError):
            continue  # exited between the scan and the read
    return total


def parent_of(pid: int) -> int:
    return int(_stat_fields(pid)[1])


def pid_of_command(name: str) -> int | None:
    """The oldest live process whose command name is `name` (a server we did not start)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    found.append(int(entry.name))
            except (FileNotFoundError, ProcessLookupError):
                continue
    return min(found) if found else None
