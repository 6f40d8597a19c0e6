"""Torch-free, lazy safetensors reading and streaming writing: one tensor at a time, bf16 included.

``safetensors.numpy`` cannot represent bfloat16, and loading a 5 B-parameter file whole does not fit next
to a JAX copy in host RAM, so this reader memory-maps the file and hands out numpy views tensor by tensor,
and ``write_safetensors`` writes the header first and then each tensor as it is produced. Nothing here
unpickles anything.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

import ml_dtypes
import numpy as np

_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


class SafetensorsFile:
    """A memory-mapped safetensors file: ``keys()``, ``shape(key)`` and ``[key]`` -> numpy array."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        size = self.path.stat().st_size
        with open(self.path, "rb") as f:
            start = f.read(8)
            header_len = struct.unpack("<Q", start)[0] if len(start) == 8 else 0
            if header_len <= 0 or header_len > min(100_000_000, size - 8):
                raise ValueError(f"{self.path}: not a safetensors file (header length {header_len}, file {size} B)")
            try:
                header = json.loads(f.read(header_len))
                data_end = max((int(e["data_offsets"][1]) for k, e in header.items() if k != "__metadata__"),
                               default=0)
            except (ValueError, UnicodeDecodeError, KeyError, TypeError, IndexError) as err:
                raise ValueError(f"{self.path}: not a safetensors file (unreadable header: {err})") from None
        self.metadata = header.pop("__metadata__", {}) or {}
        self._entries = header
        self._data_start = 8 + header_len
        if self._data_start + data_end > size:
            raise ValueError(f"{self.path}: truncated: its header describes {self._data_start + data_end} bytes, "
                             f"the file has {size}")
        self._mmap = np.memmap(self.path, dtype=np.uint8, mode="r")

    def keys(self) -> list[str]:
        return list(self._entries)

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._entries[key]["shape"])

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def __getitem__(self, key: str) -> np.ndarray:
        entry = self._entries[key]
        if entry["dtype"] not in _DTYPES:
            raise ValueError(f"{self.path}: tensor {key!r} has unsupported dtype {entry['dtype']}")
        start, end = entry["data_offsets"]
        dtype = np.dtype(_DTYPES[entry["dtype"]])
        if end - start != int(np.prod(entry["shape"])) * dtype.itemsize:
            raise ValueError(f"{self.path}: tensor {key!r}: {end - start} bytes for shape {entry['shape']} "
                             f"{entry['dtype']}")
        raw = self._mmap[self._data_start + start : self._data_start + end]
        return raw.view(_DTYPES[entry["dtype"]]).reshape(entry["shape"])


_NAMES = {np.dtype(v): k for k, v in _DTYPES.items()}


def write_safetensors(path: str | Path, tensors, metadata: dict[str, str] | None = None) -> Path:
    """Writes a safetensors file from ``tensors``: a list of ``(name, shape, dtype, produce)`` where
    ``produce()`` returns the array (called once, in order, so only one tensor is in host memory at a time).
    ``metadata`` (str → str) goes to the header's ``__metadata__``.
    """
    header: dict = {"__metadata__": dict(metadata)} if metadata else {}
    offset = 0
    for name, shape, dtype, _ in tensors:
        size = int(np.prod(shape)) * np.dtype(dtype).itemsize
        header[name] = {"dtype": _NAMES[np.dtype(dtype)], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    path = Path(path)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for name, shape, dtype, produce in tensors:
            array = np.ascontiguousarray(produce(), dtype=dtype)
            if array.shape != tuple(shape):
                raise ValueError(f"{path}: tensor {name!r} produced shape {array.shape}, announced {tuple(shape)}")
            f.write(array.tobytes())
    return path


def open_checkpoint(path: str | Path) -> dict[str, SafetensorsFile]:
    """Maps every tensor name to the file holding it, for one file or a folder of ``*.safetensors`` shards.

    Raises ``ValueError`` on a name defined in two shards or on a folder without safetensors files; a
    ``.pth``/``.bin``/``.pt`` pickle is refused with a message saying how to convert it safely.
    """
    path = Path(path)
    if path.suffix in (".pth", ".pt", ".bin", ".ckpt"):
        raise ValueError(
            f"{path}: pickled checkpoints are not loaded (unsafe); convert it to safetensors first, "
            "e.g. with safetensors.torch.save_file(torch.load(path, weights_only=True), out)"
        )
    if not path.exists():
        raise ValueError(f"{path}: checkpoint does not exist")
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"{path}: no *.safetensors files found")
    index: dict[str, SafetensorsFile] = {}
    for file in files:
        st = SafetensorsFile(file)
        for key in st.keys():
            if key in index:
                raise ValueError(f"tensor {key!r} is defined in both {index[key].path} and {file}")
            index[key] = st
    return index


def iter_tensors(path: str | Path) -> Iterator[tuple[str, np.ndarray]]:
    """Yields ``(name, array)`` for every tensor of a file or shard folder, one at a time."""
    for key, st in open_checkpoint(path).items():
        yield key, st[key]
