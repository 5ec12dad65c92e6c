"""How wide a fan-out the host and the upstream API can take right now.

Two limits live here. Host pressure: the 1-minute load average per core and the fraction of
memory available, read with psutil, shrink the width in proportion to how far they are past
their thresholds. The adaptive limit: AIMD in the style of Netflix concurrency-limits — halve
it when a batch hits a rate limit, an overload or a timeout; add one after a clean batch that
used the whole limit. Everything but `read_host` is pure.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

import psutil

#: Multiplicative decrease of the adaptive limit on an overload signal.
BACKOFF_RATIO = 0.5
#: Multiplier for a batch where at least half the tasks failed for reasons not named as load.
GENTLE_BACKOFF_RATIO = 0.9
_OVERLOAD = re.compile(r"rate[ _-]?limit|overload|too many requests|\b429\b|\b529\b", re.IGNORECASE)


@dataclass(frozen=True)
class HostReading:
    """Load average per core (1 min) and the fraction of memory available, 0..1."""

    load_per_core: float
    memory_available_fraction: float


@dataclass(frozen=True)
class HostThresholds:
    """Above `load_per_core_high` or below `memory_available_low` the width shrinks."""

    load_per_core_high: float = 1.5
    memory_available_low: float = 0.10


def read_host() -> HostReading:
    """The host's load average per core over 1 minute and its available memory fraction."""
    cores = psutil.cpu_count() or os.cpu_count() or 1
    load_1m = psutil.getloadavg()[0]
    memory = psutil.virtual_memory()
    available = memory.available / memory.total if memory.total else 1.0
    return HostReading(load_per_core=load_1m / cores, memory_available_fraction=available)


def host_limited_width(
    width: int, reading: HostReading, thresholds: HostThresholds
) -> tuple[int, str | None]:
    """Scale `width` by how far the host is past its thresholds (never below 1).

    The factor is high / load when the load per core is above `load_per_core_high`, and
    available / low when available memory is below `memory_available_low`; the smaller wins.
    Returns the width and a note when it shrank.
    """
    factor = 1.0
    reasons: list[str] = []
    load, high = reading.load_per_core, thresholds.load_per_core_high
    if load > high:
        factor = min(factor, high / load)
        reasons.append(f"load {load:.2f} per core is above {high:g}")
    memory, low = reading.memory_available_fraction, thresholds.memory_available_low
    if memory < low:
        factor = min(factor, max(memory, 0.0) / low)
        reasons.append(f"only {memory:.0%} of memory is available (threshold {low:.0%})")
    # The epsilon keeps 10 x (0.02 / 0.1) at 2, not 1.9999... -> 1.
    shrunk = max(1, math.floor(width * factor + 1e-9))
    if shrunk >= width:
        return width, None
    return shrunk, (
        f"width {shrunk}: host pressure, {' and '.join(reasons)}; "
        f"width scaled by {factor:.2f} from {width}"
    )


def is_overload_error(error: str | None) -> bool:
    """Whether an error text speaks of a rate limit or an overloaded service (429, 529)."""
    return bool(error) and _OVERLOAD.search(error or "") is not None


def adapt_limit(
    current: int | None,
    hard_cap: int,
    *,
    statuses_errors: Sequence[tuple[str, str | None]],
    batch_width: int,
) -> tuple[int, str | None]:
    """The adaptive limit after a batch became terminal, and why it changed (None: it did not).

    `current` None means nothing learned yet, i.e. `hard_cap`. The limit halves (floor 1) when
    a task of the batch timed out, or failed with an error naming a rate limit or overload; it
    grows by one (up to `hard_cap`) after a batch with no failure that ran at the full limit.
    Ordinary failures (a test that failed) say little about load: a few leave it alone, but
    when most of a batch (more than half, at least two) failed the limit backs off gently
    (x0.9, Netflix's default AIMD ratio, at least by one), because a failure storm usually
    means errors whose text did not name a rate limit.
    """
    limit = hard_cap if current is None else max(1, min(current, hard_cap))
    overloads = sum(
        1
        for status, error in statuses_errors
        if status in ("failed", "timed_out") and is_overload_error(error)
    )
    timeouts = sum(
        1
        for status, error in statuses_errors
        if status == "timed_out" and not is_overload_error(error)
    )
    if overloads or timeouts:
        lowered = max(1, math.floor(limit * BACKOFF_RATIO))
        if lowered == limit:
            return limit, None
        causes = []
        if overloads:
            causes.append(f"{overloads} hit a rate limit or overload")
        if timeouts:
            causes.append(f"{timeouts} timed out")
        return lowered, (
            f"adaptive limit {limit} -> {lowered}: of the last batch's "
            f"{len(statuses_errors)} tasks, {' and '.join(causes)}"
        )
    failures = sum(1 for status, _ in statuses_errors if status in ("failed", "timed_out"))
    if failures >= 2 and failures * 2 > len(statuses_errors) and limit > 1:
        lowered = min(limit - 1, math.floor(limit * GENTLE_BACKOFF_RATIO))
        return lowered, (
            f"adaptive limit {limit} -> {lowered}: {failures} of the last batch's "
            f"{len(statuses_errors)} tasks failed"
        )
    failed = failures > 0
    if statuses_errors and not failed and batch_width >= limit and limit < hard_cap:
        return limit + 1, (
            f"adaptive limit {limit} -> {limit + 1}: a clean batch ran at the full limit"
        )
    if current is not None and current > hard_cap:
        return limit, f"adaptive limit {current} -> {limit}: the server cap is {hard_cap}"
    return limit, None
