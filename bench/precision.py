"""The torch engine in bf16 against fp32 (the `--precision` setting): speed and agreement of the
frozen backbones' features, on the release's prompts, for what the `cpu` preset computes:

- MiniLM pooled vectors at 256 tokens (kNN, k-means, SMOOTHIE);
- MiniLM per-token states after 5 of its 6 layers at 128 tokens (the MLM routers' frozen part);
- SmolLM2 per-token states after 29 of its 30 layers at 64 tokens (the CLM routers' frozen part).

The same prompts (``--prompts``, drawn evenly from every source with seed 0) are embedded in each
precision with the feature cache off, batch 32, after one warm-up batch; the two precisions take
turns batch by batch, so that other load on the machine falls on both alike. Agreement: per
vector (pooled) or token (states), the cosine between bf16 and fp32 and the largest elementwise
difference relative to the fp32 vector's RMS, and how many rows point elsewhere (cosine < 0.99:
in SmolLM2, the rare "massive activation" token of a prompt, whose norm is thousands, can form at
another position under bf16's rounding). On a CPU without native bf16, bf16 runs emulated:
the table then shows what forcing it costs.

    .venv/bin/python bench/precision.py [--data runs/paper.parquet] [--prompts 256] [--out NAME]

Writes bench/results/<NAME>.json and .md (default NAME: precision_<cpu|gpu>).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from lookahead_router.precision import environment

HERE = Path(__file__).parent
CASES = (("minilm pooled, 256 tokens", "minilm", "encoder", None, 256),
         ("minilm layer 5 states, 128 tokens", "minilm", "encoder", 5, 128),
         ("smollm2 layer 29 states, 64 tokens", "smollm2", "causal", 29, 64))
BATCH = 32


def prompts_of(data: str, n: int) -> list[str]:
    from lookahead_router.data.dataset import RoutingDataset
    ds = RoutingDataset.load(data)
    rng = np.random.default_rng(0)
    sources = ds.queries["source"].to_numpy()
    per_source = max(1, n // len(ds.sources))
    rows = np.concatenate([rng.permutation(np.flatnonzero(sources == s))[:per_source] for s in ds.sources])
    return ds.queries["prompt"].to_numpy()[rows[:n]].tolist()


def agreement(fp32: list[np.ndarray], bf16: list[np.ndarray]) -> dict:
    """Per row (a pooled vector, or one token's state): cosine and max |difference| / RMS."""
    a = np.concatenate([np.atleast_2d(x) for x in fp32]).astype(np.float64)
    b = np.concatenate([np.atleast_2d(x) for x in bf16]).astype(np.float64)
    cosine = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    of_rms = np.abs(a - b).max(1) / np.maximum(np.sqrt((a ** 2).mean(1)), 1e-12)
    return {"rows": len(a), "rows_cosine_below_0_99": int((cosine < 0.99).sum()), "cosine_min": float(cosine.min()), "cosine_median": float(np.median(cosine)),
            "max_diff_of_rms_max": float(of_rms.max()), "max_diff_of_rms_median": float(np.median(of_rms))}


def measure(spec: str, kind: str, layer: int | None, max_length: int, prompts: list[str]) -> dict:
    from lookahead_router.routers.features import FeatureExtractor
    extractors = {p: FeatureExtractor(spec, kind, max_length, BATCH, cache=False, progress=False, layer=layer,
                                      precision=p).prepare() for p in ("fp32", "bf16")}
    for extractor in extractors.values():   # warm-up: first-call allocations and kernel choice
        extractor(prompts[:BATCH])
    seconds = {p: 0.0 for p in extractors}
    out: dict[str, list] = {p: [] for p in extractors}
    for start in range(0, len(prompts), BATCH):
        batch = [f"{t} " for t in prompts[start:start + BATCH]]   # new texts: nothing reused
        for p, extractor in extractors.items():
            began = time.perf_counter()
            result = extractor(batch)
            seconds[p] += time.perf_counter() - began
            out[p].extend(result if layer is not None else list(result))
    return {"texts_per_s": {p: len(prompts) / s for p, s in seconds.items()},
            "speedup_bf16": seconds["fp32"] / seconds["bf16"], **agreement(out["fp32"], out["bf16"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="runs/paper.parquet")
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    prompts = prompts_of(args.data, args.prompts)
    results = []
    for label, spec, kind, layer, max_length in CASES:
        row = {"case": label, "backbone": spec, "layer": layer, "max_length": max_length,
               **measure(spec, kind, layer, max_length, prompts)}
        print(json.dumps(row), flush=True)
        results.append(row)
    meta = {**environment(), "prompts": len(prompts), "batch_size": BATCH, "command": " ".join(sys.argv)}
    meta.pop("precision")   # both are measured; the process's own setting is beside the point
    name = args.out or f"precision_{'gpu' if torch.cuda.is_available() else 'cpu'}"
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    lines = [f"# The torch engine in bf16 against fp32, on {meta['device']}", "",
             f"CPU flags: {' '.join(meta['cpu_flags']) or 'none'}"
             + "".join(f"; {k}={v}" for k, v in meta["isa_limits"].items())
             + f"; bf16 native here: {meta['native_bf16']}; "
             f"{len(prompts)} release prompts, batch {BATCH}, feature cache off. Agreement per pooled vector "
             "or token state.", "",
             "| features | fp32 texts/s | bf16 texts/s | bf16 speed-up | rows | cosine < 0.99 | cosine min | "
             "cosine median | max diff / RMS (worst) | max diff / RMS (median) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['case']} | {r['texts_per_s']['fp32']:.1f} | {r['texts_per_s']['bf16']:.1f} | "
              f"{r['speedup_bf16']:.2f}x | {r['rows']} | {r['rows_cosine_below_0_99']} | {r['cosine_min']:.5f} | {r['cosine_median']:.6f} | "
              f"{r['max_diff_of_rms_max']:.3f} | {r['max_diff_of_rms_median']:.3f} |" for r in results]
    lines += ["", f"Command: `{meta['command']}`", ""]
    (out / f"{name}.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
