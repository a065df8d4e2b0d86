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
from lookahead_router.errors import LookaheadError

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
        raise LookaheadError(f"threshold must lie in [0, 1], got {threshold}")
    if rule not in LABEL_RULES:
        raise LookaheadError(f"labels must be one of {LABEL_RULES}, got {rule!r}")
    norm = normalised_scores(ds)
    if rule == "relative":
        present = ~np.isnan(norm).all(axis=1, keepdims=True)
        best = np.nanmax(np.where(present, norm, 0.0), axis=1, keepdims=True)
        bar = threshold * best
    else:
        bar = threshold
    with np.errstate(invalid="ignore"):
        return np.where(np.isnan(norm), np.nan, (norm >= bar).astype(float))


def reported_sources(ds: RoutingDataset) -> list[str]:
    """The sources average μn is reported over: those with test rows (the benchmarks), or every
    source when none has (a user's own data)."""
    split = ds.queries["split"].to_numpy() if "split" in ds.queries.columns else None
    counted = [] if split is None else sorted(set(ds.queries["source"].to_numpy()[split == "test"]))
    return counted or list(ds.sources)


def source_weights(ds: RoutingDataset, counted: list[str] | None = None) -> np.ndarray:
    """[n] row weights under which each source counts as it does in average μn.

    On source s, μn_s = Σ_{i∈s} (chosen_i − random_i) / (n_s · gap_s), with random_i the mean and
    gap_s the mean of (best − mean) normalised score over the source's rows. The average over the
    S ``counted`` sources (default: ``reported_sources``) is then Σ_i w_i (chosen_i − random_i)
    with w_i = 1 / (S · n_s · gap_s): a source's weights sum to 1 / (S · gap_s), so a prompt of a
    small benchmark or of one whose candidates differ little weighs more. Rows of other sources,
    and of a source whose candidates all tie (gap 0), get 0.
    """
    counted = reported_sources(ds) if counted is None else counted
    norm = normalised_scores(ds)
    source = ds.queries["source"].to_numpy()
    with np.errstate(all="ignore"):
        gain = np.nanmax(norm, axis=1) - np.nanmean(norm, axis=1)
    weights = np.zeros(len(ds))
    for s in counted:
        rows = (source == s) & ~np.isnan(gain)
        gap = gain[rows].mean() if rows.any() else 0.0
        if gap > 0:
            weights[rows] = 1.0 / (len(counted) * rows.sum() * gap)
    return weights


def balanced_weights(ds: RoutingDataset) -> np.ndarray:
    """[n] training-row weights of ``balance="sources"``, mean 1: every source of the rows (a
    training-only one such as SelfOSS included) counts as a benchmark counts in average μn."""
    w = source_weights(ds, counted=list(ds.sources))
    return w * len(w) / max(w.sum(), 1e-12)


def metric_utility(ds: RoutingDataset, counted: list[str] | None = None) -> np.ndarray:
    """[n, T] per-row utilities whose mean over rows, for the chosen candidates, is the average
    μn (as a fraction) over the ``counted`` sources: (normalised − row mean) · w_i · n. A
    validation metric that weighs sources as the report does (NaN where no response)."""
    norm = normalised_scores(ds)
    with np.errstate(all="ignore"):
        random = np.nanmean(norm, axis=1, keepdims=True)
    return (norm - np.nan_to_num(random)) * source_weights(ds, counted)[:, None] * len(ds)


def average_mu_n(ds: RoutingDataset, scores: np.ndarray, counted: list[str] | None = None) -> float:
    """Average μn (%) over the ``counted`` sources of choosing argmax(``scores``) per row, on
    normalised scores (a missing response counts as the row's mean)."""
    chosen = metric_utility(ds, counted)[np.arange(len(ds)), np.asarray(scores).argmax(axis=1)]
    return float(np.nan_to_num(chosen).mean() * 100)
