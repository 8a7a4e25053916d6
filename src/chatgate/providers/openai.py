"""OpenAI Chat Completions upstream: the request goes out nearly as it came in.

Parameter table (client -> upstream), checkable against ../shared/protocols/mapping.md:

| client parameter          | upstream                                   |
|---------------------------|--------------------------------------------|
| model                     | the deployment's vendor model id            |
| max_tokens                | as is, or renamed by the model profile      |
|                           | (gpt-5.x: max_completion_tokens)            |
| stream_options            | include_usage forced on when streaming, so  |
|                           | usage is always known; the usage chunk is   |
|                           | dropped again if the client did not ask     |
| everything else           | as sent (validated, profile-checked)        |

Response: ``id`` becomes the gateway's request id, ``model`` the name the client asked for,
``created`` the gateway's clock; every other field is relayed untouched.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ..config import Deployment, Profile, Provider
from ..errors import (
    GatewayError,
    InvalidRequest,
    NotFound,
    RateLimited,
    StreamInterrupted,
    UpstreamError,
)
from ..schema import AssistantMessage, ChatRequest, JSONObjectFormat, StreamOptions, Usage
from ._shared import ChunkWriter, error_object, require_json_word, scrub
from .base import Context, UpstreamRequest

_decode = msgspec.json.decode
_encode = msgspec.json.encode

MIN_OUTPUT = 1
NATIVE_N = True
UNSUPPORTED: tuple[str, ...] = ()


def build_request(
    req: ChatRequest, dep: Deployment, provider: Provider, ctx: Context, profile: Profile
) -> UpstreamRequest:
    if isinstance(req.response_format, JSONObjectFormat):
        require_json_word(req)
    changes: dict[str, Any] = {"model": dep.model}
    if any(
        isinstance(m, AssistantMessage) and (m.reasoning_content or m.thinking_blocks)
        for m in req.messages
    ):
        # the gateway's own reasoning extensions, sent back by clients: not OpenAI fields
        changes["messages"] = [
            msgspec.structs.replace(m, reasoning_content=None, thinking_blocks=None)
            if isinstance(m, AssistantMessage)
            else m
            for m in req.messages
        ]
    if req.stream:
        opts = req.stream_options
        changes["stream_options"] = StreamOptions(
            include_usage=True,
            include_obfuscation=opts.include_obfuscation if opts else None,
        )
    ctx.max_output = req.max_completion_tokens or req.max_tokens
    body = _encode(msgspec.structs.replace(req, **changes))
    headers = {"Content-Type": "application/json", **provider.headers}
    if provider.api_key:
        headers["Authorization"] = f"Bearer {provider.api_key}"
    return UpstreamRequest(
        url=provider.base_url.rstrip("/") + "/chat/completions",
        headers=headers,
        body=body,
        stream=bool(req.stream),
    )


def parse_response(body: bytes, ctx: Context) -> tuple[bytes, Usage | None]:
    try:
        data = _decode(body)
    except msgspec.DecodeError:
        raise UpstreamError("The upstream provider returned a malformed response.") from None
    if not isinstance(data, dict) or "choices" not in data:
        raise UpstreamError("The upstream provider returned an unexpected response.")
    data["id"] = ctx.response_id
    data["model"] = ctx.public_model
    data["created"] = ctx.created
    return _encode(data), Usage.from_openai(data.get("usage"))


class OpenAIStream(ChunkWriter):
    """Relays upstream chunks one by one, rewriting id/model/created."""

    def feed(self, data: bytes) -> bytes:
        if data == b"[DONE]":
            self.done = True
            return b""
        try:
            chunk = _decode(data)
        except msgspec.DecodeError:
            raise StreamInterrupted(
                "The upstream provider sent a malformed stream event."
            ) from None
        if not isinstance(chunk, dict):
            raise StreamInterrupted("The upstream provider sent an unexpected stream event.")
        if "error" in chunk:
            err = chunk["error"] if isinstance(chunk["error"], dict) else {}
            raise StreamInterrupted(
                scrub(str(err.get("message") or "The upstream stream failed."), None),
                code=err.get("code") or "upstream_stream_error",
            )
        ctx = self._ctx
        chunk["id"] = ctx.response_id
        chunk["model"] = ctx.public_model
        chunk["created"] = ctx.created
        choices = chunk.get("choices")
        usage = chunk.get("usage")
        if usage:
            self.usage = Usage.from_openai(usage)
        if choices:
            for c in choices:
                fr = c.get("finish_reason")
                if fr:
                    self.finish_reason = fr
        elif usage and not ctx.include_usage:
            return b""  # the usage chunk we asked for on our own account
        if not ctx.include_usage:
            chunk.pop("usage", None)
        return b"data: " + _encode(chunk) + b"\n\n"


def stream_translator(ctx: Context) -> OpenAIStream:
    return OpenAIStream(ctx)


def parse_error(
    status: int, headers: dict[str, str], body: bytes, secret: str | None
) -> GatewayError:
    """Turn an upstream error into the client's error: same status where it means the same
    thing to the client; never the upstream credentials or their masked form."""
    err = error_object(body)
    message = scrub(str(err.get("message") or f"Upstream returned HTTP {status}."), secret)
    param = err.get("param") if isinstance(err.get("param"), str) else None
    code = err.get("code") if isinstance(err.get("code"), str) else None
    etype = err.get("type") if isinstance(err.get("type"), str) else None
    retry = {k: v for k, v in headers.items() if k in ("retry-after", "retry-after-ms")}
    if status in (401, 403):
        return UpstreamError(
            "The upstream provider refused the gateway's credentials; "
            "the gateway operator has been told in the logs.",
            code="upstream_auth_failed",
        )
    if status == 429:
        return RateLimited(
            message,
            code=code or "rate_limit_exceeded",
            type=etype or "rate_limit_error",
            headers=retry,
        )
    if status == 404:
        return NotFound(message, param=param, code=code or "not_found")
    if 400 <= status < 500:
        return InvalidRequest(
            message, param=param, code=code, status=status, type=etype or "invalid_request_error"
        )
    return UpstreamError(
        message,
        status=status if status in (500, 502, 503, 504) else 502,
        code=code or "upstream_error",
        type="server_error",
        headers=retry,
    )
