"""AlpacaEval-2 length-controlled (LC) win rate with the `alpaca-eval` package's GLM.

The official LC GLM (alpaca_eval `length_controlled_v1`) fits, for one model's 805 annotations,
    logit P(model beats reference) = a * tanh(std_delta_len) + b * instruction_difficulty + c
with instruction difficulties and a regularisation towards two length-gamed baselines taken from
two hub files (`df_gamed.csv`, `instruction_difficulty.csv` of the tatsu-lab/alpaca_eval dataset),
then predicts with the length difference set to zero and averages.

Two methods, one per report (every row of a table uses the same one, so mu_n stays consistent):
  * ``official``: `df_gamed.csv` found in a folder you give (or $LOOKAHEAD_ALPACA_EVAL_FILES), or
    fetched from the hub with ``hub=True`` -- the exact alpaca_eval computation.
  * ``offline``: no hub files. (1) Instruction difficulty is estimated by one joint logistic GLM
    over every candidate's annotations of the same instructions (per-candidate intercept and
    length slope, one effect per instruction; weak L2, C=100 as alpaca_eval's own default).
    (2) The gamed-baseline rows are replaced by the candidates' own annotations, each candidate
    with its own intercept, so they regularise only the shared length and difficulty slopes,
    with the same total weight (0.2) as alpaca_eval gives the gamed rows. The same GLM fit
    (alpaca_eval's `fit_LogisticRegressionCV`) then predicts at zero length difference.
    Measured against the official values in the README.
"""

from __future__ import annotations

import warnings
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

OFFICIAL = "official"
OFFLINE = "offline"
_FORMULA = "np.tanh(std_delta_len) + instruction_difficulty + not_gamed_baseline.astype(float) - 1"
_GAMED_LAMBDA = 0.2  # alpaca_eval's regularize_to_baseline_lambda for length_controlled_v1


def _glm():
    # Imported lazily: alpaca_eval pulls in heavy modules and warns about pkg_resources.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from alpaca_eval.metrics import glm_winrate
    return glm_winrate


def _std_delta_len(len_reference: np.ndarray, len_output: np.ndarray) -> np.ndarray:
    delta = pd.Series(len_reference - len_output, dtype=float)
    return (delta / delta.std()).to_numpy()  # pandas std (ddof=1), as alpaca_eval


class LengthControlledWinRate:
    """LC win rate of any selection of responses to (a subset of) the AlpacaEval instructions.

    Args:
        preferences: [N, T] judge preferences in [1, 2] of each candidate over the reference, for
            the N instructions (rows ordered by their AlpacaEval index `index`).
        output_lengths: [N, T] character lengths of the candidates' outputs.
        reference_lengths: [N] character lengths of the reference outputs.
        index: [N] AlpacaEval instruction index of each row (0..804).
        files_dir: folder that may hold `df_gamed.csv` (official method).
        hub: fetch the official files from the hub when they are not in ``files_dir``.
    """

    def __init__(self, preferences, output_lengths, reference_lengths, index,
                 files_dir: str | Path | None = None, hub: bool = False):
        self.preferences = np.asarray(preferences, dtype=float)
        self.output_lengths = np.asarray(output_lengths, dtype=float)
        self.reference_lengths = np.asarray(reference_lengths, dtype=float)
        self.index = np.asarray(index, dtype=int)
        self.gamed = self._load_gamed(files_dir, hub)
        self.method = OFFICIAL if self.gamed is not None else OFFLINE

    @staticmethod
    def _load_gamed(files_dir, hub) -> pd.DataFrame | None:
        if files_dir is not None and (Path(files_dir) / "df_gamed.csv").is_file():
            path = Path(files_dir) / "df_gamed.csv"
        elif hub:
            from huggingface_hub import hf_hub_download
            path = hf_hub_download(repo_id="tatsu-lab/alpaca_eval", filename="df_gamed.csv",
                                   repo_type="dataset")
        else:
            return None
        gamed = pd.read_csv(path)
        return gamed.drop(columns=["model"], errors="ignore")

    @cached_property
    def difficulty(self) -> np.ndarray:
        """Instruction difficulty per row (official values, or the joint offline estimate)."""
        if self.gamed is not None:
            by_index = self.gamed.drop_duplicates("index").set_index("index")["instruction_difficulty"]
            return by_index.reindex(self.index).to_numpy(dtype=float)
        return self._joint_difficulty()

    def _joint_difficulty(self) -> np.ndarray:
        n, t = self.preferences.shape
        rows, labels = [], []
        for j in range(t):
            ok = ~np.isnan(self.preferences[:, j])
            x = np.zeros((int(ok.sum()), 2 * t + n))
            x[:, j] = 1.0  # candidate intercept
            x[:, t + j] = np.tanh(_std_delta_len(self.reference_lengths[ok], self.output_lengths[ok, j]))
            x[np.arange(len(x)), 2 * t + np.flatnonzero(ok)] = 1.0  # instruction effect
            rows.append(x)
            labels.append(np.where(self.preferences[ok, j] == 0.0, 1.5, self.preferences[ok, j]) - 1.0)
        x, p = np.vstack(rows), np.concatenate(labels)
        # Soft labels: each annotation once as a win weighted p and once as a loss weighted 1-p.
        model = LogisticRegression(C=100.0, fit_intercept=False, max_iter=5000, tol=1e-8)
        model.fit(np.vstack([x, x]), np.r_[np.ones(len(p)), np.zeros(len(p))], sample_weight=np.r_[p, 1 - p])
        return -model.coef_[0][2 * t:]  # an easy instruction has a high win effect

    def __call__(self, choice: np.ndarray, rows: np.ndarray | None = None) -> float:
        """LC win rate (%) when row ``rows[k]`` is answered by candidate ``choice[k]``.

        A missing preference (no response) counts as a clear loss to the reference.
        """
        return float(self.per_query(choice, rows).mean() * 100)

    def per_query(self, choice: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """The GLM's length-controlled win probability of each chosen response (their mean is
        the LC win rate): what a bootstrap over instructions resamples, the GLM fitted once."""
        rows = np.arange(len(self.index)) if rows is None else np.asarray(rows)
        choice = np.asarray(choice, dtype=int)
        pref = self.preferences[rows, choice]
        routed = self._frame(np.where(np.isnan(pref), 1.0, pref),
                             np.nan_to_num(self.output_lengths[rows, choice]), rows)
        if self.gamed is not None:
            return self._official(routed)
        return self._pooled(routed, rows)

    def _frame(self, pref: np.ndarray, out_len: np.ndarray, rows: np.ndarray) -> pd.DataFrame:
        """alpaca_eval's features for one model's annotations of ``rows``."""
        df = pd.DataFrame({"preference": pref, "index": self.index[rows]})
        df["std_delta_len"] = _std_delta_len(self.reference_lengths[rows], out_len)
        df["preference"] = df["preference"].replace({0.0: 1.5}) - 1  # alpaca_eval: 0 means a draw
        df["instruction_difficulty"] = self.difficulty[rows]
        df["not_gamed_baseline"] = True
        return df

    def _official(self, df: pd.DataFrame) -> np.ndarray:
        """alpaca_eval's `length_controlled_v1`, step for step."""
        glm = _glm()
        df_test = df[["instruction_difficulty", "not_gamed_baseline"]].copy()
        df_test["std_delta_len"] = 0.0
        train = pd.concat([self.gamed, df], axis=0)
        not_gamed = train["not_gamed_baseline"].astype(bool)
        # Two gamed baselines share the regularisation weight, as in alpaca_eval.
        sample_weight = not_gamed.astype(float) + (_GAMED_LAMBDA * (~not_gamed)).astype(float) / 2
        xy_train, x_test = glm.make_dmatrix_for_model(train, df_test, formula=_FORMULA)
        keep = xy_train["preference"].notna()
        return _fit_and_predict(xy_train[keep], x_test, sample_weight[keep.to_numpy()].to_numpy())

    def _pooled(self, routed: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
        """Offline stand-in for the gamed-baseline regularisation: every candidate's annotations
        of the same instructions join the fit with their own intercepts, so they only pull the
        shared length and difficulty slopes; together they weigh `_GAMED_LAMBDA` as the gamed
        rows do in alpaca_eval."""
        t = self.preferences.shape[1]
        blocks, weights = [], []
        for group in range(-1, t):  # -1: the routed selection itself
            if group < 0:
                frame = routed
            else:
                ok = ~np.isnan(self.preferences[rows, group])
                frame = self._frame(self.preferences[rows[ok], group], self.output_lengths[rows[ok], group],
                                    rows[ok])
            block = pd.DataFrame({"tanh_len": np.tanh(frame["std_delta_len"].to_numpy()),
                                  "instruction_difficulty": frame["instruction_difficulty"].to_numpy()})
            for g in range(-1, t):
                block[f"intercept_{g}"] = float(g == group)
            block["preference"] = frame["preference"].to_numpy()
            blocks.append(block)
            weights.append(np.full(len(block), 1.0 if group < 0 else _GAMED_LAMBDA / t))
        train = pd.concat(blocks, ignore_index=True)
        x_test = blocks[0].drop(columns=["preference"]).assign(tanh_len=0.0)
        return _fit_and_predict(train, x_test, np.concatenate(weights))


def _fit_and_predict(xy_train: pd.DataFrame, x_test: pd.DataFrame, sample_weight) -> np.ndarray:
    """alpaca_eval's logistic GLM (L1, 5-fold CV, soft labels); the predicted win probabilities."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = _glm().fit_LogisticRegressionCV(xy_train, "preference", is_ytrue_proba=True,
                                                sample_weight=sample_weight, n_splits=5)
    return model.predict_proba(x_test[xy_train.drop(columns=["preference"]).columns])[:, 1]
