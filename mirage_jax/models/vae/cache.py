"""The explicit, functional causal cache threaded through one chunk of the VAE.

Each causal layer, in call order, ``take()``s its slot from the previous chunk's cache (a flat list of arrays)
and ``put()``s the slot for the next chunk. A chunk function therefore maps ``(x, slots_in) -> (y, slots_out)``
with no hidden state, so the steady-state chunk can be the body of ``jax.lax.scan`` carrying ``slots``.

``first`` marks the first chunk (``slots_in is None``): regular causal convs see zeros in front (the same as
a zero-initialised 2-frame cache), the temporal down/up-samplers take their first-chunk special cases.
Every slot has the same shape after the first chunk as in the steady state, so the scan carry is well-typed.
"""

from __future__ import annotations

import jax


class ChunkCache:
    """Reads the previous chunk's slots in call order and collects the new ones (trace-time bookkeeping)."""

    def __init__(self, slots: list[jax.Array] | None):
        self.first = slots is None
        self._slots = slots
        self._index = 0
        self.out: list[jax.Array] = []

    def take(self) -> jax.Array | None:
        """The next slot of the previous chunk (``None`` on the first chunk)."""
        if self._slots is None:
            return None
        slot = self._slots[self._index]
        self._index += 1
        return slot

    def put(self, value: jax.Array) -> None:
        self.out.append(value)

    def finish(self) -> list[jax.Array]:
        """The new slots; checks every previous slot was consumed (a layer-order bug otherwise)."""
        if self._slots is not None and self._index != len(self._slots):
            raise RuntimeError(f"chunk consumed {self._index} of {len(self._slots)} cache slots")
        return self.out
