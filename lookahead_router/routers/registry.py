"""Every router by name: the one table of the package (``ROUTERS``), and ``make_router``.

A row is a router class, the group `lookahead benchmark` and `lookahead routers` report it in,
and, for a variant, the option defaults that make it one (the ablations of Figure 4 are
Lookahead-MLM with another masking, and so on). What a router *is* (its backbone kind, whether a
seed changes it, whether it trains a network, whether it is deployable) is a class attribute;
its options and their defaults are its class's ``Config``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lookahead_router.routers.base import Router, RouterError
from lookahead_router.routers.ceiling import FirstTokensCeiling, FullResponseCeiling
from lookahead_router.routers.classifiers import (MLCCausal, MLCEncoder, RouterDCCausal, RouterDCEncoder,
                                                  ZooterCausal, ZooterEncoder)
from lookahead_router.routers.config import ConfigError, RouterConfig
from lookahead_router.routers.linear import DomainRouter, LinearRouter
from lookahead_router.routers.lookahead import LookaheadCLMRouter, LookaheadMLMRouter
from lookahead_router.routers.similarity import KMeansRouter, KNNRouter, SmoothieRouter

GROUPS = {
    "reference": "deployable without training a network; every router is judged against both",
    "baseline": "the paper's baselines",
    "lookahead": "Lookahead (-norm: without the response reconstruction loss)",
    "ablation": "Lookahead-MLM's ablations (Figure 4)",
    "ceiling": "reads the candidates' real responses: an upper reference, not deployable",
}


@dataclass(frozen=True)
class Entry:
    cls: type[Router]
    group: str
    defaults: dict[str, Any] = field(default_factory=dict)   # what makes a variant one

    def config(self, options: dict[str, Any], who: str | None = None) -> RouterConfig:
        return self.cls.Config.from_options(options, who=who or self.cls.name, defaults=self.defaults)


NORM = {"rm_weight": 0.0}   # without response modelling (λ = 0)

ROUTERS: dict[str, Entry] = {
    "linear": Entry(LinearRouter, "reference"),
    "domain": Entry(DomainRouter, "reference"),
    "knn": Entry(KNNRouter, "baseline"),
    "kmeans": Entry(KMeansRouter, "baseline"),
    "smoothie": Entry(SmoothieRouter, "baseline"),
    "mlc-clm": Entry(MLCCausal, "baseline"),
    "zooter-clm": Entry(ZooterCausal, "baseline"),
    "routerdc-clm": Entry(RouterDCCausal, "baseline"),
    "mlc-mlm": Entry(MLCEncoder, "baseline"),
    "zooter-mlm": Entry(ZooterEncoder, "baseline"),
    "routerdc-mlm": Entry(RouterDCEncoder, "baseline"),
    "lookahead-clm-norm": Entry(LookaheadCLMRouter, "lookahead", NORM),
    "lookahead-clm": Entry(LookaheadCLMRouter, "lookahead"),
    "lookahead-mlm-norm": Entry(LookaheadMLMRouter, "lookahead", NORM),
    "lookahead-mlm": Entry(LookaheadMLMRouter, "lookahead"),
    "lookahead-mlm-start": Entry(LookaheadMLMRouter, "ablation", {"masking": "start"}),
    "lookahead-mlm-random": Entry(LookaheadMLMRouter, "ablation", {"masking": "random"}),
    "lookahead-mlm-nocm": Entry(LookaheadMLMRouter, "ablation", {"masking": "none"}),
    "lookahead-mlm-separate": Entry(LookaheadMLMRouter, "ablation", {"joint": False}),
    "ceiling-first-m": Entry(FirstTokensCeiling, "ceiling", NORM),   # its blocks hold real tokens: nothing to reconstruct
    "ceiling-full": Entry(FullResponseCeiling, "ceiling"),
}


def names(group: str) -> tuple[str, ...]:
    return tuple(n for n, e in ROUTERS.items() if e.group == group)


def entry(name: str) -> Entry:
    if name not in ROUTERS:
        from lookahead_router.choices import unknown_message
        raise RouterError(unknown_message("router", [name], sorted(ROUTERS)))
    return ROUTERS[name]


def make_router(name: str, **options: Any) -> Router:
    """The router called ``name`` with ``options`` over its defaults (unknown or ill-typed
    options are a RouterError naming the option)."""
    variant = entry(name)
    try:
        config = variant.config(options, who=name)
    except ConfigError as exc:   # (its cause names the option for the CLI's --set)
        raise RouterError(str(exc)) from exc
    router = variant.cls(config)
    router.name = name
    return router


def options_markdown() -> str:
    """Every router's options as markdown tables (the documentation's reference), one section per
    router class, with the routers of the class and the defaults their variants change."""
    by_class: dict[type, list[str]] = {}
    for name, e in ROUTERS.items():
        by_class.setdefault(e.cls, []).append(name)
    parts = []
    for cls, routers in by_class.items():
        variants = [f"`{n}`" + (" (" + ", ".join(f"{k}={v!r}" for k, v in ROUTERS[n].defaults.items()) + ")"
                                if ROUTERS[n].defaults else "") for n in routers]
        lines = [f"## {', '.join(f'`{n}`' for n in routers)}", "",
                 f"{cls.description()}", "", f"Routers: {', '.join(variants)}. Config: `{cls.Config.__name__}`; "
                 f"backbone kind {cls.kind}; {'seeded' if cls.seeded else 'not seeded'}; "
                 f"{'trains a network' if cls.neural else 'no network trained'}"
                 f"{'' if cls.deployable else '; not deployable'}.", "",
                 "| option | type | default | meaning |", "|---|---|---|---|"]
        for o in cls.Config.options():
            kind = o.kind.__name__ + (" or null" if o.optional else "")
            lines.append(f"| `{o.name}` | {kind} | `{o.default!r}` | {o.help.replace('|', '/')} |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"
