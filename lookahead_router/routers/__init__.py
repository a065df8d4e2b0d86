"""Routers: the contract (``base.Router``), their options (``config``) and the one table of them
by name (``registry.ROUTERS``, ``make_router``)."""

from lookahead_router.routers.base import Router, RouterError
from lookahead_router.routers.registry import ROUTERS, make_router

__all__ = ["ROUTERS", "Router", "RouterError", "make_router"]
