"""Time and peak memory of importing the whole release and of the reference evaluation.

Each step runs as its own process (the CLI, as a user runs it) several times; wall time is
reported as min / median / max, peak memory as the largest resident set of the process.
Writes bench/results/import_release.json and .md.

    .venv/bin/python bench/import_release.py [--src DIR] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lookahead_router.precision import environment

HERE = Path(__file__).parent


def run(cmd: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(cmd)}")
    return wall, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--src", default=os.environ.get("LOOKAHEAD_DATA", "../shared/lookahead-data"))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    cli = str(Path(sys.executable).with_name("lookahead"))
    with tempfile.TemporaryDirectory() as tmp:
        data = f"{tmp}/paper.parquet"
        steps = {
            "import-paper (whole release)": [cli, "data", "import-paper", "--src", args.src, "--out", data],
            "eval (7 reference rows x 7 benchmarks)": [cli, "eval", "--data", data, "--format", "json"],
        }
        results = {}
        for name, cmd in steps.items():
            runs = [run(cmd) for _ in range(args.repeat)]
            walls, rss = [w for w, _ in runs], [r for _, r in runs]
            results[name] = {"wall_s": {"min": min(walls), "median": statistics.median(walls), "max": max(walls)},
                             "peak_rss_mib": max(rss), "runs": args.repeat}
    meta = {**environment(), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs"}
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "import_release.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    lines = [f"Machine: {meta['machine']}, Python {meta['python']}", "",
             "| step | wall s (min / median / max) | peak RSS MiB |", "|---|---|---|"]
    for name, r in results.items():
        w = r["wall_s"]
        lines.append(f"| {name} | {w['min']:.1f} / {w['median']:.1f} / {w['max']:.1f} | {r['peak_rss_mib']:.0f} |")
    (out / "import_release.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
