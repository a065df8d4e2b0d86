"""Routers. Importing this package registers every router by name (see ``base.make_router``)."""

from lookahead_router.routers import ceiling, classifiers, linear, lookahead, similarity  # noqa: F401
from lookahead_router.routers.base import ROUTERS, Router, RouterError, make_router

__all__ = ["ROUTERS", "Router", "RouterError", "make_router"]
