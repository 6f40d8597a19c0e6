"""Progress of a pass over clips: a bar on a terminal, a line per tenth in a pipe or a log file."""

from __future__ import annotations

import sys
import time


def clip_progress(clips, total: int | None, split: str, done_before: int = 0):
    """Yields ``clips`` and shows progress with clips/s and the time left: a tqdm bar on a terminal; in a pipe or
    log file one line per tenth of the clips (no redrawn bars). ``done_before`` clips count as done already
    (a resumed pass)."""
    if sys.stderr.isatty():
        from tqdm import tqdm  # noqa: PLC0415

        yield from tqdm(clips, total=total, initial=done_before, desc=f"{split} clips", unit="clip")
        return
    every = max(1, (total or 0) // 10)
    start = time.perf_counter()
    for count, clip in enumerate(clips, 1):
        yield clip
        done = done_before + count
        if done % every == 0 or done == total:
            rate = count / max(time.perf_counter() - start, 1e-9)
            left = f", {(total - done) / rate:.0f} s left" if total is not None else ""
            print(f"{split} clips: {done}/{total if total is not None else '?'} ({rate:.2f} clips/s{left})",
                  file=sys.stderr, flush=True)
