"""Training labels (paper, Appendix C.1): scores min-max normalised within each dataset (source),
then binarised at a threshold (0.8 by default): label 1 means "this candidate answers well"."""

from __future__ import annotations

import numpy as np

from lookahead_router.data.dataset import RoutingDataset

DEFAULT_THRESHOLD = 0.8


def normalised_scores(ds: RoutingDataset) -> np.ndarray:
    """[n, T] scores scaled to [0, 1] within each source (over all its candidates and queries).

    NaN stays NaN; a source whose scores are all equal maps to 0 (no candidate stands out).
    """
    out = np.full(ds.scores.shape, np.nan)
    source = ds.queries["source"].to_numpy()
    for s in ds.sources:
        rows = source == s
        block = ds.scores[rows]
        if np.isnan(block).all():
            continue
        lo, hi = np.nanmin(block), np.nanmax(block)
        out[rows] = (block - lo) / (hi - lo) if hi > lo else np.where(np.isnan(block), np.nan, 0.0)
    return out


def binary_labels(ds: RoutingDataset, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """[n, T] float labels in {0, 1}; NaN where the candidate has no score (mask it out in losses)."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
    norm = normalised_scores(ds)
    return np.where(np.isnan(norm), np.nan, (norm >= threshold).astype(float))
