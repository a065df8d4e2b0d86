"""The part of a frozen backbone that ``FeatureExtractor`` runs, exported to ONNX and run by ONNX
Runtime on CPU: the ``onnx`` and ``onnx-int8`` feature engines (PyTorch stays the reference).

    encoder = OnnxEncoder("minilm", "encoder", layer=None, max_length=256, quantize=False)
    vectors = encoder(input_ids, attention_mask)     # [B, d] float32 pooled vectors
    states = OnnxEncoder("minilm", "encoder", layer=5, ...)(ids, mask)  # [B, S, d] float16

What is exported is the torch path's own computation, ``trunk.lower_states`` (embeddings, then
the first ``layer`` layers with an explicit padding mask), followed for pooled vectors by the
pooling of ``backbones.pooled_hidden`` (mean over real tokens for encoders, the last real token
for causal LMs). ``lower_states`` builds its masks with tensor operations alone, so one trace
serves every batch size and sequence length; transformers' own mask helpers branch in Python on
the mask's contents, which a trace would freeze at the example's case.

The export uses PyTorch's own ``torch.onnx.export`` with the TorchScript exporter
(``dynamo=False``): Hugging Face's ``optimum-onnx`` exporter (0.1.0) requires transformers<4.58,
while the project pins transformers 5, and the dynamo exporter needs ``onnxscript``, which the
project does not install. ``onnx-int8`` then quantises most of the exported graph's weight
matrices to int8 (``onnxruntime.quantization.quantize_dynamic``; activations are quantised per
call).

Exported files are cached under ``<features cache root>/onnx/``, one per (backbone, kind, layer,
max length, quantisation), written atomically; a later process only creates the session.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import uuid
import warnings
from pathlib import Path

import numpy as np
import torch

from lookahead_router.cache import cache_root
from lookahead_router.precision import BF16, resolve_precision
from lookahead_router.routers.backbones import ENCODER, Backbone, backbone_config, load_backbone
from lookahead_router.errors import RouterError
from lookahead_router.routers.trunk import lower_states, n_layers

AUTO, TORCH, ONNX, ONNX_INT8 = "auto", "torch", "onnx", "onnx-int8"
ENGINES = (AUTO, TORCH, ONNX, ONNX_INT8)
OPSET = 17
# Bump when the exported graph changes, so that files exported by older code are not reused.
EXPORT_VERSION = 1
# The model types whose layout ``lower_states`` reproduces exactly (BERT: MiniLM, tiny-bert;
# Llama: SmolLM2, tiny-llama). Others (e.g. ModernBERT, MPNet) differ in positions or attention.
EXPORTABLE = {ENCODER: ("bert",), "causal": ("llama",)}


def check_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise RouterError(f"unknown feature engine {engine!r}; choose from {', '.join(ENGINES)}")
    return engine


def resolve_engine(engine: str, spec: str, kind: str) -> str:
    """The engine "auto" stands for: ONNX Runtime (fp32) where PyTorch would compute in fp32 too
    (no GPU, no native bf16, or `--precision fp32`) and the backbone exports: it then routes
    exactly as PyTorch does and is faster at batch 1. PyTorch otherwise: in bf16 it is faster than
    ONNX Runtime's fp32, and computes the features a router trained here learned from
    (bench/results/router_cost_engines_cpu_bf16.md, onnx_agreement_cpu_bf16.md)."""
    if engine != AUTO:
        return engine
    if torch.cuda.is_available() or resolve_precision() == BF16:
        return TORCH
    try:
        check_exportable(spec, kind)
    except RouterError:
        return TORCH
    return ONNX


def check_exportable(spec: str, kind: str) -> None:
    """Raise a RouterError naming ``spec`` when the onnx engines cannot run it."""
    model_type = getattr(backbone_config(spec, kind), "model_type", None)
    if model_type not in EXPORTABLE[kind]:
        raise RouterError(f"backbone {spec!r} ({model_type}, {kind}) cannot run on the onnx engines: "
                          f"they export {kind} backbones of type {', '.join(EXPORTABLE[kind])} only; "
                          f"use the torch engine")


class _ExportedPart(torch.nn.Module):
    """What the extractor computes from (input_ids, attention_mask), as one traceable module."""

    def __init__(self, backbone: Backbone, layer: int | None):
        super().__init__()
        self.backbone, self.layer = backbone, layer
        self.model = backbone.model         # a submodule, so that .eval() reaches its dropout layers

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        bb = self.backbone
        if self.layer is not None:          # per-token states, stored as fp16 by the extractor
            return lower_states(bb, input_ids, attention_mask, self.layer).to(torch.float16)
        hidden = lower_states(bb, input_ids, attention_mask, n_layers(bb))
        if bb.kind == ENCODER:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        last = (attention_mask.sum(1) - 1).clamp(min=0)
        return hidden[torch.arange(hidden.shape[0]), last]


def onnx_root() -> Path:
    return cache_root() / "onnx"


def _weights_stamp(spec: str) -> str:
    """A local folder's files can change under the same spec: their sizes and times join the key.
    (The packaged aliases and hub ids name fixed weights; the tiny models are seeded.)"""
    path = Path(spec)
    if not path.exists():
        return ""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)


def model_path(spec: str, kind: str, layer: int | None, max_length: int, quantize: bool) -> Path:
    """Where the graph of one extractor configuration lives. (The graph itself does not depend on
    the max length, its axes being dynamic; keying on it keeps one file per configuration.)"""
    part = "pooled" if layer is None else f"layer{layer}"
    precision = "int8" if quantize else "fp32"
    key = f"{spec}|{kind}|{part}|{max_length}|{precision}|v{EXPORT_VERSION}|{_weights_stamp(spec)}"
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in spec)[-60:]
    digest = hashlib.sha1(key.encode()).hexdigest()[:8]
    return onnx_root() / f"{safe}-{kind}-{part}-{max_length}-{precision}-{digest}.onnx"


def _atomic_target(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.parent / f".{path.stem}.{uuid.uuid4().hex}.tmp.onnx"


def export(spec: str, kind: str, layer: int | None, max_length: int) -> Path:
    """Export the fp32 graph once; later calls return the cached file."""
    check_exportable(spec, kind)
    path = model_path(spec, kind, layer, max_length, quantize=False)
    if path.is_file():
        return path
    backbone = load_backbone(spec, kind)    # fp32: ONNX Runtime's CPU kernels have no bf16 path
    # .to(), not .float(): transformers refuses .float() on a GGUF-loaded model (SmolLM2's),
    # although its weights are already plain dequantised tensors
    backbone.model.to(torch.float32).eval()
    if layer is not None and not 0 <= layer <= n_layers(backbone):
        raise RouterError(f"layer must lie in 0..{n_layers(backbone)} for backbone {spec!r}, got {layer}")
    part = _ExportedPart(backbone, layer).eval()
    # Two texts of different lengths: the trace then includes padding (no shape is special-cased).
    enc = backbone.tokenizer(["a short text", "a slightly longer text to pad the other one"], padding_side="right",
                             padding=True, return_tensors="pt")
    out_axes = {0: "batch", 1: "sequence"} if layer is not None else {0: "batch"}
    tmp = _atomic_target(path)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")   # the exporter's deprecation and tracer notices
            torch.onnx.export(part, (enc["input_ids"], enc["attention_mask"]), str(tmp), dynamo=False,
                              input_names=["input_ids", "attention_mask"], output_names=["features"],
                              dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                                            "attention_mask": {0: "batch", 1: "sequence"},
                                            "features": out_axes},
                              opset_version=OPSET, do_constant_folding=True)
        os.replace(tmp, path)               # atomic: a reader never sees half a model
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, RouterError):
            raise
        raise RouterError(f"cannot export backbone {spec!r} ({kind}) to ONNX: {exc}") from exc
    return path


def quantized(spec: str, kind: str, layer: int | None, max_length: int) -> Path:
    """The int8 copy of the exported graph (exported first when needed), cached beside it."""
    path = model_path(spec, kind, layer, max_length, quantize=True)
    if path.is_file():
        return path
    source = export(spec, kind, layer, max_length)
    from onnxruntime.quantization import QuantType, quantize_dynamic
    tmp = _atomic_target(path)
    quiet = logging.getLogger()
    level = quiet.level
    quiet.setLevel(logging.ERROR)           # its advice to pre-process the model first
    try:
        # The weight matrices of the linear layers, one scale per output channel (one scale per
        # matrix moved MiniLM's pooled vectors much further from torch's, tried while building
        # this). The feed-forward down-projections stay fp32: their inputs (after the activation
        # function) have the outliers that per-call activation scales clip worst. Embedding
        # tables and norms stay fp32 (little time, much drift).
        quantize_dynamic(str(source), str(tmp), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                         per_channel=True, nodes_to_exclude=_down_projections(source))
        os.replace(tmp, path)
    finally:
        quiet.setLevel(level)
        tmp.unlink(missing_ok=True)
    return path


def _down_projections(path: Path) -> list[str]:
    """The MatMul nodes of the feed-forward down-projections (BERT: layer.i.output.dense, Llama:
    layers.i.mlp.down_proj), by the names the TorchScript exporter gives them."""
    import onnx
    pattern = re.compile(r"/layer\.\d+/output/dense/MatMul$|/mlp/down_proj/MatMul$")
    graph = onnx.load(str(path), load_external_data=False).graph
    return [n.name for n in graph.node if n.op_type == "MatMul" and pattern.search(n.name)]


def default_threads() -> int:
    """The cores this process may use: one intra-op thread each (spreading one query's matmuls).
    ``LOOKAHEAD_THREADS`` sets it (`lookahead serve --workers N` gives each worker its share)."""
    if os.environ.get("LOOKAHEAD_THREADS", "").isdigit():
        return max(1, int(os.environ["LOOKAHEAD_THREADS"]))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:                  # not Linux
        return max(1, os.cpu_count() or 1)


class OnnxEncoder:
    """An ONNX Runtime session over the exported part: ``(input_ids, attention_mask)`` as int64
    arrays -> [B, d] float32 pooled vectors, or with ``layer`` [B, S, d] float16 states."""

    def __init__(self, spec: str, kind: str, layer: int | None, max_length: int, quantize: bool = False,
                 threads: int | None = None):
        import onnxruntime as ort
        self.spec, self.kind, self.layer, self.quantize = spec, kind, layer, quantize
        self.path = (quantized if quantize else export)(spec, kind, layer, max_length)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1            # one chain of ops: no parallel branches to run
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No busy-waiting between ops: the routers' own top layers (PyTorch) and the server's
        # event loop run on the same cores right after each call, and spinning threads slow them.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3              # errors only
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:                    # e.g. a file damaged on disk
            raise RouterError(f"ONNX Runtime cannot load {self.path} (backbone {spec!r}): {exc}; "
                              "delete it to export again") from exc

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feeds = {"input_ids": np.ascontiguousarray(input_ids, dtype=np.int64),
                 "attention_mask": np.ascontiguousarray(attention_mask, dtype=np.int64)}
        return self.session.run(None, feeds)[0]
