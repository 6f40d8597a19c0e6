"""Independent numpy implementation of the memory's semantics (docs/design.md §3), for tests and the benchmark.

Deliberately different machinery from ``mirage_jax.memory``: the state is a compact list of points (no
slots), geometry is computed in float64, the z-buffer is a lexsort, the voxel hash tables (same spec: two
murmur-mixed tables, exact verification) use uint64 numpy arithmetic and ``np.maximum.at``, and eviction is a
sort by write id. Same rules: integer cell centres, round half to even, ``z > near``, nearest wins, exact
ties to the lowest write id; the capacity policy of ``memory.write``.
"""

from __future__ import annotations

import numpy as np


def ref_init(capacity: int, channels: int, voxel_size: float = 0.05) -> dict:
    """An empty reference memory (compact arrays of the stored points only)."""
    return dict(
        capacity=capacity,
        voxel_size=voxel_size,
        points=np.zeros((0, 3), np.float32),
        features=np.zeros((0, channels), np.float32),
        write_id=np.zeros((0,), np.int64),
        frame_id=np.zeros((0,), np.int64),
        next_write_id=0,
        next_frame_id=0,
    )


def ref_downsample(depths, keep, hw, mode="bilinear"):
    """PyTorch-style bilinear (align_corners=False) centre sample; validity as in ``memory.downsample``."""
    depths = np.asarray(depths, np.float32)
    t, big_h, big_w = depths.shape
    h, w = hw

    def taps(n_out, n_in):
        src = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
        i0 = np.floor(src).astype(int)
        lam = (src - i0).astype(np.float32)
        return i0, np.where(lam > 0, np.minimum(i0 + 1, n_in - 1), i0), lam  # a zero-weight tap is not read

    y0, y1, ly = taps(h, big_h)
    x0, x1, lx = taps(w, big_w)
    one = np.float32(1.0)
    with np.errstate(invalid="ignore"):
        wy0, wy1, wx0, wx1 = (one - ly)[:, None], ly[:, None], (one - lx)[None], lx[None]
        depth = depths[:, y0][:, :, x0] * (wy0 * wx0) + depths[:, y0][:, :, x1] * (wy0 * wx1)
        depth = depth + depths[:, y1][:, :, x0] * (wy1 * wx0)
        depth = depth + depths[:, y1][:, :, x1] * (wy1 * wx1)
        sy, sx = big_h // h, big_w // w
        blocks = depths.reshape(t, h, sy, w, sx)
        keep_blocks = np.ones(blocks.shape, bool) if keep is None else np.asarray(keep).reshape(blocks.shape)
        if mode == "bilinear":
            ok = np.isfinite(depth) & (depth > 0) & keep_blocks.all(axis=(2, 4))
        else:
            ok = (np.isfinite(blocks) & (blocks > 0) & keep_blocks).all(axis=(2, 4))
    return np.where(ok, depth, 0).astype(np.float32), ok


def ref_lift(latents, depths, intrinsics, cam2world, keep=None, mode="bilinear"):
    """World points ``[M, 3]`` f32, features ``[M, C]``, ok ``[M]``, frame ``[M]`` (float64 geometry)."""
    t, h, w, c = latents.shape
    big_h, big_w = depths.shape[1:]
    depth, ok = ref_downsample(depths, keep, (h, w), mode)
    k = np.asarray(intrinsics, np.float64)
    fx, fy = k[:, 0, 0] * w / big_w, k[:, 1, 1] * h / big_h
    cx, cy = k[:, 0, 2] * w / big_w, k[:, 1, 2] * h / big_h
    v, u = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    d = depth.astype(np.float64)
    cam = np.stack(
        [(u - cx[:, None, None]) * d / fx[:, None, None], (v - cy[:, None, None]) * d / fy[:, None, None], d], -1
    )
    pose = np.asarray(cam2world, np.float64)
    world = np.einsum("tij,thwj->thwi", pose[:, :3, :3], cam) + pose[:, None, None, :3, 3]
    frame = np.repeat(np.arange(t), h * w)
    return world.reshape(-1, 3).astype(np.float32), latents.reshape(-1, c), ok.reshape(-1), frame


def ref_voxel_cells(points, voxel_size):
    """Integer voxel coordinates ``[N, 3]`` int64 of ``points [N, 3]``: ``floor(p · f32(1/voxel))``."""
    return np.floor(np.asarray(points, np.float32) * np.float32(1.0 / voxel_size)).astype(np.int64)


def ref_hash_tables(cells, ok, frame):
    """The write's two voxel hash tables (same spec as ``memory.capacity.voxel_tables``), in numpy.

    ``cells [M, 3]`` int64 voxel coordinates. Returns ``(slots_of(cells) -> [2, K], tables [2, S])`` where a
    slot holds ``frame·M + index`` of its newest valid cell, -1 if none.
    """
    m = len(cells)
    size = 1 << max(4, (8 * m - 1).bit_length())  # 8 slots per cell, as memory.capacity
    mask32 = np.uint64(0xFFFFFFFF)

    def slots_of(c):
        k = np.asarray(c).astype(np.int64).astype(np.uint64) & mask32
        out = []
        for seed in (0x9E3779B9, 0x7F4A7C15):
            h = (np.uint64(seed) + k[:, 0] * np.uint64(0x8DA6B343) + k[:, 1] * np.uint64(0xD8163841)
                 + k[:, 2] * np.uint64(0xCB1AB31F)) & mask32
            h ^= h >> np.uint64(16)
            h = (h * np.uint64(0x85EBCA6B)) & mask32
            h ^= h >> np.uint64(13)
            h = (h * np.uint64(0xC2B2AE35)) & mask32
            h ^= h >> np.uint64(16)
            out.append((h & np.uint64(size - 1)).astype(np.int64))
        return np.stack(out)

    tables = np.full((2, size), -1, np.int64)
    packed = np.asarray(frame) * m + np.arange(m)
    slots = slots_of(cells)
    for i in range(2):
        np.maximum.at(tables[i], slots[i][ok], packed[ok])
    return slots_of, tables


def ref_write(state, latents, depths, intrinsics, cam2world, keep=None, mode="bilinear") -> dict:
    """Reference ``memory.write``: per voxel the latest frame's cells replace older points; evict oldest."""
    latents = np.asarray(latents, np.float32)
    points, feats, ok, frame = ref_lift(latents, depths, intrinsics, cam2world, keep, mode)
    cells = ref_voxel_cells(points, state["voxel_size"])
    m = len(cells)
    slots_of, tables = ref_hash_tables(cells, ok, frame)
    slots = slots_of(cells)
    newest = np.full(m, -1)  # newest frame of the cell's voxel, where a table slot verifies it
    for i in range(2):
        held = tables[i][slots[i]]
        same = (held >= 0) & (cells[np.maximum(held, 0) % m] == cells).all(1)
        newest = np.where(same, held // m, newest)
    new_ok = ok & ~((newest >= 0) & (newest > frame))  # one frame per voxel: the latest of this write
    old_cells = ref_voxel_cells(state["points"], state["voxel_size"])
    old_slots = slots_of(old_cells)
    replaced = np.zeros(len(old_cells), bool)
    for i in range(2):
        held = tables[i][old_slots[i]]
        replaced |= (held >= 0) & (cells[np.maximum(held, 0) % m] == old_cells).all(1)
    ok = new_ok
    points, feats, frame = points[ok], feats[ok], frame[ok]
    wid = state["next_write_id"] + np.arange(len(points))
    cap = state["capacity"]
    points, feats, frame, wid_new = points[-cap:], feats[-cap:], frame[-cap:], wid[-cap:]
    survivors = np.flatnonzero(~replaced)
    excess = len(survivors) + len(points) - cap
    if excess > 0:
        survivors = survivors[np.argsort(state["write_id"][survivors], kind="stable")[excess:]]
    return dict(
        state,
        points=np.concatenate([state["points"][survivors], points]),
        features=np.concatenate([state["features"][survivors], feats]),
        write_id=np.concatenate([state["write_id"][survivors], wid_new]),
        frame_id=np.concatenate([state["frame_id"][survivors], state["next_frame_id"] + frame]),
        next_write_id=state["next_write_id"] + len(wid),
        next_frame_id=state["next_frame_id"] + latents.shape[0],
    )


def ref_read(points, features, write_id, intrinsics, cam2world, hw, near=1e-3):
    """Reference ``memory.read`` over explicit point arrays; returns ``(feats [T,h,w,C], hit, winner [T,h,w])``.

    ``winner`` is the index (into ``points``) of each cell's winning point, -1 where empty.
    """
    h, w = hw
    pts = np.asarray(points, np.float64)
    k = np.asarray(intrinsics, np.float64)
    pose = np.asarray(cam2world, np.float64)
    t = k.shape[0]
    rot_t = np.swapaxes(pose[:, :3, :3], 1, 2)
    cam = np.einsum("tij,tnj->tni", rot_t, pts[None] - pose[:, None, :3, 3])
    z = cam[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = np.round(cam[..., 0] * k[:, None, 0, 0] / z + k[:, None, 0, 2])
        v = np.round(cam[..., 1] * k[:, None, 1, 1] / z + k[:, None, 1, 2])
    drawn = (z > near) & (u >= 0) & (u <= w - 1) & (v >= 0) & (v <= h - 1)
    view, idx = np.nonzero(drawn)
    cell = view * h * w + (v[view, idx] * w + u[view, idx]).astype(np.int64)
    order = np.lexsort((np.asarray(write_id)[idx], z[view, idx], cell))
    first = np.unique(cell[order], return_index=True)[1]
    winner = np.full(t * h * w, -1, np.int64)
    winner[cell[order][first]] = idx[order][first]
    feats = np.where((winner >= 0)[:, None], np.asarray(features)[np.maximum(winner, 0)], 0)
    shape = (t, h, w)
    return feats.reshape(shape + (-1,)), (winner >= 0).reshape(shape), winner.reshape(shape)


def ref_visible(points, intrinsics, cam2world, hw, occlusion_aware=False, key=None, near=1e-3):
    """``[T, P]`` bool: frustum test, or z-buffer winners (via ``ref_read``) when ``occlusion_aware``."""
    points = np.asarray(points)
    key = np.arange(len(points)) if key is None else key
    _, _, winner = ref_read(points, np.zeros((len(points), 1)), key, intrinsics, cam2world, hw, near)
    seen = np.zeros((len(intrinsics), len(points)), bool)
    for t in range(len(intrinsics)):
        if occlusion_aware:
            seen[t, winner[t][winner[t] >= 0]] = True
        else:
            seen[t] = [_in_frustum(p, intrinsics[t], cam2world[t], hw, near) for p in points]
    return seen


def _in_frustum(point, k, pose, hw, near):
    cam = np.asarray(pose, np.float64)[:3, :3].T @ (np.asarray(point, np.float64) - np.asarray(pose, np.float64)[:3, 3])
    if cam[2] <= near:
        return False
    u = np.round(cam[0] * k[0, 0] / cam[2] + k[0, 2])
    v = np.round(cam[1] * k[1, 1] / cam[2] + k[1, 2])
    return bool(0 <= u <= hw[1] - 1 and 0 <= v <= hw[0] - 1)


def ref_voxel_iou(points, history_seen, target_seen, voxel_size=0.1):
    """IoU per history frame with Python sets of voxel tuples (the official's approach, as a reference)."""
    cells = np.floor(np.asarray(points, np.float32) * np.float32(1.0 / voxel_size)).astype(np.int64)
    target = {tuple(c) for c in cells[np.asarray(target_seen).reshape(-1, len(cells)).any(0)]}
    out = []
    for seen in history_seen:
        hist = {tuple(c) for c in cells[seen]}
        union = hist | target
        out.append(len(hist & target) / len(union) if union else 0.0)
    return np.asarray(out)
