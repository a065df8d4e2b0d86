"""The router contract, shared by every router (scikit-learn style).

    router = make_router("knn", k=100)      # or KNNRouter(k=100); names: routers/registry.py
    router.fit(train_ds)                     # a RoutingDataset
    p = router.score(prompts)                # [n, T] float array, higher = better, in [0, 1]
    router.route(prompts, cost_weight=0.2, costs={"big": 3.0, "small": 0.2})
                                             # RouteDecision per prompt: .model, .probabilities
    router.save("dir"); Router.load("dir")   # router.json + state.safetensors, never pickle

A router class declares its options as a ``Config`` dataclass (``routers/config.py``) and what it
is as class attributes (``kind``, ``seeded``, ``neural``, ``deployable``); it implements ``_fit``,
``_score`` and, when it holds arrays, ``_state`` / ``_set_state``. A router learns its candidates
from the dataset it is fitted on. ``router.json`` keeps the resolved config, and ``load`` rebuilds
the router from it, so a later change of a default never changes a saved router.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
from safetensors.numpy import load_file, save_file

from lookahead_router.data.dataset import RoutingDataset
from lookahead_router.errors import RouterError
from lookahead_router.precision import environment
from lookahead_router.routers.config import ConfigError, RouterConfig
from lookahead_router.routers.cost import RouteDecision, decide

CONFIG_FILE = "router.json"
STATE_FILE = "state.safetensors"
FORMAT_VERSION = 2   # 2: "config" holds the resolved options; 1 kept "options" (+ "extra.config")


class Router:
    name: ClassVar[str] = "router"
    Config: ClassVar[type[RouterConfig]] = RouterConfig
    kind: ClassVar[str] = "encoder"    # the backbone family it reads prompts with: backbones.ENCODER | CAUSAL
    seeded: ClassVar[bool] = False     # a seed option changes what it learns (benchmarks vary it)
    neural: ClassVar[bool] = False     # trains a network through the training engine
    deployable: ClassVar[bool] = True  # False: a reference that reads the real responses

    def __init__(self, config: RouterConfig | None = None, /, **options: Any):
        """``KNNRouter(k=5)`` (checked options) or ``KNNRouter(config)`` (a ``KNNRouter.Config``)."""
        if config is None:
            try:
                config = self.Config.from_options(options, who=self.name)
            except ConfigError as exc:   # (its cause names the option for the CLI's --set)
                raise RouterError(str(exc)) from exc
        elif options:
            raise RouterError(f"{self.name}: pass a {self.Config.__name__} or keyword options, not both")
        elif not isinstance(config, self.Config):
            raise RouterError(f"{self.name}: its config is a {self.Config.__name__}, not a {type(config).__name__}")
        self.config = config
        self.candidates: list[str] = []
        self.trained_with: dict = {}   # a loaded router: the environment() it was saved in
        self.runtime: dict[str, Any] = {}   # how its frozen encoder runs: see ``use``

    # ---- the contract --------------------------------------------------------------------
    def fit(self, ds: RoutingDataset, validation: RoutingDataset | None = None) -> "Router":
        """Learn from ``ds``. Neural routers pick their best checkpoint on ``validation``
        (carved from ``ds`` when not given); the others ignore it."""
        if len(ds.candidates) < 2:
            raise RouterError(f"routing needs at least two candidates; the dataset has "
                              f"{ds.candidates or 'none'}")
        if len(ds) == 0:
            raise RouterError("cannot fit a router on an empty dataset (is the training fold empty?)")
        if not ds.available.any(axis=1).all():
            ds = ds.subset(np.flatnonzero(ds.available.any(axis=1)))
        self.candidates = list(ds.candidates)
        self._fit(ds, validation)
        return self

    def score(self, prompts: Sequence[str]) -> np.ndarray:
        """[n, T] scores for the candidates (``self.candidates`` order); higher is better."""
        if not self.candidates:
            raise RouterError(f"{self.name} router is not fitted: call fit() or load() first")
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        for i, p in enumerate(prompts):
            if not isinstance(p, str):
                raise RouterError(f"prompt {i} is {type(p).__name__}, not a string")
        if not prompts:
            return np.zeros((0, len(self.candidates)), dtype=np.float32)
        scores = np.asarray(self._score(prompts), dtype=np.float32)
        assert scores.shape == (len(prompts), len(self.candidates)), scores.shape
        return scores

    def score_rows(self, ds: RoutingDataset) -> np.ndarray:
        """[n, T] scores of a dataset's rows: the prompts' scores for every deployable router;
        the response-aware reference rows (``routers/ceiling.py``) also read the responses."""
        return self.score(ds.queries["prompt"].tolist())

    def route(self, prompts: Sequence[str], cost_weight: float = 0.0,
              costs: Mapping[str, float] | np.ndarray | None = None) -> list[RouteDecision]:
        """Per prompt, the candidate with the best utility P(good) − cost_weight · relative cost,
        and every candidate's probability. ``costs``: per candidate (a mapping by name, or [T] /
        [n, T] in ``self.candidates`` order), in any unit; see ``routers/cost.py``."""
        if isinstance(costs, Mapping):
            missing = [c for c in self.candidates if c not in costs]
            if missing:
                raise RouterError(f"costs has no entry for candidate(s) {missing}")
            costs = [float(costs[c]) for c in self.candidates]
        return decide(self.candidates, self.score(prompts), costs, cost_weight)

    # ---- the frozen encoder ----------------------------------------------------------------
    def _extractor(self, backbone: str | None, kind: str, max_length: int, layer: int | None = None,
                   progress: bool = True, batch_size: int = 32):
        """The process's shared feature extractor for these settings, run as ``self.runtime`` says."""
        from lookahead_router.routers.features import shared_extractor
        keep = self.runtime.get("keep_cache", True)
        return shared_extractor(backbone, kind, max_length, layer=layer, progress=progress and keep,
                                batch_size=batch_size, engine=self.runtime.get("engine"),
                                precision=self.runtime.get("precision"), keep_cache=keep)

    def use(self, engine: str | None = None, precision: str | None = None, keep_cache: bool = True) -> "Router":
        """Run the frozen encoder with ``engine`` (torch, onnx, onnx-int8; default torch) in
        ``precision`` (default: the process's) from now on; ``keep_cache=False``: embed each
        prompt afresh and forget it, with no progress bars (a server, a latency benchmark)."""
        self.runtime = {"engine": engine, "precision": precision, "keep_cache": keep_cache}
        return self

    # ---- persistence ---------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: np.ascontiguousarray(v) for k, v in self._state().items()}
        save_file(state, str(directory / STATE_FILE))
        config = {"router": self.name, "format": FORMAT_VERSION, "candidates": self.candidates,
                  "config": self.config.to_dict(), "extra": self._extra(),
                  "trained_with": environment()}   # the device and precision its features came from
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        return directory

    @staticmethod
    def load(directory: str | Path, engine: str | None = None, precision: str | None = None,
             keep_cache: bool = True) -> "Router":
        """The router saved in ``directory``, its frozen encoder run by ``engine`` (torch, onnx,
        onnx-int8) in ``precision`` (default: the process's). ``keep_cache=False`` (a server):
        embed each prompt and forget it, with no progress bars."""
        from lookahead_router.routers.registry import entry
        directory = Path(directory)
        path = directory / CONFIG_FILE
        if not path.is_file():
            raise RouterError(f"{directory} holds no saved router ({CONFIG_FILE} not found)")
        try:
            saved = json.loads(path.read_text())
            variant = entry(saved["router"])
            fmt = saved.get("format", 1)
            if fmt == FORMAT_VERSION:
                config = variant.cls.Config.from_options(saved["config"], who=saved["router"])
            elif fmt == 1:
                config = variant.config(_format1_options(saved, variant.cls.Config))
            else:
                raise RouterError(f"{path}: router format {fmt} is newer than this version reads "
                                  f"({FORMAT_VERSION}); upgrade lookahead-router")
            router = variant.cls(config)
            router.name = saved["router"]
            router.candidates = list(saved["candidates"])
            router.trained_with = dict(saved.get("trained_with", {}))
            extra = saved.get("extra", {})
        except ConfigError as exc:
            raise RouterError(f"{path}: the saved options do not fit this version's "
                              f"{saved.get('router')} router ({exc})") from exc
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise RouterError(f"{path}: not a valid router config ({exc})") from exc
        router.use(engine, precision, keep_cache)
        state = load_file(str(directory / STATE_FILE)) if (directory / STATE_FILE).is_file() else {}
        router._set_state(state, extra, directory)
        return router

    # ---- for subclasses ------------------------------------------------------------------
    def _fit(self, ds: RoutingDataset, validation: RoutingDataset | None) -> None:
        raise NotImplementedError

    def _score(self, prompts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def _state(self) -> dict[str, np.ndarray]:
        return {}

    def _extra(self) -> dict:
        """JSON-serialisable facts learned in fit (besides arrays)."""
        return {}

    def _set_state(self, state: dict[str, np.ndarray], extra: dict, directory: Path) -> None:
        pass

    def summary(self) -> str:
        """What this router does, for `lookahead routers` (subclasses add their settings)."""
        return self.description()

    @classmethod
    def description(cls) -> str:
        """The class's docstring's first paragraph (whole: a first line alone can stop
        mid-sentence), reST ``literals`` as plain text."""
        paragraph = (cls.__doc__ or cls.name).strip().split("\n\n")[0]
        return " ".join(paragraph.split()).replace("``", "")

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.config.changed().items())
        return f"{type(self).__name__}({opts})"


def _format1_options(saved: dict, config_class: type[RouterConfig]) -> dict:
    """The options of a router saved in format 1: ``options`` as given (every option, resolved,
    for the similarity and linear routers) and, for neural routers, the resolved config in
    ``extra.config``. Fields the router's config no longer has (format 1 gave the CLM the MLM's
    unused options) are dropped."""
    known = {o.name for o in config_class.options()}
    options = {**saved.get("options", {}), **saved.get("extra", {}).get("config", {})}
    return {k: v for k, v in options.items() if k in known}
