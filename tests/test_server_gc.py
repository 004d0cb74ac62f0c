"""The app's lifespan: how the collector is set while serving, and undone after."""

from __future__ import annotations

import gc

from starlette.testclient import TestClient

from tests.conftest import build_deps
from webhook.app import YOUNG_GENERATION, create_app
from webhook.settings import Settings


def test_serving_freezes_the_start_up_heap_and_collects_young_objects_less_often():
    before = gc.get_threshold()
    app = create_app(Settings(), build_deps("registries: []\n"))
    with TestClient(app):
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (YOUNG_GENERATION, *before[1:])
    # One process may build many apps (the tests): each leaves the collector as it found it.
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
