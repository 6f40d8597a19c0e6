"""Plausible porting bugs, each a one-place edit of the package, and the tests that must catch it.

A mutant replaces ``find`` (which must occur exactly once in ``file``) by ``replace``. ``ci``: part of the
subset ``.ci/run`` runs (the whole list is ``python -m tests.mutation --all``). A mutant must change behaviour:
a uniform shift of every RoPE position, say, is no bug (attention sees relative positions only).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    find: str
    replace: str
    tests: tuple[str, ...]
    ci: bool = True


LAYOUT = ("tests/test_dit_layout_reference.py",)
MEMORY = ("tests/test_memory_core.py",)
GEOMETRY = ("tests/test_geometry.py",)

MUTANTS = (
    # --- DiT sequence layout and RoPE -----------------------------------------------------------------------------
    Mutant("rope height/width positions swapped", "mirage_jax/models/rope.py",
           "pos = np.stack([f - num_references, i + height * is_ref, j], axis=-1)",
           "pos = np.stack([f - num_references, j, i + height * is_ref], axis=-1)", LAYOUT),
    Mutant("rope: references without the height offset", "mirage_jax/models/rope.py",
           "i + height * is_ref, j]", "i, j]", LAYOUT),
    Mutant("rope: references at the targets' temporal positions 0..R-1", "mirage_jax/models/rope.py",
           "pos = np.stack([f - num_references,", "pos = np.stack([np.where(is_ref, f, f - num_references),",
           LAYOUT),
    Mutant("rope: head dim split (t, h, w) reversed", "mirage_jax/models/rope.py",
           "return head_dim - 4 * s, 2 * s, 2 * s", "return 2 * s, 2 * s, head_dim - 4 * s", LAYOUT),
    Mutant("VACE hints added to the first frames instead of the non-reference ones", "mirage_jax/models/dit.py",
           "x = jnp.concatenate([x[:, :r], x[:, r:] + hint], axis=1) if r else x + hint",
           "x = jnp.concatenate([x[:, :-r] + hint, x[:, -r:]], axis=1) if r else x + hint", LAYOUT),
    Mutant("VACE hints after every layer", "mirage_jax/models/dit.py",
           "hint = jnp.where(idx >= 0, hint.astype(jnp.float32), 0.0)", "hint = hint.astype(jnp.float32)",
           LAYOUT),
    Mutant("LoRA multiplier alpha instead of alpha / rank", "mirage_jax/models/layers.py",
           "self.lora_scale = float(lora_alpha) / lora_rank", "self.lora_scale = float(lora_alpha)",
           LAYOUT + ("tests/test_export.py",)),
    Mutant("reference slots filled first", "mirage_jax/models/sequence_slots.py",
           "return _placed(items, slots, last=True)", "return _placed(items, slots, last=False)",
           ("tests/test_sequence_slots.py",)),
    Mutant("loss caps keep the last preceding slots", "mirage_jax/models/sequence_slots.py",
           "return array[:, :kept]", "return array[:, array.shape[1] - kept:]",
           ("tests/test_train_loss.py", "tests/test_sequence_slots.py")),
    # --- diffusion -------------------------------------------------------------------------------------------------
    Mutant("loss includes the clean frame 0", "mirage_jax/train/loss.py",
           "frame_mse = jnp.mean(jnp.square(pred - (eps - x0)), axis=(2, 3, 4))[:, 1:]",
           "frame_mse = jnp.mean(jnp.square(pred - (eps - x0)), axis=(2, 3, 4))[:, 0:]",
           ("tests/test_train_loss.py",)),
    Mutant("sigma shift formula (training and sampling)", "mirage_jax/sampling/schedules.py",
           "return shift * sigmas / (1 + (shift - 1) * sigmas)", "return shift * sigmas / (1 + shift * sigmas)",
           ("tests/test_train_loss.py", "tests/test_sampling_parity.py")),
    Mutant("sampler does not re-impose frame 0", "mirage_jax/sampling/loop.py",
           "return x if first_frame is None else x.at[:, 0].set(first_frame.astype(x.dtype))", "return x",
           ("tests/test_sampling_parity.py", "tests/test_world_parts.py")),
    Mutant("classifier-free guidance around the conditional", "mirage_jax/sampling/loop.py",
           "return uncond + guidance_scale * (cond - uncond)", "return cond + guidance_scale * (cond - uncond)",
           ("tests/test_sampling_parity.py", "tests/test_world_parts.py")),
    Mutant("denoiser: prompt and empty prompt swapped under guidance", "mirage_jax/world/denoiser.py",
           "ctx = jnp.concatenate([context, null_context]) if cfg else context",
           "ctx = jnp.concatenate([null_context, context]) if cfg else context", ("tests/test_world_parts.py",)),
    Mutant("denoiser: frame 0 gets the noise timestep", "mirage_jax/world/denoiser.py",
           ".at[r + 1: r + t].set(timestep)", ".at[r: r + t].set(timestep)", ("tests/test_world_parts.py",)),
    # --- VAE and text -----------------------------------------------------------------------------------------------
    Mutant("VAE normalisation multiplies by std", "mirage_jax/models/vae/model.py",
           "return (mu - mean) / std", "return (mu - mean) * std", ("tests/test_vae_parity.py",)),
    Mutant("VAE patchify channel order (c, h, w) instead of (c, w, h)", "mirage_jax/models/vae/patchify.py",
           "x = x.transpose(*range(n), n, n + 2, n + 4, n + 3, n + 1)  # [..., h, w, C, r, q]",
           "x = x.transpose(*range(n), n, n + 2, n + 4, n + 1, n + 3)  # [..., h, w, C, q, r]",
           ("tests/test_vae_parity.py",)),
    Mutant("umT5 position buckets mirrored", "mirage_jax/models/umt5.py",
           "buckets = (relative > 0).astype(np.int32) * half", "buckets = (relative < 0).astype(np.int32) * half",
           ("tests/test_umt5_parity.py",)),
    # --- geometry and memory ----------------------------------------------------------------------------------------
    Mutant("intrinsics scaling: x and y factors swapped", "mirage_jax/geometry.py",
           "scale = jnp.asarray([[sx, sx, sx], [sy, sy, sy], [1.0, 1.0, 1.0]], jnp.float32)",
           "scale = jnp.asarray([[sy, sy, sy], [sx, sx, sx], [1.0, 1.0, 1.0]], jnp.float32)", GEOMETRY),
    Mutant("back-projection with fy for x", "mirage_jax/geometry.py",
           "x = (u - k[..., 0, 2]) * depth / k[..., 0, 0]", "x = (u - k[..., 0, 2]) * depth / k[..., 1, 1]",
           GEOMETRY + MEMORY),
    Mutant("projection with fx for y", "mirage_jax/geometry.py",
           "v = cam[..., 1] * k[..., 1, 1] / safe_z + k[..., 1, 2]",
           "v = cam[..., 1] * k[..., 0, 0] / safe_z + k[..., 1, 2]",
           GEOMETRY + MEMORY),
    Mutant("z-buffer: the farthest point wins", "mirage_jax/memory/zbuffer.py",
           "zmin = jnp.full((num_cells + 1,), KEY_NONE, jnp.int32).at[cell].min(zbits)",
           "zmin = jnp.full((num_cells + 1,), -1, jnp.int32).at[cell].max(zbits)", MEMORY),
    Mutant("z-buffer: ties go to the highest key", "mirage_jax/memory/zbuffer.py",
           "kmin = jnp.full((num_cells + 1,), KEY_NONE, jnp.int32).at[tie_cell].min(key)",
           "kmin = jnp.full((num_cells + 1,), -1, jnp.int32).at[tie_cell].max(key)", MEMORY),
    Mutant("memory read without the near plane", "mirage_jax/memory/read.py",
           "drawn = valid & (z > near) &", "drawn = valid & (z > -1e9) &", MEMORY),
    Mutant("frozen references: a chunk's cells are never recorded", "mirage_jax/world/generator.py",
           "            run.frozen.write(depth, keep, k_depth, run.poses[new_pose])\n            run.frozen.record(",
           "            run.frozen.record(", ("tests/test_memory_history.py",)),
)
