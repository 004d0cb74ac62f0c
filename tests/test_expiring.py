"""Expiring: the bounded, self-sweeping table behind what regcred remembers per namespace."""

from __future__ import annotations

import pytest

from tests.support.fake_tokens import Clock
from webhook.expiring import Expiring


def _steps(table: Expiring, clock: Clock, steps: str) -> None:
    """``+k`` sets k, ``?k`` reads k, ``>n`` moves the clock n seconds on."""
    for step in steps.split():
        if step[0] == "+":
            table.set(step[1:], step[1:])
        elif step[0] == "?":
            table.get(step[1:])
        else:
            clock.advance(float(step[1:]))


@pytest.mark.parametrize(("sliding", "steps", "kept"), [
    pytest.param(False, "+a >5 +b >6", {"b"}, id="an-entry-lives-its-ttl"),
    pytest.param(False, "+a >5 ?a >6", set(), id="fixed-a-read-does-not-renew"),
    pytest.param(True, "+a >5 ?a >6", {"a"}, id="sliding-a-read-renews"),
    pytest.param(False, "+a +b +c +d", {"c", "d"}, id="past-the-limit-the-oldest-goes"),
    pytest.param(True, "+a +b ?a +c", {"a", "c"}, id="sliding-past-the-limit-the-least-recently-used-goes"),
    pytest.param(False, "+a >5 +a >6", {"a"}, id="a-write-renews"),
])
def test_what_an_expiring_table_keeps(sliding, steps, kept):
    clock = Clock(0.0)
    table: Expiring[str, str] = Expiring(10.0, 2, sliding=sliding, clock=clock)
    _steps(table, clock, steps)
    assert {key for key in "abcd" if key in table} == kept


@pytest.mark.parametrize("sweep", [
    pytest.param(lambda table: table.get(-1), id="any-read"),
    pytest.param(lambda table: table.set(-1, -1), id="any-write"),
    pytest.param(lambda table: table.sweep(), id="sweep"),
])
def test_expired_entries_are_swept(sweep):
    clock = Clock(0.0)
    table: Expiring[int, int] = Expiring(10.0, 10_000, clock=clock)
    for key in range(1000):
        table.set(key, key)
    clock.advance(5)
    sweep(table)
    assert len(table) in (1000, 1001)  # nothing expired yet
    clock.advance(6)
    sweep(table)
    assert len(table) <= 1  # the write's own entry, 6 s old
