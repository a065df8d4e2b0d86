"""Route a few benchmark prompts through the proxy, end to end, with the official OpenAI client.

Starts `lookahead serve` with the replay backend (each candidate answers with its recorded
response), sends prompts the demo router never saw (its held-out rows, `lookahead train
--holdout`), and prints the chosen candidate, its score as recorded in the benchmark, the best
candidate's, and the start of the answer. Then a streamed request, a pass-through and a
cost-aware request; it ends with the router's quality on its held-out rows, where the results
are, and what to try next.

    .venv/bin/python examples/proxy_demo.py [--config examples/replay.yaml] [--data runs/paper.parquet]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import openai

from lookahead_router.catalogue import load_config
from lookahead_router.data.dataset import RoutingDataset
from lookahead_router.evaluation.holdout import HOLDOUT_DIR, summary
from lookahead_router.evaluation.report import Report
from lookahead_router.serving.fake_upstream import free_port, wait_until_serving


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("examples/replay.yaml"))
    parser.add_argument("--data", type=Path, default=Path("runs/paper.parquet"))
    parser.add_argument("--source", default="MATH", help="benchmark to draw prompts from")
    parser.add_argument("-n", type=int, default=5, help="prompts to route")
    args = parser.parse_args()

    ds = RoutingDataset.load(args.data)
    holdout = Path(os.path.relpath(load_config(args.config).router.resolve() / HOLDOUT_DIR))
    if not (holdout / "ids.json").is_file():
        sys.exit(f"{holdout}/ids.json not found: train the router with --holdout (make demo does)")
    saved = json.loads((holdout / "ids.json").read_text())
    held_out = set(saved["held_out"])
    rows = np.flatnonzero((ds.queries["source"].to_numpy() == args.source)
                          & np.isin(ds.queries["id"].to_numpy(), list(held_out)))
    rows = np.random.default_rng(0).choice(rows, size=min(args.n, len(rows)), replace=False)
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "lookahead"), "serve",
                               "--config", str(args.config), "--port", str(port)])
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_until_serving(f"{base}/health", server)
        except RuntimeError as exc:
            sys.exit(f"the proxy did not start: {exc}")
        client = openai.OpenAI(base_url=f"{base}/v1", api_key="not-needed")
        health = httpx.get(f"{base}/health").json()
        print(f"\nthe proxy routes with the {health['router']} router of {args.config}")
        print(f"{args.n} held-out {args.source} prompts through the proxy (model=\"lookahead\"):")
        for row in rows:
            prompt = ds.queries["prompt"].iloc[row]
            answer = client.chat.completions.create(
                model="lookahead", messages=[{"role": "user", "content": prompt}])
            chosen = ds.candidates.index(answer.model)
            text = " ".join(answer.choices[0].message.content.split())
            print(f"- {ds.ids[row]}: routed to {answer.model} (recorded score "
                  f"{ds.scores[row, chosen]:g}; best candidate scored {np.nanmax(ds.scores[row]):g})\n"
                  f"    {text[:110]}...")
        prompt = ds.queries["prompt"].iloc[rows[0]]
        stream = client.chat.completions.create(model="lookahead", stream=True,
                                                messages=[{"role": "user", "content": prompt}])
        chunks = list(stream)
        print(f"streamed: {len(chunks)} chunks from {chunks[0].model}")
        direct = client.chat.completions.create(model=ds.candidates[-1],
                                                messages=[{"role": "user", "content": prompt}])
        print(f"pass-through: asked for {ds.candidates[-1]}, answered by {direct.model}")
        for weight in (0.0, 1.0):
            route = httpx.post(f"{base}/v1/route", json={"prompt": prompt, "cost_weight": weight}).json()
            print(f"/v1/route with cost_weight {weight}: {route['model']} "
                  f"(P(good) {route['scores'][route['model']]:.2f}, router {route['router_ms']:.0f} ms)")
        metrics = httpx.get(f"{base}/metrics").text
        served = [line for line in metrics.splitlines() if line.startswith("lookahead_requests_total")]
        print("/metrics:", "; ".join(served))
    finally:
        server.terminate()
        server.wait(timeout=30)
    report = Report.from_dict(json.loads((holdout / "report.json").read_text()))
    print(f"\nthe router's quality on its {len(held_out)} held-out prompts (a share of each benchmark "
          f"kept out of training; {holdout}/report.md has every benchmark):")
    print("  " + summary(report, saved["router"]))
    print("\nresults: the reference report runs/reference-report.json, the router and its held-out "
          f"report {holdout.parent}/, the request log {os.path.relpath(load_config(args.config).request_log)}")
    print("next:\n"
          "  lookahead serve --config examples/echo.yaml   # the demo router before an echo backend that "
          "answers any prompt;\n"
          "                                                # then run the README's OpenAI-client snippet\n"
          "  make benchmark                                # every router under 5-fold CV (hours on 2 cores)")


if __name__ == "__main__":
    main()
