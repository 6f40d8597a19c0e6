"""World generation with a scene cache: the iteration plan, the chunked rollout, caches, depth, evaluation.

``WorldGenerator(config, model).generate(clip, num_frames, cache="latent"|"none"|"rgb")`` generates a video
along a camera path (``rollout(...)``: the same in one call); ``save_rollout`` writes it; ``evaluate``
compares the cache variants on procedural worlds.
"""

from mirage_jax.models.depth_head import LatentDepthHead, depth_head_loss
from mirage_jax.world.caches import CACHES
from mirage_jax.world.chunks import Chunk, iteration_plan
from mirage_jax.world.depth import make_depth_source
from mirage_jax.world.generator import RolloutResult, WorldGenerator, check_inputs, rollout
from mirage_jax.world.outputs import save_rollout

__all__ = [
    "CACHES",
    "Chunk",
    "LatentDepthHead",
    "RolloutResult",
    "WorldGenerator",
    "check_inputs",
    "depth_head_loss",
    "iteration_plan",
    "make_depth_source",
    "rollout",
    "save_rollout",
]
