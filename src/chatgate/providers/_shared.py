"""Pieces every translator needs the same way: message text, tool-call arguments, the
OpenAI-only parameters, decoding upstream events, and writing OpenAI chunks."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from ..errors import InvalidRequest, StreamInterrupted, UpstreamError
from ..schema import AssistantMessage, ChatRequest, TextPart, Usage
from .base import Context

_decode = msgspec.json.decode
_encode = msgspec.json.encode

# OpenAI request parameters that no other vendor has (model-independent).
OPENAI_ONLY = (
    "metadata",
    "store",
    "service_tier",
    "prediction",
    "modalities",
    "audio",
    "web_search_options",
    "verbosity",
    "prompt_cache_key",
    "prompt_cache_retention",
    "functions",
    "function_call",
)


def text_of(content: str | list[TextPart]) -> str:
    return content if isinstance(content, str) else "".join(p.text for p in content)


def assistant_text(msg: AssistantMessage) -> list[str]:
    """The assistant message's text pieces (refusals count as text when sent back)."""
    content = msg.content
    if isinstance(content, str):
        return [content] if content else []
    out = [p.text if isinstance(p, TextPart) else p.refusal for p in content or ()]
    if msg.refusal and not content:
        out.append(msg.refusal)
    return [t for t in out if t]


def require_json_word(req: ChatRequest) -> None:
    """OpenAI refuses json_object output unless a message mentions JSON: say so first."""
    for msg in req.messages:
        content = getattr(msg, "content", None)
        if isinstance(content, str):
            text = content
        elif isinstance(content, list):
            text = " ".join(getattr(p, "text", "") or "" for p in content)
        else:
            text = ""
        if "json" in text.lower():
            return
    raise InvalidRequest(
        "'messages' must contain the word 'json' in some form, to use 'response_format' of "
        "type 'json_object'.",
        param="response_format",
    )


def function_role(i: int) -> InvalidRequest:
    return InvalidRequest(
        "Messages with role 'function' (the deprecated functions API) cannot be translated "
        "for this model; use tools and role 'tool'.",
        param=f"messages[{i}].role",
        code="unsupported_value",
    )


def tool_call_args(tc: Any, i: int, j: int) -> tuple[str, dict[str, Any]]:
    """(name, parsed arguments) of an assistant tool call; 400 for what cannot be sent."""
    fn = getattr(tc, "function", None)
    if fn is None:
        raise InvalidRequest(
            "Custom tool calls cannot be sent to this model.",
            param=f"messages[{i}].tool_calls[{j}].type",
            code="unsupported_value",
        )
    try:
        args = _decode(fn.arguments) if fn.arguments.strip() else {}
    except msgspec.DecodeError:
        args = None
    if not isinstance(args, dict):
        raise InvalidRequest(
            "Tool call arguments must be a JSON object.",
            param=f"messages[{i}].tool_calls[{j}].function.arguments",
        )
    return fn.name, args


_KEYLIKE = re.compile(r"\b(?:sk-|sk_|AIza)[-_A-Za-z0-9*.]{6,}")


def scrub(message: str, secret: str | None) -> str:
    """No upstream credential, nor the masked form vendors echo back, leaves the gateway."""
    if secret:
        message = message.replace(secret, "***")
    return _KEYLIKE.sub("***", message)


def error_object(body: bytes) -> dict[str, Any]:
    """The ``error`` object of a vendor error body ({} if there is none)."""
    try:
        data = _decode(body)
    except msgspec.DecodeError:
        return {}
    if isinstance(data, list) and data:  # Gemini's streamGenerateContent without alt=sse
        data = data[0]
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return data["error"]  # type: ignore[no-any-return]
    return {}


def decode_body(body: bytes) -> Any:
    try:
        return _decode(body)
    except msgspec.DecodeError:
        raise UpstreamError("The upstream provider returned a malformed response.") from None


def decode_event(data: bytes) -> dict[str, Any]:
    try:
        ev = _decode(data)
    except msgspec.DecodeError:
        raise StreamInterrupted("The upstream provider sent a malformed stream event.") from None
    if not isinstance(ev, dict):
        raise StreamInterrupted("The upstream provider sent an unexpected stream event.")
    return ev


def completion(ctx: Context, choices: list[dict[str, Any]], usage: Usage, **extra: Any) -> bytes:
    """A chat.completion body in the OpenAI shape."""
    return _encode(
        {
            "id": ctx.response_id,
            "object": "chat.completion",
            "created": ctx.created,
            "model": ctx.public_model,
            "choices": choices,
            "usage": usage.to_openai(),
            **extra,
            "system_fingerprint": None,
        }
    )


class ChunkWriter:
    """Base of the stream translators: the chunk envelope, the usage chunk, and the end."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self.done = False
        self._head = {
            "id": ctx.response_id,
            "object": "chat.completion.chunk",
            "created": ctx.created,
            "model": ctx.public_model,
        }

    def _chunk(
        self, delta: dict[str, Any], finish: str | None = None, index: int | None = None
    ) -> bytes:
        choice = {
            "index": self._ctx.choice_index if index is None else index,
            "delta": delta,
            "logprobs": None,
            "finish_reason": finish,
        }
        c: dict[str, Any] = {**self._head, "choices": [choice]}
        if self._ctx.include_usage:
            c["usage"] = None  # as OpenAI: every chunk carries usage: null when asked for
        return b"data: " + _encode(c) + b"\n\n"

    def _usage_chunk(self) -> bytes:
        if not (self._ctx.include_usage and self._ctx.usage_chunk) or self.usage is None:
            return b""
        c = {**self._head, "choices": [], "usage": self.usage.to_openai()}
        return b"data: " + _encode(c) + b"\n\n"

    def partial_usage(self) -> Usage | None:
        return self.usage

    def close(self) -> bytes:
        if not self.done:
            raise StreamInterrupted("The upstream stream ended before it was complete.")
        return b""
