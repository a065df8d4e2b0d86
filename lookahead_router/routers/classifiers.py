"""Query-only classifier baselines (paper, Appendix C.3): MLC, ZOOTER and RouterDC.

Each reads the prompt with a backbone -- an encoder ("-mlm" names; MiniLM offline) or a causal
LM ("-clm" names; SmolLM2 offline) -- pools it to one vector and scores the T candidates:

  * MLC       multi-label classifier: T logits, binary cross-entropy against the 0/1 labels
              (Appendix C.1: normalised score >= threshold).
  * ZOOTER    T logits, KL divergence from softmax(normalised scores / temperature) to the
              predicted softmax (Lu et al., reward distillation).
  * RouterDC  query embedding vs one learnable embedding per candidate, cosine / temperature;
              dual contrastive loss (Chen et al.): sample-LLM (top-k candidates pulled close,
              bottom-k pushed away) + sample-sample (queries of the same k-means cluster close).

``finetune=True`` trains the whole backbone (the paper; the ``gpu`` preset). ``finetune=False``
freezes it: pooled features are computed once and cached on disk, and only the head trains
(the ``cpu`` preset, where fine-tuning would not fit in the time budget).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lookahead_router.data.dataset import RoutingDataset
from lookahead_router.data.labels import binary_labels, normalised_scores
from lookahead_router.data.splits import validation_split
from lookahead_router.routers.backbones import (CAUSAL, ENCODER, effective_max_length, load_backbone,
                                                pooled_hidden)
from lookahead_router.routers.base import Router, RouterError, register
from lookahead_router.routers.features import FeatureExtractor
from lookahead_router.training.engine import config_from, train

DEFAULTS = dict(backbone=None, finetune=False, max_length=256, hidden=256, dropout=0.1,
                threshold=0.8, val_fraction=0.1, lr=5e-5, batch_size=64, epochs=2.0, grad_accum=1,
                eval_every=100, seed=0, output_dir=None, resume=False, progress=True)
LOSS_DEFAULTS = {"mlc": {}, "zooter": {"kl_temperature": 1.0},
                 # RouterDC's published settings: top-3 / last-3 (of 11 candidates; capped at
                 # floor(T/2) here), temperature 1, sample-sample weight 1.
                 "routerdc": {"top_k": 3, "last_k": 3, "dc_temperature": 1.0, "cluster_weight": 1.0,
                              "clusters": 5}}


class ScoringModel(nn.Module):
    """(frozen features | backbone-pooled prompt) -> head -> T logits, with the family's loss."""

    def __init__(self, family: str, dim: int, n_candidates: int, opts: dict, backbone=None):
        super().__init__()
        self.family, self.opts = family, opts
        self.backbone = backbone.model if backbone is not None else None
        self._bb = backbone
        out = opts["hidden"] if family == "routerdc" else n_candidates
        self.head = nn.Sequential(nn.Linear(dim, opts["hidden"]), nn.GELU(), nn.Dropout(opts["dropout"]),
                                  nn.Linear(opts["hidden"], out))
        if family == "routerdc":
            self.candidate_embeddings = nn.Parameter(torch.randn(n_candidates, opts["hidden"]) * 0.02)

    def embed(self, batch) -> torch.Tensor:
        if self.backbone is None:
            return batch["features"]
        return pooled_hidden(self._bb, batch["input_ids"], batch["attention_mask"]).float()

    def forward(self, batch) -> dict:
        h = self.head(self.embed(batch))
        if self.family == "routerdc":
            z = F.normalize(h, dim=-1)
            logits = z @ F.normalize(self.candidate_embeddings, dim=-1).T / self.opts["dc_temperature"]
        else:
            z, logits = None, h
        out = {"logits": logits}
        if "labels" in batch:
            out["loss"] = LOSSES[self.family](logits, batch, self.opts, z)
        return out

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits) if self.family == "mlc" else torch.softmax(logits, dim=-1)


def mlc_loss(logits, batch, opts, _z):
    labels = batch["labels"]
    mask = ~torch.isnan(labels)
    return F.binary_cross_entropy_with_logits(logits[mask], labels[mask])


def zooter_loss(logits, batch, opts, _z):
    utility = batch["utility"]
    missing = torch.isnan(utility)
    target = torch.softmax((utility / opts["kl_temperature"]).masked_fill(missing, -torch.inf), dim=-1)
    log_pred = torch.log_softmax(logits.masked_fill(missing, -1e4), dim=-1)
    return F.kl_div(log_pred, target, reduction="batchmean")


def routerdc_loss(logits, batch, opts, z):
    utility = batch["utility"]
    T = utility.shape[1]
    k_top, k_last = min(opts["top_k"], T // 2), min(opts["last_k"], T // 2)
    # Ties are broken at random, so a candidate tied with the worst is a negative some of the time
    # (a fixed order would never push it away and it could win on every query).
    jitter = 1e-4 * torch.rand_like(utility)
    ranked = (torch.nan_to_num(utility, nan=-1.0) + jitter).argsort(dim=1, descending=True)
    informative = torch.nan_to_num(utility, nan=-1.0).amax(1) > torch.nan_to_num(utility, nan=2.0).amin(1)
    neg = logits.gather(1, ranked[:, T - k_last:])                       # [B, k_last]
    pos = logits.gather(1, ranked[:, :k_top])                            # [B, k_top]
    # -log(e^pos / (e^pos + sum e^neg)) for each positive: a query with equal scores teaches nothing
    denom = torch.logsumexp(torch.cat([pos.unsqueeze(2), neg.unsqueeze(1).expand(-1, k_top, -1)], 2), 2)
    sample_llm = ((denom - pos).mean(1) * informative).sum() / informative.sum().clamp(min=1)
    # sample-sample: for each query, one same-cluster query of the batch is the positive
    cluster = batch["cluster"]
    eye = torch.eye(len(cluster), dtype=torch.bool, device=z.device)
    same = (cluster[:, None] == cluster[None, :]) & ~eye
    has_pos = same.any(1)
    if not has_pos.any() or opts["cluster_weight"] == 0:
        return sample_llm
    sim = (z @ z.T / opts["dc_temperature"]).masked_fill(eye, -torch.inf)
    positive = torch.where(same, torch.rand_like(sim), -1.0).argmax(1)
    allowed = ~same & ~eye                                   # other clusters are the negatives
    allowed[torch.arange(len(cluster)), positive] = True
    log_p = sim.masked_fill(~allowed, -torch.inf).log_softmax(1)
    sample_sample = -log_p[torch.arange(len(cluster)), positive][has_pos].mean()
    return sample_llm + opts["cluster_weight"] * sample_sample


LOSSES = {"mlc": mlc_loss, "zooter": zooter_loss, "routerdc": routerdc_loss}


class RowDataset(torch.utils.data.Dataset):
    def __init__(self, columns: dict[str, np.ndarray | list]):
        self.columns = columns
        self.n = len(next(iter(columns.values())))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.columns.items()}


class ClassifierRouter(Router):
    """MLC / ZOOTER / RouterDC over an encoder (``kind="encoder"``) or causal-LM backbone."""

    def __init__(self, family: str, kind: str, **options):
        if family not in LOSSES:
            raise RouterError(f"unknown classifier family {family!r}")
        unknown = set(options) - set(DEFAULTS) - set(LOSS_DEFAULTS[family])
        if unknown:
            raise RouterError(f"{family}: unknown option(s) {sorted(unknown)}; known: "
                              f"{sorted(set(DEFAULTS) | set(LOSS_DEFAULTS[family]))}")
        super().__init__(**options)
        self.family, self.kind = family, kind
        self.name = f"{family}-{'mlm' if kind == ENCODER else 'clm'}"
        self.opts = {**DEFAULTS, **LOSS_DEFAULTS[family], **options}
        self.model: ScoringModel | None = None
        self._extractor: FeatureExtractor | None = None
        self.train_result = None

    def summary(self) -> str:
        what = {"mlc": "multi-label classifier (BCE on 0/1 labels)",
                "zooter": "ZOOTER (KL to the softmax of normalised scores)",
                "routerdc": "RouterDC (dual contrastive: sample-LLM + sample-sample)"}[self.family]
        return f"{what}, {self.kind} backbone ({self.extractor.spec})"

    # ---- inputs --------------------------------------------------------------------------
    @property
    def extractor(self) -> FeatureExtractor:
        if self._extractor is None:
            self._extractor = FeatureExtractor(self.opts["backbone"], self.kind, self.opts["max_length"],
                                               progress=self.opts["progress"])
        return self._extractor

    def _inputs(self, prompts: list[str]) -> dict:
        if not self.opts["finetune"]:
            return {"features": torch.from_numpy(self.extractor(prompts, desc=f"{self.name} features"))}
        return {"prompt": prompts}

    def _collate(self, rows: list[dict]) -> dict:
        batch = {}
        for key in rows[0]:
            values = [r[key] for r in rows]
            if key == "prompt":
                bb = self.model._bb
                enc = bb.tokenizer(values, padding=True, truncation=True, return_tensors="pt",
                                   max_length=effective_max_length(bb, self.opts["max_length"]))
                batch.update(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
            else:
                batch[key] = torch.as_tensor(np.stack(values)) if not torch.is_tensor(values[0]) \
                    else torch.stack(values)
        return batch

    def _columns(self, ds: RoutingDataset, clusters: np.ndarray | None) -> dict:
        prompts = ds.queries["prompt"].tolist()
        cols = {"labels": binary_labels(ds, self.opts["threshold"]).astype(np.float32),
                "utility": normalised_scores(ds).astype(np.float32)}
        if self.opts["finetune"]:
            cols["prompt"] = prompts
        else:
            cols["features"] = self.extractor(prompts, desc=f"{self.name} features")
        if clusters is not None:
            cols["cluster"] = clusters
        return cols

    # ---- contract ------------------------------------------------------------------------
    def _build(self, feature_dim: int | None = None) -> None:
        """The scoring model: over the backbone (finetune) or over ``feature_dim``-wide cached
        features (frozen; the backbone itself is then never loaded once features are cached)."""
        if self.opts["finetune"]:
            bb = load_backbone(self.opts["backbone"], self.kind)
            self.model = ScoringModel(self.family, bb.hidden_size, len(self.candidates), self.opts, bb)
        else:
            self.model = ScoringModel(self.family, feature_dim, len(self.candidates), self.opts)

    def _fit(self, ds: RoutingDataset, validation: RoutingDataset | None) -> None:
        if validation is None:
            ds, validation = validation_split(ds, self.opts["val_fraction"], self.opts["seed"])
        validation = validation.select_candidates(self.candidates)
        clusters = (None, None)
        if self.family == "routerdc":
            from sklearn.cluster import KMeans
            feats = self.extractor(ds.queries["prompt"].tolist() + validation.queries["prompt"].tolist(),
                                   desc=f"{self.name} clusters")
            km = KMeans(n_clusters=min(self.opts["clusters"], len(feats)), random_state=self.opts["seed"],
                        n_init=3).fit(feats)
            clusters = (km.labels_[:len(ds)], km.labels_[len(ds):])
        train_cols, val_cols = self._columns(ds, clusters[0]), self._columns(validation, clusters[1])
        torch.manual_seed(self.opts["seed"])
        self._build(None if self.opts["finetune"] else train_cols["features"].shape[1])
        self.train_result = train(self.model, RowDataset(train_cols), RowDataset(val_cols), self._collate,
                                  config_from(self.opts))
        self.model.eval()

    @torch.no_grad()
    def _score(self, prompts: list[str]) -> np.ndarray:
        if self.model is None:
            raise RouterError(f"{self.name} router has no model")
        self.model.eval()
        inputs = self._inputs(prompts)
        out = []
        step = self.opts["batch_size"]
        for start in range(0, len(prompts), step):
            rows = [{k: v[i] for k, v in inputs.items()} for i in range(start, min(start + step, len(prompts)))]
            logits = self.model(self._collate(rows))["logits"].float()
            out.append(self.model.probabilities(logits).numpy())
        return np.concatenate(out)

    # ---- persistence: every trained weight goes to safetensors ----------------------------
    def _state(self) -> dict[str, np.ndarray]:
        return {k: v.detach().float().cpu().numpy() for k, v in self.model.state_dict().items()
                if not k.startswith("_bb")}

    def _extra(self) -> dict:
        extra = {"kind": self.kind}
        if self.train_result is not None:
            extra["training"] = self.train_result.to_json()
        return extra

    def _set_state(self, state: dict, extra: dict, directory: Path) -> None:
        self._build(None if self.opts["finetune"] else state["head.0.weight"].shape[1])
        missing, unexpected = self.model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()},
                                                         strict=False)
        if unexpected or [k for k in missing if not k.startswith("backbone.")] or \
                (self.opts["finetune"] and missing):
            raise RouterError(f"{directory}: saved weights do not match the {self.name} model "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        self.model.eval()


for _family in LOSSES:
    for _suffix, _kind in (("mlm", ENCODER), ("clm", CAUSAL)):
        register(f"{_family}-{_suffix}",
                 lambda _f=_family, _k=_kind, **options: ClassifierRouter(_f, _k, **options))
