"""Model table and request validation for the Anthropic Messages emulator.

Written from the Anthropic API reference, the SDK's request types and recorded payloads. Errors
are raised as :class:`AnthropicError` and rendered by the HTTP layer in Anthropic's envelope
(``{"type": "error", "error": {"type", "message"}, "request_id"}``). Messages name the field
with a dotted path (``messages.1.content.0.text: ...``) the way the real API does; schema-level
problems use pydantic's wording (``Field required``, ``Extra inputs are not permitted``).

Deliberately stricter than the real API in one place: consecutive turns with the same role are
rejected (the real API merges them) so that the gateway has to merge them itself.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass, field
from typing import Any

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_type(status: int) -> str:
    """Anthropic's ``error.type`` for an HTTP status (unlisted 4xx/5xx: the generic ones)."""
    if status in ERROR_TYPES:
        return ERROR_TYPES[status]
    return "api_error" if status >= 500 else "invalid_request_error"


class AnthropicError(Exception):
    """An Anthropic-style API error: HTTP status, ``error.type``, message, extra headers."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or error_type(status)
        self.headers = headers or {}

    def body(self, request_id: str) -> dict[str, Any]:
        err = {"type": self.type, "message": self.message}
        return {"type": "error", "error": err, "request_id": request_id}


def bad(message: str) -> AnthropicError:
    return AnthropicError(400, message)


# --------------------------------------------------------------------------------------------
# Model table
# --------------------------------------------------------------------------------------------

_EFFORTS_46 = ("low", "medium", "high", "max")


@dataclass(frozen=True)
class ClaudeModel:
    id: str
    snapshot: str  # the ``model`` value in responses
    max_output: int = 64000
    context_window: int = 200000
    structured_outputs: bool = True  # output_config.format
    efforts: tuple[str, ...] = ()  # output_config.effort values; () -> not supported
    adaptive_thinking: bool = False  # thinking.type "adaptive"
    prefill: bool = True  # a final assistant message (prefill) is accepted (not on Opus 4.6)


MODELS: dict[str, ClaudeModel] = {
    m.id: m
    for m in (
        ClaudeModel("claude-sonnet-4-5", "claude-sonnet-4-5-20250929"),
        ClaudeModel(
            "claude-opus-4-6", "claude-opus-4-6", 128000,
            efforts=_EFFORTS_46, adaptive_thinking=True, prefill=False,
        ),
        ClaudeModel(
            "claude-haiku-4-5-20251001", "claude-haiku-4-5-20251001", structured_outputs=False
        ),
        ClaudeModel(
            "claude-sonnet-4-6", "claude-sonnet-4-6", efforts=_EFFORTS_46, adaptive_thinking=True
        ),
        ClaudeModel(
            "claude-opus-4-7", "claude-opus-4-7", 128000,
            efforts=("low", "medium", "high", "xhigh", "max"), adaptive_thinking=True,
        ),
    )
}  # fmt: skip

# --------------------------------------------------------------------------------------------
# Thinking signatures: the sandbox signs the thinking text it emits, and checks the signature of
# thinking blocks it finds in a request when the signature is one of its own (so a gateway that
# alters replayed thinking is caught; signatures from the real API are accepted as they are).
# --------------------------------------------------------------------------------------------

_SIG_MARK = b"\x12\x08chatgate-sandbox-thinking\x1a"
_REDACTED_MARK = b"\x12\x08chatgate-sandbox-redacted\x1a"
_SIG_KEY = b"chatgate-sandbox-signing-key"


def _stretch(seed: bytes, n: int) -> bytes:
    out = b""
    block = seed
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return out[:n]


def sign_thinking(thinking: str) -> str:
    digest = hmac.new(_SIG_KEY, thinking.encode(), hashlib.sha256).digest()
    return base64.b64encode(_SIG_MARK + digest + _stretch(digest, 160)).decode()


def signature_ok(thinking: str, signature: str) -> bool:
    """False only for a sandbox-made signature that does not belong to ``thinking``."""
    try:
        raw = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        return True
    if not raw.startswith(_SIG_MARK):
        return True
    return hmac.compare_digest(signature, sign_thinking(thinking))


def redacted_data(seed: int) -> str:
    return base64.b64encode(_REDACTED_MARK + _stretch(seed.to_bytes(8, "big"), 300)).decode()


# --------------------------------------------------------------------------------------------
# Generic field checks (pydantic wording)
# --------------------------------------------------------------------------------------------

_TOP_LEVEL = frozenset(
    """model messages max_tokens system temperature top_p top_k stop_sequences stream metadata
    tools tool_choice thinking output_config service_tier container inference_geo
    cache_control""".split()  # noqa: SIM905
)
_TOOL_KEYS = frozenset(
    """name description input_schema strict cache_control type input_examples defer_loading
    allowed_callers eager_input_streaming""".split()  # noqa: SIM905
)
TOOL_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
_TOOL_ID_RE = re.compile(r"^[a-zA-Z0-9_-]+$")
IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)
BLOCK_TYPES = ("text", "image", "document", "tool_use", "tool_result", "thinking",
               "redacted_thinking")  # fmt: skip
_ASSISTANT_ONLY = ("tool_use", "thinking", "redacted_thinking")
_USER_ONLY = ("tool_result", "image", "document")
THINKING_DOCS = "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _literal(values: tuple[str, ...]) -> str:
    quoted = [f"'{v}'" for v in values]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def need_dict(path: str, v: Any) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise bad(f"{path}: Input should be a valid dictionary")
    return v


def need_list(path: str, v: Any) -> list[Any]:
    if not isinstance(v, list):
        raise bad(f"{path}: Input should be a valid list")
    return v


def need_str(path: str, v: Any) -> str:
    if not isinstance(v, str):
        raise bad(f"{path}: Input should be a valid string")
    return v


def need_bool(path: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise bad(f"{path}: Input should be a valid boolean")
    return v


def need_int(path: str, v: Any, lo: int | None = None) -> int:
    if not _is_int(v):
        raise bad(f"{path}: Input should be a valid integer")
    if lo is not None and v < lo:
        raise bad(f"{path}: Input should be greater than or equal to {lo}")
    return int(v)


def need_num(path: str, v: Any, lo: float, hi: float) -> float:
    if not _is_num(v):
        raise bad(f"{path}: Input should be a valid number")
    if v < lo:
        raise bad(f"{path}: Input should be greater than or equal to {_fmt(lo)}")
    if v > hi:
        raise bad(f"{path}: Input should be less than or equal to {_fmt(hi)}")
    return float(v)


def only_keys(path: str, obj: dict[str, Any], allowed: frozenset[str] | set[str]) -> None:
    for key in obj:
        if key not in allowed:
            prefix = f"{path}." if path else ""
            raise bad(f"{prefix}{key}: Extra inputs are not permitted")


def required(path: str, obj: dict[str, Any], key: str) -> Any:
    if key not in obj:
        raise bad(f"{path}.{key}: Field required" if path else f"{key}: Field required")
    return obj[key]


def _check_cache_control(path: str, v: Any) -> None:
    if v is None:
        return
    cc = need_dict(path, v)
    only_keys(path, cc, {"type", "ttl"})
    if required(path, cc, "type") != "ephemeral":
        raise bad(f"{path}.type: Input should be 'ephemeral'")
    if "ttl" in cc and cc["ttl"] not in ("5m", "1h"):
        raise bad(f"{path}.ttl: Input should be '5m' or '1h'")


def _check_text(path: str, value: Any) -> str:
    text = need_str(path, value)
    if not text:
        raise bad(f"{path}: text content blocks must be non-empty")
    if not text.strip():
        raise bad(f"{path}: text content blocks must contain non-whitespace text")
    return text


# --------------------------------------------------------------------------------------------
# Content blocks
# --------------------------------------------------------------------------------------------


def _check_base64(path: str, data: Any) -> bytes:
    data = need_str(path, data)
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise bad(f"{path}: invalid base64 data") from exc


def _check_image(path: str, block: dict[str, Any]) -> None:
    only_keys(path, block, {"type", "source", "cache_control"})
    src = need_dict(f"{path}.source", required(path, block, "source"))
    kind = src.get("type")
    if kind == "base64":
        p = f"{path}.source.base64"
        only_keys(p, src, {"type", "media_type", "data"})
        media = required(p, src, "media_type")
        if media not in IMAGE_TYPES:
            raise bad(f"{p}.media_type: Input should be {_literal(IMAGE_TYPES)}")
        raw = _check_base64(f"{p}.data", required(p, src, "data"))
        actual = next((m for magic, m in _MAGIC if raw.startswith(magic)), None)
        if actual is None and raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
            actual = "image/webp"
        if actual is not None and actual != media:
            raise bad(
                f"{p}.media_type: The image was specified using the {media} media type, but "
                f"the image appears to be a {actual} image"
            )
    elif kind == "url":
        p = f"{path}.source.url"
        only_keys(p, src, {"type", "url"})
        url = need_str(f"{p}.url", required(p, src, "url"))
        if not url.startswith(("https://", "http://")):
            raise bad(f"{p}.url: Input should be a valid URL")
    else:
        raise bad(
            f"{path}.source: Input tag '{kind}' found using 'type' does not match any of the "
            "expected tags: 'base64', 'url'"
        )


def _check_document(path: str, block: dict[str, Any]) -> None:
    only_keys(path, block, {"type", "source", "title", "context", "citations", "cache_control"})
    src = need_dict(f"{path}.source", required(path, block, "source"))
    kind = src.get("type")
    if kind == "base64":
        p = f"{path}.source.base64"
        only_keys(p, src, {"type", "media_type", "data"})
        if required(p, src, "media_type") != "application/pdf":
            raise bad(f"{p}.media_type: Input should be 'application/pdf'")
        _check_base64(f"{p}.data", required(p, src, "data"))
    elif kind == "text":
        p = f"{path}.source.text"
        only_keys(p, src, {"type", "media_type", "data"})
        if required(p, src, "media_type") != "text/plain":
            raise bad(f"{p}.media_type: Input should be 'text/plain'")
        need_str(f"{p}.data", required(p, src, "data"))
    elif kind == "url":
        p = f"{path}.source.url"
        only_keys(p, src, {"type", "url"})
        need_str(f"{p}.url", required(p, src, "url"))
    else:
        raise bad(
            f"{path}.source: Input tag '{kind}' found using 'type' does not match any of the "
            "expected tags: 'base64', 'text', 'url'"
        )


def _check_tool_result(path: str, block: dict[str, Any]) -> None:
    only_keys(path, block, {"type", "tool_use_id", "content", "is_error", "cache_control"})
    tid = need_str(f"{path}.tool_use_id", required(path, block, "tool_use_id"))
    if not _TOOL_ID_RE.match(tid):
        raise bad(f"{path}.tool_use_id: String should match pattern '^[a-zA-Z0-9_-]+$'")
    if "is_error" in block:
        need_bool(f"{path}.is_error", block["is_error"])
    content = block.get("content")
    if content is None or isinstance(content, str):
        return
    for j, sub in enumerate(need_list(f"{path}.content", content)):
        p = f"{path}.content.{j}"
        sub = need_dict(p, sub)
        kind = sub.get("type")
        if kind == "text":
            only_keys(p, sub, {"type", "text", "cache_control", "citations"})
            _check_text(f"{p}.text", required(p, sub, "text"))
        elif kind == "image":
            _check_image(p, sub)
        elif kind == "document":
            _check_document(p, sub)
        else:
            raise bad(
                f"{p}: Input tag '{kind}' found using 'type' does not match any of the expected "
                "tags: 'text', 'image', 'document'"
            )


def check_block(path: str, value: Any, role: str) -> dict[str, Any]:
    block = need_dict(path, value)
    if "type" not in block:
        raise bad(f"{path}: Unable to extract tag using discriminator 'type'")
    kind = block["type"]
    if kind not in BLOCK_TYPES:
        raise bad(
            f"{path}: Input tag '{kind}' found using 'type' does not match any of the expected "
            f"tags: {', '.join(repr(t) for t in BLOCK_TYPES)}"
        )
    if role == "user" and kind in _ASSISTANT_ONLY:
        raise bad(f"{path}: `{kind}` blocks can only be used in `assistant` messages")
    if role == "assistant" and kind in _USER_ONLY:
        raise bad(f"{path}: `{kind}` blocks can only be used in `user` messages")
    _check_cache_control(f"{path}.cache_control", block.get("cache_control"))
    if kind == "text":
        only_keys(path, block, {"type", "text", "cache_control", "citations"})
        _check_text(f"{path}.text", required(path, block, "text"))
    elif kind == "image":
        _check_image(path, block)
    elif kind == "document":
        _check_document(path, block)
    elif kind == "tool_use":
        only_keys(path, block, {"type", "id", "name", "input", "cache_control", "caller"})
        tid = need_str(f"{path}.id", required(path, block, "id"))
        if not _TOOL_ID_RE.match(tid):
            raise bad(f"{path}.id: String should match pattern '^[a-zA-Z0-9_-]+$'")
        name = need_str(f"{path}.name", required(path, block, "name"))
        if not name:
            raise bad(f"{path}.name: String should have at least 1 character")
        need_dict(f"{path}.input", required(path, block, "input"))
    elif kind == "tool_result":
        _check_tool_result(path, block)
    elif kind == "thinking":
        only_keys(path, block, {"type", "thinking", "signature"})
        thinking = need_str(f"{path}.thinking", required(path, block, "thinking"))
        sig = need_str(f"{path}.signature", required(path, block, "signature"))
        if not sig or not signature_ok(thinking, sig):
            raise bad(f"{path}: Invalid `signature` in `thinking` block")
    else:  # redacted_thinking
        only_keys(path, block, {"type", "data"})
        if not need_str(f"{path}.data", required(path, block, "data")):
            raise bad(f"{path}.data: Invalid `data` in `redacted_thinking` block")
    return block


# --------------------------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------------------------


def _check_messages(raw: Any, model: ClaudeModel) -> list[dict[str, Any]]:
    """Validate ``messages``; return them with every content normalised to a block list."""
    items = need_list("messages", raw)
    if not items:
        raise bad("messages: at least one message is required")
    out: list[dict[str, Any]] = []
    last = len(items) - 1
    for i, msg in enumerate(items):
        path = f"messages.{i}"
        msg = need_dict(path, msg)
        only_keys(path, msg, {"role", "content"})
        role = required(path, msg, "role")
        if role not in ("user", "assistant"):
            raise bad(f"{path}.role: Input should be 'user' or 'assistant'")
        content = required(path, msg, "content")
        final_assistant = i == last and role == "assistant"
        blocks: list[dict[str, Any]]
        if isinstance(content, str):
            if content and not content.strip() and not final_assistant:
                raise bad(f"{path}.content: text content blocks must contain non-whitespace text")
            blocks = [{"type": "text", "text": content}] if content else []
        elif isinstance(content, list):
            blocks = [check_block(f"{path}.content.{j}", b, role) for j, b in enumerate(content)]
        else:
            raise bad(f"{path}.content: Input should be a valid string or a valid list")
        if not blocks and not final_assistant:
            raise bad(
                f"{path}: all messages must have non-empty content except for the optional "
                "final assistant message"
            )
        if i == 0 and role != "user":
            raise bad('messages: first message must use the "user" role')
        if i > 0 and items[i - 1].get("role") == role:
            raise bad(
                f'messages: roles must alternate between "user" and "assistant", but found '
                f'multiple "{role}" roles in a row'
            )
        out.append({"role": role, "content": blocks})
    if out[-1]["role"] == "assistant":
        if not model.prefill:
            raise bad("Prefilling assistant messages is not supported for this model.")
        tail = out[-1]["content"]
        if tail and tail[-1]["type"] == "text" and tail[-1]["text"] != tail[-1]["text"].rstrip():
            raise bad("messages: final assistant content cannot end with trailing whitespace")
    _check_tool_pairs(out)
    return out


def _check_tool_pairs(messages: list[dict[str, Any]]) -> None:
    seen: set[str] = set()
    for i, msg in enumerate(messages):
        if msg["role"] == "assistant":
            for j, block in enumerate(msg["content"]):
                if block["type"] == "tool_use":
                    if block["id"] in seen:
                        raise bad(f"messages.{i}.content.{j}: `tool_use` ids must be unique")
                    seen.add(block["id"])
            continue
        prev_ids: list[str] = []
        if i > 0:
            prev_ids = [b["id"] for b in messages[i - 1]["content"] if b["type"] == "tool_use"]
        answered: set[str] = set()
        other_seen = False
        for j, block in enumerate(msg["content"]):
            if block["type"] != "tool_result":
                other_seen = True
                continue
            if other_seen:
                raise bad(
                    f"messages.{i}.content.{j}: `tool_result` blocks must come before any other "
                    "content in a `user` message"
                )
            tid = block["tool_use_id"]
            if tid not in prev_ids:
                raise bad(
                    f"messages.{i}.content.{j}: unexpected `tool_use_id` found in `tool_result` "
                    f"blocks: {tid}. Each `tool_result` block must have a corresponding "
                    "`tool_use` block in the previous message."
                )
            answered.add(tid)
        missing = [t for t in prev_ids if t not in answered]
        if missing:
            raise bad(
                f"messages.{i - 1}: `tool_use` ids were found without `tool_result` blocks "
                f"immediately after: {', '.join(missing)}. Each `tool_use` block must have a "
                "corresponding `tool_result` block in the next message."
            )


# --------------------------------------------------------------------------------------------
# Tools, tool_choice, thinking, output_config
# --------------------------------------------------------------------------------------------


# Documented as unsupported in structured-output schemas (the SDK strips them before sending).
_UNSUPPORTED_KEYWORDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
                         "multipleOf", "minLength", "maxLength", "maxItems")  # fmt: skip


def structured_problem(schema: Any, path: str) -> str | None:
    """Why ``schema`` cannot be used for structured outputs / strict tools, or None."""
    if isinstance(schema, list):
        for k, sub in enumerate(schema):
            problem = structured_problem(sub, f"{path}.{k}")
            if problem:
                return problem
        return None
    if not isinstance(schema, dict):
        return None
    is_object = schema.get("type") == "object" or (
        isinstance(schema.get("type"), list) and "object" in schema["type"]
    )
    if (is_object or "properties" in schema) and schema.get("additionalProperties") is not False:
        if schema.get("additionalProperties") in (None, False):
            return (
                f"{path}: For 'object' type, 'additionalProperties' must be explicitly set to false"
            )
        return (
            f"{path}: For 'object' type, 'additionalProperties: "
            f"{json.dumps(schema['additionalProperties'])}' is not supported. Please set "
            "'additionalProperties' to false"
        )
    for key in _UNSUPPORTED_KEYWORDS:
        if key in schema:
            return f"{path}: JSON schema keyword '{key}' is not supported in structured outputs"
    if schema.get("minItems", 0) not in (0, 1):
        return (
            f"{path}: 'minItems' values other than 0 or 1 are not supported in structured outputs"
        )
    for key, sub in schema.items():
        if key in ("properties", "$defs", "definitions") and isinstance(sub, dict):
            for name, s in sub.items():
                problem = structured_problem(s, f"{path}.{key}.{name}")
                if problem:
                    return problem
        elif key in ("items", "anyOf", "allOf", "oneOf", "prefixItems"):
            problem = structured_problem(sub, f"{path}.{key}")
            if problem:
                return problem
    return None


def _check_tools(raw: Any) -> list[dict[str, Any]]:
    tools = need_list("tools", raw)
    names: set[str] = set()
    for i, tool in enumerate(tools):
        path = f"tools.{i}"
        tool = need_dict(path, tool)
        kind = tool.get("type")
        if kind not in (None, "custom"):
            raise bad(
                f"{path}: Input tag '{kind}' found using 'type' does not match any of the "
                "expected tags: 'custom' (server tools are not emulated by the Chatgate sandbox)"
            )
        path = f"tools.{i}.custom"
        only_keys(path, tool, _TOOL_KEYS)
        name = need_str(f"{path}.name", required(path, tool, "name"))
        if not TOOL_NAME_RE.match(name):
            raise bad(f"{path}.name: String should match pattern '{TOOL_NAME_RE.pattern}'")
        if name in names:
            raise bad("tools: Tool names must be unique.")
        names.add(name)
        if tool.get("description") is not None:
            need_str(f"{path}.description", tool["description"])
        schema = need_dict(f"{path}.input_schema", required(path, tool, "input_schema"))
        if required(f"{path}.input_schema", schema, "type") != "object":
            raise bad(f"{path}.input_schema.type: Input should be 'object'")
        if "strict" in tool and need_bool(f"{path}.strict", tool["strict"]):
            problem = structured_problem(schema, f"{path}.input_schema")
            if problem:
                raise bad(problem)
        _check_cache_control(f"{path}.cache_control", tool.get("cache_control"))
    return tools


def _check_tool_choice(raw: Any, tools: list[dict[str, Any]]) -> dict[str, Any]:
    choice = need_dict("tool_choice", raw)
    kind = choice.get("type")
    if kind not in ("auto", "any", "tool", "none"):
        raise bad(
            f"tool_choice: Input tag '{kind}' found using 'type' does not match any of the "
            "expected tags: 'auto', 'any', 'tool', 'none'"
        )
    path = f"tool_choice.{kind}"
    allowed = {"type", "disable_parallel_tool_use"} if kind != "none" else {"type"}
    if kind == "tool":
        allowed.add("name")
    only_keys(path, choice, allowed)
    if "disable_parallel_tool_use" in choice:
        need_bool(f"{path}.disable_parallel_tool_use", choice["disable_parallel_tool_use"])
    if kind in ("any", "tool") and not tools:
        raise bad("tool_choice: tool_choice may only be specified while providing tools")
    if kind == "tool":
        name = need_str(f"{path}.name", required(path, choice, "name"))
        if name not in {t["name"] for t in tools}:
            raise bad(f"{path}.name: Tool '{name}' not found in `tools`")
    return choice


def _check_thinking(raw: Any, model: ClaudeModel, max_tokens: int) -> dict[str, Any] | None:
    """``None`` when off, else ``{"budget": int, "display": str}``."""
    cfg = need_dict("thinking", raw)
    kind = cfg.get("type")
    if kind not in ("enabled", "disabled", "adaptive"):
        raise bad(
            f"thinking: Input tag '{kind}' found using 'type' does not match any of the expected "
            "tags: 'enabled', 'disabled', 'adaptive'"
        )
    path = f"thinking.{kind}"
    if kind == "disabled":
        only_keys(path, cfg, {"type"})
        return None
    only_keys(path, cfg, {"type", "budget_tokens", "display"} if kind == "enabled" else
              {"type", "display"})  # fmt: skip
    display = cfg.get("display") or "summarized"
    if display not in ("summarized", "omitted"):
        raise bad(f"{path}.display: Input should be 'summarized' or 'omitted'")
    if kind == "adaptive":
        if not model.adaptive_thinking:
            raise bad(f"thinking.type: adaptive thinking is not supported on {model.id}")
        return {"budget": min(16000, max(1, max_tokens - 1)), "display": display}
    budget = need_int(f"{path}.budget_tokens", required(path, cfg, "budget_tokens"), 1024)
    if budget >= max_tokens:
        raise bad(
            "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our "
            f"documentation at {THINKING_DOCS}#max-tokens-and-context-window-size"
        )
    return {"budget": budget, "display": display}


def _check_output_config(raw: Any, model: ClaudeModel) -> dict[str, Any] | None:
    """Validate ``output_config``; return the structured-output schema if one is set."""
    cfg = need_dict("output_config", raw)
    only_keys("output_config", cfg, {"effort", "format"})
    effort = cfg.get("effort")
    if effort is not None:
        if effort not in ("low", "medium", "high", "xhigh", "max"):
            raise bad("output_config.effort: Input should be 'low', 'medium', 'high', 'xhigh' or "
                      "'max'")  # fmt: skip
        if not model.efforts:
            raise bad("This model does not support the effort parameter.")
        if effort not in model.efforts:
            raise bad(
                f"This model does not support effort level '{effort}'. Supported levels: "
                f"{', '.join(sorted(model.efforts))}."
            )
    fmt = cfg.get("format")
    if fmt is None:
        return None
    fmt = need_dict("output_config.format", fmt)
    if fmt.get("type") != "json_schema":
        raise bad("output_config.format.type: Input should be 'json_schema'")
    only_keys("output_config.format", fmt, {"type", "schema"})
    schema = need_dict(
        "output_config.format.schema", required("output_config.format", fmt, "schema")
    )
    if not model.structured_outputs:
        raise bad("output_config.format: structured outputs are not supported for this model")
    problem = structured_problem(schema, "output_config.format.schema")
    if problem:
        raise bad(problem)
    return schema


# --------------------------------------------------------------------------------------------
# The request
# --------------------------------------------------------------------------------------------


@dataclass
class MessagesParams:
    """A validated request."""

    model: ClaudeModel
    messages: list[dict[str, Any]]  # content always a list of blocks
    system: str
    max_tokens: int
    stream: bool
    stop_sequences: list[str]
    tools: list[dict[str, Any]]
    tool_choice: dict[str, Any] | None
    thinking: dict[str, Any] | None  # {"budget", "display"} when on
    output_schema: dict[str, Any] | None
    body: dict[str, Any] = field(repr=False, default_factory=dict)


def _check_system(raw: Any) -> str:
    if raw is None or isinstance(raw, str):
        return raw or ""
    texts = []
    for i, block in enumerate(need_list("system", raw)):
        path = f"system.{i}"
        block = need_dict(path, block)
        if block.get("type") != "text":
            raise bad(f"{path}.type: Input should be 'text'")
        only_keys(path, block, {"type", "text", "cache_control", "citations"})
        _check_cache_control(f"{path}.cache_control", block.get("cache_control"))
        texts.append(_check_text(f"{path}.text", required(path, block, "text")))
    return "\n\n".join(texts)


def _check_sampling(body: dict[str, Any], thinking: bool) -> None:
    temperature, top_p, top_k = body.get("temperature"), body.get("top_p"), body.get("top_k")
    if temperature is not None:
        need_num("temperature", temperature, 0, 1)
    if top_p is not None:
        need_num("top_p", top_p, 0, 1)
    if top_k is not None:
        need_int("top_k", top_k, 0)
    if temperature is not None and top_p is not None:
        raise bad(
            "`temperature` and `top_p` cannot both be specified for this model. Please use only "
            "one."
        )
    if not thinking:
        return
    if temperature is not None and temperature != 1:
        raise bad(
            "`temperature` may only be set to 1 when thinking is enabled. Please consult our "
            f"documentation at {THINKING_DOCS}#feature-compatibility"
        )
    if top_p is not None and top_p < 0.95:
        raise bad(
            "`top_p` must be greater than or equal to 0.95 or unset when thinking is enabled. "
            f"Please consult our documentation at {THINKING_DOCS}#feature-compatibility"
        )
    if top_k is not None:
        raise bad(
            "`top_k` must be unset when thinking is enabled. Please consult our documentation "
            f"at {THINKING_DOCS}#feature-compatibility"
        )


def _check_stop_sequences(raw: Any) -> list[str]:
    if raw is None:
        return []
    out = []
    for i, s in enumerate(need_list("stop_sequences", raw)):
        s = need_str(f"stop_sequences.{i}", s)
        if not s.strip():
            raise bad(f"stop_sequences.{i}: stop sequences must contain non-whitespace characters")
        out.append(s)
    return out


def _check_misc(body: dict[str, Any]) -> None:
    if body.get("metadata") is not None:
        meta = need_dict("metadata", body["metadata"])
        only_keys("metadata", meta, {"user_id"})
        if meta.get("user_id") is not None:
            user_id = need_str("metadata.user_id", meta["user_id"])
            if len(user_id) > 256:
                raise bad("metadata.user_id: String should have at most 256 characters")
    if body.get("service_tier") is not None and body["service_tier"] not in (
        "auto",
        "standard_only",
    ):
        raise bad("service_tier: Input should be 'auto' or 'standard_only'")
    if body.get("container") is not None:
        need_str("container", body["container"])
    if body.get("inference_geo") is not None:
        need_str("inference_geo", body["inference_geo"])
    _check_cache_control("cache_control", body.get("cache_control"))


def _check_thinking_replay(params: MessagesParams) -> None:
    """With thinking on, a tool-use continuation must replay the assistant's thinking block."""
    msgs = params.messages
    if params.thinking is None or len(msgs) < 2 or msgs[-1]["role"] != "user":
        return
    if not any(b["type"] == "tool_result" for b in msgs[-1]["content"]):
        return
    prev = msgs[-2]["content"]
    first = prev[0]["type"] if prev else "nothing"
    if first not in ("thinking", "redacted_thinking"):
        raise bad(
            f"messages.{len(msgs) - 2}.content.0.type: Expected `thinking` or "
            f"`redacted_thinking`, but found `{first}`. When `thinking` is enabled, a final "
            "`assistant` message must start with a thinking block (preceeding the lastmost set "
            "of `tool_use` and `tool_result` blocks). We recommend you include thinking blocks "
            "from previous turns. To avoid this requirement, disable `thinking`. Please consult "
            f"our documentation at {THINKING_DOCS}"
        )


def validate(body: Any) -> MessagesParams:
    """Check a parsed request body like the real API; raise on the first problem."""
    if not isinstance(body, dict):
        raise bad("Input should be a valid dictionary")
    only_keys("", body, _TOP_LEVEL)
    model_id = need_str("model", required("", body, "model"))
    max_tokens = need_int("max_tokens", required("", body, "max_tokens"), 1)
    raw_messages = required("", body, "messages")
    stream = need_bool("stream", body["stream"]) if body.get("stream") is not None else False
    model = MODELS.get(model_id)
    if model is None:
        raise AnthropicError(404, f"model: {model_id}")
    if max_tokens > model.max_output:
        raise bad(
            f"max_tokens: {max_tokens} > {model.max_output}, which is the maximum allowed number "
            f"of output tokens for {model.snapshot}"
        )
    system = _check_system(body.get("system"))
    messages = _check_messages(raw_messages, model)
    tools = _check_tools(body["tools"]) if body.get("tools") is not None else []
    if not tools:
        for i, msg in enumerate(messages):
            for j, block in enumerate(msg["content"]):
                if block["type"] in ("tool_use", "tool_result"):
                    raise bad(
                        f"messages.{i}.content.{j}: Requests which include `tool_use` or "
                        "`tool_result` blocks must define tools."
                    )
    choice = None
    if body.get("tool_choice") is not None:
        choice = _check_tool_choice(body["tool_choice"], tools)
    thinking = None
    if body.get("thinking") is not None:
        thinking = _check_thinking(body["thinking"], model, max_tokens)
    _check_sampling(body, thinking is not None)
    if thinking is not None and choice is not None and choice["type"] in ("any", "tool"):
        raise bad("Thinking may not be enabled when tool_choice forces tool use.")
    schema = None
    if body.get("output_config") is not None:
        schema = _check_output_config(body["output_config"], model)
    stops = _check_stop_sequences(body.get("stop_sequences"))
    _check_misc(body)
    params = MessagesParams(
        model=model,
        messages=messages,
        system=system,
        max_tokens=max_tokens,
        stream=stream,
        stop_sequences=stops,
        tools=tools,
        tool_choice=choice,
        thinking=thinking,
        output_schema=schema,
        body=body,
    )
    _check_thinking_replay(params)
    return params
