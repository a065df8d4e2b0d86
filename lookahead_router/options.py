"""``option()``: how every typed configuration field of the package is declared.

A field says its default, what it means (the help text that `lookahead routers --options`,
`lookahead train --help` and the documentation's reference show) and the values it may take;
``routers/config.py`` checks them. It lives here, apart from the routers, because the training
engine's ``TrainConfig`` declares its fields with it too.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any


def option(default: Any, help: str, *, choices: tuple | None = None, low: float | None = None,
           high: float | None = None, positive: bool = False) -> Any:
    """A dataclass field with its default, its meaning and its bounds or choices."""
    return field(default=default, metadata=dict(help=help, choices=choices, low=low, high=high,
                                                positive=positive))
