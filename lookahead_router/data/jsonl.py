"""JSON from users: prompts files (JSON Lines of objects, each with a unique ``id``, default its
line number), decisions files and the proxy's request bodies, all held to one nesting limit.

A value nested hundreds of levels deep is valid JSON, but nothing a client means: it crashes
recursive code downstream (the standard library's parser at Python's recursion limit, orjson's
serialiser past 254 levels when a body is forwarded). So every field of a user's JSON object may
nest arrays and objects at most ``MAX_NESTING`` levels deep, and the error names the field.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

MAX_NESTING = 64   # levels of arrays/objects inside one field; real requests use fewer than ten

# A JSON string (with the colon that makes it a key, if any) or a bracket: enough to follow the
# nesting of text that a parser refused as too deep, without parsing it.
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"(?:\s*:)?|[\[\]{}]')


def deep_field(obj: dict, limit: int = MAX_NESTING) -> str | None:
    """The first field of ``obj`` whose value nests arrays or objects more than ``limit`` levels
    deep (None when every field is within it). Iterative: depth cannot exhaust the stack here."""
    for key, value in obj.items():
        stack = [(value, 1)]   # (a value, how many arrays/objects deep it sits; 1: the field's own)
        while stack:
            node, depth = stack.pop()
            if not isinstance(node, (dict, list)):
                continue
            if depth > limit:
                return str(key)
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return None


def deep_field_of_text(raw: bytes | str, limit: int = MAX_NESTING) -> str | None:
    """``deep_field`` for the text of an object that a parser refused as nested too deep."""
    raw = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    depth, key = 0, None
    for match in _TOKENS.finditer(raw):
        token = match.group()
        if token[:1] == b'"':
            if depth == 1 and token.endswith(b":"):
                key = token[:token.rindex(b'"') + 1]
        elif token in (b"[", b"{"):
            depth += 1
            if depth - 1 > limit:   # depth 1 is the object itself
                return json.loads(key) if key is not None else None
        else:
            depth -= 1
    return None


def printable_field(field: str) -> str:
    """A field's name as an error may echo it: valid UTF-8 (no lone surrogates), at most 80
    characters."""
    field = field.encode("utf-8", "replace").decode("utf-8")
    return field if len(field) <= 80 else field[:77] + "..."


def nesting_message(field: str | None, limit: int = MAX_NESTING) -> str:
    what = f"'{printable_field(field)}'" if field is not None else "the JSON"
    return f"{what} nests arrays or objects more than {limit} levels deep; at most {limit} are accepted"


def parse_json_line(line: str, where: str, error: type[Exception]) -> Any:
    """One line of a user's JSON Lines file; ``error`` names ``where`` (file:line) and the field
    when the line is malformed or nested too deep."""
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        raise error(f"{where}: malformed JSON ({exc.msg} at column {exc.colno})") from exc
    except RecursionError:
        raise error(f"{where}: {nesting_message(deep_field_of_text(line))}") from None
    if isinstance(value, dict) and (field := deep_field(value)) is not None:
        raise error(f"{where}: {nesting_message(field)}")
    return value


def prompt_rows(path: str | Path, error: type[Exception]) -> Iterator[tuple[str, str, dict]]:
    """(id, "file:line", object) for each non-blank line. A line that is not a JSON object, one
    nested too deep, an id that is not a string or an integer, or a repeated id raises ``error``
    naming file and line."""
    path = Path(path)
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            row = parse_json_line(line, where, error)
            if not isinstance(row, dict):
                raise error(f"{where}: expected an object with 'prompt' or 'messages'")
            qid = row.get("id", lineno)
            if isinstance(qid, bool) or not isinstance(qid, (str, int)):
                raise error(f"{where}: 'id' must be a string or an integer, not {qid!r}")
            qid = str(qid)
            if qid in seen:
                raise error(f"{where}: duplicate id {qid!r} (first on line {seen[qid]})")
            seen[qid] = lineno
            yield qid, where, row
