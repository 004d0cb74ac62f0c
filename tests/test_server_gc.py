"""The collector while serving: set by ``serve`` for the process, and undone after."""

from __future__ import annotations

import gc

from webhook.server import YOUNG_GENERATION, tuned_gc


def test_serving_freezes_the_start_up_heap_and_collects_young_objects_less_often():
    before = gc.get_threshold()
    with tuned_gc():
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (YOUNG_GENERATION, *before[1:])
    # One process may serve many times (the tests): each leaves the collector as it found it.
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
