import gzip
import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from lookahead_router.cli.main import app
from lookahead_router.data.dataset import DatasetError, RoutingDataset
from lookahead_router.data.release import ReleaseFormatError, import_release
from tests.conftest import FAKE_CANDIDATES

runner = CliRunner()


def test_import_reads_every_benchmark(fake_dataset):
    ds = fake_dataset
    assert ds.candidates == sorted(FAKE_CANDIDATES)  # discovered, alphabetical for unknown names
    assert ds.sources == ["AlpacaEval", "ArenaHard", "MT-Bench", "GSM8K", "MATH", "HumanEval", "MBPP", "SelfOSS"]
    counts = ds.queries["source"].value_counts().to_dict()
    assert counts == {"AlpacaEval": 12, "ArenaHard": 6, "MT-Bench": 5, "GSM8K": 10, "MATH": 10,
                      "HumanEval": 6, "MBPP": 6, "SelfOSS": 10}
    assert ds.available.all()
    # MT-Bench: routing score is turn 1, both turns kept in the payload, answer text extracted.
    mt = ds.where(source="MT-Bench")
    assert mt.scores[0, 1] == 3.0  # (i=0, j=1, t=1) -> (0+1+1)%10+1
    assert mt.payload(0)["turn_scores"]["model-b"] == [3.0, 4.0]
    assert mt.responses[0, 1] == "model-b mt answer 0"
    assert mt.queries["turns"][0] == ["mt 0", "mt 0 follow-up"]
    # Arena-Hard: per-query score sums the candidate's per-game values (game 2 swaps positions).
    arena = ds.where(source="ArenaHard")
    assert arena.payload(1)["games"]["model-b"] == ["A=B", "B>A"]
    assert arena.scores[1, 1] == 0 - 1
    # SelfOSS: eval ids become the validation split.
    selfoss = ds.where(source="SelfOSS")
    assert list(selfoss.queries["split"][:3]) == ["validation", "validation", "train"]


def test_candidates_subset_and_order(fake_release):
    ds = import_release(fake_release, candidates=["model-c", "model-a"], progress=False)
    full = import_release(fake_release, progress=False)
    assert ds.candidates == ["model-c", "model-a"]
    np.testing.assert_array_equal(ds.scores, full.select_candidates(["model-c", "model-a"]).scores)


def test_parquet_round_trip(fake_dataset, tmp_path):
    path = fake_dataset.save(tmp_path / "ds.parquet")
    back = RoutingDataset.load(path)
    assert back.candidates == fake_dataset.candidates
    np.testing.assert_array_equal(back.scores, fake_dataset.scores)
    assert (back.responses == fake_dataset.responses).all()
    assert back.queries["payload"].tolist() == fake_dataset.queries["payload"].tolist()
    assert back.metadata["import_report"]["GSM8K"]["queries"] == 10


def test_unknown_candidate_selection_is_a_clear_error(fake_dataset):
    with pytest.raises(DatasetError, match="model-z: no such candidate; candidates: model-a"):
        fake_dataset.select_candidates(["model-z"])


def test_missing_file_names_file_benchmark_and_candidate(fake_release):
    (fake_release / "test/MATH/model-b.json.gz").unlink()
    with pytest.raises(ReleaseFormatError) as exc:
        import_release(fake_release, progress=False)
    msg = str(exc.value)
    assert "MATH/model-b.json.gz" in msg and "missing file" in msg and "MATH" in msg and "model-b" in msg


def test_candidate_absent_from_one_benchmark(fake_release):
    shutil.rmtree(fake_release / "test/AlpacaEval/model-c")
    with pytest.raises(ReleaseFormatError) as exc:
        import_release(fake_release, progress=False)
    assert exc.value.benchmark == "AlpacaEval" and exc.value.candidate == "model-c"


def test_truncated_gzip(fake_release):
    path = fake_release / "test/ArenaHard/model_judgment/model-a.jsonl.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ReleaseFormatError, match="truncated or corrupt gzip") as exc:
        import_release(fake_release, progress=False)
    assert exc.value.path == path and exc.value.candidate == "model-a"


def test_malformed_json_line_is_named(fake_release):
    path = fake_release / "test/ArenaHard/model_answer/model-b.jsonl.gz"
    lines = gzip.open(path, "rt").read().splitlines()
    lines[2] = '{"question_id": "q2", "choices": ['
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(lines))
    with pytest.raises(ReleaseFormatError, match="line 3"):
        import_release(fake_release, progress=False)


def test_unknown_benchmark_folder(fake_release):
    (fake_release / "test/NewBench").mkdir()
    with pytest.raises(ReleaseFormatError, match="unknown benchmark folder"):
        import_release(fake_release, progress=False)
    ds = import_release(fake_release, sources=["GSM8K", "MBPP"], progress=False)
    assert ds.sources == ["GSM8K", "MBPP"]


def test_unaligned_queries_are_kept_and_counted(fake_release):
    path = fake_release / "test/ArenaHard/model_judgment/model-b.jsonl.gz"
    rows = [json.loads(x) for x in gzip.open(path, "rt").read().splitlines()]
    rows = rows[1:] + [{"question_id": "not-a-question", "games": [{"score": "A>B"}]}]
    with gzip.open(path, "wt") as fh:
        fh.write("\n".join(json.dumps(r) for r in rows))
    ds = import_release(fake_release, progress=False)
    report = ds.metadata["import_report"]["ArenaHard"]
    assert report["queries"] == 6 and report["complete_queries"] == 5
    assert report["missing"] == {"model-a": 0, "model-b": 1, "model-c": 0}
    assert report["unmatched"]["model-b"] == 1
    arena = ds.where(source="ArenaHard")
    # The answer exists but was never judged: its text is kept, its score is missing.
    assert np.isnan(arena.scores[0, 1]) and arena.responses[0, 1] == "model-b arena answer 0"


def test_cli_import_writes_nothing_on_error(fake_release, tmp_path):
    out = tmp_path / "ds.parquet"
    (fake_release / "test/MBPP/results/model-a.json.gz").write_bytes(b"\x1f\x8b broken")
    result = runner.invoke(app, ["data", "import-paper", "--src", str(fake_release), "--out", str(out)])
    assert result.exit_code == 2
    assert "MBPP/results/model-a.json.gz" in result.output
    assert not out.exists() and not list(tmp_path.glob("*.part"))


def test_cli_import_keeps_existing_output_on_error(fake_release, tmp_path):
    out = tmp_path / "ds.parquet"
    ok = runner.invoke(app, ["data", "import-paper", "--src", str(fake_release), "--out", str(out)])
    assert ok.exit_code == 0, ok.output
    before = out.read_bytes()
    (fake_release / "test/GSM8k/model-a.json.gz").unlink()
    bad = runner.invoke(app, ["data", "import-paper", "--src", str(fake_release), "--out", str(out)])
    assert bad.exit_code == 2 and out.read_bytes() == before


def test_cli_candidates_option_accepts_commas(fake_release, tmp_path):
    out = tmp_path / "ds.parquet"
    result = runner.invoke(app, ["data", "import-paper", "--src", str(fake_release), "--out", str(out),
                                 "--candidates", "model-b,model-a"])
    assert result.exit_code == 0, result.output
    assert RoutingDataset.load(out).candidates == ["model-b", "model-a"]
