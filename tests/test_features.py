"""The on-disk feature cache and backbone loading."""

from __future__ import annotations

import numpy as np
import pytest

from lookahead_router.routers.backbones import effective_max_length, load_backbone
from lookahead_router.routers.base import RouterError
from lookahead_router.routers.features import FeatureExtractor


def test_features_are_cached_and_a_second_extractor_never_loads_the_backbone(tmp_path, monkeypatch, torch_precision):
    """In fp32 and in bf16 (``torch_precision``): features read back equal those computed."""
    monkeypatch.setenv("LOOKAHEAD_CACHE", str(tmp_path))
    texts = ["alpha", "beta gamma", "alpha"]
    first = FeatureExtractor("tiny-bert", "encoder", max_length=16, progress=False)
    a = first(texts)
    assert a.shape == (3, 32) and np.array_equal(a[0], a[2])
    again = FeatureExtractor("tiny-bert", "encoder", max_length=16, progress=False)
    np.testing.assert_array_equal(again(texts), a)
    assert again._backbone is None  # everything came from disk
    # another max length is another cache: it embeds again
    other = FeatureExtractor("tiny-bert", "encoder", max_length=8, progress=False)
    other(["alpha"])
    assert other._backbone is not None
    # a shard cut short by a crash is skipped and its texts re-embedded
    shard = next(first.cache_dir.glob("*.npz"))
    shard.write_bytes(shard.read_bytes()[:20])
    fresh = FeatureExtractor("tiny-bert", "encoder", max_length=16, progress=False)
    np.testing.assert_allclose(fresh(texts), a, rtol=1e-5, atol=1e-6)


def test_normalised_features_have_unit_norm(tmp_path, monkeypatch):
    monkeypatch.setenv("LOOKAHEAD_CACHE", str(tmp_path))
    v = FeatureExtractor("tiny-llama", "causal", max_length=16, normalize=True, progress=False)(["x y", "z"])
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)


def test_backbone_errors_and_length_cap():
    with pytest.raises(RouterError, match="not a causal model"):
        load_backbone("tiny-bert", "causal")
    with pytest.raises(RouterError, match="kind must be"):
        load_backbone("tiny-bert", "seq2seq")
    with pytest.raises(RouterError, match="cannot load backbone '/no/such/model'"):
        load_backbone("/no/such/model", "encoder")
    bb = load_backbone("tiny-bert", "encoder")
    assert effective_max_length(bb, 100_000) == 512 and effective_max_length(bb, 64) == 64
    with pytest.raises(RouterError, match="max_length must be positive"):
        effective_max_length(bb, 0)


def test_a_digest_ending_in_a_nul_byte_is_found_in_the_cache(tmp_path, monkeypatch):
    """numpy's fixed-width bytes drop trailing NULs; the loader must pad them back."""
    import hashlib
    text = "text 171"
    assert hashlib.sha1(text.encode()).digest()[-1] == 0
    monkeypatch.setenv("LOOKAHEAD_CACHE", str(tmp_path))
    FeatureExtractor("tiny-bert", "encoder", max_length=16, progress=False)([text])
    again = FeatureExtractor("tiny-bert", "encoder", max_length=16, progress=False)
    again([text])
    assert again._backbone is None


@pytest.mark.parametrize("layer", [None, 1])
def test_without_keeping_the_cache_nothing_is_kept(tmp_path, monkeypatch, layer, torch_precision):
    """`lookahead serve` embeds every new prompt: nothing may pile up in memory or on disk. The
    served features agree with the cached ones at fp16 storage's tolerance, in either precision."""
    monkeypatch.setenv("LOOKAHEAD_CACHE", str(tmp_path))
    cached = FeatureExtractor("tiny-bert", "encoder", max_length=16, progress=False, layer=layer)
    expected = cached(["a served prompt", "another"])
    fresh = FeatureExtractor("tiny-bert", "encoder", max_length=16, progress=False, layer=layer, keep_cache=False)
    fresh._backbone = cached.backbone
    got = fresh(["a served prompt", "another", "a new one"])
    assert not fresh._memory
    assert len(list(tmp_path.rglob("*.npz"))) == 1  # only the cached extractor's shard
    for e, g in zip(expected, got):
        np.testing.assert_allclose(e, g, rtol=1e-2, atol=1e-2)
