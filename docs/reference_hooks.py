"""MkDocs hook (mkdocs.yml, `hooks:`): the generated pages of the reference, made from the code at
build time, and the figures of bench/results the results pages show.

- reference/cli.md            the `lookahead` command line, walked from the Typer app
                              (``typer.main.get_command(lookahead_router.cli.main:app)``)
- reference/models-yaml.md    the proxy's config file, from the pydantic model's JSON schema
- reference/router-options.md ``lookahead_router.routers.registry.options_markdown()``
- results/NAME.png            bench/results/**/NAME.png, as they are (the embedded .md files name them)

A generator that cannot find what it documents stops the build with an error naming it: a
reference page is never left out silently.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

# The pages this hook writes (tests/test_docs.py reads this list: links to them are valid).
GENERATED = ["reference/cli.md", "reference/models-yaml.md", "reference/router-options.md"]


def on_files(files: Files, config) -> Files:
    pages = {"reference/cli.md": cli_markdown(),
             "reference/models-yaml.md": models_yaml_markdown(),
             "reference/router-options.md": router_options_markdown()}
    assert set(pages) == set(GENERATED)
    for uri, content in pages.items():
        files.append(File.generated(config, uri, content=content))
    # The figures sit beside the results pages, so that the embedded files' own image links
    # (``![shares.png](shares.png)``) and the pages' (``![...](quality_cpu_cv5_core.png)``) resolve.
    figures: dict[str, Path] = {}
    for png in sorted(RESULTS.rglob("*.png")):
        if png.name in figures:
            raise PluginError(f"bench/results has two figures named {png.name}: {figures[png.name]} and {png}")
        figures[png.name] = png
        files.append(File.generated(config, f"results/{png.name}", abs_src_path=str(png)))
    return files


def _cell(text: object) -> str:
    """Text for one markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


# ---- the command line ----------------------------------------------------------------------
def cli_markdown() -> str:
    try:
        import typer

        from lookahead_router.cli.main import app
    except ImportError as exc:
        raise PluginError(f"reference/cli.md: cannot import the Typer app "
                          f"lookahead_router.cli.main:app ({exc})") from exc
    root = typer.main.get_command(app)
    lines = ["# Command line reference", "",
             "Generated from the `lookahead` Typer app (`lookahead_router.cli.main:app`) when the site is "
             "built; `lookahead COMMAND --help` prints the same. Options that take lists accept repeats "
             "or commas.", ""]

    def walk(command, path: list[str]) -> None:
        ctx = command.make_context(" ".join(path), [], resilient_parsing=True)
        subcommands = getattr(command, "commands", None)
        level = "#" * min(len(path) + 1, 4)
        lines.extend([f"{level} `{' '.join(path)}`", ""])
        if command.help:
            lines.extend([command.help.strip(), ""])
        usage = " ".join(path + [piece for piece in command.collect_usage_pieces(ctx)])
        lines.extend(["```text", f"Usage: {usage}", "```", ""])
        rows = []
        for param in command.params:
            record = param.get_help_record(ctx)
            if record is None:   # an argument, or a hidden option
                if getattr(param, "hidden", False):
                    continue
                record = (param.human_readable_name, getattr(param, "help", "") or "")
            rows.append(f"| `{_cell(record[0])}` | {_cell(record[1])} |")
        if rows:
            lines.extend(["| option | description |", "|---|---|", *rows, ""])
        for name, sub in sorted((subcommands or {}).items()):
            if not getattr(sub, "hidden", False):
                walk(sub, path + [name])

    walk(root, ["lookahead"])
    return "\n".join(lines) + "\n"


# ---- models.yaml ---------------------------------------------------------------------------
def _serving_config_model():
    """The top-level pydantic model of models.yaml (``catalogue.ServeConfig``: the proxy, `route`
    and `collect generate` all read it)."""
    from lookahead_router.catalogue import ServeConfig
    return ServeConfig


def _source_comments(model) -> dict[str, str]:
    """For fields without a schema description: each field's comment in its class's source (the
    trailing `# comment` on its line, else the block of comment lines right above it), else the
    comment on its key in the example of the defining module's docstring."""
    comments: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        module = inspect.getmodule(cls)
        for match in re.finditer(r"^\s*(\w+):[^#\n]*#\s*(.+)$", (module.__doc__ or "") if module else "", flags=re.M):
            comments.setdefault(match.group(1), match.group(2).strip())
    for cls in reversed(model.__mro__):
        try:
            source = inspect.getsource(cls)
        except (OSError, TypeError):
            continue
        above: list[str] = []
        for line in source.splitlines():
            stripped = line.strip()
            if stripped.startswith("#"):
                above.append(stripped.lstrip("#").strip())
                continue
            field = re.match(r"^\s{4}(\w+)\s*:[^#]*?(?:#\s*(.+))?$", line)
            if field and field.group(2):
                comments[field.group(1)] = field.group(2).strip()
            elif field and above:
                comments[field.group(1)] = " ".join(above)
            above = []
    return comments


def _type_of(prop: dict, defs: dict) -> str:
    if "$ref" in prop:
        return prop["$ref"].rsplit("/", 1)[-1]
    if "enum" in prop:
        return " | ".join(f"`{v}`" for v in prop["enum"])
    if "const" in prop:
        return f"`{prop['const']}`"
    if "anyOf" in prop:
        return " or ".join(_type_of(p, defs) for p in prop["anyOf"])
    kind = prop.get("type", "any")
    if kind == "array":
        return f"list of {_type_of(prop.get('items', {}), defs)}"
    if kind == "object" and "additionalProperties" in prop:
        return f"mapping of name → {_type_of(prop['additionalProperties'], defs)}"
    if prop.get("format") == "path":
        return "path"
    bounds = [f"{sym} {prop[key]}" for key, sym in (("minimum", "≥"), ("exclusiveMinimum", ">"),
                                                     ("maximum", "≤"), ("exclusiveMaximum", "<")) if key in prop]
    return kind + (f" ({', '.join(bounds)})" if bounds else "")


def models_yaml_markdown() -> str:
    top = _serving_config_model()
    schema = top.model_json_schema()
    defs = schema.get("$defs", {})
    classes = {name: cls for name, cls in _pydantic_classes(top).items()}
    lines = ["# `models.yaml` reference", "",
             f"Generated from the JSON schema of `{top.__module__}.{top.__name__}` "
             "(`model_json_schema()`) when the site is built. The file is YAML; unknown keys are "
             "errors; relative paths are read from the config file's folder. "
             "The [serving guide](../guide/serving.md) explains how the keys are used. `models` maps each "
             "candidate's name (as the router knows it) to an `UpstreamConfig`, which gives exactly one of "
             "`base_url` (an OpenAI-compatible server), `replay` (a routing dataset), `echo: true` or "
             "`local` (`collect generate` only); the nested sections are `CircuitBreakerConfig`, "
             "`BatchConfig` and `GenerationConfig`.", ""]

    def table(title: str, sch: dict, cls) -> None:
        comments = _source_comments(cls) if cls is not None else {}
        lines.extend([f"## {title}", ""])
        doc = sch.get("description")
        if doc:
            lines.extend([" ".join(doc.split()), ""])
        required = set(sch.get("required", []))
        lines.extend(["| key | type | default | description |", "|---|---|---|---|"])
        for key, prop in sch.get("properties", {}).items():
            default = "required" if key in required else (
                f"`{_cell(_yaml(prop['default']))}`" if "default" in prop else "")
            description = prop.get("description") or comments.get(key, "")
            lines.append(f"| `{key}` | {_cell(_type_of(prop, defs))} | {default} | {_cell(description)} |")
        lines.append("")

    table("Top level", schema, top)
    for name, sub in defs.items():
        table(name, sub, classes.get(name))
    return "\n".join(lines) + "\n"


def _pydantic_classes(model) -> dict:
    """The pydantic models reachable from ``model``'s fields, by class name."""
    import typing

    from pydantic import BaseModel
    found: dict = {}

    def visit(tp) -> None:
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            if tp.__name__ in found:
                return
            found[tp.__name__] = tp
            for field in tp.model_fields.values():
                visit(field.annotation)
        for arg in typing.get_args(tp):
            visit(arg)

    visit(model)
    return found


def _yaml(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict) and not value:
        return "{}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_yaml(v) for v in value) + "]"
    return str(value)


# ---- router options ------------------------------------------------------------------------
def router_options_markdown() -> str:
    from lookahead_router.routers.registry import options_markdown
    body = options_markdown()
    return ("# Router options\n\n"
            "Generated by `lookahead_router.routers.registry.options_markdown()` when the site is built: "
            "every registered router's options with their types and defaults. Set them with "
            "`lookahead train --set KEY=VALUE` (or `--set ROUTER.KEY=VALUE` for `lookahead benchmark`), "
            "or as keyword arguments of `make_router`; see [the routers guide](../guide/routers.md).\n\n"
            + body.strip() + "\n")
