"""Duration estimates from history: recency-weighted medians per agent type, priors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from parallel_dispatch.estimates import (
    DEFAULT_PRIOR_S,
    Observation,
    estimate_durations,
    weighted_median,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def runs(agent: str, durations: list[float], status: str = "succeeded") -> list[Observation]:
    """Observations, newest first, one minute apart."""
    return [
        Observation(agent, status, d, T0 - timedelta(minutes=i)) for i, d in enumerate(durations)
    ]


def test_an_agent_type_is_estimated_by_the_median_of_its_runs_and_the_note_says_so() -> None:
    history = runs("test-runner", [200.0, 212.0, 215.0, 9000.0, 205.0, 230.0, 212.0])
    estimate = estimate_durations(history, ["test-runner"])["test-runner"]
    assert 205.0 <= estimate.seconds <= 215.0
    assert estimate.samples == 7
    assert estimate.note == f"test-runner: median {estimate.seconds:.0f} s over 7 runs"


def test_recent_runs_weigh_more_than_old_ones() -> None:
    history = runs("coder", [60.0] * 30 + [600.0] * 40)
    assert estimate_durations(history, ["coder"])["coder"].seconds == 60.0


def test_only_successful_runs_with_a_duration_count() -> None:
    history = runs("coder", [5.0, 5.0, 5.0], status="failed") + runs("coder", [50.0])
    history.append(Observation("coder", "succeeded", None, T0))
    estimate = estimate_durations(history, ["coder"])["coder"]
    assert (estimate.seconds, estimate.samples) == (50.0, 1)
    assert estimate.note.endswith("over 1 run")


def test_an_unseen_agent_type_borrows_the_median_of_all_types() -> None:
    history = runs("coder", [100.0, 100.0, 100.0])
    estimate = estimate_durations(history, ["reviewer"])["reviewer"]
    assert (estimate.seconds, estimate.samples) == (100.0, 0)
    assert "no successful runs yet" in estimate.note


def test_without_any_history_the_prior_is_used_and_named() -> None:
    estimate = estimate_durations([], ["coder"])["coder"]
    assert (estimate.seconds, estimate.samples) == (DEFAULT_PRIOR_S, 0)
    assert "no history" in estimate.note


def test_history_order_does_not_matter() -> None:
    history = runs("coder", [10.0] * 25 + [99.0] * 30)
    forward = estimate_durations(history, ["coder"])
    assert estimate_durations(list(reversed(history)), ["coder"]) == forward


def test_weighted_median_splits_the_weight_in_half() -> None:
    assert weighted_median([1.0, 2.0, 3.0], [1.0, 1.0, 1.0]) == 2.0
    assert weighted_median([1.0, 2.0], [1.0, 1.0]) == 1.5
    assert weighted_median([1.0, 100.0], [3.0, 1.0]) == 1.0
