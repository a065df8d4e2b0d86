"""Where things live. Every location can be overridden by an environment variable."""

from __future__ import annotations

import os
from pathlib import Path

# The paper's released data (read-only). CI and `make` point this at ../shared/lookahead-data.
DATA_ENV = "LOOKAHEAD_DATA"
# Optional folder holding AlpacaEval's official LC parameter files
# (instruction_difficulty.csv and df_gamed.csv from the tatsu-lab/alpaca_eval hub dataset).
ALPACA_EVAL_FILES_ENV = "LOOKAHEAD_ALPACA_EVAL_FILES"


def release_dir(explicit: str | Path | None = None) -> Path:
    """The release folder: an explicit path, else $LOOKAHEAD_DATA, else ../shared/lookahead-data."""
    if explicit is not None:
        return Path(explicit)
    return Path(os.environ.get(DATA_ENV, "../shared/lookahead-data"))


def alpaca_eval_files_dir(explicit: str | Path | None = None) -> Path | None:
    if explicit is not None:
        return Path(explicit)
    value = os.environ.get(ALPACA_EVAL_FILES_ENV)
    return Path(value) if value else None
