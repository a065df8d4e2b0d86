"""A fake OpenAI-compatible chat server, for the tests, the load benchmark and trying the proxy
without an LLM. What it does depends on the model id it is asked for:

    fail-*    answers HTTP 500            hang-*      never answers (stops when the caller leaves)
    reject-*  answers HTTP 400            truncate-*  streams two chunks, then ends the body
    denied-*  answers HTTP 401                        without a finish_reason or [DONE]
    slow-*    streams 50 chunks 0.1 s apart   garbage-*   answers 200 with a JSON list
    nousage-* answers without any usage (even when a stream's include_usage asks for it)
    anything else: "<model> answers: <prompt>" in ``chunks`` pieces (streamed or whole), with a
    usage of len(prompt) // 4 + len(answer) // 4 tokens (streams: with include_usage, as OpenAI:
    every chunk has "usage": null, then a last chunk has no choices and the usage)

``app.state.received`` counts requests per model id and ``app.state.last_body`` holds the last
body sent for each; ``app.state.open`` counts answers still in progress (a request the proxy
cancelled is no longer open).

    python -m lookahead_router.serving.fake_upstream --port 9001 [--chunks 16 --chunk-delay-ms 5]

``BackgroundServer`` runs any ASGI app (this one, or the proxy) on a free loopback port in a thread;
``free_port`` and ``wait_until_serving`` start servers in subprocesses (the demo, the load bench).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import threading
import time
from collections import Counter
from contextlib import contextmanager

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse


def create_fake_upstream(chunks: int = 4, chunk_delay_s: float = 0.0) -> FastAPI:
    app = FastAPI(title="fake OpenAI-compatible upstream")
    app.state.received = Counter()  # model id -> requests received
    app.state.last_body = {}        # model id -> the last request body
    app.state.open = 0              # answers in progress

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        model = body["model"]
        app.state.received[model] += 1
        app.state.last_body[model] = body
        if model.startswith("fail"):
            return JSONResponse({"error": {"message": "upstream exploded", "type": "server_error"}},
                                status_code=500)
        if model.startswith("reject"):
            return JSONResponse({"error": {"message": "bad parameter", "type": "invalid_request_error",
                                           "param": "temperature", "code": None}}, status_code=400)
        if model.startswith("denied"):
            return JSONResponse({"error": {"message": "Incorrect API key provided.",
                                           "type": "invalid_request_error", "code": "invalid_api_key"}},
                                status_code=401)
        if model.startswith("garbage"):
            return JSONResponse([1, 2])
        if model.startswith("hang"):  # until the caller hangs up, as a real server notices
            with _open(app):
                for _ in range(36000):
                    if await request.is_disconnected():
                        return JSONResponse({}, status_code=499)
                    await asyncio.sleep(0.1)
        prompt = body["messages"][-1].get("content") or ""
        text = f"{model} answers: {prompt}"
        n_chunks, delay = (50, 0.1) if model.startswith("slow") else (chunks, chunk_delay_s)
        step = max(1, -(-len(text) // n_chunks))
        pieces = [text[i:i + step] for i in range(0, len(text), step)]
        base = {"id": "chatcmpl-fake", "created": int(time.time()), "model": model}
        usage = {"prompt_tokens": len(prompt) // 4, "completion_tokens": len(text) // 4,
                 "total_tokens": len(prompt) // 4 + len(text) // 4}
        reports_usage = not model.startswith("nousage")
        if not body.get("stream"):
            return {**base, "object": "chat.completion",
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                 "finish_reason": "stop"}], **({"usage": usage} if reports_usage else {})}
        if reports_usage and (body.get("stream_options") or {}).get("include_usage"):
            base["usage"] = None
        else:
            usage = None

        async def events():
            with _open(app):
                for k, piece in enumerate(pieces):
                    if model.startswith("truncate") and k == 2:
                        return
                    if delay:
                        await asyncio.sleep(delay)
                    chunk = {**base, "object": "chat.completion.chunk",
                             "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
                    yield f"data: {json.dumps(chunk)}\n\n"
                done = {**base, "object": "chat.completion.chunk",
                        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
                yield f"data: {json.dumps(done)}\n\n"
                if usage is not None:
                    last = {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}
                    yield f"data: {json.dumps(last)}\n\n"
                yield "data: [DONE]\n\n"
        return StreamingResponse(events(), media_type="text/event-stream")

    return app


@contextmanager
def _open(app):
    app.state.open += 1
    try:
        yield
    finally:
        app.state.open -= 1


class BackgroundServer:
    """``with BackgroundServer(app) as server: server.url`` — uvicorn on 127.0.0.1, a free port."""

    def __init__(self, app, **uvicorn_options):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        options = {"log_level": "warning", "access_log": False, "timeout_keep_alive": 75,
                   **uvicorn_options}
        self.server = uvicorn.Server(uvicorn.Config(app, **options))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)

    def __enter__(self) -> "BackgroundServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(url: str, proc: subprocess.Popen, seconds: float = 180) -> None:
    """Poll ``url`` until it answers; fail if ``proc`` exits or ``seconds`` pass first."""
    deadline = time.monotonic() + seconds
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{' '.join(map(str, proc.args))} exited with status {proc.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer within {seconds:.0f} s")
            time.sleep(0.2)


def stop(proc: subprocess.Popen) -> None:
    """Terminate a server process, killing it if it has not stopped within 30 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--chunks", type=int, default=4)
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0)
    args = parser.parse_args()
    app = create_fake_upstream(args.chunks, args.chunk_delay_ms / 1000)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False,
                timeout_keep_alive=75)  # outlive clients' idle connections (see `lookahead serve`)


if __name__ == "__main__":
    main()
