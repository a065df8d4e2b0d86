"""The models catalogue (`models.yaml`): one upstream per candidate, and the proxy's limits.

One file read by every command that needs the candidates: `lookahead serve` (the proxy), `route`
and `calibrate` (prices, the router), `collect generate` (upstreams, sampling) and `analyze cost`.
It lives outside ``serving/`` so that those commands load no part of the proxy.

    router: ../runs/router          # optional; `lookahead serve --router` overrides it
    cost_weight: 0.0                # w in P(good) − w · relative cost; per request: "cost_weight"
    models:
      Qwen2.5-Coder-7B-Instruct:    # the candidate's name, as the router knows it
        base_url: http://localhost:8000/v1     # any OpenAI-compatible server (vLLM, TGI, ...)
        model: Qwen/Qwen2.5-Coder-7B-Instruct  # the upstream's model id (default: the name)
        api_key_env: QWEN_API_KEY              # environment variable holding the upstream key
        price_input: 0.2                       # $ per million input tokens
        price_output: 0.6                      # $ per million output tokens
        timeout_s: 60                          # until the first byte
      Yi-1.5-34B-Chat:
        replay: ../runs/paper.parquet          # answer with the recorded response (no server)
      Llama-3.1-8B-Instruct:
        echo: true                             # answer any prompt by echoing it (no server)
      SmolLM2-135M-Instruct:
        local: smollm2                         # `collect generate` only: run it in-process
    generation:                                # `lookahead collect generate` sampling and limits
      temperature: 0.8

Relative paths are read from the config file's folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lookahead_router.errors import LookaheadError
from lookahead_router.routers.cost import DEFAULT_OUTPUT_TOKENS, Price


class ConfigError(LookaheadError):
    """The models catalogue is missing, malformed or inconsistent."""


# The request log's address (``request_log``): here, not in serving/log_stores.py, because loading
# the catalogue resolves a SQLite path against the file's folder; the log stores use them too.
def is_postgres(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def sqlite_path(url: str | Path) -> Path:
    return Path(re.sub(r"^sqlite:///?", "", str(url)) if str(url).startswith("sqlite:") else url)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UpstreamConfig(_Strict):
    base_url: Optional[str] = None
    model: Optional[str] = None
    api_key_env: Optional[str] = None
    replay: Optional[Path] = None
    echo: bool = False           # answer any prompt with "[echo from <name>] <its first words>"
    local: Optional[str] = None  # a causal LM (hub id, folder or "smollm2"), for generation only
    price_input: float = Field(0.0, ge=0)
    price_output: float = Field(0.0, ge=0)
    expected_output_tokens: int = Field(DEFAULT_OUTPUT_TOKENS, gt=0)
    timeout_s: float = Field(60.0, gt=0)
    params_b: Optional[float] = Field(None, gt=0)  # parameters in billions: `lookahead analyze cost` only
    # Ask a streaming upstream for its usage (stream_options.include_usage) when the client did not,
    # so the request log has token counts; false for a server that refuses stream_options.
    stream_usage: bool = True

    @model_validator(mode="after")
    def _one_backend(self):
        given = [k for k in ("base_url", "replay", "echo", "local") if getattr(self, k) not in (None, False)]
        if len(given) != 1:
            raise ValueError("give exactly one of base_url (an OpenAI-compatible server), replay (a "
                             "routing dataset), echo: true (echo the prompt) or local (a model to run "
                             f"in-process); got {' and '.join(given) or 'none'}")
        return self

    @property
    def price(self) -> Price:
        return Price(self.price_input, self.price_output, self.expected_output_tokens)

    def usd_per_million_tokens(self) -> Optional[tuple[float, float]]:
        """(input, output) prices for the request log's cost, or None when the config sets neither:
        the routing defaults (0) would log a cost of $0 that nobody stated."""
        if not {"price_input", "price_output"} & self.model_fields_set:
            return None
        return self.price_input, self.price_output

    def api_key(self) -> Optional[str]:
        return os.environ.get(self.api_key_env) if self.api_key_env else None


class CircuitBreakerConfig(_Strict):
    failures: int = Field(5, ge=1)        # consecutive failures that open the circuit
    cooldown_s: float = Field(30.0, gt=0)  # then one trial call is let through


class BatchConfig(_Strict):
    max_size: int = Field(32, ge=1)        # prompts scored together
    max_wait_ms: float = Field(2.0, ge=0)  # how long the first prompt waits for others
    # prompts waiting for the router at most; more are refused (503). Every waiting prompt holds
    # a slot (`concurrency`), so this binds only when clients that left still have prompts queued.
    max_queue: int = Field(1024, ge=1)


class GenerationConfig(_Strict):
    """How `lookahead collect generate` samples (defaults: the paper's Appendix C.1)."""
    temperature: float = Field(0.8, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int = Field(2048, ge=1)
    seed: Optional[int] = None
    concurrency: int = Field(16, ge=1)      # requests in flight to each OpenAI-compatible server
    max_retries: int = Field(5, ge=0)       # per request (429, 5xx, timeouts), exponential backoff
    engine: Literal["auto", "vllm", "transformers"] = "auto"  # for local models; auto: vLLM if installed
    batch_size: int = Field(8, ge=1)        # prompts per local forward pass (transformers)


class ServeConfig(_Strict):
    models: dict[str, UpstreamConfig]
    router: Optional[Path] = None
    cost_weight: float = Field(0.0, ge=0)
    # What runs the router's frozen encoder: PyTorch (the reference) or ONNX Runtime on CPU (README,
    # Performance: "The router's encoder on ONNX Runtime"); `lookahead serve --engine` overrides it.
    # auto: onnx where torch would compute in fp32 (no GPU, no native bf16, or --precision fp32) and
    # the backbone exports (same decisions, faster at batch 1), else torch.
    engine: Literal["auto", "torch", "onnx", "onnx-int8"] = "auto"
    max_attempts: int = Field(3, ge=1)                 # upstreams tried per routed request
    concurrency: int = Field(256, ge=1)                # requests in flight at once
    queue_timeout_s: float = Field(10.0, ge=0)         # wait for a slot, then 429
    max_body_bytes: int = Field(1_000_000, ge=1)       # larger bodies: 413
    max_input_chars: int = Field(200_000, ge=1)        # longer conversations: 400
    api_keys_env: Optional[str] = None                 # env var: comma-separated client keys
    api_keys_file: Optional[Path] = None               # one client key per line
    cors_origins: list[str] = []                       # browser origins allowed to call (["*"]: any); none: CORS off
    # The request log: a SQLite file (path or sqlite:///path) or a PostgreSQL URL shared by every
    # replica (postgresql://user@host:5432/db; libpq's PGPASSWORD etc. apply); unset: no log.
    request_log: Optional[str] = None
    request_log_spool: Optional[Path] = None           # rows wait here for the database (default: request_log.py)
    request_log_buffer_mb: float = Field(256, gt=0)    # spool bound while the database is down; then rows are dropped
    log_prompts: bool = True                           # keep prompt text (for `lookahead log export`)
    access_log: bool = True                            # one line per request on the "lookahead.access" logger
    circuit_breaker: CircuitBreakerConfig = CircuitBreakerConfig()
    batch: BatchConfig = BatchConfig()
    generation: GenerationConfig = GenerationConfig()

    @model_validator(mode="after")
    def _has_models(self):
        if not self.models:
            raise ValueError("no models: name at least one candidate under 'models'")
        if "lookahead" in self.models:
            raise ValueError("'lookahead' is the routed model's name; rename that candidate")
        return self

    def client_keys(self) -> list[str]:
        """The keys clients must present (empty: no authentication)."""
        keys: list[str] = []
        if self.api_keys_env:
            value = os.environ.get(self.api_keys_env)
            if value is None:
                raise ConfigError(f"api_keys_env: environment variable {self.api_keys_env} is not set")
            keys += [k.strip() for k in value.split(",") if k.strip()]
        if self.api_keys_file:
            if not self.api_keys_file.is_file():
                raise ConfigError(f"api_keys_file: {self.api_keys_file} not found")
            keys += [k.strip() for k in self.api_keys_file.read_text().splitlines()
                     if k.strip() and not k.startswith("#")]
        if (self.api_keys_env or self.api_keys_file) and not keys:
            raise ConfigError("client API keys are configured but none was found")
        return keys

    def prices(self) -> dict[str, Price]:
        return {name: up.price for name, up in self.models.items()}


def load_config(path: str | Path) -> ServeConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such serving config")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with a 'models' section")
    try:
        config = ServeConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise ConfigError(f"{path}: {field}: {first['msg']}") from exc
    return _resolve_paths(config, path.parent)


def _resolve_paths(config: ServeConfig, base: Path) -> ServeConfig:
    def resolve(p: Optional[Path]) -> Optional[Path]:
        return p if p is None or p.is_absolute() else (base / p)
    config.router = resolve(config.router)
    config.api_keys_file = resolve(config.api_keys_file)
    config.request_log_spool = resolve(config.request_log_spool)
    if config.request_log is not None and not is_postgres(config.request_log):
        config.request_log = str(resolve(sqlite_path(config.request_log)))
    for up in config.models.values():
        up.replay = resolve(up.replay)
    return config
