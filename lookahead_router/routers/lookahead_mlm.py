"""Lookahead, token level (paper, Section 4.3): the masked-LM realisation behind ``lookahead-mlm``.

One bidirectional sequence per query, laid out as the authors' code builds it:

    [CLS] x [SEP]  b_1 [SEP]  b_2 [SEP] ... b_T [SEP]        b_t: m tokens

Every block reuses the same positions, P ... P + m (P = len([CLS] x [SEP])), so the blocks differ
only by their model identifier: block t holds MID_t in every slot at inference, and while training
a curriculum shows the start of candidate t's response y_t[:m] and hides the rest behind MID_t;
the hidden tokens are reconstructed over the backbone's full vocabulary (Eq. 7). The hidden share
rises linearly to 100% over the first α of training (``end``: the authors' "right" masking, at
least one token hidden; ``start``, ``random`` spans, ``none``: always 100%), then stays at 100%.
The routing head reads [CLS]'s final state and an attention summary of the prompt and MID states
(MLP(Attn(h_CLS, H_x, r̃_1..T)) -> T logits). ``joint=False`` builds one sequence per candidate.

The sequence runs through the trainable layers of a ``Trunk``: the top layers of the backbone
over its cached prompt states (``cpu`` preset), or the whole backbone (``finetune``).
"""

from __future__ import annotations

import math
import torch
import torch.nn.functional as F
from torch import nn

from lookahead_router.routers.losses import routing_bce
from lookahead_router.routers.trunk import Trunk

IGNORE = -100
MASKINGS = ("end", "start", "random", "none")


def mask_ratio(step: int, total_steps: int, alpha: float, masking: str) -> float:
    """Share of each response hidden at ``step``: rises linearly from 0 to 1 over the first
    ``alpha`` of training, then stays at 1 (``masking="none"``: always 1, no curriculum)."""
    if masking == "none" or alpha <= 0:
        return 1.0
    return min(1.0, step / max(1.0, alpha * total_steps))


def curriculum_mask(lengths: torch.Tensor, m: int, ratio: float, masking: str,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """For responses of ``lengths`` (any shape) cut to ``m`` tokens: (``hidden`` [..., m], True
    where the block shows MID_t; ``target`` [..., m], True where a hidden response token is to be
    reconstructed). max(1, ⌊ratio · length⌋) tokens of a non-empty response are hidden, as the
    authors' collator does: the last ones ("end"), the first ones ("start") or one random span;
    slots past the response always show MID_t and are never targets."""
    if masking not in MASKINGS:
        raise ValueError(f"masking must be one of {MASKINGS}, got {masking!r}")
    n = lengths.clamp(max=m).unsqueeze(-1)
    pos = torch.arange(m, device=lengths.device)
    k = torch.minimum(torch.floor(ratio * n.float()).long().clamp(min=1), n)
    if masking in ("end", "none"):
        masked = pos >= n - k
    elif masking == "start":
        masked = pos < k
    else:
        u = torch.rand(n.shape, generator=generator, device=lengths.device)
        start = (u * (n - k + 1).float()).long()
        masked = (pos >= start) & (pos < start + k)
    inside = pos < n
    return masked | ~inside, masked & inside


def mlm_layout(query_len: torch.Tensor, q_width: int, n_blocks: int, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions [B, S], real [B, S]) of left-padded prompts ‖ n_blocks × (m tokens + [SEP]): the
    prompt keeps 0 .. P-1, and every block reuses P .. P + m."""
    B, device = query_len.shape[0], query_len.device
    idx = torch.arange(q_width, device=device)
    pad = (q_width - query_len).unsqueeze(1)
    prompt_pos = (idx.unsqueeze(0) - pad).clamp(min=0)
    block_pos = query_len.unsqueeze(1) + torch.arange(m + 1, device=device).repeat(n_blocks).unsqueeze(0)
    real = torch.cat([idx.unsqueeze(0) >= pad, torch.ones(B, n_blocks * (m + 1), dtype=torch.bool, device=device)], 1)
    return torch.cat([prompt_pos, block_pos], 1), real


class LookaheadMLM(nn.Module):
    """Engine contract: ``model(batch) -> {"logits": [B, T], "loss": L_route + λ·L_rec}``.

    ``batch``: ``query`` [B, Sq, d] (the trunk's input states of the left-padded prompt, [CLS] and
    [SEP] included), ``query_len`` [B]; for training ``labels`` [B, T] (0/1, NaN = missing),
    ``response_ids`` [B, T, m] and ``response_len`` [B, T]."""

    def __init__(self, trunk: Trunk, n_candidates: int, m: int, rm_weight: float, alpha: float,
                 masking: str, joint: bool, hidden: int, dropout: float, rec_tokens: int,
                 show_responses: bool = False):
        super().__init__()
        # show_responses: blocks hold the actual responses, in training and scoring alike (the
        # response-aware reference of routers/ceiling.py, never a deployable router)
        self.show_responses = show_responses
        if masking not in MASKINGS:
            raise ValueError(f"masking must be one of {MASKINGS}, got {masking!r}")
        self.trunk, self.T, self.m = trunk, n_candidates, m
        self.rm_weight, self.alpha, self.masking, self.joint = rm_weight, alpha, masking, joint
        self.rec_tokens = rec_tokens
        self.register_buffer("mid_ids", trunk.base_vocab + torch.arange(n_candidates), persistent=False)
        w = trunk.width
        self.total_steps = 1
        # micro-batches seen in training: drives the curriculum, saved with checkpoints (resume)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self.cls_query = nn.Linear(w, w)
        self.head = nn.Sequential(nn.Linear(2 * w, hidden), nn.GELU(), nn.Dropout(dropout),
                                  nn.Linear(hidden, n_candidates))

    def current_ratio(self) -> float:
        if not self.training:
            return 1.0
        return mask_ratio(int(self.step), self.total_steps, self.alpha, self.masking)

    def blocks(self, batch: dict, show: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """[B, T, m] block ids and [B, T, m] reconstruction targets (None without any). ``show``
        puts the real responses into the blocks (the curriculum's visible part)."""
        B = batch["query_len"].shape[0]
        mids = self.mid_ids.view(1, self.T, 1).expand(B, -1, self.m)
        if self.show_responses:
            inside = torch.arange(self.m, device=mids.device) < batch["response_len"].unsqueeze(-1)
            return torch.where(inside, batch["response_ids"][..., :self.m], mids), None
        if not show or "response_ids" not in batch:
            return mids, None
        hidden, target = curriculum_mask(batch["response_len"], self.m, self.current_ratio(), self.masking)
        responses = batch["response_ids"][..., :self.m]
        return torch.where(hidden, mids, responses), torch.where(target, responses, IGNORE)

    def encode(self, query: torch.Tensor, query_len: torch.Tensor, block_ids: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run [prompt ‖ blocks] ([B, n, m] ids) through the trunk: [CLS]'s final state [B, d] and
        the blocks' [B, n, m + 1, d] ([SEP] last). Only these slots are computed in the last layer."""
        B, n, m = block_ids.shape
        q_width = query.shape[1]
        positions, real = mlm_layout(query_len, q_width, n, m)
        sep = torch.full((B, n, 1), self.trunk.sep_id, dtype=block_ids.dtype, device=block_ids.device)
        ids = torch.cat([block_ids, sep], 2).flatten(1)
        prompt = self.trunk.prompt_states(query, positions[:, :q_width])
        inputs = torch.cat([prompt, self.trunk.embed(ids, positions[:, q_width:]).to(prompt.dtype)], 1)
        S = inputs.shape[1]
        allowed = real.unsqueeze(1).expand(B, S, S) | torch.eye(S, dtype=torch.bool, device=query.device)
        cls_slot = (q_width - query_len).unsqueeze(1)                      # the first real slot
        slots = torch.cat([cls_slot, torch.arange(q_width, S, device=query.device).expand(B, -1)], 1)
        states = self.trunk(inputs, allowed, positions, slots)
        return states[:, 0], states[:, 1:].view(B, n, m + 1, -1)

    def route(self, cls: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
        """MLP over [CLS]'s final state and its attention summary of the MID states -> T logits."""
        states = blocks.flatten(1, 2)
        scores = (states @ self.cls_query(cls).unsqueeze(-1)).squeeze(-1) / math.sqrt(states.shape[-1])
        pooled = (scores.float().softmax(-1).to(states.dtype).unsqueeze(-1) * states).sum(1)
        return self.head(torch.cat([cls, pooled], -1))

    def forward(self, batch: dict) -> dict:
        query, qlen = batch["query"], batch["query_len"]
        ids, targets = self.blocks(batch, show=self.training and self.rm_weight > 0)
        if self.joint:
            cls, blocks = self.encode(query, qlen, ids)
            logits = self.route(cls, blocks)
        else:  # one sequence per (prompt, candidate); candidate t's score from sequence t
            rep = lambda x: x.repeat_interleave(self.T, 0)
            cls, blocks = self.encode(rep(query), rep(qlen), ids.reshape(-1, 1, self.m))
            logits = self.route(cls, blocks).view(-1, self.T, self.T).diagonal(dim1=1, dim2=2)
        block_states = blocks.reshape(len(qlen), self.T, self.m + 1, -1)[:, :, :self.m]
        if self.training:
            self.step += 1
        return objective(logits, batch, self.trunk, block_states, targets, self.rm_weight, self.rec_tokens)


def objective(logits: torch.Tensor, batch: dict, trunk: Trunk, states: torch.Tensor, targets: torch.Tensor | None,
              rm_weight: float, rec_tokens: int) -> dict:
    """Eq. 5: {"logits", "loss": L_route + λ · L_rec[, "rec_loss"]} -- BCE against the labels
    (NaN = missing), plus the reconstruction of the target tokens when there are any."""
    out = {"logits": logits}
    if "labels" in batch:
        loss = routing_bce(logits, batch)
        if targets is not None and (targets != IGNORE).any():
            rec = reconstruction_loss(trunk, states, targets, rec_tokens)
            loss = loss + rm_weight * rec
            out["rec_loss"] = rec.detach()
        out["loss"] = loss
    return out


def reconstruction_loss(trunk: Trunk, states: torch.Tensor, targets: torch.Tensor, per_row: int) -> torch.Tensor:
    """Cross-entropy over the full vocabulary of the target tokens (``targets`` != IGNORE, shaped
    like ``states[..., 0]``). At most ``per_row`` targets per query (first axis) are scored, drawn
    uniformly: an unbiased estimate of the mean loss at a fraction of the vocabulary projection's
    cost (0 = all targets)."""
    keep = targets != IGNORE
    if per_row > 0:
        flat = keep.flatten(1)
        noise = torch.rand(flat.shape, device=flat.device).masked_fill(~flat, 2.0)
        rank = noise.argsort(1).argsort(1)
        keep = (flat & (rank < per_row)).view_as(keep)
    logits = trunk.token_logits(states[keep]).float()
    return F.cross_entropy(logits, targets[keep])
