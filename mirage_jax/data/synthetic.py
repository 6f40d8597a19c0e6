"""Procedural worlds: textured rooms with objects, exact metric depth and OpenCV poses (docs/design.md §7).

A world (:func:`make_world`) is a box-shaped room of random size, with solid-textured walls, floor and ceiling,
and yaw-rotated boxes, vertical cylinders and spheres standing near the walls (the camera paths stay in the
middle of the room, so the camera is never inside an object). Optional moving spheres are the dynamic objects.
Everything is drawn from ``numpy.random.default_rng(seed)``: the same seed is the same world and path.

Rendering is exact ray casting in JAX (one ``jit`` per frame count, image size and number of moving objects;
any seed reuses it), vectorised over pixels: for a pixel ``(u, v)`` the ray direction is ``R K^-1 [u, v, 1]``,
whose camera-space z is 1, so the ray parameter of the nearest hit IS the metric z-depth. Textures are solid
(functions of the 3D point; of the object-local point for moving objects) with blocky cell noise at ~5-12 cm,
i.e. a few pixels — the scale of a latent cell — so warping errors show. Shading is Lambertian under a fixed
point light: colours do not depend on the viewpoint, so a re-rendered view is the ground truth for consistency
metrics.

World axes follow the cameras: x right, y DOWN (floor at ``+y``), z forward at the start.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mirage_jax import geometry
from mirage_jax.config import CHOICES
from mirage_jax.data.npz import load_geometry_npz, save_geometry_npz

__all__ = ["TRAJECTORIES", "World", "make_world", "camera_path", "render_clip", "render_views",
           "save_geometry_npz", "load_geometry_npz"]

TRAJECTORIES = CHOICES["data.trajectories"]
NUM_BOXES, NUM_CYLINDERS, NUM_SPHERES = 5, 3, 3
NUM_WALLS = 6  # surface ids 0..5: x-, x+, ceiling (y-), floor (y+), z-, z+
CAMERA_REGION = 0.4  # camera paths stay within this fraction of the room's half extents (x, z)
REVISIT_MAX_OFFSET_M = 0.03  # a revisit clip ends this close (at most) to its start...
REVISIT_MAX_OFFSET_DEG = 1.5  # ...and turned by at most this yaw
_FAR = 1e6

_COLOURS = {
    "white": (0.92, 0.92, 0.90), "cream": (0.93, 0.87, 0.70), "grey": (0.55, 0.55, 0.57),
    "charcoal": (0.22, 0.23, 0.25), "red": (0.75, 0.18, 0.15), "orange": (0.90, 0.50, 0.15),
    "yellow": (0.90, 0.80, 0.25), "green": (0.25, 0.60, 0.30), "teal": (0.15, 0.55, 0.55),
    "blue": (0.20, 0.35, 0.75), "purple": (0.50, 0.30, 0.65), "pink": (0.90, 0.55, 0.65),
    "brown": (0.50, 0.33, 0.20), "beige": (0.80, 0.72, 0.58), "navy": (0.12, 0.16, 0.40),
}


@dataclasses.dataclass(frozen=True)
class World:
    """One procedural world. ``params`` is a pytree of numpy arrays; ``description`` a caption fragment.

    Arrays (S = 6 walls + boxes + cylinders + spheres + dynamic spheres surfaces):
    ``room_min/room_max [3]``, ``box_center/box_half [NB,3]``, ``box_yaw [NB]``, ``cyl [NC,4]`` (x, z, radius,
    top y; bottoms on the floor), ``sph [NS,4]`` (centre, radius), ``dyn_start [ND,4]`` (centre, radius) and
    ``dyn_motion [ND,4]`` (direction x, z, amplitude, phase), ``colour_a/colour_b [S,3]``, ``scales [S,3]``
    (checker, coarse and fine cell sizes in m), ``light [3]``, ``hash_seed`` (uint32).
    """

    seed: int
    params: dict
    description: str

    @property
    def num_dynamic(self) -> int:
        return int(self.params["dyn_start"].shape[0])

    @property
    def room_half_extent(self) -> np.ndarray:
        """Half extents ``[3]`` of the room."""
        return (self.params["room_max"] - self.params["room_min"]) / 2

    def render(self, intrinsics, cam2world, hw: Sequence[int], times=None):
        """Renders views of this world.

        Args: ``intrinsics [N,3,3]`` at resolution ``hw``, ``cam2world [N,4,4]`` (OpenCV), ``times [N]`` in
        [0, 1] for the moving objects (default 0). Returns numpy ``frames uint8 [N,H,W,3]``, ``depths f32
        [N,H,W]`` (metric z-depth, every pixel valid), ``masks bool [N,H,W]`` (True = static surface).
        """
        k = geometry.validate_intrinsics(intrinsics, "intrinsics")
        c2w = geometry.validate_poses(cam2world, "cam2world")
        if k.ndim != 3 or c2w.ndim != 3 or k.shape[0] != c2w.shape[0]:
            raise ValueError(f"intrinsics [N,3,3] and cam2world [N,4,4] must agree, got {k.shape}, {c2w.shape}")
        times = np.zeros(k.shape[0], np.float32) if times is None else np.asarray(times, np.float32)
        if times.shape != (k.shape[0],):
            raise ValueError(f"times: expected shape [{k.shape[0]}], got {list(times.shape)}")
        h, w = int(hw[0]), int(hw[1])
        if h < 1 or w < 1:
            raise ValueError(f"hw: expected positive (height, width), got {tuple(hw)}")
        rgb, depth, static = _render(self.params, k, c2w, times, (h, w))
        return np.asarray(rgb), np.asarray(depth), np.asarray(static)


# ----------------------------------------------------------------------------------------------------------
# World sampling (host side, numpy)
# ----------------------------------------------------------------------------------------------------------


def _colour(rng, names=None):
    name = str(rng.choice(list(names or _COLOURS)))
    jitter = rng.uniform(-0.05, 0.05, 3)
    return name, np.clip(np.asarray(_COLOURS[name]) + jitter, 0.02, 1.0)


def _near_wall_xz(rng, half, margin):
    """A point near a random wall (outside the camera region), ``margin`` away from it."""
    side = rng.integers(4)
    axis, sign = side // 2, (-1.0, 1.0)[side % 2]
    p = np.empty(2)
    p[axis] = sign * rng.uniform(0.7 * half[axis], half[axis] - margin)
    p[1 - axis] = rng.uniform(-(half[1 - axis] - margin), half[1 - axis] - margin)
    return p


def make_world(seed: int, dynamic_objects: int = 0) -> World:
    """Samples the world of ``seed`` (room, objects, textures, light) with ``dynamic_objects`` moving spheres."""
    if dynamic_objects < 0:
        raise ValueError(f"dynamic_objects: expected >= 0, got {dynamic_objects}")
    rng = np.random.default_rng([int(seed), 0x3D])
    half = np.array([rng.uniform(2.5, 4.5), 0.0, rng.uniform(2.5, 4.5)])
    ceiling, floor = -rng.uniform(1.2, 1.8), rng.uniform(1.2, 1.6)
    room_min = np.array([-half[0], ceiling, -half[2]])
    room_max = np.array([half[0], floor, half[2]])
    half_xz = half[[0, 2]]

    box_half = rng.uniform([0.2, 0.2, 0.2], [0.5, 0.7, 0.5], (NUM_BOXES, 3))
    box_xz = np.stack([_near_wall_xz(rng, half_xz, 0.7) for _ in range(NUM_BOXES)])
    box_center = np.stack([box_xz[:, 0], floor - box_half[:, 1], box_xz[:, 1]], -1)
    box_yaw = rng.uniform(0, np.pi / 2, NUM_BOXES)
    cyl_r = rng.uniform(0.12, 0.35, NUM_CYLINDERS)
    cyl_xz = np.stack([_near_wall_xz(rng, half_xz, 0.4) for _ in range(NUM_CYLINDERS)])
    cyl_top = floor - rng.uniform(0.5, floor - ceiling - 0.1, NUM_CYLINDERS)
    cyl = np.concatenate([cyl_xz, cyl_r[:, None], cyl_top[:, None]], -1)
    sph_r = rng.uniform(0.15, 0.45, NUM_SPHERES)
    sph_xz = np.stack([_near_wall_xz(rng, half_xz, 0.5) for _ in range(NUM_SPHERES)])
    sph_y = np.where(rng.random(NUM_SPHERES) < 0.5, floor - sph_r, rng.uniform(ceiling + 0.6, floor - 0.6))
    sph = np.concatenate([sph_xz[:, :1], sph_y[:, None], sph_xz[:, 1:], sph_r[:, None]], -1)
    num_surfaces = NUM_WALLS + NUM_BOXES + NUM_CYLINDERS + NUM_SPHERES
    wall_name, wall = _colour(rng)
    floor_name, floor_col = _colour(rng, ["grey", "brown", "beige", "charcoal", "navy", "cream", "teal"])
    ceil_name, ceil_col = _colour(rng, ["white", "cream", "grey", "beige"])
    colour_a = np.stack([_colour(rng)[1] for _ in range(num_surfaces)])
    colour_a[[0, 1, 4, 5]], colour_a[2], colour_a[3] = wall, ceil_col, floor_col
    darker = colour_a * rng.uniform(0.45, 0.75, (num_surfaces, 1))
    colour_b = np.clip(darker + rng.uniform(-0.1, 0.1, (num_surfaces, 3)), 0.0, 1.0)
    scales = np.stack([rng.uniform(0.25, 0.6, num_surfaces), rng.uniform(0.08, 0.14, num_surfaces),
                       rng.uniform(0.04, 0.07, num_surfaces)], -1)
    light = np.array([rng.uniform(-1, 1), ceiling + 0.3, rng.uniform(-1, 1)])
    hash_seed = np.uint32(rng.integers(1, 2**31))

    # Moving spheres from their own stream: the static world is the same whatever dynamic_objects is.
    rng = np.random.default_rng([int(seed), 0xD1])
    dyn_r = rng.uniform(0.2, 0.4, dynamic_objects)
    dyn_xz = np.array([_near_wall_xz(rng, half_xz, 0.5) for _ in range(dynamic_objects)]).reshape(-1, 2)
    dyn_y = rng.uniform(ceiling + 0.6, floor - 0.5, dynamic_objects)
    dyn_start = np.concatenate([dyn_xz[:, :1], dyn_y[:, None], dyn_xz[:, 1:], dyn_r[:, None]], -1)
    dyn_angle = rng.uniform(0, 2 * np.pi, dynamic_objects)
    dyn_motion = np.stack([np.cos(dyn_angle), np.sin(dyn_angle), rng.uniform(0.4, 1.0, dynamic_objects),
                           rng.uniform(0, 2 * np.pi, dynamic_objects)], -1).reshape(-1, 4)
    dyn_a = np.array([_colour(rng)[1] for _ in range(dynamic_objects)]).reshape(-1, 3)
    colour_a = np.concatenate([colour_a, dyn_a])
    colour_b = np.concatenate([colour_b, np.clip(dyn_a * 0.5, 0.0, 1.0)])
    scales = np.concatenate([scales, np.tile([[0.2, 0.1, 0.05]], (dynamic_objects, 1))])
    params = {
        "room_min": room_min, "room_max": room_max, "box_center": box_center, "box_half": box_half,
        "box_yaw": box_yaw, "cyl": cyl, "sph": sph, "dyn_start": dyn_start, "dyn_motion": dyn_motion,
        "colour_a": colour_a, "colour_b": colour_b, "scales": scales, "light": light,
    }
    params = {k: np.asarray(v, np.float32) for k, v in params.items()}
    params["hash_seed"] = hash_seed
    area = 4 * half[0] * half[2]
    size = "small" if area < 40 else ("large" if area > 60 else "medium-sized")
    moving = f", and {dynamic_objects} moving ball{'s' * (dynamic_objects > 1)}" if dynamic_objects else ""
    description = (f"a {size} room with {wall_name} walls, a {floor_name} floor and a {ceil_name} ceiling, "
                   f"with {NUM_BOXES} boxes, {NUM_CYLINDERS} columns and {NUM_SPHERES} balls{moving}")
    return World(seed=int(seed), params=params, description=description)


# ----------------------------------------------------------------------------------------------------------
# Ray casting (JAX)
# ----------------------------------------------------------------------------------------------------------


def _hash01(cx, cy, cz, seed):
    """Per-cell pseudo-random values in [0, 1) of integer cell coordinates ``cx, cy, cz [...]`` (exact hash)."""
    cx, cy, cz = (c.astype(jnp.uint32) for c in (cx, cy, cz))
    h = seed ^ (cx * jnp.uint32(73856093)) ^ (cy * jnp.uint32(19349663))
    h = h ^ (cz * jnp.uint32(83492791))
    h = (h ^ (h >> 16)) * jnp.uint32(0x7FEB352D)
    h = (h ^ (h >> 15)) * jnp.uint32(0x846CA68B)
    h = h ^ (h >> 16)
    return (h >> 8).astype(jnp.float32) / float(1 << 24)


def _dynamic_centres(params, times):
    """Centres ``[N, ND, 3]`` of the moving spheres at ``times [N]``: oscillation along a horizontal direction."""
    start, motion = params["dyn_start"], params["dyn_motion"]
    offset = motion[:, 2] * jnp.sin(2 * jnp.pi * times[:, None] + motion[:, 3])  # [N, ND]
    direction = jnp.stack([motion[:, 0], jnp.zeros_like(motion[:, 0]), motion[:, 1]], -1)
    return start[None, :, :3] + offset[..., None] * direction[None]


def _select(index, values):
    """``values[index]`` per pixel for ``index [H,W]`` int (clipped to the list) and a short list of scalars.

    One select per entry: exact, and on XLA:CPU far faster than a gather (which keeps the loop around it from
    being vectorised)."""
    out = values[0]
    for i in range(1, len(values)):
        out = jnp.where(index >= i, values[i], out)
    return out


@functools.partial(jax.jit, static_argnames=("hw",))
def _render(params, intrinsics, cam2world, times, hw):
    """Ray-casts ``N`` views (``intrinsics [N,3,3]``, ``cam2world [N,4,4]``, ``times [N]``): ``rgb uint8
    [N,H,W,3]``, ``depth f32 [N,H,W]``, ``static bool [N,H,W]``. Only the shapes (image size, frame and
    moving-object counts) are static: another world (seed) reuses the compiled program.

    Three ``lax.map`` loops over frames, each with ONE output per frame (XLA:CPU writes every output of a loop
    body with its own fusion, recomputing everything it depends on): the surface id of the nearest hit; its
    distance, recomputed from that surface's own parameters (same formula, so the same value); its colour,
    packed into one ``uint32``. Each loop body computes its rays from the camera (a few multiply-adds per
    pixel): reading precomputed ray arrays instead made XLA:CPU's loops 4-6x slower; so did one gather
    (``table[surface]``) in the colour loop, hence :func:`_select`.
    """
    k_inv, rot = jnp.linalg.inv(intrinsics), cam2world[:, :3, :3]

    def rays(k_inv, rot):
        """Ray directions ``[3, H, W]`` of one camera (camera-space z = 1: a hit's ray parameter is its z-depth)."""
        u, v = geometry.pixel_grid(hw)
        cam = [k_inv[i, 0] * u + k_inv[i, 1] * v + k_inv[i, 2] for i in range(3)]
        return jnp.stack([rot[i, 0] * cam[0] + rot[i, 1] * cam[1] + rot[i, 2] * cam[2] for i in range(3)])

    def per_frame(stage):
        return lambda x: stage(params, x[0], rays(x[1], x[2]), *x[3:])

    frames = (cam2world[:, :3, 3], k_inv, rot, times)
    surface = jax.lax.map(per_frame(_nearest_surface), frames)
    depth = jax.lax.map(per_frame(_hit_distance), (*frames, surface))
    packed = jax.lax.map(per_frame(_shade), (*frames, surface, depth))
    rgb = jnp.stack([(packed >> (8 * i)).astype(jnp.uint8) for i in range(3)], -1)
    return rgb, depth, surface < _num_static_surfaces(params)


def _num_static_surfaces(params) -> int:
    return NUM_WALLS + params["box_center"].shape[0] + params["cyl"].shape[0] + params["sph"].shape[0]


def _min(a, b):
    """``minimum`` as compare-and-select: NaN-propagating ``jnp.minimum`` costs several instructions on x86."""
    return jnp.where(b < a, b, a)


def _max(a, b):
    return jnp.where(b > a, b, a)


def _safe(d):
    return jnp.where(jnp.abs(d) < 1e-9, 1e-9, d)


def _wall_hit(params, origin, dirs):
    """Exit through the nearest wall of the room: ``(t, axis, ray component along it)``, ``[H,W]`` each."""
    lo, hi = params["room_min"], params["room_max"]
    tw = [(jnp.where(d > 0, hi[a], lo[a]) - o) / _safe(d) for a, (o, d) in enumerate(zip(origin, dirs))]
    t = _min(_min(tw[0], tw[1]), tw[2])
    axis = jnp.where(tw[0] == t, 0, jnp.where(tw[1] == t, 1, 2))
    return t, axis, jnp.where(axis == 0, dirs[0], jnp.where(axis == 1, dirs[1], dirs[2]))


def _box_hit(centre, half, cos, sin, origin, dirs):
    """Entry distance (inf on a miss) into a box rotated by yaw (``cos``, ``sin``) about the vertical axis:
    slab test in the box frame. Parameters are scalars or per-pixel fields, as are ``origin`` and ``dirs``."""
    (ox, oy, oz), (dx, dy, dz), (cx, cy, cz), (hx, hy, hz) = origin, dirs, centre, half
    lx, lz = (ox - cx) * cos - (oz - cz) * sin, (ox - cx) * sin + (oz - cz) * cos
    ldx, ldz = dx * cos - dz * sin, dx * sin + dz * cos
    t_in, t_out = None, None
    for o, d, h in ((lx, ldx, hx), (oy - cy, dy, hy), (lz, ldz, hz)):
        inv = 1.0 / _safe(d)
        t1, t2 = (-h - o) * inv, (h - o) * inv
        near, far = _min(t1, t2), _max(t1, t2)
        t_in = near if t_in is None else _max(t_in, near)
        t_out = far if t_out is None else _min(t_out, far)
    return jnp.where((t_out >= t_in) & (t_in > 1e-4), t_in, jnp.inf)


def _cylinder_hit(cx, cz, r, top, floor, origin, dirs):
    """Distance (inf on a miss) to a vertical cylinder of radius ``r`` from the floor up to ``top``: side or cap."""
    (ox, oy, oz), (dx, dy, dz) = origin, dirs
    a_xz = _max(dx**2 + dz**2, 1e-12)
    px, pz = ox - cx, oz - cz
    bq = px * dx + pz * dz
    disc = bq**2 - a_xz * (px**2 + pz**2 - r**2)
    t_side = (-bq - jnp.sqrt(_max(disc, 0.0))) / a_xz
    y_side = oy + t_side * dy
    t_side = jnp.where((disc > 0) & (t_side > 1e-4) & (y_side >= top) & (y_side <= floor), t_side, jnp.inf)
    t_cap = (top - oy) / _safe(dy)
    rad2 = (px + t_cap * dx) ** 2 + (pz + t_cap * dz) ** 2
    return _min(t_side, jnp.where((t_cap > 1e-4) & (rad2 <= r**2), t_cap, jnp.inf))


def _sphere_hit(centre, r, origin, dirs):
    """Entry distance (inf on a miss) into a sphere."""
    (dx, dy, dz) = dirs
    px, py, pz = (o - c for o, c in zip(origin, centre))
    a_all = dx**2 + dy**2 + dz**2
    bq = px * dx + py * dy + pz * dz
    disc = bq**2 - a_all * (px**2 + py**2 + pz**2 - r**2)
    t = (-bq - jnp.sqrt(_max(disc, 0.0))) / a_all
    return jnp.where((disc > 0) & (t > 1e-4), t, jnp.inf)


def _sphere_centres(params, time):
    """Centres ``[K, 3]`` and radii ``[K]`` of the static, then the moving spheres at ``time``."""
    centres = jnp.concatenate([params["sph"][:, :3], _dynamic_centres(params, time[None])[0]])
    return centres, jnp.concatenate([params["sph"][:, 3], params["dyn_start"][:, 3]])


def _nearest_surface(params, origin, dirs, time):
    """Surface id ``[H,W]`` int32 of the nearest hit along the rays ``origin [3] + t * dirs`` (``dirs [3,H,W]``,
    camera-space z = 1, so ``t`` is the z-depth) at ``time`` in [0, 1]. Ids: walls 0-5 (x-, x+, ceiling,
    floor, z-, z+), then boxes, cylinders, static and moving spheres.

    Everything is written on scalar fields ``[H,W]`` (one per vector component; per-object loops unrolled) so
    that XLA:CPU fuses it into vectorised loops: small trailing axes, gathers and argmin reductions made it
    several times slower.
    """
    origin, dirs = [origin[i] for i in range(3)], [dirs[i] for i in range(3)]
    t_best, axis, d_axis = _wall_hit(params, origin, dirs)
    cos, sin = jnp.cos(params["box_yaw"]), jnp.sin(params["box_yaw"])
    hits = [_box_hit(params["box_center"][b], params["box_half"][b], cos[b], sin[b], origin, dirs)
            for b in range(params["box_center"].shape[0])]
    floor = params["room_max"][1]
    hits += [_cylinder_hit(*params["cyl"][c], floor, origin, dirs) for c in range(params["cyl"].shape[0])]
    centres, radii = _sphere_centres(params, time)
    hits += [_sphere_hit(centres[s], radii[s], origin, dirs) for s in range(radii.shape[0])]
    surface = 2 * axis + (d_axis > 0)
    for i, t in enumerate(hits):  # running minimum: the first surface wins ties
        closer = t < t_best
        t_best, surface = jnp.where(closer, t, t_best), jnp.where(closer, NUM_WALLS + i, surface)
    return surface


def _surface_params(params, time, surface):
    """Per-pixel parameters of each pixel's ``surface [H,W]`` (picked by :func:`_select`): the box's centre,
    half extents, yaw cos and sin; the cylinder's x, z, radius, top; the sphere's centre and radius."""
    nb, nc = params["box_center"].shape[0], params["cyl"].shape[0]
    yaw = params["box_yaw"]
    box = [_select(surface - NUM_WALLS, list(x))
           for x in (*params["box_center"].T, *params["box_half"].T, jnp.cos(yaw), jnp.sin(yaw))]
    cyl = [_select(surface - NUM_WALLS - nb, list(x)) for x in params["cyl"].T]
    centres, radii = _sphere_centres(params, time)
    sph = [_select(surface - NUM_WALLS - nb - nc, list(x)) for x in (*centres.T, radii)]
    return box, cyl, sph


def _hit_distance(params, origin, dirs, time, surface):
    """Distance ``t [H,W]`` to each pixel's ``surface``, from that surface's own parameters with the formula
    :func:`_nearest_surface` used: bit-identical to the distance of the nearest hit found there."""
    nb, nc = params["box_center"].shape[0], params["cyl"].shape[0]
    origin, dirs = [origin[i] for i in range(3)], [dirs[i] for i in range(3)]
    box, cyl, sph = _surface_params(params, time, surface)
    return jnp.where(surface < NUM_WALLS, _wall_hit(params, origin, dirs)[0], jnp.where(
        surface < NUM_WALLS + nb, _box_hit(box[:3], box[3:6], box[6], box[7], origin, dirs), jnp.where(
            surface < NUM_WALLS + nb + nc, _cylinder_hit(*cyl, params["room_max"][1], origin, dirs),
            _sphere_hit(sph[:3], sph[3], origin, dirs))))


def _shade(params, origin, dirs, time, surface, t):
    """Colour of each pixel's ``surface`` hit at distance ``t`` packed as ``r + g << 8 + b << 16`` in ``uint32
    [H,W]``: the normal and solid-texture point at the hit; Lambertian shading under a point light (independent
    of the viewpoint); a checker at the surface's coarse scale and two octaves of blocky cell noise as texture."""
    nb, nc = params["box_center"].shape[0], params["cyl"].shape[0]
    origin, dirs = [origin[i] for i in range(3)], [dirs[i] for i in range(3)]
    _, axis, d_axis = _wall_hit(params, origin, dirs)
    box, cyl, sph = _surface_params(params, time, surface)
    point = [o + t * d for o, d in zip(origin, dirs)]
    wall_normal = [jnp.where(axis == i, -jnp.sign(d_axis), 0.0) for i in range(3)]
    b_cos, b_sin = box[6], box[7]
    rel = [p - c for p, c in zip(point, box[:3])]
    bx, bz = rel[0] * b_cos - rel[2] * b_sin, rel[0] * b_sin + rel[2] * b_cos
    ratio = [jnp.abs(x) / jnp.maximum(h, 1e-6) for x, h in zip((bx, rel[1], bz), box[3:6])]
    face_axis = jnp.where((ratio[0] >= ratio[1]) & (ratio[0] >= ratio[2]), 0, jnp.where(ratio[1] >= ratio[2], 1, 2))
    face_sign = jnp.sign(jnp.where(face_axis == 0, bx, jnp.where(face_axis == 1, rel[1], bz)))
    fx, fy, fz = (jnp.where(face_axis == i, face_sign, 0.0) for i in range(3))  # box-frame normal
    box_normal = [fx * b_cos + fz * b_sin, fy, -fx * b_sin + fz * b_cos]
    on_cap = jnp.abs(point[1] - cyl[3]) < 1e-4 * (1.0 + t)
    cyl_normal = [jnp.where(on_cap, 0.0, (point[0] - cyl[0]) / cyl[2]), jnp.where(on_cap, -1.0, 0.0 / cyl[2]),
                  jnp.where(on_cap, 0.0, (point[2] - cyl[1]) / cyl[2])]
    sph_rel = [p - c for p, c in zip(point, sph[:3])]
    sph_normal = [x / sph[3] for x in sph_rel]
    kind = jnp.where(surface < NUM_WALLS, 0, jnp.where(surface < NUM_WALLS + nb, 1,
                                                       jnp.where(surface < NUM_WALLS + nb + nc, 2, 3)))
    normal = [jnp.where(kind == 0, w, jnp.where(kind == 1, b, jnp.where(kind == 2, c, s)))
              for w, b, c, s in zip(wall_normal, box_normal, cyl_normal, sph_normal)]
    static = surface < _num_static_surfaces(params)
    local = [jnp.where(static, p, r) for p, r in zip(point, sph_rel)]  # moving objects carry their texture along
    to_light = [params["light"][i] - p for i, p in enumerate(point)]
    dist = jnp.sqrt(to_light[0] ** 2 + to_light[1] ** 2 + to_light[2] ** 2)
    lambert = jnp.clip((normal[0] * to_light[0] + normal[1] * to_light[1] + normal[2] * to_light[2]) / dist, 0.0, 1.0)
    shade = 0.35 + 0.65 * lambert / (1.0 + 0.02 * dist**2)

    surf = [_select(surface, list(params[key][:, i])) for key in ("scales", "colour_a", "colour_b") for i in range(3)]
    seed = params["hash_seed"]

    def cells(scale):
        return [jnp.floor(x / scale).astype(jnp.int32) for x in local]

    checker = (sum(cells(surf[0])) & 1).astype(jnp.float32)
    coarse = _hash01(*cells(surf[1]), seed)
    fine = _hash01(*cells(surf[2]), seed + jnp.uint32(7))
    mix = jnp.clip(0.45 * checker + 0.35 * coarse + 0.25 * fine - 0.05, 0.0, 1.0)
    rgb = [jnp.clip((a * (1 - mix) + b * mix) * shade * 255.0 + 0.5, 0, 255).astype(jnp.uint32)
           for a, b in zip(surf[3:6], surf[6:9])]
    return rgb[0] | (rgb[1] << 8) | (rgb[2] << 16)


# ----------------------------------------------------------------------------------------------------------
# Camera paths
# ----------------------------------------------------------------------------------------------------------


def _ease(s):
    """Smooth 0 → 1 with zero velocity at both ends."""
    return 0.5 - 0.5 * np.cos(np.pi * s)


def camera_path(world: World, num_frames: int, trajectory: str = "revisit"):
    """Smooth camera path inside ``world``: ``(eyes [N,3], yaws [N], pitches [N], motion_description)``.

    Yaw 0 looks along +z, positive yaw turns right (towards +x); pitch > 0 looks down. Paths stay within
    ``CAMERA_REGION`` of the room's half extents, away from every object. ``revisit`` leaves the start view
    (turning by 90-150°) and moves through the room, then comes back within ``REVISIT_MAX_OFFSET_M`` and
    ``REVISIT_MAX_OFFSET_DEG`` of its first pose; ``loop`` closes exactly.
    """
    if trajectory not in TRAJECTORIES:
        raise ValueError(f"trajectory: expected one of {TRAJECTORIES}, got {trajectory!r}")
    if num_frames < 1:
        raise ValueError(f"num_frames: expected >= 1, got {num_frames}")
    rng = np.random.default_rng([world.seed, 0x7A, TRAJECTORIES.index(trajectory)])
    region = CAMERA_REGION * world.room_half_extent[[0, 2]]
    s = np.linspace(0.0, 1.0, num_frames)
    height = rng.uniform(-0.3, 0.2)
    pitch0 = rng.uniform(0.0, 0.2)  # slightly downwards: floor and objects in view
    pitches = pitch0 + 0.04 * np.sin(2 * np.pi * s + rng.uniform(0, 2 * np.pi))

    def point():
        return rng.uniform(-region, region)

    if trajectory == "forward":
        start = point()
        end = -start * rng.uniform(0.6, 1.0) + rng.uniform(-0.2, 0.2, 2) * region
        xz = start + _ease(s)[:, None] * (end - start)
        yaw0 = np.arctan2(*(end - start))
        yaws = yaw0 + 0.12 * np.sin(2 * np.pi * s) * rng.choice([-1, 1])
        motion = "moves forward through the room"
    elif trajectory == "orbit":
        radius = rng.uniform(0.5, 0.9) * region.min()
        sweep = rng.choice([-1, 1]) * rng.uniform(np.pi / 2, np.pi)
        phi = rng.uniform(0, 2 * np.pi) + sweep * _ease(s)
        xz = radius * np.stack([np.sin(phi), np.cos(phi)], -1)
        yaws = phi + np.pi  # facing the centre of the orbit
        motion = f"orbits the middle of the room by {np.degrees(abs(sweep)):.0f} degrees"
    elif trajectory == "pan":
        xz = point() + 0.05 * s[:, None] * rng.uniform(-1, 1, 2)
        amp = rng.choice([-1, 1]) * rng.uniform(np.radians(60), np.radians(110))
        yaws = rng.uniform(-np.pi, np.pi) + amp * np.sin(np.pi * s)
        motion = f"pans {'right' if amp > 0 else 'left'} by {np.degrees(abs(amp)):.0f} degrees and back"
    elif trajectory == "revisit":
        start, away = point(), point()
        xz = start + np.sin(np.pi * s)[:, None] ** 2 * (away - start)
        direction = rng.normal(size=2)
        xz = xz + s[:, None] * REVISIT_MAX_OFFSET_M * rng.uniform(0, 1) * direction / np.linalg.norm(direction)
        amp = rng.choice([-1, 1]) * rng.uniform(np.radians(90), np.radians(150))
        yaw_offset = np.radians(REVISIT_MAX_OFFSET_DEG) * rng.uniform(-1, 1)
        yaws = rng.uniform(-np.pi, np.pi) + amp * np.sin(np.pi * s) + s * yaw_offset
        pitches = pitch0 + 0.04 * np.sin(np.pi * s)
        motion = "looks away, moves through the room and comes back to where it started"
    else:  # loop
        centre = rng.uniform(-0.3, 0.3, 2) * region
        radii = rng.uniform(0.5, 0.7, 2) * region
        sign = rng.choice([-1, 1])
        phase = rng.uniform(0, 2 * np.pi) + sign * 2 * np.pi * s
        xz = centre + radii * np.stack([np.cos(phase), np.sin(phase)], -1)
        tangent = sign * radii * np.stack([-np.sin(phase), np.cos(phase)], -1)
        yaws = np.arctan2(tangent[:, 0], tangent[:, 1]) + 0.3 * sign  # along the loop, turned slightly inward
        pitches = np.full(num_frames, pitch0)
        motion = "walks a closed loop around the room"
    eyes = np.stack([xz[:, 0], np.full(num_frames, height), xz[:, 1]], -1)
    return eyes.astype(np.float32), yaws.astype(np.float32), pitches.astype(np.float32), motion


def poses_from_angles(eyes, yaws, pitches) -> np.ndarray:
    """OpenCV camera-to-world ``[N,4,4]`` from ``eyes [N,3]``, ``yaws [N]``, ``pitches [N]`` (via ``look_at``)."""
    forward = np.stack([np.sin(yaws) * np.cos(pitches), np.sin(pitches), np.cos(yaws) * np.cos(pitches)], -1)
    return np.asarray(jax.vmap(geometry.look_at)(eyes, eyes + forward), np.float32)


def default_intrinsics(world_seed: int, height: int, width: int) -> np.ndarray:
    """Pinhole ``[3,3]`` with a per-world horizontal field of view in [60°, 80°], principal point centred."""
    fov = np.random.default_rng([world_seed, 0xF0]).uniform(np.radians(60), np.radians(80))
    f = 0.5 * width / np.tan(fov / 2)
    return np.asarray(geometry.make_intrinsics(f, f, (width - 1) / 2, (height - 1) / 2), np.float32)


def render_clip(seed: int, num_frames: int, height: int, width: int, trajectory: str = "revisit",
                dynamic_objects: int = 0) -> dict:
    """Renders one clip of the world of ``seed`` along a ``trajectory`` (one of ``TRAJECTORIES``).

    Returns ``frames uint8 [N,H,W,3]``, ``depths f32 [N,H,W]`` (metric z-depth), ``intrinsics f32 [N,3,3]``,
    ``poses_c2w f32 [N,4,4]`` (OpenCV), ``masks bool [N,H,W]`` (True = static), ``caption str``.
    """
    if height < 1 or width < 1:
        raise ValueError(f"height, width: expected positive, got {height}x{width}")
    world = make_world(seed, dynamic_objects)
    eyes, yaws, pitches, motion = camera_path(world, num_frames, trajectory)
    poses = poses_from_angles(eyes, yaws, pitches)
    intrinsics = np.repeat(default_intrinsics(seed, height, width)[None], num_frames, 0)
    times = np.linspace(0.0, 1.0, num_frames, dtype=np.float32)
    frames, depths, masks = world.render(intrinsics, poses, (height, width), times)
    return {"frames": frames, "depths": depths, "intrinsics": intrinsics, "poses_c2w": poses, "masks": masks,
            "caption": f"Inside {world.description}; the camera {motion}."}


def render_views(seed: int, intrinsics, poses, height: int, width: int, dynamic_objects: int = 0, times=None):
    """Ground-truth ``(frames, depths, masks)`` of the world of ``seed`` at arbitrary cameras.

    ``intrinsics [N,3,3]`` at ``height x width``, ``poses [N,4,4]`` OpenCV c2w; see :meth:`World.render`.
    """
    return make_world(seed, dynamic_objects).render(intrinsics, poses, (height, width), times)
