"""Frozen-backbone text features with an on-disk cache, shared by every router that embeds.

The cache lives under ``$LOOKAHEAD_CACHE`` (default ``~/.cache/lookahead-router/features``), one
folder per (backbone, pooling, max length, dtype). Each folder holds ``.npz`` shards of (text hash,
vector) -- or, with ``layer=k``, (text hash, one fp16 hidden state per token after the backbone's
first k layers), which the neural routers of the ``cpu`` preset feed to their trainable top layers
(``routers/trunk.py``). New entries are flushed every few batches, so an interrupted run keeps
what it embedded and repeated runs (other folds, other routers, a second benchmark) do not
re-embed. ``shared_extractor`` hands every router of a process the same extractor, so a
benchmark's folds and routers also share the states it has loaded.

The backbone runs on one of three engines: "torch" (the reference, in the precision that
``precision.py`` resolves: fp32, or bf16 where it is native), or "onnx" / "onnx-int8",
the same computation exported to ONNX and run by ONNX Runtime on CPU (``routers/onnx_encoder.py``).
A router's extractor runs the engine ``Router.load(engine=...)`` was given (`lookahead serve
--engine`), torch by default; ``keep_cache=False`` (a server) embeds each text and forgets it.
The onnx engines' features go to their own cache folders: they are close to torch's, not equal.
"""

from __future__ import annotations

import hashlib
import os
import uuid
import zipfile
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from lookahead_router.routers.backbones import (DEFAULT_BACKBONE, Backbone, effective_max_length, load_backbone,
                                                load_tokenizer, max_positions, pooled_hidden, truncation_length)
from lookahead_router.routers.onnx_encoder import (EXPORT_VERSION, ONNX_INT8, TORCH, OnnxEncoder, check_engine,
                                                   check_exportable, resolve_engine)
from lookahead_router.cache import cache_root
from lookahead_router.precision import DTYPES, FP32, resolve_precision
from lookahead_router.routers.trunk import lower_states

FLUSH_EVERY = 20  # batches
KEY_BYTES = 20    # a SHA-1 digest


def _text_key(text: str) -> bytes:
    return hashlib.sha1(text.encode("utf-8")).digest()


class FeatureExtractor:
    """``extractor(texts) -> [n, d]`` float32 pooled hidden states of a frozen backbone
    (L2-normalised when ``normalize``), or with ``layer=k`` a list of [tokens, d] fp16 states after
    its first k layers; computed once per text and cached on disk (``keep_cache=False``: computed
    per call and forgotten, no progress bar). ``engine`` (default torch) runs the backbone:
    "torch", "onnx" or "onnx-int8";
    ``precision`` ("auto", "fp32" or "bf16"; default: the process's, see ``precision.py``)
    is the torch engine's dtype. ``self.precision`` says what the features were computed in."""

    def __init__(self, backbone: str | None, kind: str, max_length: int = 256, batch_size: int = 32,
                 normalize: bool = False, cache: bool = True, progress: bool = True, layer: int | None = None,
                 engine: str | None = None, precision: str | None = None, keep_cache: bool = True):
        backbone = backbone or DEFAULT_BACKBONE[kind]
        self.spec, self.kind = backbone, kind
        self.max_length, self.batch_size = max_length, batch_size
        self.normalize, self.progress, self.layer = normalize, progress, layer
        self.tokens = layer is not None
        self.keep_cache = keep_cache
        self.engine = resolve_engine(check_engine(engine or TORCH), backbone, kind)
        if self.engine != TORCH:
            check_exportable(backbone, kind)   # now, not at the first prompt
        self._backbone: Backbone | None = None
        self._onnx: OnnxEncoder | None = None
        # ONNX Runtime runs fp32 (int8 weights for onnx-int8) on CPUs, whatever the setting says
        self.precision = resolve_precision(precision) if self.engine == TORCH else (
            "int8" if self.engine == ONNX_INT8 else FP32)
        self.dtype = DTYPES.get(self.precision, torch.float32)
        pooling = f"layer{layer}" if self.tokens else kind
        name = f"{backbone}|{kind}|{max_length}|{self.dtype}" + (f"|layer{layer}" if self.tokens else "")
        label = str(self.dtype)[6:]   # "float32" or "bfloat16"
        if self.engine != TORCH:   # torch's folders keep their names (and the features they hold)
            name, label = f"{name}|{self.engine}|v{EXPORT_VERSION}", self.engine
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in backbone)[-60:]
        self.cache_dir = (cache_root() / f"{safe}-{pooling}-{max_length}-{label}-"
                          f"{hashlib.sha1(name.encode()).hexdigest()[:8]}") if cache else None
        self._memory: dict[bytes, np.ndarray] = {}
        self._loaded = False

    @property
    def backbone(self) -> Backbone:
        if self._backbone is None:
            self._backbone = load_backbone(self.spec, self.kind)
            self._backbone.model.to(self.dtype).eval()
        return self._backbone

    @property
    def onnx(self) -> OnnxEncoder:
        """The onnx engines' session (exported, or quantised, on first use; then read from disk)."""
        if self._onnx is None:
            self._onnx = OnnxEncoder(self.spec, self.kind, self.layer, self.max_length,
                                     quantize=self.engine == ONNX_INT8)
        return self._onnx

    def prepare(self) -> "FeatureExtractor":
        """Load the engine now (the backbone, or the ONNX export and its session) rather than at
        the first text that is not cached: a server does this before it takes requests."""
        if self.engine == TORCH:
            self.backbone
        else:
            self.onnx
        return self

    def _tokenizer_and_length(self):
        if self.engine == TORCH:
            bb = self.backbone
            return bb.tokenizer, effective_max_length(bb, self.max_length)
        length = truncation_length(self.max_length, max_positions(self.spec, self.kind))
        tokenizer = load_tokenizer(self.spec, self.kind)
        if tokenizer.pad_token is None:   # as load_backbone pads: with the end-of-text token
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer, length

    def _load_cache(self) -> None:
        if self._loaded or self.cache_dir is None:
            return
        self._loaded = True
        for shard in sorted(self.cache_dir.glob("*.npz")) if self.cache_dir.is_dir() else []:
            try:
                with np.load(shard) as z:
                    # numpy's "S" strings drop trailing NUL bytes: pad the digests back
                    keys = [bytes(k).ljust(KEY_BYTES, b"\0") for k in z["keys"]]
                    vectors = z["vectors"]
                    if self.tokens:  # concatenated token states, cut back by each text's length
                        vectors = np.split(vectors, np.cumsum(z["lengths"])[:-1])
                    self._memory.update(zip(keys, vectors))
            except (OSError, ValueError, KeyError, zipfile.BadZipFile):
                continue  # a shard cut short by a crash: its texts are simply embedded again

    def _flush(self, keys: list[bytes], vectors: list[np.ndarray]) -> None:
        if self.cache_dir is None or not keys:
            return
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_dir / f".{uuid.uuid4().hex}.tmp.npz"
        extra = {"lengths": np.array([len(v) for v in vectors])} if self.tokens else {}
        np.savez(tmp, keys=np.array(keys, dtype=f"S{KEY_BYTES}"),
                 vectors=np.concatenate(vectors) if self.tokens else np.stack(vectors), **extra)
        os.replace(tmp, self.cache_dir / f"{uuid.uuid4().hex}.npz")  # atomic: no half shards

    def __call__(self, texts: Sequence[str], desc: str = "embed", normalize: bool | None = None
                 ) -> np.ndarray | list[np.ndarray]:
        """[n, d] float32 pooled vectors (L2-normalised when ``normalize``, default: the
        extractor's own setting), or with ``layer`` a list of [tokens_i, d] fp16 arrays."""
        keys = [_text_key(t) for t in texts]
        if not self.keep_cache:
            memory: dict[bytes, np.ndarray] = {}
        else:
            self._load_cache()
            memory = self._memory
        todo = {k: t for k, t in zip(keys, texts) if k not in memory}
        if todo:
            self._embed(list(todo.values()), list(todo), desc, memory)
        if self.tokens:
            return [memory[k] for k in keys]
        out = np.stack([memory[k] for k in keys]) if keys else np.zeros((0, 0), np.float32)
        if (self.normalize if normalize is None else normalize) and len(out):
            out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out.astype(np.float32)

    @torch.no_grad()
    def _embed(self, texts: list[str], keys: list[bytes], desc: str, memory: dict) -> None:
        """Embed ``texts`` into ``memory``; written to the disk cache when that is the cache's table."""
        persist = memory is self._memory
        tokenizer, length = self._tokenizer_and_length()
        order = np.argsort([-len(t) for t in texts], kind="stable")  # similar lengths pad less
        pending_k, pending_v = [], []
        bar = tqdm(total=len(texts), desc=f"{desc} ({self.spec}, {len(texts)} new)", unit="text",
                   disable=not (self.progress and persist))
        for n, start in enumerate(range(0, len(texts), self.batch_size)):
            idx = order[start:start + self.batch_size]
            enc = tokenizer([texts[i] for i in idx], padding=True, padding_side="right", truncation=True,
                            max_length=length, return_tensors="np")
            vec = self._forward(enc["input_ids"], enc["attention_mask"])
            if self.tokens:   # each text's real tokens only
                vec = [h[m.astype(bool)] for h, m in zip(vec, enc["attention_mask"])]
            for i, v in zip(idx, vec):
                memory[keys[i]] = v
                if persist:
                    pending_k.append(keys[i])
                    pending_v.append(v)
            bar.update(len(idx))
            if (n + 1) % FLUSH_EVERY == 0:
                self._flush(pending_k, pending_v)
                pending_k, pending_v = [], []
        self._flush(pending_k, pending_v)
        bar.close()

    def _forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """[B, d] float32 pooled vectors, or [B, S, d] float16 states (padding included)."""
        if self.engine != TORCH:
            return self.onnx(input_ids, attention_mask)
        bb = self.backbone
        ids, mask = torch.from_numpy(input_ids), torch.from_numpy(attention_mask)
        if self.tokens:
            return lower_states(bb, ids, mask, self.layer).to(torch.float16).numpy()
        return pooled_hidden(bb, ids, mask).float().numpy()


_SHARED: dict[tuple, FeatureExtractor] = {}


def active_extractors() -> list[FeatureExtractor]:
    """The shared extractors this process has made (in a server: its router's), so that it can
    say which engine and precision its features come from."""
    return list(_SHARED.values())


def shared_extractor(backbone: str | None, kind: str, max_length: int, layer: int | None = None,
                     progress: bool = True, batch_size: int = 32, engine: str | None = None,
                     precision: str | None = None, keep_cache: bool = True) -> FeatureExtractor:
    """One extractor per (backbone, kind, length, layer, cache folder, engine, precision, keeping)
    in a process: a benchmark's folds and routers share the states it has loaded (about 1 GB of
    prompt states for the release). ``progress`` and ``batch_size`` apply when it is first made;
    ``engine`` defaults to torch and ``precision`` to the process's (``precision.py``)."""
    engine = check_engine(engine or TORCH)
    key = (backbone or DEFAULT_BACKBONE[kind], kind, max_length, layer, str(cache_root()), engine,
           resolve_precision(precision), keep_cache)
    if key not in _SHARED:
        _SHARED[key] = FeatureExtractor(key[0], kind, max_length, batch_size, layer=layer, progress=progress,
                                        engine=engine, precision=key[6], keep_cache=keep_cache)
    return _SHARED[key]
