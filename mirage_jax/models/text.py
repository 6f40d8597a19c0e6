"""Prompt → text context: ``make_text_encoder(config) -> TextEncoder``.

``encode(prompts: list[str]) -> np.ndarray [B, config.text.max_length, config.text.dim] float32`` — host numpy
(the embeddings feed data pipelines and caches; ``jnp.asarray`` them for the model). Rows past each prompt's
own token count are zero, per prompt (the official batch-truncation bug is not reproduced).

Kinds (``config.text.kind``):

* ``"none"`` — all zeros (CPU configs without captions).
* ``"umt5"`` — the umT5 encoder (:mod:`mirage_jax.models.umt5`) with weights from ``config.text.checkpoint``
  (Orbax, from ``mirage-jax convert umt5``; ``"random"``: seeded random weights, for tests and tiny configs)
  and a tokenizer from the LOCAL file ``config.text.tokenizer_path`` (``tokenizer.json`` via ``tokenizers`` or
  a SentencePiece ``.model``).

Every embedding is cached by prompt: in memory, and also on disk when ``config.text.cache_dir`` is set (one
``<sha256(prompt)>.npz`` per prompt), so training never re-encodes a caption.
"""

from __future__ import annotations

import hashlib
import html
import re
from pathlib import Path

import numpy as np

RANDOM_WEIGHTS = "random"  # config.text.checkpoint value: a randomly initialised umT5 (tests, tiny configs)


def clean_prompt(text: str) -> str:
    """The official cleaning without ftfy: HTML-unescape, collapse whitespace, strip."""
    return re.sub(r"\s+", " ", html.unescape(html.unescape(text))).strip()


def prompt_key(prompt: str) -> str:
    """Cache key of a prompt: sha256 hex of its cleaned UTF-8 text."""
    return hashlib.sha256(clean_prompt(prompt).encode("utf-8")).hexdigest()


def _check_prompts(prompts) -> list[str]:
    if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
        raise ValueError("prompts: expected a list of str (wrap a single prompt in a list)")
    return list(prompts)


class TextEncoder:
    """Interface: ``encode(prompts) -> [B, max_length, dim] float32 numpy``; ``max_length``, ``dim``."""

    max_length: int
    dim: int

    def encode(self, prompts: list[str]) -> np.ndarray:
        raise NotImplementedError


class ZeroTextEncoder(TextEncoder):
    """Kind "none": zero context of the configured shape."""

    def __init__(self, max_length: int, dim: int):
        self.max_length, self.dim = max_length, dim

    def encode(self, prompts: list[str]) -> np.ndarray:
        prompts = _check_prompts(prompts)
        return np.zeros((len(prompts), self.max_length, self.dim), np.float32)


class Tokenizer:
    """A local tokenizer file: ``tokenizer.json`` (``tokenizers``) or a SentencePiece ``.model``.

    ``__call__(texts) -> (ids [B, max_length] int32, lengths [B] int32)``: cleaned, end-of-sequence appended,
    truncated to ``max_length`` (keeping the final ``</s>``), padded with ``pad_id``.
    """

    def __init__(self, path: str | Path, max_length: int):
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"config.text.tokenizer_path: {str(path)!r} is not a file (tokenizer.json or *.model)")
        self.max_length = max_length
        if path.suffix == ".json":
            import tokenizers  # noqa: PLC0415

            self._tok = tokenizers.Tokenizer.from_file(str(path))
            self._tok.no_padding()
            self._tok.no_truncation()
            self._sp = None
            eos = self._tok.token_to_id("</s>")
            pad = self._tok.token_to_id("<pad>")
        else:
            import sentencepiece  # noqa: PLC0415

            self._sp = sentencepiece.SentencePieceProcessor(model_file=str(path))
            self._tok = None
            eos, pad = self._sp.eos_id(), self._sp.pad_id()
        if eos is None or eos < 0:
            raise ValueError(f"{path}: tokenizer has no '</s>' end-of-sequence token")
        self.eos_id = int(eos)
        self.pad_id = int(pad) if pad is not None and pad >= 0 else 0

    def _ids(self, text: str) -> list[int]:
        if self._sp is not None:
            ids = list(self._sp.encode(text))
        else:
            ids = list(self._tok.encode(text, add_special_tokens=False).ids)
        return ids[: self.max_length - 1] + [self.eos_id]

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        ids = np.full((len(texts), self.max_length), self.pad_id, np.int32)
        lengths = np.zeros(len(texts), np.int32)
        for i, text in enumerate(texts):
            row = self._ids(clean_prompt(text))
            ids[i, : len(row)] = row
            lengths[i] = len(row)
        return ids, lengths


class CachedTextEncoder(TextEncoder):
    """Wraps ``embed(prompts) -> [B, L, D]`` with a prompt-keyed cache (memory + optional ``cache_dir``)."""

    def __init__(self, embed, max_length: int, dim: int, cache_dir: str | Path = ""):
        self._embed = embed
        self.max_length, self.dim = max_length, dim
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._memory: dict[str, np.ndarray] = {}
        self.num_encoded = 0  # prompts actually run through the encoder (cache misses)

    def _disk_path(self, key: str) -> Path:
        return self.cache_dir / f"{key}.npz"

    def _lookup(self, key: str) -> np.ndarray | None:
        if key in self._memory:
            return self._memory[key]
        if self.cache_dir is not None and self._disk_path(key).is_file():
            with np.load(self._disk_path(key)) as data:
                emb = data["embedding"]
            if emb.shape == (self.max_length, self.dim):
                self._memory[key] = emb
                return emb
        return None

    def _store(self, key: str, emb: np.ndarray) -> None:
        self._memory[key] = emb
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = self._disk_path(key).with_suffix(".tmp.npz")
            np.savez(tmp, embedding=emb)
            tmp.replace(self._disk_path(key))

    def encode(self, prompts: list[str]) -> np.ndarray:
        prompts = _check_prompts(prompts)
        keys = [prompt_key(p) for p in prompts]
        missing = list(dict.fromkeys(k for k in keys if self._lookup(k) is None))
        if missing:
            by_key = dict(zip(keys, prompts))
            embs = np.asarray(self._embed([by_key[k] for k in missing]), np.float32)
            self.num_encoded += len(missing)
            for key, emb in zip(missing, embs):
                self._store(key, emb)
        out = np.zeros((len(prompts), self.max_length, self.dim), np.float32)
        for i, key in enumerate(keys):
            out[i] = self._memory[key]
        return out


def make_umt5_text_encoder(model, tokenizer: Tokenizer, cache_dir: str | Path = "") -> CachedTextEncoder:
    """A cached encoder from a built :class:`mirage_jax.models.umt5.UMT5Encoder` and a :class:`Tokenizer`."""
    from mirage_jax.models import umt5  # noqa: PLC0415

    def embed(prompts: list[str]) -> np.ndarray:
        ids, lengths = tokenizer(prompts)
        return np.asarray(umt5.encode_padded(model, ids, lengths))

    return CachedTextEncoder(embed, tokenizer.max_length, model.dim, cache_dir)


def make_text_encoder(config) -> TextEncoder:
    """Builds the text encoder named by ``config.text.kind`` (full config or its ``text`` section)."""
    text = config.text if "text" in config else config
    if text.kind == "none":
        return ZeroTextEncoder(text.max_length, text.dim)
    if text.kind == "umt5":
        if not text.checkpoint:
            raise ValueError("config.text.checkpoint: empty; convert one with `mirage-jax convert umt5` "
                             f"(or {RANDOM_WEIGHTS!r} for a randomly initialised encoder in tests and tiny configs)")
        from mirage_jax.models import umt5  # noqa: PLC0415

        if text.checkpoint == RANDOM_WEIGHTS:
            model = umt5.UMT5Encoder(umt5.UMT5Config.from_config(text), seed=0)
        else:
            model = umt5.load(text.checkpoint, text)
        if model.dim != text.dim:
            raise ValueError(f"config.text.dim={text.dim} but the umT5 checkpoint has dim {model.dim}")
        return make_umt5_text_encoder(model, Tokenizer(text.tokenizer_path, text.max_length), text.cache_dir)
    raise ValueError(f"config.text.kind: expected 'none' or 'umt5', got {text.kind!r}")
