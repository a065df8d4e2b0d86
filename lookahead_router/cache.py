"""Where the package keeps what it can recompute: ``$LOOKAHEAD_CACHE``, by default
``~/.cache/lookahead-router/features``. Prompt features (``routers/features.py``), exported ONNX
graphs (``routers/onnx_encoder.py``) and the proxy's request-log spools live under it; this module
is what they share, so none imports another for it."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "LOOKAHEAD_CACHE"


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "lookahead-router" / "features"))
