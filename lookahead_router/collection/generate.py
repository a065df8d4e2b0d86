"""`lookahead collect generate`: every candidate's response to every prompt.

Candidates come from the same ``models.yaml`` the proxy reads (``catalogue.py``):

- ``base_url``: an OpenAI-compatible server (vLLM, TGI, a hosted API), called asynchronously with
  at most ``generation.concurrency`` requests in flight per server; 429, 5xx, connection errors and
  timeouts are retried ``generation.max_retries`` times with exponential backoff (honouring
  ``Retry-After``) by the ``openai`` client.
- ``local``: a causal LM run in this process, through vLLM when it is installed, else transformers.
- ``replay``: the recorded response in a routing dataset (demos, tests, re-scoring old data).

Sampling defaults to the paper's (temperature 0.8, top-p 0.95). Each response is appended to
``DIR/responses/<model>.jsonl`` as soon as it arrives; a pair that still fails after its retries
goes to ``DIR/errors.jsonl`` and is tried again on the next run, which skips every finished pair.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from tqdm import tqdm

from lookahead_router.catalogue import GenerationConfig, ServeConfig, UpstreamConfig
from lookahead_router.collection.store import JsonlStore, errors_file, responses_file
from lookahead_router.collection.tasks import Task
from lookahead_router.errors import LookaheadError
from lookahead_router.offline_answers import offline_answers


@dataclass
class GenerateSummary:
    requested: int = 0                                   # pairs to generate in this run
    skipped: int = 0                                     # finished in an earlier run
    written: dict[str, int] = field(default_factory=dict)  # per model
    failed: dict[str, int] = field(default_factory=dict)   # per model, after every retry
    seconds: float = 0.0


def _record(task: Task, model: str, text: str, finish_reason, usage, started: float,
            gen: GenerationConfig) -> dict:
    return {"id": task.id, "model": model, "response": text, "finish_reason": finish_reason,
            "usage": usage, "latency_s": round(time.perf_counter() - started, 3),
            "sampling": {"temperature": gen.temperature, "top_p": gen.top_p,
                         "max_tokens": gen.max_tokens, "seed": gen.seed}}


class _OpenAIBackend:
    def __init__(self, name: str, up: UpstreamConfig, gen: GenerationConfig):
        from openai import AsyncOpenAI
        self.name, self.model, self.gen = name, up.model or name, gen
        self.client = AsyncOpenAI(base_url=up.base_url, api_key=up.api_key() or "EMPTY",
                                  max_retries=gen.max_retries, timeout=up.timeout_s)
        self.slots = asyncio.Semaphore(gen.concurrency)

    async def generate(self, task: Task) -> dict:
        async with self.slots:
            started = time.perf_counter()
            extra = {} if self.gen.seed is None else {"seed": self.gen.seed}
            out = await self.client.chat.completions.create(
                model=self.model, messages=task.messages, temperature=self.gen.temperature,
                top_p=self.gen.top_p, max_tokens=self.gen.max_tokens, **extra)
            choice = out.choices[0]
            usage = out.usage.model_dump() if out.usage is not None else None
            return _record(task, self.name, choice.message.content or "", choice.finish_reason,
                           usage, started, self.gen)

    async def close(self) -> None:
        await self.client.close()


class _ReplayBackend:
    """A replay or echo candidate (``offline_answers.py``): no network call."""

    def __init__(self, name: str, up: UpstreamConfig, gen: GenerationConfig):
        self.name, self.gen, self.answers = name, gen, offline_answers(name, up)

    async def generate(self, task: Task) -> dict:
        started = time.perf_counter()
        answer = self.answers.answer(task.messages)
        return _record(task, self.name, answer, "stop", self.answers.usage(task.messages, answer),
                       started, self.gen)

    async def close(self) -> None:
        pass


class _LocalBackend:
    """A causal LM in this process. Prompts are generated in batches in a worker thread, so the
    event loop (and the other candidates' HTTP calls) keeps running."""

    def __init__(self, name: str, up: UpstreamConfig, gen: GenerationConfig):
        self.name, self.spec, self.gen = name, up.local, gen
        self.engine = gen.engine
        if self.engine == "auto":
            import importlib.util
            self.engine = "vllm" if importlib.util.find_spec("vllm") else "transformers"
        self.loaded = None
        self.lock = asyncio.Lock()

    def _load(self):
        if self.loaded is None:
            if self.engine == "vllm":
                from vllm import LLM
                self.loaded = LLM(model=self.spec, seed=self.gen.seed or 0)
            else:
                from lookahead_router.routers.backbones import CAUSAL, load_backbone
                backbone = load_backbone(self.spec, CAUSAL)
                backbone.model.eval()
                self.loaded = backbone
        return self.loaded

    def _generate_batch(self, tasks: Sequence[Task]) -> list[tuple[str, str]]:
        model = self._load()
        if self.engine == "vllm":
            from vllm import SamplingParams
            params = SamplingParams(temperature=self.gen.temperature, top_p=self.gen.top_p,
                                    max_tokens=self.gen.max_tokens, seed=self.gen.seed)
            outs = model.chat([t.messages for t in tasks], params, use_tqdm=False)
            return [(o.outputs[0].text, o.outputs[0].finish_reason) for o in outs]
        return _transformers_generate(model, tasks, self.gen)

    async def generate_many(self, tasks: Sequence[Task]):
        """Yield one record per task, a batch at a time."""
        size = self.gen.batch_size if self.engine == "transformers" else max(len(tasks), 1)
        await asyncio.to_thread(self._load)  # (so that latency_s is the batch's generation time)
        for start in range(0, len(tasks), size):
            batch = tasks[start:start + size]
            started = time.perf_counter()
            async with self.lock:
                outs = await asyncio.to_thread(self._generate_batch, batch)
            for task, (text, finish) in zip(batch, outs):
                yield _record(task, self.name, text, finish, None, started, self.gen)

    async def close(self) -> None:
        pass


def _transformers_generate(backbone, tasks: Sequence[Task], gen: GenerationConfig) -> list[tuple[str, str]]:
    import torch
    tok, model = backbone.tokenizer, backbone.model
    if gen.seed is not None:
        torch.manual_seed(gen.seed)
    if tok.chat_template:
        texts = [tok.apply_chat_template(t.messages, tokenize=False, add_generation_prompt=True)
                 for t in tasks]
    else:  # a base model: plain concatenation of the turns
        texts = ["\n\n".join(str(m.get("content") or "") for m in t.messages) for t in tasks]
    # Left padding: generation continues from the last position of every row. Asked for per call:
    # the tokenizer object is shared (cached), and the routers' feature extractors pad right.
    enc = tok(texts, return_tensors="pt", padding=True, padding_side="left",
              add_special_tokens=not tok.chat_template)
    sample = gen.temperature > 0
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=gen.max_tokens, do_sample=sample,
                             temperature=gen.temperature if sample else None,
                             top_p=gen.top_p if sample else None, pad_token_id=tok.pad_token_id)
    results = []
    for row in out[:, enc["input_ids"].shape[1]:]:
        ended = bool((row == tok.eos_token_id).any())
        results.append((tok.decode(row, skip_special_tokens=True), "stop" if ended else "length"))
    return results


def _backend(name: str, up: UpstreamConfig, gen: GenerationConfig):
    if up.base_url is not None:
        return _OpenAIBackend(name, up, gen)
    if up.replay is not None or up.echo:
        return _ReplayBackend(name, up, gen)
    return _LocalBackend(name, up, gen)


def _error_message(exc: BaseException) -> str:
    status = getattr(exc, "status_code", None)
    text = f"{type(exc).__name__}: {exc}"
    return f"HTTP {status}: {text}" if status else text


async def _run(config: ServeConfig, todo: dict[str, list[Task]], out_dir: Path,
               summary: GenerateSummary, progress: bool) -> None:
    errors = JsonlStore(errors_file(out_dir))
    bar = tqdm(total=summary.requested, desc="generate", unit="response", disable=not progress)

    def done(model: str, record: Optional[dict], task: Optional[Task] = None,
             exc: Optional[BaseException] = None) -> None:
        if record is not None:
            JsonlStore(responses_file(out_dir, model)).append([record])
            summary.written[model] = summary.written.get(model, 0) + 1
        else:
            errors.append([{"id": task.id, "model": model, "error": _error_message(exc),
                            "time": time.strftime("%Y-%m-%dT%H:%M:%S")}])
            summary.failed[model] = summary.failed.get(model, 0) + 1
        bar.update(1)

    async def one(backend, task: Task) -> None:
        try:
            record = await backend.generate(task)
        except Exception as exc:  # recorded and retried on the next run; the others go on
            done(backend.name, None, task, exc)
        else:
            done(backend.name, record)

    async def local(backend, tasks: list[Task]) -> None:
        try:
            async for record in backend.generate_many(tasks):
                done(backend.name, record)
        except Exception as exc:
            finished = set(JsonlStore(responses_file(out_dir, backend.name)).load(repair=False))
            for task in tasks:
                if task.id not in finished:
                    done(backend.name, None, task, exc)

    backends = [_backend(name, config.models[name], config.generation) for name in todo]
    try:
        jobs = []
        for backend in backends:
            tasks = todo[backend.name]
            if isinstance(backend, _LocalBackend):
                jobs.append(local(backend, tasks))
            else:
                jobs += [one(backend, t) for t in tasks]
        await asyncio.gather(*jobs)
    finally:
        for backend in backends:
            await backend.close()
        bar.close()


def generate(tasks: Sequence[Task], config: ServeConfig, out_dir: str | Path,
             models: Sequence[str] | None = None, progress: bool = True) -> GenerateSummary:
    """Generate the missing (prompt, candidate) responses into ``out_dir`` (see the module doc)."""
    out_dir = Path(out_dir)
    names = list(models) if models else list(config.models)
    unknown = [m for m in names if m not in config.models]
    if unknown:
        raise LookaheadError(f"unknown model(s) {unknown}; the config has {list(config.models)}")
    summary = GenerateSummary()
    todo: dict[str, list[Task]] = {}
    for name in names:
        finished = JsonlStore(responses_file(out_dir, name)).load()
        todo[name] = [t for t in tasks if t.id not in finished]
        summary.skipped += len(tasks) - len(todo[name])
        summary.requested += len(todo[name])
    start = time.perf_counter()
    if summary.requested:
        out_dir.mkdir(parents=True, exist_ok=True)
        asyncio.run(_run(config, {m: ts for m, ts in todo.items() if ts}, out_dir, summary, progress))
    summary.seconds = time.perf_counter() - start
    return summary
