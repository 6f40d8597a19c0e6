"""tqdm progress bars: one over chunks, one over sampler steps (advanced from inside the compiled loop).

Shown on a terminal (and in notebooks) only: on a pipe or a file a bar would write every redraw into it, so
there ``disable=None`` (tqdm: off when the stream is not a terminal) leaves them out.
"""

from __future__ import annotations

from collections.abc import Iterable

from tqdm.auto import tqdm


def variant_label(cache: str, depth_source) -> str:
    """The name a rollout's bars carry: its cache, plus the write-back depth when it is not the geometry's
    (``"latent"``, ``"latent+head"``, ``"rgb+callable"``), so the bars of several rollouts tell them apart."""
    if depth_source == "geometry":
        return cache
    return f"{cache}+{depth_source if isinstance(depth_source, str) else 'callable'}"


def chunk_bar(items: Iterable, enabled: bool, desc: str = "chunks"):
    """Iterates ``items`` with a chunk-level bar (a plain iterator when disabled)."""
    return tqdm(items, desc=desc, unit="chunk", leave=True, disable=None) if enabled else items


class StepProgress:
    """A per-chunk step bar. ``on_step`` is a stable host callback (``jax.debug.callback``) so the compiled
    denoising program is shared by every chunk and every rollout using the same holder."""

    def __init__(self, steps: int):
        self.steps = steps
        self.bar = None

    def start(self, desc: str) -> None:
        self.bar = tqdm(total=self.steps, desc=desc, unit="step", leave=False, disable=None)

    def on_step(self, step) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar = None


STEP_PROGRESS: dict[int, StepProgress] = {}


def step_progress(steps: int) -> StepProgress:
    """The shared holder for ``steps``-step schedules (one per step count, so jit caches are reused)."""
    return STEP_PROGRESS.setdefault(steps, StepProgress(steps))
