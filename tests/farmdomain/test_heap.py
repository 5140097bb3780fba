"""The start-up heap is frozen: the collector's full passes walk only what came after."""

from __future__ import annotations

import gc

from farmdomain.heap import freeze_startup_heap


def test_objects_alive_at_start_up_leave_the_collectors_reach_and_later_ones_stay() -> None:
    made_before: list[list[int]] = [[1]]
    freeze_startup_heap()
    try:
        made_after: list[list[int]] = [[2]]
        walked = gc.get_objects()
        assert gc.get_freeze_count() > 0
        assert not any(o is made_before for o in walked)
        assert any(o is made_after for o in walked)
    finally:
        gc.unfreeze()
