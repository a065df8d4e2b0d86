"""The OpenAI wire format as the proxy reads and writes it: request bodies and their checks, the
prompt a conversation is routed on (found by ``prompts.py``), and errors shaped like OpenAI's
(``{"error": {"message", "type", "param", "code"}}``), so every OpenAI client reports them well.

Bodies are parsed by orjson, which is strict where the standard library is lenient: an unpaired
UTF-16 surrogate (``"\\ud83d"``, what a JavaScript client sends after cutting a string in the
middle of an emoji), NaN and Infinity are refused here with a 400, and so is a field nested more
than 64 levels deep (``data/jsonl.py``; past 254 levels orjson could not forward it), so they
never reach the router or an upstream.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import orjson
from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lookahead_router.data.jsonl import deep_field, deep_field_of_text, nesting_message, printable_field
from lookahead_router.prompts import PromptError, content_text, prompt_of

ROUTED_MODEL = "lookahead"


class OpenAIError(Exception):
    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 code: Optional[str] = None, param: Optional[str] = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, self.type, self.code, self.param)


class FastJSONResponse(JSONResponse):
    """JSON rendered by orjson (faster than the standard library's; FastAPI's own
    ORJSONResponse is deprecated)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(status: int, message: str, type: str = "invalid_request_error",
                   code: Optional[str] = None, param: Optional[str] = None) -> JSONResponse:
    return FastJSONResponse({"error": {"message": message, "type": type, "param": param, "code": code}},
                            status_code=status)


# ---- request bodies -------------------------------------------------------------------------
class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: Union[str, list[dict[str, Any]], None] = None


class ChatRequest(BaseModel):
    """What the proxy needs from a chat request; other fields (temperature, tools, ...) are
    forwarded to the upstream untouched. Optional fields accept null, as OpenAI's API does."""
    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[Message] = Field(min_length=1)
    stream: Optional[bool] = None
    n: Optional[int] = Field(None, ge=1, le=128)
    stream_options: Optional[dict[str, Any]] = None
    cost_weight: Optional[float] = Field(None, ge=0)  # the proxy's own field: never forwarded


class RouteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    messages: Optional[list[Message]] = None
    prompt: Optional[str] = None
    cost_weight: Optional[float] = Field(None, ge=0)


async def read_json(request: Request, max_bytes: int) -> dict:
    """The request body as a JSON object. 415 unless it is declared JSON (a cross-origin page can
    post text/plain without a CORS preflight; it must not reach an upstream), 413 past
    ``max_bytes`` (checked while reading, so a body without Content-Length cannot exhaust memory
    either), 400 when it is not strict JSON or a field nests too deep."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise OpenAIError(415, f"the request body must be JSON with 'Content-Type: application/json' "
                          f"(got {media_type or 'no content type'!r})", code="unsupported_media_type")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(max_bytes)
        chunks.append(chunk)
    raw = b"".join(chunks)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):   # orjson stops at 1024 levels
            raise _too_deep(deep_field_of_text(raw))
        if "surrogate" in str(exc):
            raise OpenAIError(400, f"the request body holds an unpaired UTF-16 surrogate ({exc}); "
                              "text must be valid Unicode (was a string cut inside an emoji?)",
                              code="invalid_unicode")
        raise OpenAIError(400, f"the request body is not valid JSON ({exc})", code="invalid_json")
    if not isinstance(body, dict):
        raise OpenAIError(400, "the request body must be a JSON object", code="invalid_json")
    field = deep_field(body)
    if field is not None:
        raise _too_deep(field)
    return body


def _too_deep(field: str | None) -> OpenAIError:
    return OpenAIError(400, nesting_message(field), code="nesting_too_deep",
                       param=printable_field(field) if field is not None else None)


def _too_large(max_bytes: int) -> OpenAIError:
    return OpenAIError(413, f"the request body is larger than {max_bytes} bytes",
                       code="request_too_large")


def parse(model: type[BaseModel], body: dict) -> BaseModel:
    """Validate ``body``; the first problem becomes a 400 naming the field."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or None
        if first["type"] == "missing" and field == "model":
            message = "you must provide a model parameter"
        elif first["type"] == "missing" and field == "messages":
            message = "'messages' is a required property"
        else:
            message = f"{field}: {first['msg']}" if field else first["msg"]
        raise OpenAIError(400, message, code="invalid_request", param=field)


def forwarded_body(chat: ChatRequest, body: dict) -> dict:
    """What goes to the upstream: the client's body as sent, less the proxy's own field, with
    the fields the proxy read in the form it validated them (``"n": 2.0`` becomes 2)."""
    forward = {k: v for k, v in body.items() if k != "cost_weight"}
    if chat.n is not None:
        forward["n"] = chat.n
    return forward


def check_length(prompt_chars: int, limit: int) -> None:
    if prompt_chars > limit:
        raise OpenAIError(400, f"the messages hold {prompt_chars} characters; this proxy accepts at "
                          f"most {limit}", code="context_length_exceeded", param="messages")


def chat_prompt(chat: ChatRequest, body: dict, max_chars: int) -> Optional[str]:
    """The prompt a chat request is routed on, after checking the conversation's length. A
    pass-through request needs no user message (its prompt is then None); a routed one does."""
    try:
        chars = sum(len(content_text(m.content)) for m in chat.messages if m.content is not None)
    except PromptError as exc:
        raise OpenAIError(400, f"messages: {exc}", code="invalid_request", param="messages")
    check_length(chars, max_chars)
    try:
        return prompt_of(body["messages"])
    except PromptError as exc:
        if chat.model == ROUTED_MODEL:
            raise OpenAIError(400, str(exc), code="invalid_request", param="messages")
        return None


def route_prompt(req: RouteRequest, max_chars: int) -> str:
    if (req.prompt is None) == (req.messages is None):
        raise OpenAIError(400, "give either 'prompt' or 'messages'", code="invalid_request")
    try:
        prompt = req.prompt if req.prompt is not None else prompt_of(
            [m.model_dump() for m in req.messages])
    except PromptError as exc:
        raise OpenAIError(400, str(exc), code="invalid_request", param="messages")
    check_length(len(prompt), max_chars)
    return prompt
