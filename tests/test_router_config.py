"""The router-config contract: one typed Config per router class, the registry table, and
saved routers rebuilt from their resolved config (format 2) or migrated from format 1."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lookahead_router.routers.base import FORMAT_VERSION, Router, RouterError
from lookahead_router.routers.config import RouterConfig
from lookahead_router.routers.registry import GROUPS, ROUTERS, Entry, make_router, options_markdown

FIXTURES = Path(__file__).parent / "fixtures" / "routers_v1"
PROMPTS = ["solve the equation 3 x + 1 = 7", "write a python function that sorts", "hi", "tell me a story"]


@pytest.fixture
def fp32(monkeypatch):
    monkeypatch.setenv("LOOKAHEAD_PRECISION", "fp32")   # the fixtures' scores were computed in fp32


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.iterdir() if p.is_dir()))
def test_a_router_saved_in_format_1_loads_and_scores_identically(name, fp32, tmp_path):
    router = Router.load(FIXTURES / name)
    expected = np.array(json.loads((FIXTURES / name / "expected_scores.json").read_text()))
    np.testing.assert_allclose(router.score(PROMPTS), expected, atol=1e-5)
    # saved again it is format 2, and that loads to the same config and scores
    router.save(tmp_path / name)
    saved = json.loads((tmp_path / name / "router.json").read_text())
    assert saved["format"] == FORMAT_VERSION and "options" not in saved
    again = Router.load(tmp_path / name)
    assert again.config == router.config and again.name == name
    np.testing.assert_allclose(again.score(PROMPTS), expected, atol=1e-5)


def test_a_changed_default_does_not_change_a_saved_router(fp32, tmp_path, monkeypatch):
    router = Router.load(FIXTURES / "lookahead-clm-norm")
    router.save(tmp_path / "r")
    expected = router.score(PROMPTS)
    entry = ROUTERS["lookahead-clm-norm"]
    monkeypatch.setitem(ROUTERS, "lookahead-clm-norm", Entry(entry.cls, entry.group, {"rm_weight": 0.7}))
    assert make_router("lookahead-clm-norm").config.rm_weight == 0.7
    again = Router.load(tmp_path / "r")
    assert again.config.rm_weight == 0.0 and again.config == router.config
    np.testing.assert_allclose(again.score(PROMPTS), expected, atol=1e-6)


def test_saved_configs_that_cannot_load_say_why(tmp_path):
    shutil.copytree(FIXTURES / "knn", tmp_path / "knn")
    path = tmp_path / "knn" / "router.json"
    saved = json.loads(path.read_text())
    path.write_text(json.dumps({**saved, "format": 99}))
    with pytest.raises(RouterError, match="format 99 is newer"):
        Router.load(tmp_path / "knn")
    Router.load(FIXTURES / "knn").save(tmp_path / "v2")
    path = tmp_path / "v2" / "router.json"
    saved = json.loads(path.read_text())
    saved["config"]["k"] = "many"
    path.write_text(json.dumps(saved))
    with pytest.raises(RouterError, match="option k must be a whole number"):
        Router.load(tmp_path / "v2")


def test_every_router_declares_its_config_and_what_it_is():
    assert set(e.group for e in ROUTERS.values()) <= set(GROUPS)
    for name, e in ROUTERS.items():
        assert issubclass(e.cls, Router) and issubclass(e.cls.Config, RouterConfig), name
        assert dataclasses.is_dataclass(e.cls.Config)
        assert e.cls.kind in ("encoder", "causal")
        options = e.cls.Config.options()
        assert all(o.help for o in options), [o.name for o in options if not o.help]
        assert set(e.defaults) <= {o.name for o in options}, name
        router = make_router(name)
        assert router.name == name and type(router.config) is e.cls.Config
    assert {n for n, e in ROUTERS.items() if e.cls.neural and not e.cls.seeded} == set()
    assert ROUTERS["kmeans"].cls.seeded and not ROUTERS["knn"].cls.seeded
    assert not ROUTERS["ceiling-full"].cls.deployable and ROUTERS["lookahead-mlm"].cls.deployable
    text = options_markdown()
    assert all(f"`{name}`" in text for name in ROUTERS) and "| `warmup_ratio` |" in text


def test_the_training_engine_options_are_set_flat_and_checked():
    router = make_router("mlc-mlm", warmup_ratio=0.2, weight_decay=0.0, max_grad_norm=0.5, bf16=False, epochs=3)
    t = router.config.train
    assert (t.warmup_ratio, t.weight_decay, t.max_grad_norm, t.bf16, t.epochs) == (0.2, 0.0, 0.5, False, 3.0)
    assert make_router("lookahead-mlm").config.train.epochs == 4.0      # its own default (Appendix C.5)
    assert make_router("lookahead-clm").config.train.epochs == 2.0
    assert make_router("lookahead-clm").config.rm_weight == 0.5 and make_router("lookahead-mlm").config.rm_weight == 0.2
    with pytest.raises(RouterError, match="warmup_ratio must be at most 1.0, got 2.0"):
        make_router("mlc-mlm", warmup_ratio=2)
    with pytest.raises(RouterError, match="option lr must be a number"):
        make_router("mlc-mlm", lr="fast")
    with pytest.raises(RouterError, match=r"unknown option\(s\) \['m'\]"):
        make_router("lookahead-clm", m=4)      # the MLM's horizon: not an option of the CLM
    with pytest.raises(RouterError, match="must be positive"):
        make_router("knn", k=0)
    with pytest.raises(RouterError, match="pass a KNNConfig or keyword options"):
        ROUTERS["knn"].cls(ROUTERS["knn"].cls.Config(), k=3)
