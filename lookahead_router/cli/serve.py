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
    port: int = typer.Option(8000, help="TCP port to listen on."),
    cost_weight: Optional[float] = typer.Option(None, help="Default cost weight w (overrides the "
                                                "config's; requests may still set their own)."),
    engine: Optional[str] = typer.Option(None, "--engine", help="What runs the router's frozen encoder: "
                                         "torch (the reference), onnx or onnx-int8 (ONNX Runtime on CPU; "
                                         "exported at start-up, cached on disk), or auto: onnx where torch "
                                         "would compute in fp32 (no GPU, no native bf16, or --precision fp32) "
                                         "and the backbone exports, else torch. Overrides the config's "
                                         "'engine' (default auto)."),
    workers: int = typer.Option(1, "--workers", min=1, help="Worker processes on the port, each with its "
                                "own router and the machine's cores split between them; a worker that "
                                "dies is restarted. Give them a shared request log (PostgreSQL) to log "
                                "every request in one place."),
    no_access_log: bool = typer.Option(False, "--no-access-log", help="Print no access log line per request "
                                       "(default: the config's 'access_log', on)."),
) -> None:
    """Serve OpenAI's chat API: model "lookahead" is routed, candidate names pass straight through."""
    from lookahead_router.routers.features import active_extractors
    from lookahead_router.serving.app import check_candidates, create_app
    from lookahead_router.serving.launch import ServeSettings, load_serving, serve
    from lookahead_router.serving.log_stores import open_store
    settings = ServeSettings(str(config_file), str(router_dir) if router_dir else None, cost_weight, engine,
                             host, port, workers, access_log=False if no_access_log else None)
    application = None
    try:
        # Loaded here in every case, so a bad config, router or database fails now, once, and an
        # onnx engine exports its graph once (the workers read it from the disk cache).
        config, router, router_dir = load_serving(settings)
        if workers == 1:
            application = create_app(router, config)
        else:
            check_candidates(router, config)
            if config.request_log:
                open_store(config.request_log).close()  # reachable, and its tables made or migrated
    except _known_errors() as exc:
        _fail(exc)
    encoders = active_extractors()
    described = ", ".join(sorted({f"{e.spec} on {e.engine} in {e.precision}" for e in encoders})) or "none"
    out.print(f"routing among {', '.join(router.candidates)} with {router.name} ({router_dir}; encoder "
              f"{described}); OpenAI base URL http://{host}:{port}/v1, model \"lookahead\""
              + (f"; {workers} worker processes" if workers > 1 else ""), highlight=False)
    trained = router.trained_with.get("precision")
    if trained and any(e.precision != trained for e in encoders):
        err.print(f"[yellow]warning:[/] the router was trained on features computed in {trained}; this server "
                  f"computes them otherwise ({described}), so some choices differ from the router's as "
                  f"trained (about 2% for kNN between bf16 and fp32: bench/results/onnx_agreement_cpu_bf16.md). "
                  f"To route as trained: `lookahead --precision {trained} serve ... --engine "
                  f"{'torch' if trained == 'bf16' else 'auto'}`", highlight=False, soft_wrap=True)
    del router  # the workers load their own
    serve(settings, application)


@log_app.command("export")
def log_export(
    db: str = typer.Option(..., help="The proxy's request log: a SQLite file or a postgresql:// URL."),
    out_file: Path = typer.Option(..., "--out", help="Prompts file to write (JSONL: id, prompt)."),
) -> None:
    """Write the distinct logged prompts as JSONL, for `lookahead route` and data collection."""
    from lookahead_router.serving.request_log import export_prompts
    try:
        n = export_prompts(db, out_file)
    except _known_errors() as exc:
        _fail(exc)
    out.print(f"wrote {n} prompt(s) to {out_file}")
