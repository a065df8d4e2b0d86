"""`lookahead report`: one self-contained HTML page from a benchmark folder, its analyses and the
speed benchmarks' tables, that a person opens in a browser with no server and no network.

Every part is written as markdown by the command that measured it (the benchmark's report.md, each
analysis's KIND.md, bench/results/router_cost*.md and proxy_load*.md); here it is rendered with
markdown-it (raw HTML in the sources is escaped), the plots are embedded as data URIs, and the page
is laid out by a Jinja2 template with its styles inline: no script, no CDN.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markdown_it import MarkdownIt
from markupsafe import Markup

from lookahead_router.analysis.run import AnalysisError

ANALYSES = ("shares", "difficulty", "cost", "pool", "efficiency", "sweep", "cases")
SPEED_TABLES = (("router_cost", "Router cost"), ("proxy_load", "Proxy load"))
TEMPLATES = Path(__file__).parent / "templates"
_IMAGE_LINE = re.compile(r"^!\[[^\]]*\]\([^)]*\)\s*$", re.M)


@dataclass
class Figure:
    name: str
    uri: str


@dataclass
class Section:
    anchor: str
    title: str
    body: Markup
    figures: list[Figure] = field(default_factory=list)
    source: str = ""


_MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")


def _markdown(text: str) -> Markup:
    return Markup(_MARKDOWN.render(_IMAGE_LINE.sub("", text)))


def _figure(path: Path) -> Figure:
    return Figure(path.name, "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii"))


def _without_title(text: str) -> str:
    lines = text.splitlines()
    return "\n".join(lines[1:] if lines and lines[0].startswith("#") else lines)


def build_report(bench: str | Path, analyses: str | Path | None = None, results: str | Path | None = None,
                 title: str = "Lookahead Router: benchmark report") -> str:
    """The page's HTML."""
    bench = Path(bench)
    if not (bench / "report.json").is_file() or not (bench / "report.md").is_file():
        raise AnalysisError(f"{bench}: no report.json / report.md (is it a finished `lookahead benchmark` folder?)")
    report = json.loads((bench / "report.json").read_text())
    run = report.get("run", {})
    sections = [Section("performance", "Routing performance (Table 1) and paired comparisons",
                        _markdown(_without_title((bench / "report.md").read_text())),
                        [_figure(p) for p in [bench / "mu_n.png"] if p.is_file()], str(bench / "report.md"))]
    if analyses is not None:
        analyses = Path(analyses)
        for kind in ANALYSES:
            path = analyses / kind / f"{kind}.json"
            if not path.is_file():
                continue
            meta = json.loads(path.read_text())
            md = (analyses / kind / f"{kind}.md").read_text()
            sections.append(Section(kind, meta["title"], _markdown(_without_title(md)),
                                    [_figure(analyses / kind / f) for f in meta["figures"] if (analyses / kind / f).is_file()],
                                    str(analyses / kind)))
    if results is not None:
        for stem, name in SPEED_TABLES:
            for path in sorted(Path(results).glob(f"{stem}*.md")):
                sections.append(Section(path.stem, f"{name}: {path.stem}", _markdown(_without_title(path.read_text())),
                                        source=str(path)))
    metadata = [("benchmark folder", str(bench)), ("preset", f"{run.get('preset', '?')}: {run.get('preset_description', '')}"),
                ("protocol", f"{run.get('protocol', '?')}, folds {', '.join(run.get('folds', []))}"),
                ("seeds", ", ".join(map(str, run.get("seeds", [])))), ("device", run.get("device", "?")),
                ("precision", f"{run.get('precision', 'not recorded')} (setting {run.get('precision_setting', '?')}; "
                              f"CPU flags {' '.join(run.get('cpu_flags', [])) or '?'})"),
                ("wall time of the last invocation", f"{run.get('wall_s', 0) / 60:.1f} min (finished folds are reused)"),
                ("fit + score, every router and fold",
                 f"{sum(t['fit_s'] + t['score_s'] for t in run.get('timings', {}).values()) / 60:.1f} min"),
                ("peak memory", f"{run.get('peak_rss_mib', 0):.0f} MiB"),
                ("AlpacaEval method", report.get("alpaca_lc_method") or "–"),
                ("labels", ", ".join(sorted(set(run.get("labels", {}).values()))) or "–"),
                ("queries", ", ".join(f"{b} {n}" for b, n in report.get("queries", {}).items()))]
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]))
    return env.get_template("report.html.j2").render(
        title=title, subtitle=f"{run.get('preset', '?')} preset, {run.get('protocol', '?')} protocol, "
                              f"{len(run.get('seeds', []))} seed(s), {run.get('device', '?')}",
        metadata=metadata, sections=sections)


def write_report(out: str | Path, **kwargs) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(build_report(**kwargs), encoding="utf-8")
    return out
