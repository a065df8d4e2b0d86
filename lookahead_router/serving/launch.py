"""Starting the proxy: one process, or ``--workers N`` processes on one port (uvicorn's supervisor
forks them, shares the listening socket and restarts any that dies).

Each worker loads the router itself and has its own event loop, router batcher, metrics, circuit
breakers and concurrency limit: those are per replica. What must be shared lives outside the
processes. The request log is a PostgreSQL database (or one SQLite file, for a single host), and
the spool of a dead worker is shipped by its replacement (``spool.py``).
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from lookahead_router.serving.access_log import ACCESS_LOGGER

_SETTINGS_ENV = "LOOKAHEAD_SERVE_SETTINGS"  # how the supervisor hands the settings to its workers


@dataclass
class ServeSettings:
    """`lookahead serve`'s options (the config file's values may be overridden by them)."""
    config_file: str
    router_dir: Optional[str] = None
    cost_weight: Optional[float] = None
    engine: Optional[str] = None
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    access_log: Optional[bool] = None  # False: --no-access-log (None: the config's access_log)


def load_serving(settings: ServeSettings):
    """The serving config with the options applied, and the router, loaded and warmed up."""
    from lookahead_router.routers.base import Router
    from lookahead_router.routers.onnx_encoder import check_engine
    from lookahead_router.catalogue import ConfigError, load_config
    config = load_config(settings.config_file)
    if settings.cost_weight is not None:
        config.cost_weight = settings.cost_weight
    if settings.engine is not None:
        config.engine = settings.engine
    if settings.access_log is not None:
        config.access_log = settings.access_log
    router_dir = settings.router_dir or config.router
    if router_dir is None:
        raise ConfigError(f"{settings.config_file}: no router: pass --router DIR or set 'router' in the config")
    # A server embeds every new prompt: it keeps no feature cache and prints no bars.
    check_engine(config.engine)   # a mistyped engine is named before any router is read
    router = Router.load(router_dir, engine=config.engine, keep_cache=False)
    # Load weights and caches now, not on the first request: the router makes its extractor here,
    # so the onnx engines export (first run) or load their cached graph at this point.
    router.score(["warm-up"])
    return config, router, Path(router_dir)


def share_cores(workers: int) -> None:
    """Split this machine's cores between the workers: each runs the router's encoder on its share,
    so N workers do not run N times as many threads as there are cores."""
    import torch

    from lookahead_router.routers.onnx_encoder import default_threads
    threads = max(1, default_threads() // workers)
    os.environ["LOOKAHEAD_THREADS"] = str(threads)  # ONNX Runtime sessions made from now on
    torch.set_num_threads(threads)


def app_from_env():
    """uvicorn's application factory in each worker process."""
    from lookahead_router.serving.app import create_app
    settings = ServeSettings(**json.loads(os.environ[_SETTINGS_ENV]))
    share_cores(settings.workers)
    config, router, _ = load_serving(settings)
    return create_app(router, config)


def logging_config() -> dict:
    """uvicorn's logging, plus a handler printing the proxy's access log to stdout. uvicorn applies
    it in the supervisor and in every worker it starts, so ``--workers N`` print their lines too."""
    from uvicorn.config import LOGGING_CONFIG
    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["lookahead_access"] = {"format": "%(asctime)s %(message)s",
                                                "datefmt": "%Y-%m-%dT%H:%M:%S%z"}
    config["handlers"]["lookahead_access"] = {"class": "logging.StreamHandler", "formatter": "lookahead_access",
                                              "stream": "ext://sys.stdout"}
    config["loggers"][ACCESS_LOGGER] = {"handlers": ["lookahead_access"], "level": "INFO", "propagate": False}
    return config


def serve(settings: ServeSettings, app=None) -> None:
    """Listen until stopped: ``app`` in this process, or ``settings.workers`` worker processes."""
    import uvicorn
    # Keep idle client connections longer than clients keep them (httpx: 5 s), so that a client
    # never reuses a connection the server is closing at that moment (a spurious ReadError).
    # uvicorn's own access log stays off: the proxy writes its own line (access_log.py).
    common = dict(host=settings.host, port=settings.port, log_level="warning", access_log=False,
                  timeout_keep_alive=75, log_config=logging_config())
    if settings.workers == 1:
        uvicorn.run(app, **common)
        return
    os.environ[_SETTINGS_ENV] = json.dumps(asdict(settings))
    uvicorn.run("lookahead_router.serving.launch:app_from_env", factory=True, workers=settings.workers,
                **common)
