"""Routers: the contract (``base.Router``), their options (``config``) and the one table of them
by name (``registry.ROUTERS``, ``make_router``).

The names below are imported on first use: importing a module of this package (its configs, for
`lookahead train --help`) then does not load every router and PyTorch with it."""

from importlib import import_module

_EXPORTS = {"Router": "base", "RouterError": "base", "ROUTERS": "registry", "make_router": "registry"}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f"lookahead_router.routers.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
