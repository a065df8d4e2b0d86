"""Shared fixtures: a small fake release in the paper's layout, and the real one when present."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest

from lookahead_router.data.release import import_release

FAKE_CANDIDATES = ["model-a", "model-b", "model-c"]


def _write(path: Path, obj, lines: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(json.dumps(o) for o in obj) + "\n" if lines else json.dumps(obj)
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write(text)


def build_fake_release(root: Path, candidates=FAKE_CANDIDATES, seed: int = 0) -> Path:
    """Write a tiny release with the real file layout. Scores are seeded and known to tests via
    the returned files; model-a is best on math, model-c on code."""
    rng = np.random.default_rng(seed)
    test, n = root / "test", 12
    _write(test / "AlpacaEval/instructions.jsonl.gz",
           [{"dataset": "d", "instruction": f"instruction {i}", "reference": "r" * (50 + 10 * i)}
            for i in range(n)], lines=True)
    _write(test / "ArenaHard/question.jsonl.gz",
           [{"question_id": f"q{i}", "cluster": "c", "turns": [{"content": f"arena {i}"}]} for i in range(6)],
           lines=True)
    _write(test / "MT-Bench/question.jsonl.gz",
           [{"question_id": 81 + i, "category": "writing", "turns": [f"mt {i}", f"mt {i} follow-up"]}
            for i in range(5)], lines=True)
    _write(root / "train/SelfOSSInstructSC2_filtered2/instructions.jsonl.gz",
           [{"prompt_id": f"s{i}", "prompt": f"code task {i}", "tags": ["python"]} for i in range(10)], lines=True)
    _write(root / "train/SelfOSSInstructSC2_filtered2/eval_ids.json.gz", ["s0", "s1"])
    verdicts = ["A>>B", "A>B", "A=B", "B>A", "B>>A"]
    for j, c in enumerate(candidates):
        _write(test / f"AlpacaEval/{c}/weighted_alpaca_eval_gpt4_turbo/annotations.json.gz",
               [{"instruction": f"instruction {i}", "output_1": "r" * (50 + 10 * i),
                 "output_2": f"{c} answer " + "x" * int(rng.integers(20, 200)),
                 "preference": float(1 + rng.random())} for i in range(n)])
        _write(test / f"ArenaHard/model_answer/{c}.jsonl.gz",
               [{"question_id": f"q{i}", "choices": [{"turns": [{"content": f"{c} arena answer {i}"}]}]}
                for i in range(6)], lines=True)
        _write(test / f"ArenaHard/model_judgment/{c}.jsonl.gz",
               [{"question_id": f"q{i}", "games": [{"score": verdicts[(i + j) % 5]},
                                                   {"score": verdicts[(i + 2 * j) % 5]}]} for i in range(6)],
               lines=True)
        _write(test / f"MT-Bench/judgments/gpt-4-0125-preview_judge_{c}_single.jsonl.gz",
               [{"question_id": 81 + i, "turn": t, "score": int((i + j + t) % 10) + 1,
                 "user_prompt": f"[The Start of Assistant's Answer]\n{c} mt answer {i}\n"
                                "[The End of Assistant's Answer]"}
                for i in range(5) for t in (1, 2)], lines=True)
        for bench, good in (("GSM8k", 0), ("MATH", 0)):
            _write(test / f"{bench}/{c}.json.gz", {"accuracy": 0.0, "details": {
                str(i): {"prompt": [{"role": "HUMAN", "prompt": f"{bench} problem {i}"}],
                         "origin_prediction": f"{c} solves {i}", "references": str(i),
                         "correct": bool(j == good or (i + j) % 3 == 0)} for i in range(10)}})
        for bench, field in (("HumanEval", "passed"), ("MBPP", "is_correct")):
            _write(test / f"{bench}/predictions/{c}.json.gz", {
                str(i): {"origin_prompt": [{"role": "HUMAN", "prompt": f"{bench} task {i}"}],
                         "prediction": f"def f_{i}(): pass  # {c}", "gold": f"{bench}/{i}"} for i in range(6)})
            _write(test / f"{bench}/results/{c}.json.gz", {"details": {
                str(i): {field: bool(j == 2 or i % 2 == 0)} for i in range(6)}})
        _write(root / f"train/SelfOSSInstructSC2_filtered2/responses/{c}.jsonl.gz",
               [{"prompt_id": f"s{i}", "response": f"{c} code {i}", "score": float((i + j) % 4) / 3}
                for i in range(10)], lines=True)
    return root


@pytest.fixture(scope="session", autouse=True)
def feature_cache_dir(tmp_path_factory) -> Path:
    """Routers cache embeddings on disk: keep the tests' cache out of $HOME (one per session)."""
    path = tmp_path_factory.mktemp("feature-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOOKAHEAD_CACHE", str(path))
        yield path


@pytest.fixture(autouse=True)
def restore_precision(monkeypatch):
    """`lookahead --precision X` sets the process's precision (in the environment, for the
    processes it starts): undo it after each test, keeping whatever the suite was started with."""
    monkeypatch.setenv("LOOKAHEAD_PRECISION", os.environ.get("LOOKAHEAD_PRECISION", "auto"))


def bf16_unavailable() -> str | None:
    """Why this PyTorch cannot compute in bf16 on this host (None when it can, natively or not)."""
    import torch
    try:
        x = torch.ones(4, 4, dtype=torch.bfloat16)
        torch.nn.functional.layer_norm(x @ x, (4,))
    except RuntimeError as exc:
        return f"bf16 does not run on this host's PyTorch: {exc}"
    return None


@pytest.fixture(params=["fp32", "bf16"])
def torch_precision(request, monkeypatch) -> str:
    """Each precision of the torch engine in turn, forced for the test (the process setting
    included) whatever the host CPU runs natively, so both code paths run on every machine; bf16
    skips, with the reason, only where PyTorch cannot compute in it here at all."""
    reason = bf16_unavailable() if request.param == "bf16" else None
    if reason:
        pytest.skip(reason)
    monkeypatch.setenv("LOOKAHEAD_PRECISION", request.param)
    return request.param


@pytest.fixture
def fake_release(tmp_path) -> Path:
    return build_fake_release(tmp_path / "release")


@pytest.fixture
def fake_dataset(fake_release):
    return import_release(fake_release, progress=False)


def real_release() -> Path | None:
    path = Path(os.environ.get("LOOKAHEAD_DATA", "../shared/lookahead-data"))
    return path if (path / "test" / "GSM8k").is_dir() else None


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server for the session (tests/postgres_server.py)."""
    from postgres_server import PostgresServer, server_bin
    bindir = server_bin()
    if bindir is None:
        message = "PostgreSQL's server programs are not installed (Debian: apt-get install postgresql)"
        if os.environ.get("LOOKAHEAD_REQUIRE_POSTGRES") == "1":
            pytest.fail(message + "; LOOKAHEAD_REQUIRE_POSTGRES=1 forbids skipping")
        pytest.skip(message)
    server = PostgresServer(bindir)
    yield server
    server.close()
