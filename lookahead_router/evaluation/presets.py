"""Benchmark presets as data: one JSON file per preset in ``evaluation/presets/``.

A preset names router groups, each with its routers and their shared options, per-router options
on top, and the routers `lookahead benchmark` runs by default. A backbone written ``"A|B"`` means
A where it can be loaded (a hub or a local copy), else B (the offline default): the run records
which one it used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from lookahead_router.errors import LookaheadError, RouterError

PRESET_DIR = Path(__file__).parent / "presets"


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    groups: dict[str, dict]            # group -> {"routers": [...], "options": {...}}
    router_options: dict[str, dict]
    default_routers: tuple[str, ...]
    per_source: int | None = None      # subsample each source (smoke runs only)

    def group(self, router: str) -> str | None:
        return next((g for g, spec in self.groups.items() if router in spec["routers"]), None)

    def options(self, router: str) -> dict:
        """The router's options: its group's, then its own; backbones resolved."""
        group = self.group(router)
        options = {**(self.groups[group]["options"] if group else {}), **self.router_options.get(router, {})}
        if "backbone" in options:
            from lookahead_router.routers.registry import entry
            options["backbone"] = resolve_backbone(options["backbone"], entry(router).cls.kind)
        return options


@lru_cache(maxsize=32)
def resolve_backbone(spec: str, kind: str) -> str:
    """The first alternative of ``"A|B|..."`` that can be loaded (a local folder, the Hugging Face
    cache, or the hub when it is reachable), else the last."""
    choices = spec.split("|")
    return next((c for c in choices[:-1] if _loadable(c, kind)), choices[-1])


def _loadable(choice: str, kind: str) -> bool:
    from lookahead_router.routers.backbones import backbone_config
    if not Path(choice).exists() and not _hub_reachable():
        # offline: only a copy in the local cache will do (asking the hub would retry for ~30 s)
        from huggingface_hub import try_to_load_from_cache
        return isinstance(try_to_load_from_cache(choice, "config.json"), str)
    try:
        backbone_config(choice, kind)
        return True
    except RouterError:
        return False


@lru_cache(maxsize=1)
def _hub_reachable(host: str = "huggingface.co", timeout_s: float = 3.0) -> bool:
    import socket
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def load_preset(name: str) -> Preset:
    known = preset_names()
    if name not in known:   # (also keeps a name like "../x" from reading another file)
        from lookahead_router.choices import suggest
        guess = suggest(name, known)
        raise LookaheadError(f"unknown preset {name!r}" + (f" (did you mean {guess}?)" if guess else "")
                         + f"; choose from {', '.join(known)}")
    path = PRESET_DIR / f"{name}.json"
    try:
        data = json.loads(path.read_text())
        return Preset(name, data["description"], data["groups"], data.get("router_options", {}),
                      tuple(data["default_routers"]), data.get("per_source"))
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise LookaheadError(f"{path}: not a valid preset ({exc})") from exc


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))
