"""Shared benchmark helpers: a global time budget, timed repetitions with the warm-up apart, the environment
record, out-of-memory detection and a plain-text table."""

from __future__ import annotations

import dataclasses
import datetime
import platform
import statistics
import time
from collections.abc import Callable

import jax


@dataclasses.dataclass
class Budget:
    """A wall-clock budget of ``seconds`` from ``start`` (``time.perf_counter`` seconds)."""

    seconds: float
    start: float = dataclasses.field(default_factory=time.perf_counter)

    @property
    def end(self) -> float:
        return self.start + self.seconds

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.end - time.perf_counter()

    def deadline(self, share: float) -> float:
        """The time by which a part given ``share`` (0-1) of what is left should end."""
        return time.perf_counter() + max(self.left(), 0.0) * share


def measure(fn: Callable, *, deadline: float, end: float, max_reps: int) -> dict:
    """Times ``fn()`` (its result blocked on): the first call (compilation + one run) apart, then up to
    ``max_reps`` timed calls while the next one is expected to end before ``deadline``; at least one timed call
    when it fits before ``end`` (the global budget). Returns ``warmup_s``, ``times_s``, ``median_s`` (None if no
    timed call fitted) and ``min_s``."""
    warmup = _timed(fn)
    times: list[float] = []
    while len(times) < max_reps:
        expected = times[-1] if times else warmup
        limit = deadline if times else end
        if time.perf_counter() + expected > limit:
            break
        times.append(_timed(fn))
    median = statistics.median(times) if times else None
    return {"warmup_s": warmup, "times_s": times, "median_s": median, "min_s": min(times) if times else None}


def _timed(fn: Callable) -> float:
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is XLA's (or the host's) out-of-memory error."""
    text = str(err)
    return isinstance(err, MemoryError) or "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()


def device_memory_bytes(device=None) -> int | None:
    """The memory XLA may allocate on ``device`` (default: the first), or None where unknown (CPU)."""
    stats = (device or jax.devices()[0]).memory_stats() or {}
    limit = stats.get("bytes_limit")
    return int(limit) if limit else None


def environment() -> dict:
    """Device kind and platform, device count, jax/jaxlib versions, host and date (UTC)."""
    import jaxlib

    device = jax.devices()[0]
    return {"device_kind": device.device_kind, "platform": device.platform, "device_count": jax.device_count(),
            "device_memory_bytes": device_memory_bytes(device), "jax": jax.__version__,
            "jaxlib": jaxlib.__version__, "python": platform.python_version(), "machine": platform.machine(),
            "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")}


def print_table(title: str, rows: list[tuple[str, str, str]]) -> None:
    """Prints ``title`` and rows of (measurement, value, note) in aligned columns."""
    print(f"\n== {title} ==")
    if not rows:
        return
    width = [max(len(row[i]) for row in rows) for i in range(2)]
    for name, value, note in rows:
        print(f"  {name:<{width[0]}}  {value:>{width[1]}}  {note}".rstrip())
