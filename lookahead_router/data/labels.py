"""Training labels (paper, Appendix C.1): scores min-max normalised within each dataset (source),
then binarised: label 1 means "this candidate answers well".

Two rules turn normalised scores into labels:

  * ``relative`` (the default; the authors' code, ``src/trainers/utils.py``): a candidate is
    positive when its normalised score reaches ``threshold`` x the best candidate's score on the
    same prompt. The best candidate is always positive, and when every candidate ties, all are.
  * ``absolute`` (the paper's text): a candidate is positive when its normalised score reaches
    ``threshold``. A prompt no candidate answers well then has no positive at all.
"""

from __future__ import annotations

import numpy as np

from lookahead_router.data.dataset import RoutingDataset

DEFAULT_THRESHOLD = 0.8
LABEL_RULES = ("relative", "absolute")


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


def binary_labels(ds: RoutingDataset, threshold: float = DEFAULT_THRESHOLD, rule: str = "relative") -> np.ndarray:
    """[n, T] float labels in {0, 1} under ``rule``; NaN where the candidate has no score (mask
    it out in losses)."""
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
    if rule not in LABEL_RULES:
        raise ValueError(f"labels must be one of {LABEL_RULES}, got {rule!r}")
    norm = normalised_scores(ds)
    if rule == "relative":
        present = ~np.isnan(norm).all(axis=1, keepdims=True)
        best = np.nanmax(np.where(present, norm, 0.0), axis=1, keepdims=True)
        bar = threshold * best
    else:
        bar = threshold
    with np.errstate(invalid="ignore"):
        return np.where(np.isnan(norm), np.nan, (norm >= bar).astype(float))
