"""The routing loss every label-trained router shares: binary cross-entropy of each candidate's
logit against its 0/1 label, over the known labels (NaN = no response), optionally weighted per
row (``batch["weight"]``: ``balance="sources"`` makes each source count as in average μn,
``data/labels.source_weights``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def row_weights(batch: dict, like: torch.Tensor) -> torch.Tensor:
    """[B, 1] per-row weights (ones when the batch carries none)."""
    weight = batch.get("weight")
    if weight is None:
        return torch.ones(like.shape[0], 1, dtype=torch.float32, device=like.device)
    return weight.float().reshape(-1, 1)


def routing_bce(logits: torch.Tensor, batch: dict) -> torch.Tensor:
    labels = batch["labels"]
    known = ~torch.isnan(labels)
    weight = row_weights(batch, labels).expand_as(labels)[known]
    loss = F.binary_cross_entropy_with_logits(logits[known].float(), labels[known], reduction="none")
    return (loss * weight).sum() / weight.sum().clamp(min=1e-12)
