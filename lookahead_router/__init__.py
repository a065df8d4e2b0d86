"""Lookahead Router: pick, for each prompt, which of several LLMs should answer it."""

from lookahead_router.data.dataset import RoutingDataset
from lookahead_router.errors import LookaheadError

__all__ = ["LookaheadError", "RoutingDataset"]
__version__ = "0.1.0"
