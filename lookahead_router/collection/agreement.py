"""How our re-grading of a released benchmark compares with the graded outcomes it ships."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Agreement:
    """One (benchmark, candidate) row of the verification report.

    ``ours`` and ``shipped`` are the benchmark metric in percent (pass@1 or accuracy) from our
    grading and from the release's flags; ``disagreements`` holds one dict per query where the
    two differ: {"id", "shipped", "ours", "kind", "detail"} (``kind`` is a short category name
    used to explain each kind of disagreement in the report)."""

    benchmark: str
    model: str
    n: int = 0
    agree: int = 0
    ours: float = 0.0
    shipped: float = 0.0
    check: str = ""              # what was compared, e.g. "re-run shipped program"
    disagreements: list[dict] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return 100.0 * self.agree / self.n if self.n else float("nan")

    @classmethod
    def from_pairs(cls, benchmark: str, model: str, check: str,
                   rows: list[tuple[str, bool, bool, str, str]]) -> "Agreement":
        """``rows``: (query id, shipped flag, our flag, kind, detail) per query; ``kind`` and
        ``detail`` matter only where the flags differ."""
        out = cls(benchmark, model, n=len(rows), check=check)
        out.agree = sum(s == o for _, s, o, _, _ in rows)
        out.ours = 100.0 * sum(o for _, _, o, _, _ in rows) / max(len(rows), 1)
        out.shipped = 100.0 * sum(s for _, s, _, _, _ in rows) / max(len(rows), 1)
        out.disagreements = [{"id": q, "shipped": s, "ours": o, "kind": k, "detail": d}
                             for q, s, o, k, d in rows if s != o]
        return out
