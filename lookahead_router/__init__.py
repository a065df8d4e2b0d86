"""Lookahead Router: pick, for each prompt, which of several LLMs should answer it."""

from lookahead_router.data.dataset import RoutingDataset

__all__ = ["RoutingDataset"]
__version__ = "0.1.0"
