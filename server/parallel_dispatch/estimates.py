"""Duration estimates per agent type, learned from recorded results. Pure: no I/O, no clock.

A task without `estimate_s` is planned with the recency-weighted median of the durations of
its agent type's recent successful runs: the median shrugs off the odd run that hung or
returned at once, and the weights (halving every `HALF_LIFE_RUNS` runs) follow a workload
that drifts. An agent type with no successful runs borrows the median of every type; with no
history at all the prior is `DEFAULT_PRIOR_S`, and the note says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

#: The weight of a run halves every this many newer runs of the same agent type.
HALF_LIFE_RUNS = 20.0
#: At most this many recent runs per agent type count.
MAX_SAMPLES = 200
#: Seconds assumed for an agent type when nothing at all has been recorded.
DEFAULT_PRIOR_S = 120.0


@dataclass(frozen=True)
class Observation:
    """One finished task from history, for duration estimates and the adaptive limit."""

    agent: str
    status: str
    duration_s: float | None
    finished_at: datetime
    error: str | None = None


@dataclass(frozen=True)
class DurationEstimate:
    """Seconds to plan with, how many runs back them (0: a prior) and where they came from."""

    seconds: float
    samples: int
    note: str


def format_seconds(seconds: float) -> str:
    """`212 s`, `3.5 s`: whole seconds unless the value is small."""
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"


def weighted_median(values: Sequence[float], weights: Sequence[float]) -> float:
    """The value at which half of the total weight lies on each side.

    Raises:
        ValueError: `values` is empty.
    """
    if not values:
        raise ValueError("weighted_median of no values")
    pairs = sorted(zip(values, weights, strict=True))
    half = sum(weights) / 2
    running = 0.0
    for i, (value, weight) in enumerate(pairs):
        running += weight
        if running > half:
            return value
        if running == half:
            # An exact tie between two values: take their midpoint, as the plain median does.
            return (value + pairs[i + 1][0]) / 2
    return pairs[-1][0]  # pragma: no cover - only reachable through float rounding


def _recency_median(durations: Sequence[float]) -> float:
    """Weighted median of `durations`, newest first."""
    weights = [0.5 ** (i / HALF_LIFE_RUNS) for i in range(len(durations))]
    return weighted_median(durations, weights)


def estimate_durations(
    history: Sequence[Observation], agents: Iterable[str]
) -> dict[str, DurationEstimate]:
    """An estimate for every agent type in `agents`, from the succeeded runs in `history`.

    `history` may come in any order; the newest runs (by `finished_at`) weigh the most.
    """
    newest_first = sorted(history, key=lambda o: o.finished_at, reverse=True)
    by_agent: dict[str, list[float]] = {}
    everyone: list[float] = []
    for obs in newest_first:
        if obs.status != "succeeded" or obs.duration_s is None or obs.duration_s <= 0:
            continue
        runs = by_agent.setdefault(obs.agent, [])
        if len(runs) < MAX_SAMPLES:
            runs.append(obs.duration_s)
        if len(everyone) < MAX_SAMPLES:
            everyone.append(obs.duration_s)
    estimates: dict[str, DurationEstimate] = {}
    for agent in agents:
        runs = by_agent.get(agent, [])
        if runs:
            seconds = _recency_median(runs)
            plural = "run" if len(runs) == 1 else "runs"
            note = f"{agent}: median {format_seconds(seconds)} over {len(runs)} {plural}"
            estimates[agent] = DurationEstimate(seconds, len(runs), note)
        elif everyone:
            seconds = _recency_median(everyone)
            note = (
                f"{agent}: no successful runs yet; assuming {format_seconds(seconds)}, the "
                f"median of all agent types over {len(everyone)} runs"
            )
            estimates[agent] = DurationEstimate(seconds, 0, note)
        else:
            note = f"{agent}: no history; assuming {format_seconds(DEFAULT_PRIOR_S)}"
            estimates[agent] = DurationEstimate(DEFAULT_PRIOR_S, 0, note)
    return estimates
