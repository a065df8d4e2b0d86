"""Response-aware reference routers (the paper's Figure 1 left, Appendix C.2): they read every
candidate's *actual* response at test time, prompt ‖ response_t -> score. They bound what
response modelling can gain from the responses a router is trained on; they are measuring sticks,
never deployable routers (a deployed router does not have the responses: ``score(prompts)``
refuses, and only ``score_rows(dataset)`` works).

  ceiling-first-m  Lookahead-MLM's own architecture, trainable part and budget, with each block
                   holding the first m tokens of candidate t's real response instead of MID_t
                   (no reconstruction): what the m-token horizon can carry at best.
  ceiling-full     the frozen encoder's embedding of each whole response (up to
                   ``response_max_length`` tokens) beside the prompt's, scored per candidate by an
                   MLP (BCE on the same labels): longer responses than any block can hold.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lookahead_router.data.dataset import RoutingDataset
from lookahead_router.routers.backbones import ENCODER, backbone_config
from lookahead_router.routers.base import RouterError
from lookahead_router.routers.config import FullResponseConfig
from lookahead_router.routers.losses import routing_bce
from lookahead_router.routers.lookahead import LookaheadMLMRouter
from lookahead_router.routers.lookahead_mlm import LookaheadMLM
from lookahead_router.routers.neural import NeuralRouter


class ResponseAware:
    """Scoring for the references: dataset rows (prompts and responses), never bare prompts."""

    deployable = False

    def _score(self, prompts):
        raise RouterError(f"{self.name} is a response-aware reference: it reads each candidate's actual "
                          "response, so it scores dataset rows (score_rows), not bare prompts")

    @torch.no_grad()
    def score_rows(self, ds: RoutingDataset) -> np.ndarray:
        if self.model is None:
            raise RouterError(f"{self.name} router is not fitted")
        ds = ds.select_candidates(self.candidates)
        return self._score_columns({"query": self._queries(ds.queries["prompt"].tolist()),
                                    **self._extra_columns(ds)})


class FirstTokensCeiling(ResponseAware, LookaheadMLMRouter):
    """Response-aware reference: Lookahead-MLM's architecture with the real first m response
    tokens in the blocks (not deployable)."""

    name = "ceiling-first-m"

    def summary(self) -> str:
        return (f"response-aware reference: Lookahead-MLM's architecture reading each candidate's real "
                f"first m={self.config.m} response tokens (not deployable)")

    def _build(self) -> nn.Module:
        c, T = self.config, len(self.candidates)
        return LookaheadMLM(self._trunk(n_extra=T), T, self.plan["m"], 0.0, c.alpha, c.masking, c.joint,
                            c.hidden, c.dropout, 0, show_responses=True)


class EmbeddingCeilingModel(nn.Module):
    """[prompt embedding ‖ response_t embedding ‖ their product ‖ candidate t's embedding] -> MLP -> logit t."""

    def __init__(self, dim: int, n_candidates: int, hidden: int, dropout: float):
        super().__init__()
        self.candidates = nn.Parameter(torch.randn(n_candidates, 32) * 0.02)
        # The embeddings are unit-norm (components ~ 1/sqrt(d)): unscaled, the MLP's first layer
        # starts near-constant and under-fits (tests/test_lookahead.py, ..._unit_norm_embeddings).
        # LayerNorm puts them at unit scale.
        self.norm = nn.LayerNorm(3 * dim)
        self.mlp = nn.Sequential(nn.Linear(3 * dim + 32, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, 1))

    def forward(self, batch) -> dict:
        prompt, responses = batch["query"], batch["response_emb"]            # [B, d], [B, T, d]
        prompt = prompt.unsqueeze(1).expand_as(responses)
        cand = self.candidates.unsqueeze(0).expand(len(prompt), -1, -1)
        features = self.norm(torch.cat([prompt, responses, prompt * responses], -1))
        logits = self.mlp(torch.cat([features, cand], -1)).squeeze(-1)
        out = {"logits": logits}
        if "labels" in batch:
            out["loss"] = routing_bce(logits, batch)
        return out


class FullResponseCeiling(ResponseAware, NeuralRouter):
    """Response-aware reference: frozen embeddings of prompt and whole response, MLP per
    candidate (not deployable)."""

    name = "ceiling-full"
    Config = FullResponseConfig

    @property
    def response_max_length(self) -> int:
        return self.config.response_max_length

    def summary(self) -> str:
        return (f"response-aware reference: frozen {self.backbone} embeddings of the prompt and each whole "
                f"response (up to {self.response_max_length} tokens), MLP per candidate (not deployable)")

    def _embed(self, texts: list[str], length: int, desc: str) -> np.ndarray:
        # the same cache as the similarity routers' (SMOOTHIE embeds the same responses)
        return self._extractor(self.backbone, ENCODER, length, progress=self.config.train.progress)(
            texts, desc=desc, normalize=True)

    def _queries(self, prompts: list[str]) -> list[np.ndarray]:
        return list(self._embed(prompts, self.plan["query_length"], f"{self.name} prompts"))

    def _extra_columns(self, ds: RoutingDataset) -> dict:
        present = np.array([[isinstance(r, str) for r in row] for row in ds.responses], dtype=bool)
        texts = [r for row in ds.responses for r in row if isinstance(r, str)]
        emb = self._embed(texts, self.response_max_length, f"{self.name} responses")
        out = np.zeros((*present.shape, emb.shape[1]), np.float32)
        out[present] = emb
        return {"response_emb": out}

    def _collate(self, rows: list[dict]) -> dict:
        return {k: torch.from_numpy(np.stack([np.asarray(r[k]) for r in rows])) for k in rows[0]}

    def _build(self) -> nn.Module:
        dim = backbone_config(self.backbone, ENCODER).hidden_size
        return EmbeddingCeilingModel(dim, len(self.candidates), self.config.hidden, self.config.dropout)
