"""The router contract, shared by every router (scikit-learn style).

    router = make_router("knn", k=100)      # or KNNRouter(k=100)
    router.fit(train_ds)                     # a RoutingDataset
    p = router.score(prompts)                # [n, T] float array, higher = better, in [0, 1]
    router.route(prompts, cost_weight=0.2, costs={"big": 3.0, "small": 0.2})
                                             # RouteDecision per prompt: .model, .probabilities
    router.save("dir"); Router.load("dir")   # router.json + state.safetensors, never pickle

A router learns its candidates from the dataset it is fitted on. Subclasses implement
``_fit``, ``_score`` and, when they hold arrays, ``_state`` / ``_set_state``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np
from safetensors.numpy import load_file, save_file

from lookahead_router.data.dataset import RoutingDataset
from lookahead_router.precision import environment
from lookahead_router.routers.cost import RouteDecision, decide

CONFIG_FILE = "router.json"
STATE_FILE = "state.safetensors"
FORMAT_VERSION = 1


class RouterError(ValueError):
    """A router cannot be built, fitted, used or loaded as asked."""


def typed(who: str, name: str, value: Any, kind: type) -> Any:
    """An option's value as ``kind``, or a RouterError naming the option, the value and the type
    expected (its cause, a ConfigError, tells the command line which ``--set`` it was)."""
    from lookahead_router.routers.config import ConfigError, coerce
    try:
        return coerce(who, name, value, kind)
    except ConfigError as exc:
        raise RouterError(str(exc)) from exc


class Router:
    name: ClassVar[str] = "router"

    def __init__(self, **options: Any):
        self.options = options
        self.candidates: list[str] = []
        self.trained_with: dict = {}   # a loaded router: the environment() it was saved in

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

    # ---- persistence ---------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: np.ascontiguousarray(v) for k, v in self._state().items()}
        save_file(state, str(directory / STATE_FILE))
        config = {"router": self.name, "format": FORMAT_VERSION, "candidates": self.candidates,
                  "options": self.options, "extra": self._extra(),
                  "trained_with": environment()}   # the device and precision its features came from
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        return directory

    @staticmethod
    def load(directory: str | Path) -> "Router":
        directory = Path(directory)
        path = directory / CONFIG_FILE
        if not path.is_file():
            raise RouterError(f"{directory} holds no saved router ({CONFIG_FILE} not found)")
        try:
            config = json.loads(path.read_text())
            router = make_router(config["router"], **config["options"])
            router.candidates = list(config["candidates"])
            router.trained_with = dict(config.get("trained_with", {}))
            extra = config.get("extra", {})
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise RouterError(f"{path}: not a valid router config ({exc})") from exc
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
        """What the router does, for `lookahead routers`: its docstring's first paragraph (whole:
        a first line alone can stop mid-sentence), reST ``literals`` as plain text."""
        paragraph = (type(self).__doc__ or self.name).strip().split("\n\n")[0]
        return " ".join(paragraph.split()).replace("``", "")

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({opts})"


# ---- registry ------------------------------------------------------------------------------
ROUTERS: dict[str, Callable[..., Router]] = {}


def register(name: str, factory: Callable[..., Router]) -> None:
    ROUTERS[name] = factory


def make_router(name: str, **options: Any) -> Router:
    import lookahead_router.routers  # noqa: F401  (fills the registry)
    if name not in ROUTERS:
        from lookahead_router.choices import unknown_message
        raise RouterError(unknown_message("router", [name], sorted(ROUTERS)))
    try:
        return ROUTERS[name](**options)
    except TypeError as exc:
        raise RouterError(f"router {name!r}: {exc}") from exc
