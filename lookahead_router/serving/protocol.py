"""The OpenAI wire format as the proxy checks it: request bodies, and errors shaped like OpenAI's
(``{"error": {"message", "type", "param", "code"}}``), so every OpenAI client reports them well."""

from __future__ import annotations

import json
from typing import Any, Optional, Union

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class OpenAIError(Exception):
    def __init__(self, status: int, message: str, type: str = "invalid_request_error",
                 code: Optional[str] = None, param: Optional[str] = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code, self.param = status, message, type, code, param

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, self.type, self.code, self.param)


def error_response(status: int, message: str, type: str = "invalid_request_error",
                   code: Optional[str] = None, param: Optional[str] = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type, "param": param, "code": code}},
                        status_code=status)


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: Union[str, list[dict[str, Any]], None] = None


class ChatRequest(BaseModel):
    """What the proxy needs from a chat request; other fields (temperature, tools, ...) are
    forwarded to the upstream untouched."""
    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    cost_weight: Optional[float] = Field(None, ge=0)  # the proxy's own field: never forwarded


class RouteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    messages: Optional[list[Message]] = None
    prompt: Optional[str] = None
    cost_weight: Optional[float] = Field(None, ge=0)


async def read_json(request: Request, max_bytes: int) -> dict:
    """The request body as a JSON object; 413 past ``max_bytes`` (checked while reading, so a
    body without Content-Length cannot exhaust memory either), 400 when it is not JSON."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(max_bytes)
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks))
    except (ValueError, UnicodeDecodeError) as exc:
        raise OpenAIError(400, f"the request body is not valid JSON ({exc})", code="invalid_json")
    if not isinstance(body, dict):
        raise OpenAIError(400, "the request body must be a JSON object", code="invalid_json")
    return body


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
