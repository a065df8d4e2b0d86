"""Typed options of the neural routers: one dataclass per concept, defaults in one place.

``NeuralConfig`` holds what every neural router shares (backbone, trainable part, labels, the
training engine's settings); ``ClassifierConfig`` adds the baselines' loss options and
``LookaheadConfig`` the Lookahead routers' (Appendix C.4/C.5 defaults). A router is built from
keyword options: ``config_from_options`` checks their names and types and names the bad one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from lookahead_router.data.labels import DEFAULT_THRESHOLD, LABEL_RULES


BALANCES = ("none", "sources")


class ConfigError(ValueError):
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


@dataclass
class NeuralConfig:
    backbone: str | None = None   # hub id, local folder, or minilm / smollm2 / tiny-bert / tiny-llama
    finetune: bool = False        # True: the whole backbone trains (the paper; the gpu preset)
    layers: int = 1               # finetune=False: top layers trained over cached lower-layer states
    max_length: int = 128         # prompt tokens (longer prompts are cut, keeping the start)
    hidden: int = 256             # width of the scoring MLP
    dropout: float = 0.1
    labels: str = "relative"      # label rule (data/labels.py): relative | absolute
    threshold: float = DEFAULT_THRESHOLD
    val_fraction: float = 0.1     # validation carved from the training rows when none is given
    balance: str = "none"         # "sources": each source weighs in the loss as in average μn
    # the training engine (training/engine.py)
    lr: float = 5e-5
    batch_size: int = 64
    epochs: float = 2.0           # at most; with patience, training stops earlier
    grad_accum: int = 1
    eval_every: int = 100
    patience: int = 0             # stop after this many validations without a better one (0: never)
    bf16: bool = True             # autocast where the precision setting resolves to bf16 (False: fp32)
    seed: int = 0
    output_dir: str | None = None
    resume: bool = False
    progress: bool = True

    def check(self) -> None:
        if self.balance not in BALANCES:
            raise ConfigError(f"balance must be one of {BALANCES}, got {self.balance!r}")
        if self.patience < 0:
            raise ConfigError(f"patience must be >= 0, got {self.patience}")
        if self.labels not in LABEL_RULES:
            raise ConfigError(f"labels must be one of {LABEL_RULES}, got {self.labels!r}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"threshold must lie in [0, 1], got {self.threshold}")
        for name in ("layers", "max_length", "hidden", "batch_size", "grad_accum", "eval_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if self.epochs <= 0 or self.lr <= 0:
            raise ConfigError(f"epochs and lr must be positive, got {self.epochs} and {self.lr}")


@dataclass
class ClassifierConfig(NeuralConfig):
    kl_temperature: float = 1.0   # ZOOTER: softmax temperature of the normalised scores
    # RouterDC's published settings: top-3 / last-3 (capped at floor(T/2)), temperature 1,
    # sample-sample weight 1 over 5 k-means clusters
    top_k: int = 3
    last_k: int = 3
    dc_temperature: float = 1.0
    cluster_weight: float = 1.0
    clusters: int = 5


MASKINGS = ("end", "start", "random", "none")


@dataclass
class LookaheadConfig(NeuralConfig):
    rm_weight: float = 0.2        # λ (the CLM's default is 0.5)
    m: int = 64                   # MLM: MID tokens per candidate (the response horizon)
    response_length: int = 256    # CLM: response tokens reconstructed per candidate
    alpha: float = 0.4            # MLM: share of training over which the curriculum hides all
    masking: str = "end"          # MLM curriculum: end | start | random | none
    joint: bool = True            # MLM: one sequence for every candidate (False: one each)
    rec_tokens: int = 0           # reconstruction targets scored per query and step (0: all)

    def check(self) -> None:
        super().check()
        if self.masking not in MASKINGS:
            raise ConfigError(f"masking must be one of {MASKINGS}, got {self.masking!r}")
        if self.rm_weight < 0 or self.m < 1 or self.response_length < 1 or self.rec_tokens < 0:
            raise ConfigError("rm_weight and rec_tokens must be >= 0, m and response_length positive")


def config_from_options(cls: type, options: dict[str, Any], defaults: dict[str, Any] | None = None,
                        allowed: set[str] | None = None, who: str = "router"):
    """``cls(**defaults, **options)``, checked: unknown names (or names outside ``allowed``) and
    values of the wrong type are errors naming the option."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    names = set(fields) if allowed is None else allowed
    check_options(who, options, names)
    values = {**(defaults or {}), **options}
    for name, value in values.items():
        default = fields[name].default
        for kind in (bool, int, float):   # bool first: True is an int to Python
            if isinstance(default, kind):
                values[name] = coerce(who, name, value, kind)
                break
    config = cls(**values)
    config.check()
    return config


def check_options(who: str, options: dict[str, Any], known) -> None:
    """Unknown option names are errors naming them, the likely meant one and the valid ones."""
    from lookahead_router.choices import suggest
    unknown = sorted(set(options) - set(known))
    if unknown:
        guess = suggest(unknown[0], known)
        raise ConfigError(f"{who}: unknown option(s) {unknown}" + (f" (did you mean {guess}?)" if guess else "")
                          + f"; known: {sorted(known)}", unknown[0])
