"""Query-only classifier baselines (paper, Appendix C.3): MLC, ZOOTER and RouterDC.

Each reads the prompt with a backbone -- an encoder ("-mlm" names; MiniLM offline) or a causal
LM ("-clm" names; SmolLM2 offline) -- through the same ``Trunk`` as the Lookahead routers, takes
one prompt state (an encoder's [CLS], a causal LM's last token) and scores the T candidates:

  * MLC       multi-label classifier: T logits, binary cross-entropy against the 0/1 labels
              (Appendix C.1; the relative rule by default, see data/labels.py).
  * ZOOTER    T logits, KL divergence from softmax(normalised scores / temperature) to the
              predicted softmax (Lu et al., reward distillation).
  * RouterDC  query embedding vs one learnable embedding per candidate, cosine / temperature;
              dual contrastive loss (Chen et al.): sample-LLM (top-k candidates pulled close,
              bottom-k pushed away) + sample-sample (queries of the same k-means cluster close).

With ``finetune=False`` (the ``cpu`` preset) the backbone's top ``layers`` layers train over its
cached lower-layer states, exactly the trainable part the Lookahead routers get; with
``finetune=True`` the whole backbone trains (the paper; the ``gpu`` preset).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lookahead_router.data.dataset import RoutingDataset
from lookahead_router.routers.backbones import CAUSAL, ENCODER
from lookahead_router.routers.config import ClassifierConfig, RouterDCConfig, ZooterConfig
from lookahead_router.routers.losses import routing_bce, row_weights
from lookahead_router.routers.neural import NeuralRouter
from lookahead_router.routers.trunk import Trunk, prompt_layout



class ClassifierModel(nn.Module):
    """prompt -> trunk -> one prompt state -> head -> T logits, with the family's loss."""

    def __init__(self, family: str, trunk: Trunk, n_candidates: int, config: ClassifierConfig):
        super().__init__()
        self.family, self.trunk, self.config = family, trunk, config
        out = config.hidden if family == "routerdc" else n_candidates
        self.head = nn.Sequential(nn.Linear(trunk.width, config.hidden), nn.GELU(), nn.Dropout(config.dropout),
                                  nn.Linear(config.hidden, out))
        if family == "routerdc":
            self.candidate_embeddings = nn.Parameter(torch.randn(n_candidates, config.hidden) * 0.02)

    def embed(self, batch) -> torch.Tensor:
        """[B, d]: the final state of [CLS] (encoders) or of the last prompt token (causal LMs)."""
        query, qlen = batch["query"], batch["query_len"]
        q_width = query.shape[1]
        positions, allowed = prompt_layout(qlen, q_width, self.trunk.causal)
        inputs = self.trunk.prompt_states(query, positions)
        slot = torch.full_like(qlen, q_width - 1) if self.trunk.causal else q_width - qlen
        return self.trunk(inputs, allowed, positions, slot.unsqueeze(1))[:, 0]

    def forward(self, batch) -> dict:
        h = self.head(self.embed(batch))
        if self.family == "routerdc":
            z = F.normalize(h, dim=-1)
            logits = z @ F.normalize(self.candidate_embeddings, dim=-1).T / self.config.dc_temperature
        else:
            z, logits = None, h
        out = {"logits": logits}
        if "labels" in batch:
            out["loss"] = LOSSES[self.family](logits, batch, self.config, z)
        return out


def mlc_loss(logits, batch, config, _z):
    return routing_bce(logits, batch)


def zooter_loss(logits, batch, config, _z):
    utility = batch["utility"]
    missing = torch.isnan(utility)
    target = torch.softmax((utility / config.kl_temperature).masked_fill(missing, -torch.inf), dim=-1)
    log_pred = torch.log_softmax(logits.masked_fill(missing, -1e4), dim=-1)
    per_row = F.kl_div(log_pred, target, reduction="none").sum(1, keepdim=True)
    weight = row_weights(batch, utility)
    return (per_row * weight).sum() / weight.sum().clamp(min=1e-12)


def routerdc_loss(logits, batch, config, z):
    utility = batch["utility"]
    T = utility.shape[1]
    k_top, k_last = min(config.top_k, T // 2), min(config.last_k, T // 2)
    # Ties are broken at random, so a candidate tied with the worst is a negative some of the time
    # (a fixed order would never push it away and it could win on every query).
    jitter = 1e-4 * torch.rand_like(utility)
    ranked = (torch.nan_to_num(utility, nan=-1.0) + jitter).argsort(dim=1, descending=True)
    informative = torch.nan_to_num(utility, nan=-1.0).amax(1) > torch.nan_to_num(utility, nan=2.0).amin(1)
    neg = logits.gather(1, ranked[:, T - k_last:])                       # [B, k_last]
    pos = logits.gather(1, ranked[:, :k_top])                            # [B, k_top]
    # -log(e^pos / (e^pos + sum e^neg)) for each positive: a query with equal scores teaches nothing
    denom = torch.logsumexp(torch.cat([pos.unsqueeze(2), neg.unsqueeze(1).expand(-1, k_top, -1)], 2), 2)
    weight = row_weights(batch, utility).squeeze(1) * informative
    sample_llm = ((denom - pos).mean(1) * weight).sum() / weight.sum().clamp(min=1e-12)
    # sample-sample: for each query, one same-cluster query of the batch is the positive
    cluster = batch["cluster"]
    eye = torch.eye(len(cluster), dtype=torch.bool, device=z.device)
    same = (cluster[:, None] == cluster[None, :]) & ~eye
    has_pos = same.any(1)
    if not has_pos.any() or config.cluster_weight == 0:
        return sample_llm
    sim = (z @ z.T / config.dc_temperature).masked_fill(eye, -torch.inf)
    positive = torch.where(same, torch.rand_like(sim), -1.0).argmax(1)
    allowed = ~same & ~eye                                   # other clusters are the negatives
    allowed[torch.arange(len(cluster)), positive] = True
    log_p = sim.masked_fill(~allowed, -torch.inf).log_softmax(1)
    sample_sample = -log_p[torch.arange(len(cluster)), positive][has_pos].mean()
    return sample_llm + config.cluster_weight * sample_sample


LOSSES = {"mlc": mlc_loss, "zooter": zooter_loss, "routerdc": routerdc_loss}


class ClassifierRouter(NeuralRouter):
    """MLC / ZOOTER / RouterDC over an encoder or causal-LM backbone (``kind``)."""

    family: str = "mlc"
    Config = ClassifierConfig
    WHAT = {"mlc": "multi-label classifier (BCE on 0/1 labels)",
            "zooter": "ZOOTER (KL to the softmax of normalised scores)",
            "routerdc": "RouterDC (dual contrastive: sample-LLM + sample-sample)"}

    def summary(self) -> str:
        return f"{self.WHAT[self.family]}, {self.kind} backbone ({self.backbone})"

    def _extra_columns(self, ds: RoutingDataset) -> dict:
        if self.family != "routerdc":
            return {}
        return {"cluster": self._clusters.predict(self._cluster_features(ds))}

    def _cluster_features(self, ds: RoutingDataset) -> np.ndarray:
        # RouterDC clusters queries by their sentence embedding (the encoder's pooled final state)
        return self._extractor(None, ENCODER, 256)(ds.queries["prompt"].tolist(), desc=f"{self.name} clusters")

    def _fit(self, ds: RoutingDataset, validation: RoutingDataset | None) -> None:
        if self.family == "routerdc":
            from sklearn.cluster import KMeans
            feats = self._cluster_features(ds)
            self._clusters = KMeans(n_clusters=min(self.config.clusters, len(feats)),
                                    random_state=self.config.train.seed, n_init=3).fit(feats)
        super()._fit(ds, validation)

    def _build(self) -> nn.Module:
        return ClassifierModel(self.family, self._trunk(), len(self.candidates), self.config)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits) if self.family == "mlc" else torch.softmax(logits, dim=-1)


# The six baselines: three losses, each over an encoder (-mlm) or a causal LM (-clm).
class MLCEncoder(ClassifierRouter):
    """MLC: a multi-label classifier of the prompt, binary cross-entropy on the 0/1 labels."""
    name, family, kind = "mlc-mlm", "mlc", ENCODER


class MLCCausal(MLCEncoder):
    __doc__ = MLCEncoder.__doc__
    name, kind = "mlc-clm", CAUSAL


class ZooterEncoder(ClassifierRouter):
    """ZOOTER: distils the softmax of the candidates' normalised scores (KL divergence)."""
    name, family, kind, Config = "zooter-mlm", "zooter", ENCODER, ZooterConfig


class ZooterCausal(ZooterEncoder):
    __doc__ = ZooterEncoder.__doc__
    name, kind = "zooter-clm", CAUSAL


class RouterDCEncoder(ClassifierRouter):
    """RouterDC: query and candidate embeddings trained with a dual contrastive loss."""
    name, family, kind, Config = "routerdc-mlm", "routerdc", ENCODER, RouterDCConfig


class RouterDCCausal(RouterDCEncoder):
    __doc__ = RouterDCEncoder.__doc__
    name, kind = "routerdc-clm", CAUSAL
