"""The package's root error class.

Every error a user can cause (a malformed file, a bad option, an unknown name, a download that
failed) derives from ``LookaheadError``, so the CLI reports exactly these in one line and exits 2,
while any other exception, a bug, keeps its traceback.
"""

from __future__ import annotations


class LookaheadError(ValueError):
    """A user's input or a request the package cannot carry out; the CLI prints its message and
    exits 2. It derives from ValueError so that callers written against the older error classes
    (each a ValueError) keep catching them."""


class RouterError(LookaheadError):
    """A router cannot be built, fitted, used or loaded as asked (``lookahead_router.routers``;
    defined here so that the modules beneath the router classes can raise it too)."""
