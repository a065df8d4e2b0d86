"""Two routers a user could deploy instead of a trained network, on the same frozen sentence
embeddings as kNN (all-MiniLM-L6-v2 offline), fitted with scikit-learn in seconds:

  * ``linear``  per-candidate ridge regression of the normalised scores on the prompt embedding;
                score = the predicted normalised score (clipped to [0, 1]), route = argmax.
  * ``domain``  the vLLM Semantic Router's method: a logistic-regression classifier predicts the
                prompt's domain (the training rows' ``source``, or any column of the dataset's
                queries named by ``domain_column``), and the prompt goes to the candidate with the
                best mean normalised score on that domain's training rows. A prediction less
                confident than ``min_confidence`` falls back to the best candidate over all rows.

Every router of the library is judged against both. Their penalty (ridge's ``alpha``, the
classifier's ``C``) and whether to weight training rows so that each source counts as in average
μn (``balance="sources"``, ``data/labels.source_weights``; ``"auto"`` tries both) are chosen from a
small grid by the reported metric (average μn) of out-of-fold predictions over the training rows
(``cv_folds``-fold cross-validation stratified by source: a single validation split holds a handful
of a small benchmark's prompts, too few to choose by), or on a given validation set; the router is
then refit on all training rows with the chosen pair.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lookahead_router.data.dataset import RoutingDataset
from lookahead_router.data.labels import average_mu_n, balanced_weights, normalised_scores
from lookahead_router.routers.base import RouterError
from lookahead_router.routers.config import DomainConfig, FittedConfig
from lookahead_router.routers.similarity import _EmbeddingRouter, _nanmean

ALPHAS = (0.1, 1.0, 10.0, 100.0, 1000.0)   # ridge penalties tried on the validation split
CS = (0.1, 1.0, 10.0, 100.0)               # inverse logistic-regression penalties tried likewise


class _FittedOnValidation(_EmbeddingRouter):
    """Shared fit: embed, pick the grid value with the best validation average μn, refit on all."""

    grid: tuple[float, ...] = ()
    penalty = ""
    Config = FittedConfig
    seeded = True

    def __init__(self, config=None, /, **options):
        super().__init__(config, **options)
        self.chosen: dict | None = None
        self.validation: dict[str, float] = {}

    @staticmethod
    def _row_weights(ds: RoutingDataset, balance: str) -> np.ndarray | None:
        return balanced_weights(ds) if balance == "sources" else None

    def _fit(self, ds: RoutingDataset, validation: RoutingDataset | None) -> None:
        emb = self.embed(ds.queries["prompt"].tolist(), desc=f"{self.name}: train")
        balances = ("none", "sources") if self.config.balance == "auto" else (self.config.balance,)
        grid = [(b, v) for b in balances for v in self.grid]
        if validation is not None:
            val_emb = self.embed(validation.queries["prompt"].tolist(), desc=f"{self.name}: validation")
        for balance, value in grid:
            if validation is not None:
                self._fit_arrays(ds, emb, value, balance)
                metric = average_mu_n(validation, self._score_embeddings(val_emb))
            else:
                metric = average_mu_n(ds, self._out_of_fold(ds, emb, value, balance))
            self.validation[f"{balance} {value:g}"] = metric
        balance, value = max(grid, key=lambda g: self.validation[f"{g[0]} {g[1]:g}"])  # ties: the first
        self.chosen = {"balance": balance, self.penalty: value}
        self._fit_arrays(ds, emb, value, balance)

    def _out_of_fold(self, ds: RoutingDataset, emb: np.ndarray, value: float, balance: str) -> np.ndarray:
        """[n, T] scores of every training row by a model fitted without its fold."""
        from sklearn.model_selection import StratifiedKFold
        source = ds.queries["source"].to_numpy()
        k = min(self.config.cv_folds, int(np.unique(source, return_counts=True)[1].min()))
        if k < 2:     # a source with one row: plain folds
            from sklearn.model_selection import KFold
            splits = KFold(self.config.cv_folds, shuffle=True, random_state=self.config.seed).split(emb)
        else:
            splits = StratifiedKFold(k, shuffle=True, random_state=self.config.seed).split(emb, source)
        out = np.zeros((len(ds), len(ds.candidates)), np.float32)
        for train, held in splits:
            self._fit_arrays(ds.subset(train), emb[train], value, balance)
            out[held] = self._score_embeddings(emb[held])
        return out

    def _score(self, prompts: list[str]) -> np.ndarray:
        return np.concatenate([self._score_embeddings(q) for q in self._chunks(prompts)])

    def _extra(self) -> dict:
        return {"chosen": self.chosen, "validation_avg_mu_n": self.validation}

    def _fit_arrays(self, ds: RoutingDataset, emb: np.ndarray, value: float, balance: str) -> None:
        raise NotImplementedError

    def _score_embeddings(self, emb: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class LinearRouter(_FittedOnValidation):
    """Ridge regression of each candidate's normalised score on the prompt embedding (alpha chosen on validation)."""

    name = "linear"
    grid, penalty = ALPHAS, "alpha"

    def _fit_arrays(self, ds: RoutingDataset, emb: np.ndarray, value: float, balance: str) -> None:
        from sklearn.linear_model import Ridge
        norm, weights = normalised_scores(ds), self._row_weights(ds, balance)
        coef, bias = [], []
        for t in range(norm.shape[1]):
            known = ~np.isnan(norm[:, t])   # a candidate is fitted on the rows it answered
            if not known.any():
                coef.append(np.zeros(emb.shape[1]))
                bias.append(0.0)
                continue
            model = Ridge(alpha=value).fit(emb[known], norm[known, t],
                                           sample_weight=None if weights is None else weights[known])
            coef.append(model.coef_)
            bias.append(float(model.intercept_))
        self.coef = np.stack(coef).astype(np.float32)        # [T, d]
        self.bias = np.asarray(bias, dtype=np.float32)       # [T]

    def _score_embeddings(self, emb: np.ndarray) -> np.ndarray:
        return np.clip(emb @ self.coef.T + self.bias, 0.0, 1.0)

    def _state(self) -> dict[str, np.ndarray]:
        return {"coef": self.coef, "bias": self.bias}

    def _set_state(self, state: dict[str, np.ndarray], extra: dict, directory: Path) -> None:
        self.coef, self.bias, self.chosen = state["coef"], state["bias"], extra.get("chosen")


class DomainRouter(_FittedOnValidation):
    """Classify the prompt's domain (its source), route to that domain's best candidate on the training rows."""

    name = "domain"
    grid, penalty = CS, "C"
    Config = DomainConfig

    def _domains(self, ds: RoutingDataset) -> np.ndarray:
        column = self.config.domain_column
        if column not in ds.queries.columns:
            raise RouterError(f"domain: the dataset's queries have no column {column!r} (domain_column); "
                              f"columns: {list(ds.queries.columns)}")
        values = ds.queries[column]
        if values.isna().any():
            raise RouterError(f"domain: column {column!r} is empty on row {int(np.flatnonzero(values.isna())[0])} "
                              f"(id {ds.ids[int(np.flatnonzero(values.isna())[0])]})")
        return values.astype(str).to_numpy()

    def _fit_arrays(self, ds: RoutingDataset, emb: np.ndarray, value: float, balance: str) -> None:
        from sklearn.linear_model import LogisticRegression
        domains, norm = self._domains(ds), normalised_scores(ds)
        self.labels = np.array(sorted(set(domains)))
        # per domain: the mean normalised score of each candidate; the last row: all rows together
        self.table = np.stack([_nanmean(norm[domains == d], axis=0) for d in self.labels]
                              + [_nanmean(norm, axis=0)]).astype(np.float32)
        if len(self.labels) == 1:      # one domain: nothing to classify
            self.coef = np.zeros((1, emb.shape[1]), np.float32)
            self.bias = np.zeros(1, np.float32)
            return
        model = LogisticRegression(C=value, max_iter=2000).fit(emb, domains,
                                                               sample_weight=self._row_weights(ds, balance))
        coef, bias = model.coef_, model.intercept_
        if len(self.labels) == 2:      # scikit-learn keeps one row for two classes: expand to softmax form
            coef, bias = np.concatenate([-coef / 2, coef / 2]), np.concatenate([-bias / 2, bias / 2])
        self.coef, self.bias = coef.astype(np.float32), bias.astype(np.float32)

    def domain_probabilities(self, emb: np.ndarray) -> np.ndarray:
        logits = emb @ self.coef.T + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def _score_embeddings(self, emb: np.ndarray) -> np.ndarray:
        p = self.domain_probabilities(emb)
        domain = np.where(p.max(axis=1) >= self.config.min_confidence, p.argmax(axis=1), len(self.labels))
        return self.table[domain]

    def predict_domains(self, prompts: list[str]) -> list[str | None]:
        """The domain each prompt is routed by (None: below ``min_confidence``, the overall best)."""
        emb = np.concatenate(list(self._chunks(list(prompts))))
        p = self.domain_probabilities(emb)
        return [str(self.labels[k]) if p[i, k] >= self.config.min_confidence else None
                for i, k in enumerate(p.argmax(axis=1))]

    def _state(self) -> dict[str, np.ndarray]:
        return {"coef": self.coef, "bias": self.bias, "table": self.table}

    def _extra(self) -> dict:
        return {**super()._extra(), "domains": self.labels.tolist()}

    def _set_state(self, state: dict[str, np.ndarray], extra: dict, directory: Path) -> None:
        self.coef, self.bias, self.table = state["coef"], state["bias"], state["table"]
        self.labels, self.chosen = np.array(extra["domains"]), extra.get("chosen")
