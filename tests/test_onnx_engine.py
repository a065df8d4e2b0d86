"""The onnx feature engines (ONNX Runtime on CPU) against the torch reference, on tiny models.

ONNX Runtime computes in fp32. Each agreement test names the torch engine's precision it checks
(``torch_precision``: fp32 and bf16, forced whatever the host CPU runs natively) and holds it to
the tolerance that precision justifies (``test_precision.assert_agree``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lookahead_router.routers import features, onnx_encoder
from lookahead_router.routers.base import RouterError
from lookahead_router.routers.registry import make_router
from lookahead_router.routers.features import FeatureExtractor, shared_extractor
from test_precision import assert_agree
from test_training import topic_dataset

TEXTS = ["solve the equation 3 x + 1 = 7", "write a python function that sorts a list of numbers", "hi",
         "a somewhat longer prompt, so that the batch is padded to its length and the others are not"]


def extract(spec, kind, engine, layer=None, precision=None):
    extractor = FeatureExtractor(spec, kind, max_length=32, progress=False, layer=layer, cache=False,
                                 engine=engine, precision=precision)
    if engine == "torch" and precision is not None:   # the precision asked for is the one computed in
        assert extractor.precision == precision and extractor.backbone.model.dtype == extractor.dtype
    return extractor(TEXTS)


@pytest.mark.parametrize("spec, kind", [("tiny-bert", "encoder"), ("tiny-llama", "causal")])
def test_onnx_pooled_vectors_match_torch(spec, kind, torch_precision, monkeypatch):
    from lookahead_router.routers.backbones import load_tokenizer
    # The tokenizer object is shared in the process; someone else may have set it to pad left
    # (generation does). The extractor pads right whatever the object says.
    monkeypatch.setattr(load_tokenizer(spec, kind), "padding_side", "left")
    reference, got = extract(spec, kind, "torch", precision=torch_precision), extract(spec, kind, "onnx")
    assert got.dtype == np.float32 and got.shape == reference.shape
    assert_agree(got, reference, torch_precision)


@pytest.mark.parametrize("layer", [1, 2])
def test_onnx_layer_states_match_torch(layer, torch_precision):
    """Per-token fp16 states after the first ``layer`` layers, cut to each text's real tokens."""
    reference = extract("tiny-bert", "encoder", "torch", layer, torch_precision)
    got = extract("tiny-bert", "encoder", "onnx", layer)
    assert [g.shape for g in got] == [r.shape for r in reference]
    assert all(g.dtype == np.float16 for g in got)
    for r, g in zip(reference, got):
        assert_agree(g.astype(np.float32), r.astype(np.float32), torch_precision, stored="fp16")


def test_int8_engine_makes_a_quantised_session_with_close_features():
    encoder = onnx_encoder.OnnxEncoder("tiny-bert", "encoder", layer=None, max_length=32, quantize=True)
    assert encoder.session.get_providers() == ["CPUExecutionProvider"]
    assert "-int8-" in encoder.path.name and encoder.path.is_file()
    assert encoder.path != onnx_encoder.model_path("tiny-bert", "encoder", None, 32, quantize=False)
    # int8 weights against the fp32 reference: close in direction, not elementwise
    reference = extract("tiny-bert", "encoder", "torch", precision="fp32")
    got = extract("tiny-bert", "encoder", "onnx-int8")
    cosine = (reference * got).sum(1) / np.linalg.norm(reference, axis=1) / np.linalg.norm(got, axis=1)
    assert cosine.min() > 0.99


def test_export_is_cached_on_disk_and_reused(monkeypatch):
    first = onnx_encoder.OnnxEncoder("tiny-bert", "encoder", layer=1, max_length=24)
    stamp = first.path.stat().st_mtime_ns
    assert first.path.parent == features.cache_root() / "onnx"
    assert not list(first.path.parent.glob(".*.tmp.onnx"))     # written through a temporary file

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")
    monkeypatch.setattr(onnx_encoder.torch.onnx, "export", no_export)
    again = onnx_encoder.OnnxEncoder("tiny-bert", "encoder", layer=1, max_length=24)
    assert again.path == first.path and again.path.stat().st_mtime_ns == stamp
    # another layer, length or precision is another file
    assert len({onnx_encoder.model_path("tiny-bert", "encoder", layer, length, q)
                for layer, length, q in [(1, 24, False), (2, 24, False), (1, 32, False), (1, 24, True)]}) == 4


@pytest.mark.parametrize("name", ["knn", "lookahead-mlm"])
def test_a_router_scored_through_onnx_ranks_like_torch(name, monkeypatch):
    """A router fitted on the torch engine in fp32, scored by ONNX Runtime (fp32): the same
    arithmetic, so the same choices and scores to float32 rounding (int8: close)."""
    monkeypatch.setenv("LOOKAHEAD_PRECISION", "fp32")
    options = dict(backbone="tiny-bert", max_length=32, progress=False)
    if name != "knn":
        options.update(epochs=2, batch_size=8, eval_every=4, lr=3e-3, hidden=16, m=8)
    router = make_router(name, **options).fit(topic_dataset())
    reference = router.score(TEXTS)
    for engine in ("onnx", "onnx-int8"):
        got = router.use(engine).score(TEXTS)
        np.testing.assert_array_equal(got.argmax(1), reference.argmax(1))
        np.testing.assert_allclose(got, reference, atol=1e-4 if engine == "onnx" else 2e-2)


def test_one_shared_extractor_per_engine():
    torch_one = shared_extractor("tiny-bert", "encoder", 32)
    onnx_one = shared_extractor("tiny-bert", "encoder", 32, engine="onnx")
    assert torch_one.engine == "torch" and onnx_one.engine == "onnx" and onnx_one is not torch_one
    assert onnx_one.cache_dir != torch_one.cache_dir              # close features, not equal ones
    assert shared_extractor("tiny-bert", "encoder", 32, engine="torch") is torch_one
    onnx_one.prepare()
    assert onnx_one._onnx is not None and onnx_one._backbone is None   # no torch weights kept
    with pytest.raises(RouterError, match="unknown feature engine 'tensorrt'"):
        shared_extractor("tiny-bert", "encoder", 32, engine="tensorrt")


def test_a_backbone_that_cannot_be_exported_is_named(tmp_path):
    from transformers import ModernBertConfig
    folder = tmp_path / "my-modernbert"
    ModernBertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32).save_pretrained(folder)
    with pytest.raises(RouterError, match=r"backbone '.*my-modernbert' \(modernbert, encoder\) cannot run "
                                          r"on the onnx engines.*use the torch engine"):
        FeatureExtractor(str(folder), "encoder", engine="onnx")


def test_auto_is_onnx_where_torch_would_compute_fp32_and_the_backbone_exports(tmp_path, torch_precision):
    """With fp32 (and no GPU) ONNX Runtime computes what PyTorch would, faster at batch 1; with
    bf16 PyTorch is the faster of the two and computes the features a router trained here saw."""
    from transformers import ModernBertConfig
    folder = tmp_path / "my-modernbert"
    ModernBertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32).save_pretrained(folder)
    expected = "onnx" if torch_precision == "fp32" and not torch.cuda.is_available() else "torch"
    auto = FeatureExtractor("tiny-bert", "encoder", engine="auto", cache=False)
    assert auto.engine == expected and auto.precision == torch_precision
    assert FeatureExtractor(str(folder), "encoder", engine="auto", cache=False).engine == "torch"


def test_serve_takes_the_engine_from_the_config_and_the_command_line(tmp_path):
    from typer.testing import CliRunner

    from lookahead_router.cli.main import app
    from lookahead_router.catalogue import ConfigError, load_config
    path = tmp_path / "models.yaml"
    path.write_text(json.dumps({"engine": "onnx-int8", "models": {"m": {"base_url": "http://localhost:1/v1"}}}))
    assert load_config(path).engine == "onnx-int8"
    path.write_text(json.dumps({"models": {"m": {"base_url": "http://localhost:1/v1"}}}))
    assert load_config(path).engine == "auto"
    path.write_text(json.dumps({"engine": "tensorrt", "models": {"m": {"base_url": "http://localhost:1/v1"}}}))
    with pytest.raises(ConfigError, match="engine"):
        load_config(path)
    path.write_text(json.dumps({"models": {"m": {"base_url": "http://localhost:1/v1"}}}))
    # the option is checked before any router is loaded
    result = CliRunner().invoke(app, ["serve", "--config", str(path), "--router", str(tmp_path / "none"),
                                      "--engine", "tensorrt"])
    assert result.exit_code == 2 and "unknown feature engine 'tensorrt'" in result.output


def test_serve_exports_at_start_up_before_listening(tmp_path, monkeypatch):
    """`lookahead serve --engine onnx`: the graph is exported (or read) during start-up, and the
    router's extractor runs on ONNX Runtime by the time the server would listen."""
    import uvicorn
    from typer.testing import CliRunner

    from lookahead_router.cli.main import app
    router = make_router("knn", backbone="tiny-bert", max_length=40, progress=False).fit(topic_dataset())
    router.save(tmp_path / "router")
    path = tmp_path / "models.yaml"
    path.write_text(json.dumps({"models": {c: {"base_url": "http://localhost:1/v1"} for c in router.candidates}}))
    expected = onnx_encoder.model_path("tiny-bert", "encoder", None, 40, quantize=False)
    expected.unlink(missing_ok=True)
    listened = []
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: listened.append(expected.is_file()))
    result = CliRunner().invoke(app, ["serve", "--config", str(path), "--router", str(tmp_path / "router"),
                                      "--engine", "onnx"])
    assert result.exit_code == 0, result.output
    assert listened == [True] and "tiny-bert on onnx in fp32" in result.output
    assert shared_extractor("tiny-bert", "encoder", 40, engine="onnx", keep_cache=False)._onnx is not None


def test_a_backbone_loaded_from_gguf_exports(tmp_path, monkeypatch):
    """transformers marks a GGUF-loaded model (SmolLM2, the default causal backbone) as quantised
    and refuses ``.float()`` on it, though its weights are plain tensors: the export must not ask."""
    from lookahead_router.routers.backbones import load_backbone
    monkeypatch.setenv("LOOKAHEAD_CACHE", str(tmp_path))

    def as_from_gguf(spec, kind):
        backbone = load_backbone(spec, kind)
        backbone.model.is_quantized = True   # what a GGUF load sets
        with pytest.raises(ValueError, match="not supported for quantized model"):
            backbone.model.float()
        return backbone
    monkeypatch.setattr(onnx_encoder, "load_backbone", as_from_gguf)
    got = extract("tiny-llama", "causal", "onnx")
    assert_agree(got, extract("tiny-llama", "causal", "torch", precision="fp32"), "fp32")


def test_serve_names_its_encoder_and_warns_when_it_computes_otherwise_than_trained(tmp_path, monkeypatch):
    """A router records the precision its features were computed in (router.json, trained_with);
    a server that computes them otherwise says so, and how to route as trained."""
    import uvicorn
    from typer.testing import CliRunner

    from conftest import bf16_unavailable
    from lookahead_router.cli.main import app
    reason = bf16_unavailable()
    if reason:
        pytest.skip(reason)
    monkeypatch.setenv("LOOKAHEAD_PRECISION", "fp32")
    router = make_router("knn", backbone="tiny-bert", max_length=24, progress=False).fit(topic_dataset())
    router.save(tmp_path / "router")
    path = tmp_path / "models.yaml"
    path.write_text(json.dumps({"models": {c: {"base_url": "http://localhost:1/v1"} for c in router.candidates}}))
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: None)
    outputs = {}
    for setting in ("bf16", "fp32"):
        monkeypatch.setattr(features, "_SHARED", {})   # a server process starts with none
        result = CliRunner().invoke(app, ["--precision", setting, "serve", "--config", str(path), "--router",
                                          str(tmp_path / "router")])
        assert result.exit_code == 0, result.output
        outputs[setting] = " ".join(result.output.split())
    expected_fp32 = "torch" if torch.cuda.is_available() else "onnx"
    assert "encoder tiny-bert on torch in bf16" in outputs["bf16"]
    assert ("the router was trained on features computed in fp32; this server computes them otherwise"
            in outputs["bf16"]) and "`lookahead --precision fp32 serve ... --engine auto`" in outputs["bf16"]
    assert f"encoder tiny-bert on {expected_fp32} in fp32" in outputs["fp32"] and "warning" not in outputs["fp32"]
