"""The Lookahead feature predictor (paper, Section 4): the modules behind ``lookahead-clm`` and
``lookahead-mlm``.

One packed sequence per query: the prompt (left-padded to a common width) followed by one block
per candidate t. Block t starts with (CLM) or consists of (MLM) candidate t's model-identifier
token MID_t, a new embedding row of its own:

  CLM  block t = MID_t ‖ y_t[:L]   causal; block t sees the prompt and itself only, so the whole
                                    sequence equals T separate passes over  x ‖ MID_t ‖ y_t
                                    (Appendix F.4). The hidden state at MID_t is the latent r̃_t;
                                    y_t is learnt by next-token prediction (Eq. 6).
  MLM  block t = m tokens           bidirectional, one sequence for all candidates ([CLS] ‖ x ‖
                                    MID_1×m ‖ … ‖ MID_T×m). While training, a curriculum reveals
                                    part of y_t[:m] in the block and the rest (MID_t tokens) is
                                    reconstructed (Eq. 7); at inference every block is all MID_t.
                                    [CLS] attends over prompt and MID states, an MLP gives T scores.

Two sequence encoders run that sequence:

  BackboneSequenceEncoder   the backbone itself, fine-tuned (the paper; the ``gpu`` preset);
                            MID_t rows are added to its embedding matrix.
  FrozenTrunkEncoder        the backbone frozen (its prompt token states are cached on disk) and a
                            small fresh transformer of the same family over [projected prompt
                            states ‖ blocks]; tokens are reconstructed over the most frequent
                            response tokens (+ one "other" class). What fits a 2-core CPU.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

IGNORE = -100
MASKINGS = ("end", "start", "random", "none")


# ---- curriculum masking (Section 4.3) ----------------------------------------------------------
def mask_ratio(step: int, total_steps: int, alpha: float, masking: str) -> float:
    """Share of each response hidden at ``step``: rises linearly from 0 to 1 over the first
    ``alpha`` of training, then stays at 1 (``masking="none"``: always 1, no curriculum)."""
    if masking == "none" or alpha <= 0:
        return 1.0
    return min(1.0, step / max(1.0, alpha * total_steps))


def curriculum_mask(lengths: torch.Tensor, m: int, ratio: float, masking: str,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """For responses of ``lengths`` (any shape) cut to ``m`` tokens: (``hidden`` [..., m], True where
    the block shows MID_t instead of the response token; ``target`` [..., m], True where a hidden
    response token is to be reconstructed). ceil(ratio x length) tokens are hidden: the last ones
    ("end", the paper's default), the first ones ("start"), or one random span ("random");
    positions past the response are always MID_t and never targets."""
    if masking not in MASKINGS:
        raise ValueError(f"masking must be one of {MASKINGS}, got {masking!r}")
    n = lengths.clamp(max=m).unsqueeze(-1)
    pos = torch.arange(m, device=lengths.device)
    k = torch.ceil(ratio * n.float()).long()
    if masking in ("end", "none"):
        masked = pos >= n - k
    elif masking == "start":
        masked = pos < k
    else:
        u = torch.rand(n.shape, generator=generator, device=lengths.device)
        start = (u * (n - k + 1).float()).long()
        masked = (pos >= start) & (pos < start + k)
    inside = pos < n
    return (masked | ~inside), masked & inside


# ---- packed sequence: positions and attention mask ------------------------------------------------
def packed_layout(query_len: torch.Tensor, q_width: int, block_len: int, n_blocks: int, causal: bool,
                  dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Position ids [B, S] and an additive attention mask [B, 1, S, S] for prompt (left-padded to
    ``q_width``) ‖ ``n_blocks`` blocks of ``block_len`` tokens. Causal: prompt tokens see earlier
    prompt tokens, a block sees the prompt and its own earlier tokens, and every block restarts
    its positions after the prompt (so block t is exactly the sequence x ‖ block_t). Otherwise
    every token sees every real token and positions run on through the blocks."""
    B, device = query_len.shape[0], query_len.device
    S = q_width + n_blocks * block_len
    idx = torch.arange(S, device=device)
    pad = (q_width - query_len).unsqueeze(1)                                   # [B, 1]
    real = torch.cat([idx[:q_width].unsqueeze(0) >= pad,
                      torch.ones(B, S - q_width, dtype=torch.bool, device=device)], 1)
    block = torch.cat([torch.zeros(q_width, dtype=torch.long, device=device),
                       torch.arange(1, n_blocks + 1, device=device).repeat_interleave(block_len)])
    within = (idx - q_width).clamp(min=0) % max(block_len, 1)
    after = within if causal else (idx - q_width).clamp(min=0)
    positions = torch.where(idx < q_width, (idx - pad).clamp(min=0), query_len.unsqueeze(1) + after)
    allowed = real.unsqueeze(1).expand(B, S, S)
    if causal:
        same = (block.unsqueeze(0) == 0) | (block.unsqueeze(0) == block.unsqueeze(1))
        allowed = allowed & same & torch.ones(S, S, dtype=torch.bool, device=device).tril()
    allowed = allowed | torch.eye(S, dtype=torch.bool, device=device)      # no empty rows
    mask = torch.zeros(B, 1, S, S, dtype=dtype, device=device)
    return positions, mask.masked_fill(~allowed.unsqueeze(1), torch.finfo(dtype).min)


# ---- sequence encoders ---------------------------------------------------------------------------
class BackboneSequenceEncoder(nn.Module):
    """The backbone runs the packed sequence (full fine-tuning, as the paper). MID_t is the new
    embedding row ``base_vocab + t`` (``resize_token_embeddings``, mean-initialised)."""

    def __init__(self, backbone, n_candidates: int, mean_init: bool = True):
        super().__init__()
        self.model, self.kind = backbone.model, backbone.kind
        self.base_vocab = self.model.get_input_embeddings().num_embeddings
        self.pad_id = backbone.tokenizer.pad_token_id or 0
        self.model.resize_token_embeddings(self.base_vocab + n_candidates, mean_resizing=mean_init)
        self.width = self.model.config.hidden_size
        if self.kind == "encoder":  # the encoder checkpoints ship no MLM head: a BERT-style one, tied
            self.lm_transform = nn.Sequential(nn.Linear(self.width, self.width), nn.GELU(), nn.LayerNorm(self.width))
            self.lm_bias = nn.Parameter(torch.zeros(self.base_vocab + n_candidates))

    def forward(self, query, block_ids, mask, positions) -> torch.Tensor:
        ids = torch.cat([query, block_ids], 1)
        return self.model.base_model(input_ids=ids, attention_mask=mask.to(self.model.dtype),
                                     position_ids=positions).last_hidden_state

    def token_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.kind == "causal":
            return self.model.get_output_embeddings()(hidden)
        return F.linear(self.lm_transform(hidden), self.model.get_input_embeddings().weight, self.lm_bias)

    def token_targets(self, targets: torch.Tensor) -> torch.Tensor:
        return targets


class FrozenTrunkEncoder(nn.Module):
    """A small fresh transformer (BERT or Llama, like the backbone) over the frozen backbone's
    prompt token states, projected to ``width``, followed by the blocks. Its vocabulary is the
    ``vocab`` most frequent training response tokens, one "other" class, padding and the MIDs."""

    def __init__(self, kind: str, feature_dim: int, vocab: torch.Tensor, base_vocab: int, n_candidates: int,
                 width: int, layers: int, heads: int, max_positions: int):
        super().__init__()
        from transformers import BertConfig, BertModel, LlamaConfig, LlamaModel
        self.kind, self.width, self.base_vocab = kind, width, base_vocab
        V = len(vocab)
        self.other, self.pad_id = V, 0   # pad_id: a backbone id; padding is never seen by real tokens
        lookup = torch.full((base_vocab + n_candidates,), V, dtype=torch.long)
        lookup[vocab] = torch.arange(V)
        lookup[base_vocab:] = V + 2 + torch.arange(n_candidates)
        self.register_buffer("lookup", lookup)
        self.register_buffer("vocab", vocab.clone())
        common = dict(vocab_size=V + 2 + n_candidates, hidden_size=width, num_hidden_layers=layers,
                      num_attention_heads=heads, intermediate_size=4 * width,
                      max_position_embeddings=max_positions, pad_token_id=V + 1)
        if kind == "encoder":
            # no attention dropout: it would force PyTorch's slow attention path on CPU
            self.model = BertModel(BertConfig(attention_probs_dropout_prob=0.0, **common), add_pooling_layer=False)
        else:
            self.model = LlamaModel(LlamaConfig(num_key_value_heads=heads, **common))
        self.proj = nn.Linear(feature_dim, width)
        self.out = nn.Linear(width, V + 1)

    def forward(self, query, block_ids, mask, positions) -> torch.Tensor:
        embeds = torch.cat([self.proj(query), self.model.get_input_embeddings()(self.lookup[block_ids])], 1)
        return self.model(inputs_embeds=embeds, attention_mask=mask, position_ids=positions).last_hidden_state

    def token_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.out(hidden)

    def token_targets(self, targets: torch.Tensor) -> torch.Tensor:
        return self.lookup[targets].clamp(max=self.other)


# ---- the router model --------------------------------------------------------------------------
class LookaheadModel(nn.Module):
    """Engine contract: ``model(batch) -> {"logits": [B, T], "loss": L_route + λ·L_rec}``.

    ``batch``: ``query`` ([B, Sq] ids, or [B, Sq, d] frozen states), ``query_len`` [B], and for
    training ``labels`` [B, T] (0/1, NaN = missing), ``response_ids`` [B, T, L] (backbone ids) and
    ``response_len`` [B, T]."""

    def __init__(self, variant: str, encoder: nn.Module, n_candidates: int, opts: dict):
        super().__init__()
        self.variant, self.encoder, self.T, self.opts = variant, encoder, n_candidates, opts
        self.register_buffer("mid_ids", encoder.base_vocab + torch.arange(n_candidates), persistent=False)
        w, hidden = encoder.width, opts["hidden"]
        self.total_steps = 1
        # micro-batches seen in training: drives the curriculum, saved with checkpoints (resume)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        if variant == "mlm":
            self.cls_query = nn.Linear(w, w)
        fan_in, out = (w, 1) if variant == "clm" else (2 * w, n_candidates)
        self.head = nn.Sequential(nn.Linear(fan_in, hidden), nn.GELU(), nn.Dropout(opts["dropout"]),
                                  nn.Linear(hidden, out))

    def current_ratio(self) -> float:
        if not self.training:
            return 1.0
        return mask_ratio(int(self.step), self.total_steps, self.opts["alpha"], self.opts["masking"])

    def forward(self, batch) -> dict:
        query, qlen = batch["query"], batch["query_len"]
        responses = batch.get("response_ids") if self.opts["rm_weight"] > 0 else None
        run = self._clm if self.variant == "clm" else self._mlm
        logits, hidden, targets = run(query, qlen, responses, batch.get("response_len"))
        if self.training:
            self.step += 1
        out = {"logits": logits}
        if "labels" in batch:
            labels = batch["labels"]
            known = ~torch.isnan(labels)
            loss = F.binary_cross_entropy_with_logits(logits[known].float(), labels[known])
            if targets is not None and (targets != IGNORE).any():
                keep = targets != IGNORE
                token_logits = self.encoder.token_logits(hidden[keep]).float()
                rec = F.cross_entropy(token_logits, self.encoder.token_targets(targets[keep]))
                loss = loss + self.opts["rm_weight"] * rec
                out["rec_loss"] = rec.detach()
            out["loss"] = loss
        return out

    def _clm(self, query, qlen, responses, resp_len):
        B, q_width, device = qlen.shape[0], query.shape[1], qlen.device
        mids = self.mid_ids.view(1, self.T, 1).expand(B, -1, -1)
        targets = None
        if responses is None:
            blocks = mids                                                    # MID_t only
        else:
            L = responses.shape[2]
            pad = torch.full_like(responses[..., :1], self.encoder.pad_id)
            shown = torch.where(torch.arange(L, device=device) < resp_len.unsqueeze(-1), responses, pad)
            blocks = torch.cat([mids, shown], 2)                             # MID_t ‖ y_t[:L]
            targets = torch.cat([torch.where(torch.arange(L, device=device) < resp_len.unsqueeze(-1),
                                             responses, IGNORE), torch.full_like(pad, IGNORE)], 2)
            targets = torch.cat([torch.full((B, q_width), IGNORE, device=device), targets.flatten(1)], 1)
        block_len = blocks.shape[2]
        positions, mask = packed_layout(qlen, q_width, block_len, self.T, causal=True, dtype=self._dtype(query))
        hidden = self.encoder(query, blocks.flatten(1), mask, positions)
        latents = hidden[:, q_width + block_len * torch.arange(self.T, device=device)]   # r̃_t = h(MID_t)
        return self.head(latents).squeeze(-1), hidden, targets

    def _mlm(self, query, qlen, responses, resp_len):
        B, q_width, device = qlen.shape[0], query.shape[1], qlen.device
        m = self.opts["m"]
        mids = self.mid_ids.view(1, self.T, 1).expand(B, -1, m)
        targets = None
        if responses is None:
            blocks = mids
        else:
            hidden_pos, target_pos = curriculum_mask(resp_len, m, self.current_ratio(), self.opts["masking"])
            blocks = torch.where(hidden_pos, mids, responses[..., :m])
            targets = torch.where(target_pos, responses[..., :m], IGNORE)
        if self.opts["joint"]:
            logits, hidden = self._mlm_pass(query, qlen, blocks.flatten(1), self.T, m)
            if targets is not None:
                targets = torch.cat([torch.full((B, q_width), IGNORE, device=device), targets.flatten(1)], 1)
            return logits, hidden, targets
        # separate: one sequence per (prompt, candidate); candidate t's score from sequence t
        rep = lambda x: x.repeat_interleave(self.T, 0)
        logits, hidden = self._mlm_pass(rep(query), rep(qlen), blocks.reshape(B * self.T, m), 1, m)
        logits = logits.view(B, self.T, self.T).diagonal(dim1=1, dim2=2)
        if targets is not None:
            targets = torch.cat([torch.full((B * self.T, q_width), IGNORE, device=device),
                                 targets.reshape(B * self.T, m)], 1)
        return logits, hidden, targets

    def _mlm_pass(self, query, qlen, blocks, n_blocks, m):
        q_width = query.shape[1]
        positions, mask = packed_layout(qlen, q_width, m, n_blocks, causal=False, dtype=self._dtype(query))
        hidden = self.encoder(query, blocks, mask, positions)
        rows = torch.arange(len(qlen), device=qlen.device)
        cls = hidden[rows, q_width - qlen]                                # first prompt token: [CLS]
        # [CLS] attends over the real prompt and MID states (Section 4.3)
        scores = (hidden @ self.cls_query(cls).unsqueeze(-1)).squeeze(-1) / math.sqrt(hidden.shape[-1])
        real = torch.arange(hidden.shape[1], device=qlen.device).unsqueeze(0) >= (q_width - qlen).unsqueeze(1)
        attn = scores.float().masked_fill(~real, -torch.inf).softmax(-1).to(hidden.dtype)
        pooled = (attn.unsqueeze(-1) * hidden).sum(1)
        return self.head(torch.cat([cls, pooled], -1)), hidden

    @staticmethod
    def _dtype(query: torch.Tensor) -> torch.dtype:
        return query.dtype if query.is_floating_point() else torch.float32
