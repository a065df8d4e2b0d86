"""What a new user meets first: `train --holdout`'s quality report, tables that fit the terminal,
and the README's OpenAI-client snippet run as written against `examples/echo.yaml`."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from lookahead_router.cli.main import app
from lookahead_router.data.dataset import RoutingDataset
from lookahead_router.evaluation.report import Report
from lookahead_router.routers.registry import make_router
from lookahead_router.serving.fake_upstream import free_port, stop, wait_until_serving

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture
def fake_parquet(fake_dataset, tmp_path) -> Path:
    return fake_dataset.save(tmp_path / "fake.parquet")


def test_train_holdout_keeps_rows_out_and_reports_them_beside_the_references(fake_parquet, tmp_path):
    out = tmp_path / "router"
    result = runner.invoke(app, ["train", "--router", "knn", "--data", str(fake_parquet), "--out", str(out),
                                 "--backbone", "tiny-bert", "--splits", "test", "--holdout", "0.3"],
                           env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())   # the console wraps long lines at 100 columns
    ds = RoutingDataset.load(fake_parquet).where(split="test")
    held_out = json.loads((out / "holdout" / "ids.json").read_text())["held_out"]
    # a share of every source, and the rest trained on: the training line counts them
    assert 0.2 * len(ds) < len(held_out) < 0.4 * len(ds)
    assert set(ds.queries["source"][ds.queries["id"].isin(held_out)]) == set(ds.sources)
    assert f"on {len(ds) - len(held_out)} rows" in said
    report = Report.from_dict(json.loads((out / "holdout" / "report.json").read_text()))
    assert {"knn", "task-best", "random", "oracle", "model-a"} <= set(report.rows)
    assert sum(report.queries.values()) <= len(held_out)
    decided = [json.loads(line)["id"] for line in (out / "holdout" / "decisions.jsonl").read_text().splitlines()]
    assert decided == held_out
    assert f"knn average μn {report.avg_mu_n('knn'):.1f} on held-out prompts" in said
    # the tables fit the 100-column terminal, and no -inf is printed before an evaluation
    assert max(map(len, result.stdout.splitlines())) <= 100
    assert "-inf" not in result.output
    bad = runner.invoke(app, ["train", "--router", "knn", "--data", str(fake_parquet), "--out", str(tmp_path / "x"),
                              "--backbone", "tiny-bert", "--holdout", "1.5"])
    assert bad.exit_code == 2 and "--holdout must be a fraction between 0 and 1" in bad.output


def test_eval_table_fits_a_narrow_terminal_and_stays_whole_when_wide(fake_parquet):
    narrow = runner.invoke(app, ["eval", "--data", str(fake_parquet)], env={"COLUMNS": "100"})
    assert narrow.exit_code == 0, narrow.output
    lines = narrow.stdout.splitlines()   # stdout: not the progress bar on stderr
    assert max(map(len, lines)) <= 100, [line for line in lines if len(line) > 100]
    assert any(line.startswith("μn: % of the Random→Oracle gap") for line in lines)
    assert any(line.lstrip().startswith("Method") and "Avg" in line for line in lines)
    wide = runner.invoke(app, ["eval", "--data", str(fake_parquet)], env={"COLUMNS": "300"})
    assert "AlpacaEval μo" in wide.output and "Avg μn" in wide.output


def _paper_named_router(path: Path) -> Path:
    """A tiny kNN router over examples/echo.yaml's five candidates (maths -> the first, code -> the last)."""
    names = list(yaml.safe_load((ROOT / "examples" / "echo.yaml").read_text())["models"])
    prompts = [f"solve {i} x + 1 = {i}" if i % 2 else f"write a python function f{i}" for i in range(20)]
    scores = np.array([[1.0] + [0.0] * (len(names) - 1) if i % 2 else [0.0] * (len(names) - 1) + [1.0]
                       for i in range(20)])
    queries = pd.DataFrame({"id": [f"s/{i}" for i in range(20)], "source": "s", "split": "train",
                            "prompt": prompts, "turns": [[p] for p in prompts], "payload": [{}] * 20})
    responses = np.array([[f"{c} {i}" for c in names] for i in range(20)], dtype=object)
    ds = RoutingDataset(names, queries, responses, scores)
    make_router("knn", backbone="tiny-bert", max_length=32, progress=False).fit(ds).save(path)
    return path


def _readme_client_snippet() -> str:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    return next(b for b in blocks if 'OpenAI(base_url="http://127.0.0.1:8000/v1"' in b)


def test_the_readme_client_snippet_runs_against_the_echo_config(tmp_path):
    router = _paper_named_router(tmp_path / "router")
    config = yaml.safe_load((ROOT / "examples" / "echo.yaml").read_text())
    config.update(router=str(router), request_log=str(tmp_path / "requests.sqlite"))
    (tmp_path / "echo.yaml").write_text(yaml.safe_dump(config))
    port = free_port()
    proc = subprocess.Popen([str(Path(sys.executable).parent / "lookahead"), "serve", "--config",
                             str(tmp_path / "echo.yaml"), "--port", str(port), "--engine", "torch"],
                            stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        wait_until_serving(f"http://127.0.0.1:{port}/health", proc)
        code = _readme_client_snippet().replace("http://127.0.0.1:8000", f"http://127.0.0.1:{port}")
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(code, "README.md (the proxy's client snippet)", "exec"), {})
    finally:
        stop(proc)
    lines = printed.getvalue().splitlines()
    # the routed model's name, then the streamed answer, which names the candidate that wrote it
    assert lines[0] in config["models"]
    assert "echo" in lines[1] and any(name in lines[1] for name in config["models"])
