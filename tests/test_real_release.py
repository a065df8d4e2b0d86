"""On the paper's real release (when it is beside the repository): our metrics reproduce the
candidate, Random and Oracle rows of Table 1. Every tolerance wider than the printed precision is
explained here and in the README ("Reproducing Table 1")."""

import gzip

import pandas as pd
import pytest

from lookahead_router.data.release import PAPER_CANDIDATES, import_release
from lookahead_router.evaluation.paper_table import PAPER_TABLE1
from lookahead_router.evaluation.report import evaluate
from tests.conftest import real_release

pytestmark = pytest.mark.skipif(real_release() is None, reason="the paper's release is not available")

DECIMALS = {"MT-Bench": 2}
# The paper rounds to two decimals, then to the printed one: allow half a printed unit plus half
# of the next digit.
def printed_tolerance(bench):
    d = DECIMALS.get(bench, 1)
    return 0.5 * 10 ** -d + 0.5 * 10 ** -(d + 1) + 1e-9


# Known difference from the printed table (see README): MBPP Phi-3, 177/257 = 68.87, is printed
# 68.8 (and 68.9 for InternLM, with the same count).
WIDER_MU_O = {("MBPP", "Phi-3-medium-4k-instruct"): 0.1}
ALPACA_MU_O = {**{c: 1.0 for c in PAPER_CANDIDATES}, "random": 2.5, "oracle": 2.5}  # offline LC


@pytest.fixture(scope="module")
def report():
    ds = import_release(real_release(), progress=False)
    return evaluate(ds)


def test_release_imports_completely():
    ds = import_release(real_release(), progress=False)
    assert ds.candidates == PAPER_CANDIDATES
    assert len(ds) == 805 + 500 + 80 + 1319 + 5000 + 164 + 257 + 4335
    arena = ds.metadata["import_report"]["ArenaHard"]
    assert arena["missing"] == {c: int(c == "Llama-3.1-8B-Instruct") for c in PAPER_CANDIDATES}


def test_arena_hard_scores_the_queries_every_candidate_answered(report):
    assert report.queries["ArenaHard"] == 499


@pytest.mark.parametrize("row", PAPER_CANDIDATES + ["random", "oracle"])
def test_mu_o_matches_table1(report, row):
    for bench in report.benchmarks:
        ours, paper = report.rows[row][bench]["mu_o"], PAPER_TABLE1[row][bench]["mu_o"]
        if bench == "AlpacaEval":
            tol = ALPACA_MU_O[row]
        else:
            tol = WIDER_MU_O.get((bench, row), printed_tolerance(bench))
        assert abs(ours - paper) <= tol, f"{row} {bench}: ours {ours:.3f} vs paper {paper}"


@pytest.mark.parametrize("row", PAPER_CANDIDATES)
def test_mu_n_matches_table1(report, row):
    # The paper's own mu_n disagree with its mu_o by up to 0.4 (e.g. MT-Bench); AlpacaEval's offline
    # Oracle is 1.6 points high, which compresses mu_n there.
    for bench in report.benchmarks:
        ours, paper = report.rows[row][bench]["mu_n"], PAPER_TABLE1[row][bench]["mu_n"]
        tol = 3.0 if bench == "AlpacaEval" else 0.5
        assert abs(ours - paper) <= tol, f"{row} {bench}: ours {ours:.2f} vs paper {paper}"


def test_alpaca_offline_lc_close_to_official_leaderboard(report):
    """The release ships each candidate's official LC win rate: the offline estimate is within 1."""
    for c in PAPER_CANDIDATES:
        path = real_release() / f"test/AlpacaEval/{c}/weighted_alpaca_eval_gpt4_turbo/leaderboard.csv.gz"
        with gzip.open(path, "rt") as fh:
            official = pd.read_csv(fh, index_col=0).loc[c, "length_controlled_winrate"]
        assert abs(report.rows[c]["AlpacaEval"]["mu_o"] - official) <= 1.0
