"""Lookahead, sequence level (paper, Section 4.2): the causal-LM realisation behind ``lookahead-clm``.

One packed causal sequence per query: the prompt x, then one block per candidate t,

    x  ‖  MID_1 y_1[:L]  ‖  MID_2 y_2[:L]  ‖ ... ‖  MID_T y_T[:L]

where block t attends to the prompt and to its own earlier tokens only, and restarts its positions
after the prompt, so the packed sequence is exactly T separate sequences x ‖ MID_t ‖ y_t (Appendix
F.4). The hidden state at MID_t is the response latent r̃_t, a shared MLP maps it to candidate t's
logit, and while training y_t is learnt by next-token prediction over the backbone's full
vocabulary (Eq. 6): the state at MID_t predicts y_t[0], the state at y_t[j] predicts y_t[j + 1].
Scoring runs x ‖ MID_1 … MID_T (blocks of one token) in one forward pass, no decoding.

The sequence runs through the trainable layers of a ``Trunk``; only block slots are computed in
its last layer (the routers never read the prompt's own final states).
"""

from __future__ import annotations

import torch
from torch import nn

from lookahead_router.routers.lookahead_mlm import IGNORE, objective
from lookahead_router.routers.trunk import Trunk


def clm_layout(query_len: torch.Tensor, q_width: int, n_blocks: int, block_len: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions [B, S], allowed [B, S, S]) for left-padded prompts ‖ ``n_blocks`` causal blocks
    of ``block_len`` tokens: prompt tokens see earlier real prompt tokens, a block sees the real
    prompt and its own earlier tokens, and every block's positions restart at the prompt's end."""
    B, device = query_len.shape[0], query_len.device
    S = q_width + n_blocks * block_len
    idx = torch.arange(S, device=device)
    pad = (q_width - query_len).unsqueeze(1)
    real = torch.cat([idx[:q_width].unsqueeze(0) >= pad,
                      torch.ones(B, S - q_width, dtype=torch.bool, device=device)], 1)
    block = torch.cat([torch.zeros(q_width, dtype=torch.long, device=device),
                       torch.arange(1, n_blocks + 1, device=device).repeat_interleave(block_len)])
    within = (idx - q_width).clamp(min=0) % block_len
    positions = torch.where(idx < q_width, (idx - pad).clamp(min=0), query_len.unsqueeze(1) + within)
    same = (block.unsqueeze(0) == 0) | (block.unsqueeze(0) == block.unsqueeze(1))
    allowed = real.unsqueeze(1) & same.unsqueeze(0) & torch.ones(S, S, dtype=torch.bool, device=device).tril()
    return positions, allowed | torch.eye(S, dtype=torch.bool, device=device)


class LookaheadCLM(nn.Module):
    """Engine contract: ``model(batch) -> {"logits": [B, T], "loss": L_route + λ·L_rec}``.

    ``batch``: ``query`` [B, Sq, d] (the trunk's input states of the left-padded prompt) and
    ``query_len`` [B]; for training ``labels`` [B, T] (0/1, NaN = missing), ``response_ids``
    [B, T, L] and ``response_len`` [B, T]."""

    def __init__(self, trunk: Trunk, n_candidates: int, rm_weight: float, hidden: int, dropout: float,
                 rec_tokens: int):
        super().__init__()
        self.trunk, self.T, self.rm_weight, self.rec_tokens = trunk, n_candidates, rm_weight, rec_tokens
        self.register_buffer("mid_ids", trunk.base_vocab + torch.arange(n_candidates), persistent=False)
        self.head = nn.Sequential(nn.Linear(trunk.width, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, 1))

    def forward(self, batch: dict) -> dict:
        query, qlen = batch["query"], batch["query_len"]
        B, q_width, device = qlen.shape[0], query.shape[1], qlen.device
        mids = self.mid_ids.view(1, self.T, 1).expand(B, -1, -1)
        targets = None
        if self.training and self.rm_weight > 0 and "response_ids" in batch:
            responses, lengths = batch["response_ids"], batch["response_len"]
            inside = torch.arange(responses.shape[2], device=device) < lengths.unsqueeze(-1)
            blocks = torch.cat([mids, torch.where(inside, responses, self.trunk.pad_id)], 2)   # MID_t ‖ y_t[:L]
            # the state at slot j predicts the block's token j + 1; the last slot predicts nothing
            targets = torch.cat([torch.where(inside, responses, IGNORE),
                                 torch.full_like(mids, IGNORE)], 2)
        else:
            blocks = mids                                                                  # MID_t only
        block_len = blocks.shape[2]
        positions, allowed = clm_layout(qlen, q_width, self.T, block_len)
        prompt = self.trunk.prompt_states(query, positions[:, :q_width])
        inputs = torch.cat([prompt, self.trunk.embed(blocks.flatten(1), positions[:, q_width:]).to(prompt.dtype)], 1)
        slots = torch.arange(q_width, inputs.shape[1], device=device).expand(B, -1)
        states = self.trunk(inputs, allowed, positions, slots).view(B, self.T, block_len, -1)
        logits = self.head(states[:, :, 0]).squeeze(-1)                                   # r̃_t = h(MID_t)
        return objective(logits, batch, self.trunk, states, targets, self.rm_weight, self.rec_tokens)
