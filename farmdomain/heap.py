"""Keeping the garbage collector's full passes short in long-running processes."""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Put every object alive now out of the collector's reach, for good.

    A started process holds a great many tracked objects (the app, SQLAlchemy's and
    pydantic's machinery, the metrics) that live as long as it does. Every full pass walked
    all of them, and while it did no webhook was answered and the next ones queued behind
    it (README, Performance, has the figures). Frozen, they are never walked again; what
    the process allocates later is collected as before.
    """
    gc.collect()
    gc.freeze()
