"""`lookahead serve` (the OpenAI-compatible routing proxy) and `lookahead log export`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from lookahead_router.cli.common import _fail, _known_errors, app, err, out

log_app = typer.Typer(help="The proxy's request log.", no_args_is_help=True)
app.add_typer(log_app, name="log")


@app.command("serve")
def serve_cmd(
    config_file: Path = typer.Option(..., "--config", help="Serving config (YAML): the candidates' "
                                     "upstreams, prices and the proxy's limits."),
    router_dir: Optional[Path] = typer.Option(None, "--router", help="Saved router folder "
                                              "(default: the config's 'router')."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8000),
    cost_weight: Optional[float] = typer.Option(None, help="Default cost weight w (overrides the "
                                                "config's; requests may still set their own)."),
    engine: Optional[str] = typer.Option(None, "--engine", help="What runs the router's frozen encoder: "
                                         "torch (the reference), onnx or onnx-int8 (ONNX Runtime on CPU; "
                                         "exported at start-up, cached on disk), or auto: onnx where torch "
                                         "would compute in fp32 (no GPU, no native bf16, or --precision fp32) "
                                         "and the backbone exports, else torch. Overrides the config's "
                                         "'engine' (default auto)."),
) -> None:
    """Serve OpenAI's chat API: model "lookahead" is routed, candidate names pass straight through."""
    import uvicorn

    from lookahead_router.routers.base import Router
    from lookahead_router.routers.features import active_extractors, inference_only, use_engine
    from lookahead_router.serving.app import create_app
    from lookahead_router.serving.config import ConfigError, load_config
    try:
        config = load_config(config_file)
        if cost_weight is not None:
            config.cost_weight = cost_weight
        if engine is not None:
            config.engine = engine
        router_dir = router_dir or config.router
        if router_dir is None:
            raise ConfigError(f"{config_file}: no router: pass --router DIR or set 'router' in the config")
        inference_only()  # a server embeds every new prompt: keep no cache, print no bars
        use_engine(config.engine)  # before the router makes its feature extractor
        router = Router.load(router_dir)
        application = create_app(router, config)
        # Load weights and caches now, not on the first request: the router makes its extractor
        # here, so the onnx engines export (first run) or load their cached graph at this point.
        router.score(["warm-up"])
    except _known_errors() as exc:
        _fail(exc)
    encoders = active_extractors()
    described = ", ".join(sorted({f"{e.spec} on {e.engine} in {e.precision}" for e in encoders})) or "none"
    out.print(f"routing among {', '.join(router.candidates)} with {router.name} ({router_dir}; encoder "
              f"{described}); OpenAI base URL http://{host}:{port}/v1, model \"lookahead\"", highlight=False)
    trained = router.trained_with.get("precision")
    if trained and any(e.precision != trained for e in encoders):
        err.print(f"[yellow]warning:[/] the router was trained on features computed in {trained}; this server "
                  f"computes them otherwise ({described}), so some choices differ from the router's as "
                  f"trained (about 2% for kNN between bf16 and fp32: bench/results/onnx_agreement_cpu_bf16.md). "
                  f"To route as trained: `lookahead --precision {trained} serve ... --engine "
                  f"{'torch' if trained == 'bf16' else 'auto'}`", highlight=False, soft_wrap=True)
    # Keep idle client connections longer than clients keep them (httpx: 5 s), so that a client
    # never reuses a connection the server is closing at that moment (a spurious ReadError).
    uvicorn.run(application, host=host, port=port, log_level="warning", access_log=False,
                timeout_keep_alive=75)


@log_app.command("export")
def log_export(
    db: Path = typer.Option(..., help="The proxy's request log (SQLite)."),
    out_file: Path = typer.Option(..., "--out", help="Prompts file to write (JSONL: id, prompt)."),
) -> None:
    """Write the distinct logged prompts as JSONL, for `lookahead route` and data collection."""
    from lookahead_router.serving.request_log import export_prompts
    try:
        n = export_prompts(db, out_file)
    except _known_errors() as exc:
        _fail(exc)
    out.print(f"wrote {n} prompt(s) to {out_file}")
