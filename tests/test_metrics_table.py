"""Metrics: the attributes the type checker is told about are the metrics TABLE builds."""

from __future__ import annotations

import typing

from prometheus_client import Counter, Gauge, Histogram

from webhook import metrics
from webhook.metrics import TABLE, Metrics


def test_the_declared_attributes_are_exactly_the_table_s_metrics_of_the_same_kind() -> None:
    declared = typing.get_type_hints(Metrics, vars(metrics))
    declared = {name: kind for name, kind in declared.items() if kind in (Counter, Gauge, Histogram)}
    assert declared == {spec.attribute: spec.kind for spec in TABLE}


def test_every_declared_attribute_is_built() -> None:
    built = Metrics()
    for spec in TABLE:
        assert isinstance(getattr(built, spec.attribute), spec.kind), spec.attribute
