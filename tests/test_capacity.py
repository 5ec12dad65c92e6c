"""Host pressure and the adaptive (AIMD) limit."""

from __future__ import annotations

import pytest

from parallel_dispatch.capacity import (
    HostReading,
    HostThresholds,
    adapt_limit,
    host_limited_width,
    is_overload_error,
    read_host,
)


def test_reading_the_host_gives_plausible_numbers() -> None:
    reading = read_host()
    assert reading.load_per_core >= 0.0
    assert 0.0 < reading.memory_available_fraction <= 1.0


@pytest.mark.parametrize(
    ("reading", "width"),
    [
        (HostReading(0.5, 0.6), 10),
        (HostReading(3.0, 0.6), 5),
        (HostReading(15.0, 0.6), 1),
        (HostReading(0.5, 0.05), 5),
        (HostReading(3.0, 0.02), 2),
        (HostReading(100.0, 0.0), 1),
    ],
)
def test_host_pressure_shrinks_the_width_in_proportion(reading: HostReading, width: int) -> None:
    shrunk, note = host_limited_width(10, reading, HostThresholds())
    assert shrunk == width
    assert (note is None) == (width == 10)


def test_thresholds_come_from_settings() -> None:
    shrunk, note = host_limited_width(10, HostReading(3.0, 0.6), HostThresholds(4.0, 0.1))
    assert (shrunk, note) == (10, None)


@pytest.mark.parametrize(
    ("error", "overload"),
    [
        ("429 Too Many Requests", True),
        ("rate_limit_error: slow down", True),
        ("Rate limit reached", True),
        ("API Error: 529 overloaded_error", True),
        ("Overloaded", True),
        ("tests failed: 3 of 40", False),
        ("took 4290 ms", False),
        (None, False),
    ],
)
def test_rate_limit_and_overload_errors_are_recognised(error: str | None, overload: bool) -> None:
    assert is_overload_error(error) is overload


def test_a_rate_limited_batch_halves_the_limit_and_says_why() -> None:
    batch = [("failed", "429 Too Many Requests")] * 3 + [("succeeded", None)] * 7
    limit, why = adapt_limit(None, 10, statuses_errors=batch, batch_width=10)
    assert limit == 5
    assert (
        why
        == "adaptive limit 10 -> 5: of the last batch's 10 tasks, 3 hit a rate limit or overload"
    )


def test_a_timeout_halves_the_limit_too() -> None:
    limit, why = adapt_limit(8, 10, statuses_errors=[("timed_out", None)], batch_width=8)
    assert limit == 4
    assert why is not None and "1 timed out" in why


def test_the_limit_never_drops_below_one() -> None:
    assert adapt_limit(1, 10, statuses_errors=[("timed_out", None)], batch_width=1) == (1, None)


def test_ordinary_failures_leave_the_limit_alone() -> None:
    batch = [("failed", "assertion failed"), ("succeeded", None)]
    assert adapt_limit(4, 10, statuses_errors=batch, batch_width=4) == (4, None)


def test_a_failure_storm_backs_off_gently_with_a_reason() -> None:
    storm = [("failed", "exit 1"), ("failed", "exit 1"), ("failed", None), ("succeeded", None)]
    limit, reason = adapt_limit(10, 10, statuses_errors=storm, batch_width=4)
    assert limit == 9
    assert reason is not None and "3 of the last batch's 4 tasks failed" in reason
    assert adapt_limit(2, 10, statuses_errors=storm, batch_width=2)[0] == 1
    assert adapt_limit(1, 10, statuses_errors=storm, batch_width=1) == (1, None)


def test_clean_batches_at_the_full_limit_add_one_up_to_the_cap() -> None:
    limit: int | None = 5
    for expected in (6, 7, 8, 9, 10, 10):
        assert limit is not None
        limit, _ = adapt_limit(
            limit, 10, statuses_errors=[("succeeded", None)] * limit, batch_width=limit
        )
        assert limit == expected


def test_a_clean_batch_below_the_limit_teaches_nothing() -> None:
    assert adapt_limit(5, 10, statuses_errors=[("succeeded", None)] * 2, batch_width=2) == (5, None)


def test_a_limit_above_a_lowered_cap_is_clamped() -> None:
    limit, why = adapt_limit(12, 8, statuses_errors=[("succeeded", None)], batch_width=1)
    assert limit == 8
    assert why is not None
