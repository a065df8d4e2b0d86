"""The prompt a request is routed on, from the two shapes prompts come in: ``{"prompt": text}`` or
OpenAI chat ``{"messages": [...]}``. Read by the proxy (``serving/protocol.py``), the offline
`lookahead route` (``evaluation/offline_route.py``), the offline backends and data collection
(``collection/tasks.py``); here, outside ``serving/``, so that those need no part of the proxy.
"""

from __future__ import annotations

from lookahead_router.errors import LookaheadError


class PromptError(LookaheadError):
    """A prompt or a conversation cannot be routed on; the message says which part is wrong."""


def content_text(content) -> str:
    """The text of an OpenAI message ``content``: a string, or a list of content parts whose
    ``text`` parts are joined by newlines (images and audio cannot be routed on, so they are
    skipped)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for k, part in enumerate(content):
            if not isinstance(part, dict):
                raise PromptError(f"content part {k} is {type(part).__name__}, not an object")
            if part.get("type", "text") == "text":
                if not isinstance(part.get("text"), str):
                    raise PromptError(f"content part {k} of type 'text' has no string 'text'")
                texts.append(part["text"])
        return "\n".join(texts)
    raise PromptError(f"content is {type(content).__name__}; expected a string or a list of "
                      "content parts")


def prompt_of(messages: list[dict]) -> str:
    """The prompt a conversation is routed on: its last user message (the turn being answered;
    earlier turns were answered already, and the router was trained on single prompts)."""
    if not isinstance(messages, list) or not messages:
        raise PromptError("'messages' must be a non-empty list of {\"role\", \"content\"} objects")
    for i in range(len(messages) - 1, -1, -1):
        msg = messages[i]
        if not isinstance(msg, dict):
            raise PromptError(f"messages[{i}] is {type(msg).__name__}, not an object")
        if msg.get("role") == "user":
            try:
                return content_text(msg.get("content"))
            except PromptError as exc:
                raise PromptError(f"messages[{i}]: {exc}") from exc
    roles = sorted({str(m.get("role")) for m in messages if isinstance(m, dict)})
    raise PromptError(f"no user message to route on (roles present: {', '.join(roles) or 'none'})")


def row_prompt(row: dict, where: str, error: type[Exception] = PromptError,
               non_empty: bool = False) -> str:
    """The prompt of one line of a prompts file: its ``prompt``, else the last user message of its
    ``messages``. ``error`` names ``where`` (file:line); ``non_empty`` also refuses a blank prompt
    (a generation request needs something to answer)."""
    if "prompt" in row:
        prompt = row["prompt"]
        if not isinstance(prompt, str) or (non_empty and not prompt.strip()):
            raise error(f"{where}: 'prompt' must be a {'non-empty ' if non_empty else ''}string")
    elif "messages" in row:
        try:
            prompt = prompt_of(row["messages"])
        except PromptError as exc:
            raise error(f"{where}: {exc}") from exc
    else:
        raise error(f"{where}: no 'prompt' or 'messages' field")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as exc:  # e.g. "\ud83d": a string cut inside an emoji
        raise error(f"{where}: the prompt is not valid Unicode ({exc.reason} at "
                    f"character {exc.start})") from exc
    return prompt
