"""The reference rows of the paper's Table 1 (candidates, Random, Oracle) as printed, and the gaps
between a report and them. Used by the demo and by the test that checks the metrics on the real
release."""

from __future__ import annotations

from lookahead_router.data.release import TEST_BENCHMARKS
from lookahead_router.evaluation.report import Report

BENCHMARK_ORDER = list(TEST_BENCHMARKS.values())  # Table 1's column order

# row -> (mu_o, mu_n) per benchmark in BENCHMARK_ORDER, then Avg mu_n.
_ROWS = {
    "Yi-1.5-34B-Chat": [(37.6, 28.9), (44.1, 26.1), (7.81, 9.9), (88.4, 13.8), (51.9, -4.0), (69.5, -17.7), (70.8, -5.2), 7.4],
    "internlm2_5-20b-chat": [(37.1, 27.4), (28.3, -9.2), (7.48, -20.4), (89.8, 27.4), (62.2, 37.4), (72.6, -3.0), (68.9, -14.7), 6.4],
    "Phi-3-medium-4k-instruct": [(29.8, 1.4), (33.3, 2.1), (7.99, 26.5), (89.1, 20.2), (44.5, -33.8), (74.4, 5.9), (68.8, -14.7), 1.1],
    "Llama-3.1-8B-Instruct": [(24.6, -17.1), (21.2, -25.1), (7.69, -1.1), (81.6, -50.2), (44.7, -33.1), (62.2, -52.9), (68.1, -18.4), -28.3],
    "Qwen2.5-Coder-7B-Instruct": [(18.0, -40.5), (35.1, 6.1), (7.54, -14.9), (85.8, -11.3), (61.2, 33.5), (87.2, 67.7), (82.9, 53.0), 13.4],
    "random": [(29.4, 0.0), (32.4, 0.0), (7.70, 0.0), (86.9, 0.0), (52.9, 0.0), (73.2, 0.0), (71.9, 0.0), 0.0],
    "oracle": [(57.6, 100.0), (77.1, 100.0), (8.79, 100.0), (97.5, 100.0), (77.8, 100.0), (93.9, 100.0), (92.6, 100.0), 100.0],
}

PAPER_TABLE1: dict[str, dict[str, dict[str, float]]] = {
    row: {**{b: {"mu_o": v[i][0], "mu_n": v[i][1]} for i, b in enumerate(BENCHMARK_ORDER)},
          "avg_mu_n": {"mu_n": v[-1]}}
    for row, v in _ROWS.items()
}


def gaps_to_paper(report: Report) -> dict[str, dict[str, dict[str, float]]]:
    """ours - paper, for every row and benchmark both have."""
    out: dict = {}
    for row, cells in report.rows.items():
        if row not in PAPER_TABLE1:
            continue
        out[row] = {b: {k: cells[b][k] - PAPER_TABLE1[row][b][k] for k in ("mu_o", "mu_n")}
                    for b in report.benchmarks if b in PAPER_TABLE1[row]}
    return out


def gap_markdown(report: Report) -> str:
    """Markdown table of ours - paper (mu_o / mu_n) per benchmark."""
    gaps = gaps_to_paper(report)
    head = ["Method"] + [f"{b} Δμo / Δμn" for b in report.benchmarks]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row, cells in gaps.items():
        lines.append("| " + " | ".join([row] + [f"{cells[b]['mu_o']:+.2f} / {cells[b]['mu_n']:+.1f}"
                                               for b in report.benchmarks if b in cells]) + " |")
    return "\n".join(lines)
