"""Router options: one typed dataclass per router class, defaults and checks in one place.

Every router class names its ``Config`` (see ``routers/base.py``). A field is declared with
``option(default, help, ...)``: its type comes from the annotation, its bounds or choices from the
call, and its help text is what `lookahead routers --options`, `lookahead train --help` and the
documentation's reference show. A neural router's config holds the training engine's
``TrainConfig`` as ``train`` (not a copy of its fields); its fields are still given flat
(``epochs=3`` means ``train.epochs``), because a field name belongs to one level only.

``Config.from_options(options)`` checks names, types and bounds and names the bad option;
``to_dict()`` is what ``router.json`` saves and ``from_options(saved)`` rebuilds it exactly.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, ClassVar

from lookahead_router.data.labels import DEFAULT_THRESHOLD, LABEL_RULES
from lookahead_router.errors import LookaheadError
from lookahead_router.options import option
from lookahead_router.training.config import TrainConfig


class ConfigError(LookaheadError):
    """A router option is unknown or has a value it cannot take; ``option`` names it, so that the
    command line can say which of its flags (``--set KEY=VALUE``) was wrong."""

    def __init__(self, message: str, option: str | None = None):
        super().__init__(message)
        self.option = option


KINDS = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}


def coerce(who: str, name: str, value: Any, kind: type) -> Any:
    """``value`` as ``kind`` (bool, int, float or str), or a ConfigError naming the option, the
    value and the type expected (never Python's "invalid literal for int()")."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = {bool: isinstance(value, bool), int: number and float(value).is_integer(),
          float: number, str: isinstance(value, str)}[kind]
    if not ok:
        raise ConfigError(f"{who}: option {name} must be {KINDS[kind]}, got {value!r}", name)
    return value if kind in (bool, str) else kind(value)


def option_of(exc: BaseException) -> str | None:
    """The option a (possibly re-raised) ConfigError names, else None."""
    while exc is not None:
        if getattr(exc, "option", None):
            return exc.option
        exc = exc.__cause__ or exc.__context__
    return None


@dataclass(frozen=True)
class OptionInfo:
    """One option as users see it: flat name, scalar type, default, help, and where it lives."""
    name: str
    kind: type           # bool | int | float | str
    optional: bool       # None is allowed (it means "the router decides", e.g. its backbone)
    default: Any
    help: str
    nested: str | None   # "train" for the training engine's fields, else None


@lru_cache(maxsize=None)
def _types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _scalar(annotation: Any) -> tuple[type, bool]:
    """(bool | int | float | str, whether None is allowed) of an annotation like ``int | None``."""
    args = typing.get_args(annotation) or (annotation,)
    kinds = [a for a in args if a is not type(None)]
    return kinds[0], len(kinds) < len(args)


@dataclass
class RouterConfig:
    """The shared behaviour of every router's options (no fields of its own)."""

    NESTED: ClassVar[dict[str, type]] = {}   # field name -> the dataclass it holds

    # ---- the flat view --------------------------------------------------------------------
    @classmethod
    def options(cls) -> list[OptionInfo]:
        """Every option this config takes, flat, in declaration order (nested ones in place)."""
        out = []
        defaults = cls()
        for f in dataclasses.fields(cls):
            if f.name in cls.NESTED:
                inner = getattr(defaults, f.name)
                for g in dataclasses.fields(inner):
                    kind, optional = _scalar(_types(type(inner))[g.name])
                    out.append(OptionInfo(g.name, kind, optional, getattr(inner, g.name),
                                          g.metadata.get("help", ""), f.name))
            else:
                kind, optional = _scalar(_types(cls)[f.name])
                out.append(OptionInfo(f.name, kind, optional, getattr(defaults, f.name),
                                      f.metadata.get("help", ""), None))
        return out

    @classmethod
    def from_options(cls, options: dict[str, Any], who: str = "router", defaults: dict[str, Any] | None = None):
        """The config with ``defaults`` then ``options`` applied over the class's defaults;
        flat names or nested dicts (``{"train": {...}}``, as ``to_dict`` writes) alike."""
        infos = {o.name: o for o in cls.options()}
        flat: dict[str, Any] = {}
        for source in (defaults or {}, options):
            for key, value in source.items():
                if key in cls.NESTED and isinstance(value, dict):
                    flat.update(value)
                else:
                    flat[key] = value
        check_options(who, flat, infos)
        values: dict[str, Any] = {}
        nested: dict[str, dict[str, Any]] = {name: {} for name in cls.NESTED}
        for key, value in flat.items():
            info = infos[key]
            if not (value is None and info.optional):
                value = coerce(who, key, value, info.kind)
            (nested[info.nested] if info.nested else values)[key] = value
        base = cls()
        for name in cls.NESTED:
            values[name] = dataclasses.replace(getattr(base, name), **nested[name])
        config = dataclasses.replace(base, **values)
        config.check(who)
        return config

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """Every option's value by its flat name (``epochs``, not ``train.epochs``)."""
        return {o.name: getattr(getattr(self, o.nested) if o.nested else self, o.name) for o in self.options()}

    def changed(self) -> dict[str, Any]:
        """The options whose values differ from the class's defaults, flat (for ``repr``)."""
        base = type(self)().flat()
        return {name: value for name, value in self.flat().items() if value != base[name]}

    # ---- checks ---------------------------------------------------------------------------
    def check(self, who: str = "router") -> None:
        """The bounds and choices declared with each field; subclasses add cross-field checks."""
        fields = [(self, f) for f in dataclasses.fields(self) if f.name not in self.NESTED]
        fields += [(getattr(self, n), f) for n in self.NESTED for f in dataclasses.fields(getattr(self, n))]
        for holder, f in fields:
            value, meta = getattr(holder, f.name), f.metadata
            if value is None or not meta:
                continue
            if meta.get("choices") and value not in meta["choices"]:
                raise ConfigError(f"{who}: {f.name} must be one of {meta['choices']}, got {value!r}", f.name)
            if meta.get("positive") and not value > 0:
                raise ConfigError(f"{who}: {f.name} must be positive, got {value}", f.name)
            if meta.get("low") is not None and value < meta["low"]:
                raise ConfigError(f"{who}: {f.name} must be at least {meta['low']}, got {value}", f.name)
            if meta.get("high") is not None and value > meta["high"]:
                raise ConfigError(f"{who}: {f.name} must be at most {meta['high']}, got {value}", f.name)


def check_options(who: str, options: dict[str, Any], known) -> None:
    """Unknown option names are errors naming them, the likely meant one and the valid ones."""
    from lookahead_router.choices import suggest
    unknown = sorted(set(options) - set(known))
    if unknown:
        guess = suggest(unknown[0], known)
        raise ConfigError(f"{who}: unknown option(s) {unknown}" + (f" (did you mean {guess}?)" if guess else "")
                          + f"; known: {sorted(known)}", unknown[0])


# ---- the routers' configs -----------------------------------------------------------------------
@dataclass
class EmbeddingConfig(RouterConfig):
    """Routers over a frozen sentence encoder's prompt embeddings (no network trained)."""
    backbone: str = option("minilm", "Sentence encoder: hub id, local folder, or minilm / tiny-bert.")
    max_length: int = option(256, "Prompt tokens embedded (longer prompts are cut, keeping the start).",
                             positive=True)
    batch_size: int = option(32, "Prompts embedded per batch.", positive=True)
    progress: bool = option(True, "Show progress bars.")


@dataclass
class KNNConfig(EmbeddingConfig):
    k: int = option(100, "Neighbours averaged (capped at the training rows).", positive=True)


@dataclass
class KMeansConfig(EmbeddingConfig):
    k: int = option(100, "Clusters (capped at the training rows).", positive=True)
    seed: int = option(0, "k-means initialisation seed.")


@dataclass
class SmoothieConfig(EmbeddingConfig):
    n0: int = option(1000, "Nearest training queries whose responses estimate each candidate's noise.",
                     positive=True)
    response_max_length: int | None = option(None, "Response tokens embedded (default: max_length).",
                                             positive=True)


@dataclass
class FittedConfig(EmbeddingConfig):
    """Routers whose penalty (and source balancing) is chosen by validation average μn."""
    seed: int = option(0, "Seed of the cross-validation folds.")
    balance: str = option("auto", "Weigh each source as average μn weighs it: none, sources, or auto "
                          "(both tried, chosen on validation).", choices=("auto", "none", "sources"))
    cv_folds: int = option(5, "Folds of the cross-validation that chooses the penalty when no "
                           "validation set is given.", low=2)


@dataclass
class DomainConfig(FittedConfig):
    domain_column: str = option("source", "Dataset column holding each prompt's domain.")
    min_confidence: float = option(0.0, "Below this classifier confidence, score as the best overall "
                                   "candidate instead of the domain's.", low=0.0, high=1.0)


def _train(**changes) -> Any:
    """A ``train`` field whose engine defaults differ from TrainConfig's by ``changes``."""
    return field(default_factory=lambda: TrainConfig(**changes))


@dataclass
class NeuralConfig(RouterConfig):
    """Routers that train a network on a backbone through the training engine."""
    NESTED: ClassVar[dict[str, type]] = {"train": TrainConfig}

    backbone: str | None = option(None, "Hub id, local folder, or minilm / smollm2 / tiny-bert / tiny-llama "
                                  "(default: minilm for encoder routers, smollm2 for causal ones).")
    finetune: bool = option(False, "Train the whole backbone (the paper; the gpu preset) instead of its "
                            "top `layers` over cached states of the layers below.")
    layers: int = option(1, "Top backbone layers trained when finetune is off.", positive=True)
    max_length: int = option(256, "Prompt tokens read (longer prompts are cut, keeping the start).",
                             positive=True)
    hidden: int = option(256, "Width of the scoring MLP.", positive=True)
    dropout: float = option(0.1, "Dropout in the scoring MLP.", low=0.0, high=1.0)
    labels: str = option("relative", "Label rule (data/labels.py): relative or absolute.", choices=LABEL_RULES)
    threshold: float = option(DEFAULT_THRESHOLD, "Score at or above which a response counts as good "
                              "(the absolute rule).", low=0.0, high=1.0)
    val_fraction: float = option(0.1, "Share of the training rows carved out for validation when no "
                                 "validation set is given.", low=0.0, high=1.0)
    balance: str = option("none", "sources: each source weighs in the loss as it weighs in average μn.",
                          choices=("none", "sources"))
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class ClassifierConfig(NeuralConfig):
    """MLC: multi-label classification of the prompt (no options of its own)."""


@dataclass
class ZooterConfig(ClassifierConfig):
    kl_temperature: float = option(1.0, "Softmax temperature of the normalised scores distilled.", positive=True)


@dataclass
class RouterDCConfig(ClassifierConfig):
    # RouterDC's published settings: top-3 / last-3 (capped at floor(T/2)), temperature 1,
    # sample-sample weight 1 over 5 k-means clusters
    top_k: int = option(3, "Candidates pulled close per query (capped at T/2).", positive=True)
    last_k: int = option(3, "Candidates pushed away per query (capped at T/2).", positive=True)
    dc_temperature: float = option(1.0, "Temperature of the cosine logits.", positive=True)
    cluster_weight: float = option(1.0, "Weight of the sample-sample loss.", low=0.0)
    clusters: int = option(5, "k-means clusters of the sample-sample loss.", positive=True)


@dataclass
class LookaheadConfig(NeuralConfig):
    """What both Lookahead realisations share (Appendix C.4 / C.5)."""
    max_length: int = option(128, "Prompt tokens read (the rest of the sequence holds the candidates' "
                             "response slots).", positive=True)
    rec_tokens: int = option(0, "Reconstruction targets scored per query and step (0: all).", low=0)


@dataclass
class LookaheadCLMConfig(LookaheadConfig):
    rm_weight: float = option(0.5, "λ, weight of the response reconstruction loss (0: without "
                              "response modelling).", low=0.0)
    response_length: int = option(256, "Response tokens reconstructed per candidate.", positive=True)


@dataclass
class LookaheadMLMConfig(LookaheadConfig):
    rm_weight: float = option(0.2, "λ, weight of the masked response reconstruction loss (0: without "
                              "response modelling).", low=0.0)
    m: int = option(64, "MID tokens per candidate (the response horizon).", positive=True)
    alpha: float = option(0.4, "Share of training over which the curriculum comes to hide every "
                          "response token.", low=0.0, high=1.0)
    masking: str = option("end", "Curriculum: end, start, random or none.",
                          choices=("end", "start", "random", "none"))
    joint: bool = option(True, "One sequence for every candidate (false: one sequence each).")
    train: TrainConfig = _train(epochs=4.0)


@dataclass
class FullResponseConfig(NeuralConfig):
    response_max_length: int = option(256, "Response tokens embedded.", positive=True)
