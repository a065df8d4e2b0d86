"""Evaluation protocols: which queries train a router and which test it.

  * ``cvK``   -- seeded K-fold cross-validation over the test benchmarks, stratified by benchmark
                 (``cv5``, ``cv10``; ``cv`` with ``k``); the out-of-fold decisions cover every
                 benchmark query exactly once.
  * ``lobo``  -- leave one benchmark out: train on the other benchmarks, test on it.
  * ``split`` -- an explicit split: test on the rows whose ``split`` is "test", train on the rest.
With ``add_train=True`` the training-only rows (split "train"/"validation", e.g. SelfOSS) join
every training fold. A fold is a pair of integer row arrays (train, test) into the dataset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lookahead_router.data.dataset import RoutingDataset
from lookahead_router.errors import LookaheadError

PROTOCOLS = ("cv", "lobo", "split")   # kinds; a protocol's name is cvK, lobo or split
PROTOCOL_HELP = "cv5 (5-fold, stratified by benchmark; any cvK: K folds), lobo (leave one benchmark out) or split"


@dataclass(frozen=True)
class Fold:
    name: str
    train: np.ndarray
    test: np.ndarray


class ProtocolError(LookaheadError):
    """A protocol cannot be applied to this dataset."""


def _test_rows(ds: RoutingDataset) -> np.ndarray:
    return np.flatnonzero(ds.queries["split"].to_numpy() == "test")


def _extra_rows(ds: RoutingDataset) -> np.ndarray:
    return np.flatnonzero(ds.queries["split"].to_numpy() != "test")


@dataclass(frozen=True)
class Protocol:
    kind: str     # cv, lobo or split
    k: int = 0    # folds, for cv

    @property
    def name(self) -> str:
        """The canonical spelling (cv5, lobo, split): what runs record and compare."""
        return f"cv{self.k}" if self.kind == "cv" else self.kind


def parse_protocol(text: str, k: int | None = None) -> Protocol:
    """The one reader of protocol names, for every command: ``cvK`` (``cv5``, ``cv10``), ``lobo``
    or ``split``; ``cv`` alone takes ``k`` (default 5), which a ``cvK`` must not contradict."""
    name = str(text).strip().lower()
    if name in ("lobo", "split"):
        return Protocol(name)
    if name.startswith("cv") and (name == "cv" or name[2:].isdigit()):
        folds = int(name[2:]) if name != "cv" else (5 if k is None else k)
        if k is not None and folds != k:
            raise ProtocolError(f"protocol {text} means {folds} folds, but k={k} was given")
        if folds < 2:
            raise ProtocolError(f"k-fold needs k >= 2, got {text}" + (f" with k={k}" if name == "cv" else ""))
        return Protocol("cv", folds)
    raise ProtocolError(f"{text}: no such protocol; protocols: {PROTOCOL_HELP}")


def make_folds(ds: RoutingDataset, protocol: str | Protocol = "cv", k: int = 5, seed: int = 0,
               add_train: bool = False) -> list[Fold]:
    """The folds of ``protocol`` (a Protocol or a name: cv5, cv10, lobo, split; ``cv`` with ``k``)."""
    if not isinstance(protocol, Protocol):
        protocol = parse_protocol(protocol, k if str(protocol).strip().lower() == "cv" else None)
    protocol, k = protocol.kind, protocol.k
    test_rows, extra = _test_rows(ds), _extra_rows(ds)
    if protocol == "split":
        if not len(test_rows) or not len(extra):
            raise ProtocolError("the split protocol needs rows with split 'test' and rows without")
        return [Fold("split", extra, test_rows)]
    if not len(test_rows):
        raise ProtocolError("no rows with split 'test' to cross-validate over")
    source = ds.queries["source"].to_numpy()[test_rows]
    folds = []
    if protocol == "lobo":
        benchmarks = list(dict.fromkeys(source))
        if len(benchmarks) < 2:
            raise ProtocolError("leave-one-benchmark-out needs at least two test benchmarks")
        for b in benchmarks:
            folds.append(Fold(b, test_rows[source != b], test_rows[source == b]))
    else:
        if k < 2:
            raise ProtocolError(f"k-fold needs k >= 2, got {k}")
        smallest = min(np.unique(source, return_counts=True)[1])
        if smallest < k:
            raise ProtocolError(f"a benchmark has only {smallest} queries, fewer than k={k} folds")
        from sklearn.model_selection import StratifiedKFold   # here: the CLI imports this module to start
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        for i, (tr, te) in enumerate(splitter.split(test_rows, source)):
            folds.append(Fold(f"fold{i}", test_rows[tr], test_rows[te]))
    if add_train:
        folds = [Fold(f.name, np.concatenate([f.train, extra]), f.test) for f in folds]
    return folds


def validation_split(ds: RoutingDataset, fraction: float = 0.1, seed: int = 0
                     ) -> tuple[RoutingDataset, RoutingDataset]:
    """Carve a validation set out of a training fold, stratified by source (every source with at
    least two rows gives at least one). The test fold never enters: checkpoints are chosen here."""
    if not 0.0 < fraction < 1.0:
        raise ProtocolError(f"validation fraction must lie in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    source = ds.queries["source"].to_numpy()
    val = []
    for s in dict.fromkeys(source):
        rows = rng.permutation(np.flatnonzero(source == s))
        if len(rows) >= 2:
            val.extend(rows[:max(1, round(fraction * len(rows)))])
    if not val:
        raise ProtocolError(f"{len(ds)} training rows are too few to carve a validation split")
    val = np.sort(np.array(val))
    return ds.subset(np.setdiff1d(np.arange(len(ds)), val)), ds.subset(val)
