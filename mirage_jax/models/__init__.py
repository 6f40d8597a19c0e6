"""The generator: Wan2.2 DiT + Mirage VACE branch + LoRA (Flax NNX).

Public API: ``WanDiT``, ``build_model(config, seed=0, mesh=None)``, ``state_shardings(state, mesh, rules)``
(the ``NamedSharding`` pytree of ``nnx.split(model)[1]``), ``DiTSettings``.

For pure ``jax.jit`` training steps: ``graphdef, state = nnx.split(model)``; inside the step
``model = nnx.merge(graphdef, state)``. Layers are stacked along a leading ``layers`` axis and scanned
inside ``__call__`` (remat per ``config.model.remat_policy``), so nothing special is needed for the split.
Shardings: ``state_shardings(state, mesh, config.mesh.rules)``.
(VAE/text modules of this package are imported from their own modules, not from here.)
"""

from mirage_jax.models.block import DiTSettings
from mirage_jax.models.dit import WanDiT, build_model
from mirage_jax.models.partitioning import state_shardings

__all__ = ["DiTSettings", "WanDiT", "build_model", "state_shardings"]
