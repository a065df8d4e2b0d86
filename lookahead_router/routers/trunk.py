"""A pretrained backbone split in two: frozen lower layers, whose token states are cached, and a
trainable copy of its top ``layers`` layers (the ``cpu`` preset's realisation).

    states = lower_states(backbone, input_ids, attention_mask, split)    # [B, S, d], cached on disk
    trunk = Trunk(backbone, layers=1, n_extra=T)                         # the top layer(s), trainable
    hidden = trunk(inputs, mask, positions)                              # [B, S, d]

Routers put their own tokens after the cached prompt states: ``trunk.embed(ids, positions)`` runs
ids through the backbone's own (frozen) embedding layer, with ``n_extra`` new trainable rows after
the vocabulary (the Lookahead routers' model-identifier tokens MID_t). Those tokens skip the frozen
layers and meet the prompt in the top layers, so the pretrained top layers process prompt and MID
tokens together and are fine-tuned by every loss. ``trunk.token_logits`` is the backbone's own
reconstruction head over its full vocabulary, tied to the input embeddings (Llama: the final norm
and the tied output embedding; BERT: a new transform, then the tied embedding matrix and a bias,
since sentence encoders ship no MLM head).

With ``finetune=True`` the trunk is the whole backbone, trainable (the paper; the ``gpu``
preset): prompts then come as token ids and go through its own embedding layer.

Only the trainable part is saved; the frozen part is re-read from the backbone on load.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from lookahead_router.routers.backbones import ENCODER, Backbone


def n_layers(backbone: Backbone) -> int:
    return backbone.model.config.num_hidden_layers


def family(backbone: Backbone) -> str:
    """How the backbone's modules are laid out: "bert" (absolute positions, encoder.layer),
    "modernbert" (rotary, alternating global / sliding-window attention) or "llama" (causal
    decoder layers with rotary positions: Llama, SmolLM2, Qwen2, Mistral...)."""
    if backbone.model.config.model_type == "modernbert":
        return "modernbert"
    return "bert" if backbone.kind == ENCODER else "llama"


def _layers(base) -> nn.ModuleList:
    return base.encoder.layer if hasattr(base, "encoder") else base.layers


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, S, S] bool (query may attend key) -> the [B, 1, S, S] additive mask layers take."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
        ~allowed, torch.finfo(dtype).min).unsqueeze(1)


def padded_mask(attention_mask: torch.Tensor, causal: bool) -> torch.Tensor:
    """[B, S] 1/0 padding mask -> [B, S, S] bool: real keys only (and earlier ones when causal);
    every row may see itself, so padded rows never produce NaN."""
    S = attention_mask.shape[1]
    allowed = attention_mask.bool().unsqueeze(1).expand(-1, S, -1)
    # index comparisons rather than eye()/tril(): they trace to ONNX ops that ONNX Runtime runs
    # on bool tensors (it has no bool EyeLike), for the onnx engine (routers/onnx_encoder.py)
    idx = torch.arange(S, device=attention_mask.device)
    if causal:
        allowed = allowed & (idx.unsqueeze(1) >= idx.unsqueeze(0))
    return allowed | (idx.unsqueeze(1) == idx.unsqueeze(0))


def _run(backbone: Backbone, layers, hidden, allowed, positions):
    """``layers`` of ``backbone`` over ``hidden`` with the [B, S, S] bool mask ``allowed``."""
    mask = additive_mask(allowed, hidden.dtype)
    kind = family(backbone)
    if kind == "bert":
        for layer in layers:
            hidden = layer(hidden, attention_mask=mask)
        return hidden
    base = backbone.model.base_model
    if kind == "modernbert":
        window = getattr(base.config, "sliding_window", base.config.local_attention // 2)
        near = (positions.unsqueeze(2) - positions.unsqueeze(1)).abs() <= window
        local = additive_mask(allowed & near, hidden.dtype)
        for layer in layers:
            rotary = base.rotary_emb(hidden, positions, layer.attention_type)
            hidden = layer(hidden, attention_mask=local if layer.attention_type == "sliding_attention" else mask,
                           position_embeddings=rotary)
        return hidden
    rotary = base.rotary_emb(hidden, positions)
    for layer in layers:
        hidden = layer(hidden, attention_mask=mask, position_ids=positions, position_embeddings=rotary)
    return hidden


def _gather(x: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """x [B, S, ...] at slots [B, Q] -> [B, Q, ...]."""
    return x.gather(1, slots.view(*slots.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:]))


def _bert_layer_at(layer, hidden, slots, allowed):
    """A BERT layer's output at ``slots`` only: those slots query every key and value (the
    other slots' outputs are not needed, so their query, output and feed-forward work is skipped)."""
    att = layer.attention.self
    B, S, _ = hidden.shape
    heads, size = att.num_attention_heads, att.attention_head_size
    x = _gather(hidden, slots)
    q = att.query(x).view(B, -1, heads, size).transpose(1, 2)
    k = att.key(hidden).view(B, S, heads, size).transpose(1, 2)
    v = att.value(hidden).view(B, S, heads, size).transpose(1, 2)
    # no attention dropout here: it would force PyTorch's slow attention path on CPUs
    a = F.scaled_dot_product_attention(q, k, v, attn_mask=additive_mask(_gather(allowed, slots), hidden.dtype))
    a = layer.attention.output(a.transpose(1, 2).reshape(B, -1, heads * size), x)
    return layer.output(layer.intermediate(a), a)


def _llama_layer_at(layer, hidden, slots, allowed, rotary):
    """A Llama decoder layer's output at ``slots`` only (see ``_bert_layer_at``)."""
    from transformers.models.llama.modeling_llama import rotate_half
    att = layer.self_attn
    B, S, _ = hidden.shape
    size = att.head_dim
    cos, sin = (c.unsqueeze(1) for c in rotary)
    h = layer.input_layernorm(hidden)
    x = _gather(h, slots)
    q = att.q_proj(x).view(B, x.shape[1], -1, size).transpose(1, 2)
    k = att.k_proj(h).view(B, S, -1, size).transpose(1, 2)
    v = att.v_proj(h).view(B, S, -1, size).transpose(1, 2)
    qcos, qsin = (_gather(c.squeeze(1), slots).unsqueeze(1) for c in (cos, sin))
    q, k = q * qcos + rotate_half(q) * qsin, k * cos + rotate_half(k) * sin
    a = F.scaled_dot_product_attention(q, k, v, attn_mask=additive_mask(_gather(allowed, slots), hidden.dtype),
                                       enable_gqa=True)
    out = _gather(hidden, slots) + att.o_proj(a.transpose(1, 2).reshape(B, x.shape[1], -1))
    return out + layer.mlp(layer.post_attention_layernorm(out))


def _prompt_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    return (attention_mask.long().cumsum(1) - 1).clamp(min=0)


@torch.no_grad()
def lower_states(backbone: Backbone, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 split: int) -> torch.Tensor:
    """The hidden states after the first ``split`` layers (the input of layer ``split + 1``) of
    right-padded prompts; ``split == n_layers`` gives the final states (with Llama's final norm)."""
    base = backbone.model.base_model
    causal = backbone.kind != ENCODER
    positions = _prompt_positions(attention_mask)
    hidden = _embed_ids(backbone, input_ids, positions)
    hidden = _run(backbone, _layers(base)[:split], hidden, padded_mask(attention_mask, causal), positions)
    norm = _final_norm(base)
    return norm(hidden) if norm is not None and split == n_layers(backbone) else hidden


def _embed_ids(backbone: Backbone, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """The backbone's own embedding layer over token ids at ``positions``."""
    base = backbone.model.base_model
    kind = family(backbone)
    if kind == "llama":
        return base.embed_tokens(ids)
    if kind == "modernbert":
        return base.embeddings(input_ids=ids)
    return base.embeddings(input_ids=ids, token_type_ids=torch.zeros_like(ids), position_ids=positions)


def _final_norm(base) -> nn.Module | None:
    """The norm after the last layer (Llama: norm, ModernBERT: final_norm; BERT has none)."""
    return getattr(base, "final_norm", None) or getattr(base, "norm", None)


def prompt_layout(query_len: torch.Tensor, q_width: int, causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions [B, S], allowed [B, S, S]) of prompts left-padded to ``q_width``."""
    idx = torch.arange(q_width, device=query_len.device).unsqueeze(0)
    pad = (q_width - query_len).unsqueeze(1)
    return (idx - pad).clamp(min=0), padded_mask((idx >= pad).long(), causal)


class Trunk(nn.Module):
    """The top ``layers`` layers of ``backbone`` (trainable copies), its embedding layer for new
    tokens (frozen, plus ``n_extra`` trainable rows) and its tied reconstruction head; or, with
    ``finetune``, the whole backbone, trainable."""

    def __init__(self, backbone: Backbone, layers: int, n_extra: int = 0, reconstruct: bool = False,
                 finetune: bool = False):
        super().__init__()
        total = n_layers(backbone)
        layers = total if finetune else layers
        if not 1 <= layers <= total:
            raise ValueError(f"trainable layers must lie in 1..{total} for {backbone.spec}, got {layers}")
        self.backbone = [backbone]          # a list: the frozen model is not a submodule (never saved)
        self.kind, self.split, self.finetune = backbone.kind, total - layers, finetune
        self.causal = backbone.kind != ENCODER
        self.width = backbone.hidden_size
        base = backbone.model.base_model
        self.family = family(backbone)
        if finetune:
            self.model = backbone.model     # everything trains and is saved
        else:
            self.top = nn.ModuleList(copy.deepcopy(layer) for layer in _layers(base)[self.split:])
            norm = _final_norm(base)
            self.norm = copy.deepcopy(norm) if norm is not None else None
        words = base.get_input_embeddings().weight
        self.base_vocab = words.shape[0]
        self.pad_id = backbone.tokenizer.pad_token_id or 0
        self.sep_id = backbone.tokenizer.sep_token_id
        # new rows start at the vocabulary's mean, as resize_token_embeddings(mean_resizing=True)
        self.extra = nn.Parameter(words.detach().mean(0).repeat(n_extra, 1)
                                  + 0.02 * words.detach().std() * torch.randn(n_extra, self.width))
        if reconstruct and not self.causal:
            eps = getattr(backbone.model.config, "layer_norm_eps", None) or backbone.model.config.norm_eps
            self.lm_transform = nn.Sequential(nn.Linear(self.width, self.width), nn.GELU(),
                                              nn.LayerNorm(self.width, eps=eps))
            self.lm_bias = nn.Parameter(torch.zeros(self.base_vocab))
        if not finetune:
            for p in backbone.model.parameters():
                p.requires_grad_(False)

    @property
    def layers(self) -> nn.ModuleList:
        return _layers(self.model.base_model) if self.finetune else self.top

    @property
    def words(self) -> torch.Tensor:
        return self.backbone[0].model.base_model.get_input_embeddings().weight

    def prompt_states(self, query: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """The trunk's input for the prompt: cached states as they are, token ids (``finetune``)
        through the embedding layer."""
        if query.is_floating_point():
            return query
        return _embed_ids(self.backbone[0], query, positions)

    def embed(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Input vectors of token ``ids`` (ids >= the vocabulary size are the extra rows) at
        ``positions``, as the backbone's embedding layer makes them."""
        extra = ids >= self.base_vocab
        vectors = torch.where(extra.unsqueeze(-1), self.extra[(ids - self.base_vocab).clamp(min=0)],
                              F.embedding(ids.clamp(max=self.base_vocab - 1), self.words))
        emb = self.backbone[0].model.base_model.embeddings if not self.causal else None
        if self.family == "llama":
            return vectors
        if self.family == "modernbert":
            return emb.drop(emb.norm(vectors))
        vectors = vectors + emb.token_type_embeddings.weight[0] + emb.position_embeddings(positions)
        return emb.dropout(emb.LayerNorm(vectors))

    def forward(self, hidden: torch.Tensor, allowed: torch.Tensor, positions: torch.Tensor,
                slots: torch.Tensor | None = None) -> torch.Tensor:
        """The trainable layers over ``hidden`` [B, S, d] with the [B, S, S] bool mask ``allowed``:
        [B, S, d], or with ``slots`` [B, Q] only those slots' final states [B, Q, d]. The last
        layer then computes queries for the slots alone; every slot is still a key and value, so
        the slots' states are exactly those of the full pass, at a fraction of its cost when
        the slots are few (the prompt's own final states are what the routers never read)."""
        backbone = self.backbone[0]
        if slots is None or self.family == "modernbert":   # ModernBERT: the full pass, then the slots
            hidden = _run(backbone, self.layers, hidden, allowed, positions)
            hidden = hidden if slots is None else _gather(hidden, slots)
        else:
            hidden = _run(backbone, self.layers[:-1], hidden, allowed, positions)
            if self.family == "llama":
                rotary = backbone.model.base_model.rotary_emb(hidden, positions)
                hidden = _llama_layer_at(self.layers[-1], hidden, slots, allowed, rotary)
            else:
                hidden = _bert_layer_at(self.layers[-1], hidden, slots, allowed)
        norm = _final_norm(self.model.base_model) if self.finetune else self.norm
        return hidden if norm is None else norm(hidden)

    def token_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[N, d] final states -> [N, vocabulary] logits, decoder tied to the input embeddings."""
        if self.causal:
            return hidden @ self.words.T
        return F.linear(self.lm_transform(hidden), self.words, self.lm_bias)
