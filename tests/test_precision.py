"""The torch engine's precision is a setting (auto | fp32 | bf16), resolved the same way on every
CPU and recorded beside every result; both precisions are exercised on any host by forcing it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from lookahead_router import precision
from lookahead_router.cli.main import app
from lookahead_router.routers.features import FeatureExtractor

TEXTS = ["solve the equation 3 x + 1 = 7", "write a python function that sorts a list of numbers", "hi",
         "a somewhat longer prompt, so that the batch is padded to its length and the others are not"]

# The agreement each precision justifies between the torch engine and an fp32 computation of the
# same graph (ONNX Runtime, or torch in fp32):
# - fp32: the same arithmetic in another order: float32 rounding (rtol 1e-4, atol 1e-5).
# - bf16: every weight and activation is rounded to 8 significant bits (a relative error up to
#   2^-9 each), and a backbone's layers add these up, while a vector's direction barely moves.
#   On the tiny test models: at most 3.5% of the vector's RMS per element, cosine >= 0.99996.
#   Bound: 2^-4 of the RMS per element, and cosine >= 0.999. (The real backbones, measured by
#   `bench/precision.py`: a median of 3-7% of the RMS, outlier dimensions up to 20%, and a rare
#   SmolLM2 token with a "massive activation" that forms elsewhere under bf16.)
# - ``stored="fp16"``: per-token states kept as fp16 on disk (11 significant bits) add their own
#   rounding (rtol 1e-2, atol 2e-3 in fp32).
BF16_ELEMENT_OF_RMS, BF16_MIN_COSINE = 2.0 ** -4, 0.999


def assert_agree(got: np.ndarray, reference: np.ndarray, precision_checked: str, stored: str = "fp32") -> None:
    got, reference = np.atleast_2d(got), np.atleast_2d(reference)
    assert got.shape == reference.shape
    if precision_checked == "fp32":
        rtol, atol = (1e-2, 2e-3) if stored == "fp16" else (1e-4, 1e-5)
        np.testing.assert_allclose(got, reference, rtol=rtol, atol=atol)
        return
    assert precision_checked == "bf16", precision_checked
    rms = np.sqrt((reference.astype(np.float64) ** 2).mean(axis=1, keepdims=True))
    assert (np.abs(got - reference) <= BF16_ELEMENT_OF_RMS * rms).all(), np.abs(got - reference).max() / rms.min()
    cosine = (got * reference).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(reference, axis=1)
    assert cosine.min() >= BF16_MIN_COSINE, cosine


@pytest.mark.parametrize("native", [True, False])
def test_auto_follows_native_bf16_and_an_explicit_setting_wins(native, monkeypatch):
    monkeypatch.setattr(precision, "native_bf16", lambda: native)
    monkeypatch.delenv(precision.PRECISION_ENV)
    assert precision.precision_setting() == "auto"
    assert precision.resolve_precision() == ("bf16" if native else "fp32")
    for forced in ("fp32", "bf16"):
        assert precision.resolve_precision(forced) == forced
        monkeypatch.setenv(precision.PRECISION_ENV, forced.upper())
        assert precision.resolve_precision() == forced and precision.environment()["precision"] == forced


@pytest.mark.parametrize("native", [True, False])
def test_the_extractor_computes_in_the_resolved_precision_and_caches_it_apart(native, tmp_path, monkeypatch):
    """On a CPU with native bf16 (``native=True``) and without: auto picks the precision, and the
    features of each precision live in their own cache folder, never served for the other."""
    monkeypatch.setattr(precision, "native_bf16", lambda: native)
    monkeypatch.setenv("LOOKAHEAD_CACHE", str(tmp_path))
    auto = FeatureExtractor("tiny-bert", "encoder", max_length=16, progress=False)
    assert auto.precision == ("bf16" if native else "fp32")
    assert auto.dtype == (torch.bfloat16 if native else torch.float32)
    fp32 = FeatureExtractor("tiny-bert", "encoder", max_length=16, progress=False, precision="fp32")
    bf16 = FeatureExtractor("tiny-bert", "encoder", max_length=16, progress=False, precision="bf16")
    assert fp32.cache_dir != bf16.cache_dir and auto.cache_dir in (fp32.cache_dir, bf16.cache_dir)
    a, b = fp32(TEXTS), bf16(TEXTS)
    assert bf16.backbone.model.dtype == torch.bfloat16 and fp32.backbone.model.dtype == torch.float32
    # pooled in bf16: every value is a bf16 number; the fp32 ones are not
    np.testing.assert_array_equal(torch.from_numpy(b).to(torch.bfloat16).float().numpy(), b)
    assert not np.array_equal(a, b)
    again = FeatureExtractor("tiny-bert", "encoder", max_length=16, progress=False, precision="fp32")
    np.testing.assert_array_equal(again(TEXTS), a)
    assert again._backbone is None     # read from fp32's own cache


@pytest.mark.parametrize("spec, kind", [("tiny-bert", "encoder"), ("tiny-llama", "causal")])
def test_bf16_features_agree_with_fp32_to_bf16s_tolerance(spec, kind, torch_precision):
    """The torch engine in ``torch_precision`` against itself in fp32 (fp32: identical)."""
    reference = FeatureExtractor(spec, kind, max_length=32, progress=False, cache=False, precision="fp32")(TEXTS)
    got = FeatureExtractor(spec, kind, max_length=32, progress=False, cache=False)(TEXTS)  # the process's
    assert_agree(got, reference, torch_precision)
    if torch_precision == "fp32":
        np.testing.assert_array_equal(got, reference)


def test_a_bad_setting_is_refused_with_the_choices(monkeypatch):
    monkeypatch.setenv(precision.PRECISION_ENV, "fp16")
    with pytest.raises(precision.PrecisionError, match=r"\$LOOKAHEAD_PRECISION: unknown precision 'fp16'; "
                                                       r"choose from auto, fp32, bf16"):
        FeatureExtractor("tiny-bert", "encoder", cache=False)
    result = CliRunner().invoke(app, ["--precision", "half", "routers"])
    assert result.exit_code == 2 and "unknown precision 'half'" in result.output


def test_the_cli_option_sets_the_precision_of_the_command_and_what_it_starts(tmp_path, fake_dataset):
    import os
    data = fake_dataset.save(tmp_path / "fake.parquet")
    result = CliRunner().invoke(app, ["--precision", "fp32", "train", "--router", "knn", "--data", str(data),
                                      "--backbone", "tiny-bert", "--out", str(tmp_path / "router")])
    assert result.exit_code == 0, result.output
    assert os.environ[precision.PRECISION_ENV] == "fp32"   # inherited by `accelerate launch` workers
    assert "(torch engine in fp32)" in result.output
    saved = json.loads((tmp_path / "router" / "router.json").read_text())
    assert saved["trained_with"]["precision"] == "fp32" and saved["trained_with"]["precision_setting"] == "fp32"


def test_the_environment_names_device_precision_and_cpu_flags():
    env = precision.environment()
    assert env["precision"] in ("fp32", "bf16") and env["precision_setting"] in precision.PRECISIONS
    assert isinstance(env["native_bf16"], bool) and env["device"]
    assert set(env["cpu_flags"]) <= set(precision.NUMERIC_FLAGS)
    capabilities = torch.cpu.get_capabilities()
    assert [f for f in precision.NUMERIC_FLAGS if capabilities.get(f) is True] == env["cpu_flags"]
    json.dumps(env)  # it goes into result JSONs as it is

