"""Similarity-based baselines of the paper (Appendix C.3/C.4): kNN, k-means and SMOOTHIE.

All three embed prompts with a frozen sentence encoder (L2-normalised, so cosine similarity is a
dot product) and route by looking at similar *training* queries; none trains a network. kNN and
k-means average the per-source normalised scores of those queries; SMOOTHIE (Guha et al., 2024)
ignores the scores and rates candidates by how close their responses sit to the others'.
"""

from __future__ import annotations

import warnings
from itertools import combinations
from pathlib import Path

import numpy as np

from lookahead_router.data.dataset import RoutingDataset
from lookahead_router.data.labels import normalised_scores
from lookahead_router.routers.base import Router
from lookahead_router.routers.config import EmbeddingConfig, KMeansConfig, KNNConfig, SmoothieConfig

CHUNK = 256           # test prompts scored at once (bounds the [chunk, N] similarity matrix)
KMEANS_N_INIT = 4     # k-means restarts; the best inertia wins
MIN_VARIANCE = 1e-6   # SMOOTHIE: floor on a candidate's estimated noise variance


def _nanmean(values: np.ndarray, axis: int) -> np.ndarray:
    """Mean ignoring NaN; 0 where every value is NaN (no evidence = no credit), without warnings."""
    present = ~np.isnan(values)
    total = np.where(present, values, 0.0).sum(axis=axis)
    count = present.sum(axis=axis)
    return np.where(count > 0, total / np.maximum(count, 1), 0.0)


def _neighbours(queries: np.ndarray, keys: np.ndarray, k: int) -> np.ndarray:
    """[n, N] 0/1 matrix selecting the ``k`` keys most cosine-similar to each query; averaging
    over neighbours is then one matrix product instead of an [n, k, ...] gather."""
    n, N = len(queries), keys.shape[0]
    if k >= N:
        return np.ones((n, N), dtype=np.float32)
    idx = np.argpartition(-(queries @ keys.T), k - 1, axis=1)[:, :k]
    sel = np.zeros((n, N), dtype=np.float32)
    sel[np.arange(n)[:, None], idx] = 1.0
    return sel


def _neighbour_mean(sel: np.ndarray, values: np.ndarray,
                    present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``values`` [N, ...] over the selected rows where ``present``: (mean, count)."""
    flat = values.reshape(len(values), -1)
    total = sel @ np.where(present.reshape(flat.shape), flat, 0.0).astype(np.float32)
    count = sel @ present.reshape(flat.shape).astype(np.float32)
    shape = (len(sel), *values.shape[1:])
    return (total / np.maximum(count, 1)).reshape(shape), count.reshape(shape)


class _EmbeddingRouter(Router):
    """Shared plumbing: a lazily built encoder (never saved: a loaded router re-creates it from
    its config)."""

    Config = EmbeddingConfig

    def embed(self, texts: list[str], desc: str = "embed", max_length: int | None = None) -> np.ndarray:
        c = self.config
        extractor = self._extractor(c.backbone, "encoder", max_length or c.max_length, progress=c.progress,
                                    batch_size=c.batch_size)
        return extractor(texts, desc=desc, normalize=True)

    def _chunks(self, prompts: list[str]):
        emb = self.embed(prompts, desc=f"{self.name}: prompts")
        for start in range(0, len(prompts), CHUNK):
            yield emb[start:start + CHUNK]


class KNNRouter(_EmbeddingRouter):
    """Score = mean normalised score of the ``k`` most similar training queries (k capped at N)."""

    name = "knn"
    Config = KNNConfig

    def _fit(self, ds: RoutingDataset, validation: RoutingDataset | None) -> None:
        self.embeddings = self.embed(ds.queries["prompt"].tolist(), desc="knn: train")
        self.scores = normalised_scores(ds).astype(np.float32)

    def _score(self, prompts: list[str]) -> np.ndarray:
        present = ~np.isnan(self.scores)
        out = []
        for q in self._chunks(prompts):
            mean, count = _neighbour_mean(_neighbours(q, self.embeddings, self.config.k),
                                          self.scores, present)
            out.append(np.where(count > 0, mean, 0.0))  # no neighbour scored it: no credit
        return np.concatenate(out)

    def _state(self) -> dict[str, np.ndarray]:
        return {"embeddings": self.embeddings, "scores": self.scores}

    def _set_state(self, state: dict[str, np.ndarray], extra: dict, directory: Path) -> None:
        self.embeddings, self.scores = state["embeddings"], state["scores"]


class KMeansRouter(_EmbeddingRouter):
    """Cluster the training queries; score = the nearest centroid's mean normalised scores
    (hard assignment: the paper routes to the LLM that does best on the nearest cluster)."""

    name = "kmeans"
    Config = KMeansConfig
    seeded = True

    def _fit(self, ds: RoutingDataset, validation: RoutingDataset | None) -> None:
        from sklearn.cluster import KMeans
        from sklearn.exceptions import ConvergenceWarning

        emb = self.embed(ds.queries["prompt"].tolist(), desc="kmeans: train")
        norm = normalised_scores(ds)
        with warnings.catch_warnings():  # fewer distinct prompts than k: some clusters coincide
            warnings.simplefilter("ignore", ConvergenceWarning)
            km = KMeans(n_clusters=min(self.config.k, len(emb)), random_state=self.config.seed,
                        n_init=KMEANS_N_INIT).fit(emb)
        # Clusters left without members (duplicate points) would route with an all-zero row.
        used = np.unique(km.labels_)
        self.centroids = km.cluster_centers_[used].astype(np.float32)
        self.table = np.stack([_nanmean(norm[km.labels_ == c], axis=0) for c in used]).astype(np.float32)

    def _score(self, prompts: list[str]) -> np.ndarray:
        # Centroids are not unit vectors, so nearest = smallest Euclidean distance, not largest dot.
        sq = (self.centroids ** 2).sum(axis=1)
        return np.concatenate([self.table[np.argmin(sq[None] - 2 * q @ self.centroids.T, axis=1)]
                               for q in self._chunks(prompts)])

    def _state(self) -> dict[str, np.ndarray]:
        return {"centroids": self.centroids, "table": self.table}

    def _set_state(self, state: dict[str, np.ndarray], extra: dict, directory: Path) -> None:
        self.centroids, self.table = state["centroids"], state["table"]


# ---- SMOOTHIE --------------------------------------------------------------------------------
def pair_distances(resp_emb: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per query, squared distances between candidates' responses: ([..., T, T], pair mask)."""
    sq = (resp_emb ** 2).sum(axis=-1)
    dot = np.einsum("...ad,...bd->...ab", resp_emb, resp_emb)
    dist = sq[..., :, None] + sq[..., None, :] - 2 * dot
    both = mask[..., :, None] & mask[..., None, :]
    return np.where(both, np.maximum(dist, 0.0), 0.0).astype(resp_emb.dtype), both


def triplet_weights(delta: np.ndarray) -> np.ndarray:
    """[..., T, T] mean squared response distances (NaN = never observed together) -> [..., T]
    normalised quality weights θ_t / Σθ, θ_t = 1 / σ_t².

    Under λ_t = y + ε_t, ε_t ~ N(0, σ_t² I), E||λ_a − λ_b||² ∝ σ_a² + σ_b², so each pair (j, k)
    of other candidates gives σ_t² ∝ (δ_tj + δ_tk − δ_jk) / 2; we average over all such pairs.
    With T == 2 there is no third candidate: δ_12 is split equally, so both get the same weight.
    A candidate with no estimate gets weight 0; if none has one, the weights are uniform.
    """
    T = delta.shape[-1]
    if T == 2:
        var = np.repeat(delta[..., 0, 1, None] / 2, 2, axis=-1)
    else:
        var = np.stack([_nanmean_or_nan(np.stack(
            [(delta[..., t, j] + delta[..., t, k] - delta[..., j, k]) / 2
             for j, k in combinations([c for c in range(T) if c != t], 2)], axis=-1))
            for t in range(T)], axis=-1)
    theta = np.where(np.isnan(var), 0.0, 1.0 / np.maximum(np.nan_to_num(var, nan=1.0), MIN_VARIANCE))
    total = theta.sum(axis=-1, keepdims=True)
    return np.where(total > 0, theta / np.where(total > 0, total, 1.0), 1.0 / T)


def _nanmean_or_nan(values: np.ndarray) -> np.ndarray:
    """Mean over the last axis ignoring NaN; NaN where nothing is left (no estimate at all)."""
    count = (~np.isnan(values)).sum(axis=-1)
    return np.where(count > 0, _nanmean(values, axis=-1), np.nan)


def smoothie_weights(resp_emb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """SMOOTHIE's label-free quality weights [T] from response embeddings [n0, T, d] of ``n0``
    queries (``mask`` [n0, T]: the response exists); noisier candidates get lower weight."""
    dist, both = pair_distances(np.asarray(resp_emb, dtype=np.float64), np.asarray(mask, dtype=bool))
    count = both.sum(axis=0)
    return triplet_weights(np.where(count > 0, dist.sum(axis=0) / np.maximum(count, 1), np.nan))


class SmoothieRouter(_EmbeddingRouter):
    """SMOOTHIE (Guha et al., NeurIPS 2024) routing without labels: for a prompt, estimate each
    candidate's response noise σ_t² on its ``n0`` nearest training queries with the triplet
    method (see ``triplet_weights``) and score θ_t / Σθ. Training scores are never used."""

    name = "smoothie"
    Config = SmoothieConfig

    def __init__(self, config=None, /, **options):
        super().__init__(config, **options)
        self._pairs: tuple[np.ndarray, np.ndarray] | None = None

    def _fit(self, ds: RoutingDataset, validation: RoutingDataset | None) -> None:
        self.embeddings = self.embed(ds.queries["prompt"].tolist(), desc="smoothie: train")
        self.mask = np.array([[isinstance(r, str) for r in row] for row in ds.responses], dtype=bool)
        texts = [r for row in ds.responses for r in row if isinstance(r, str)]
        resp = np.zeros((*self.mask.shape, self.embeddings.shape[1]), dtype=np.float32)
        if texts:
            resp[self.mask] = self.embed(texts, desc="smoothie: responses",
                                         max_length=self.config.response_max_length)
        self.responses, self._pairs = resp, None

    def _score(self, prompts: list[str]) -> np.ndarray:
        if self._pairs is None:  # per training query, once: [N, T, T] distances and pair mask
            self._pairs = pair_distances(self.responses, self.mask)
        dist, both = self._pairs
        out = []
        for q in self._chunks(prompts):
            sel = _neighbours(q, self.embeddings, self.config.n0)
            mean, count = _neighbour_mean(sel, dist, both)         # δ_ab over the n0 neighbours
            out.append(triplet_weights(np.where(count > 0, mean, np.nan)))
        return np.concatenate(out)

    def _state(self) -> dict[str, np.ndarray]:
        return {"embeddings": self.embeddings, "responses": self.responses,
                "mask": self.mask.astype(np.uint8)}

    def _set_state(self, state: dict[str, np.ndarray], extra: dict, directory: Path) -> None:
        self.embeddings, self.responses = state["embeddings"], state["responses"]
        self.mask, self._pairs = state["mask"].astype(bool), None
