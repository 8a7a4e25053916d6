"""Anthropic Messages upstream: OpenAI chat <-> /v1/messages, both ways, streaming included.

Parameter table (client -> upstream), checked against ../shared/protocols/mapping.md by
tests/unit/test_anthropic_provider.py:

| OpenAI                          | Anthropic                                  | decision |
|---------------------------------|--------------------------------------------|----------|
| model                           | model (the deployment's vendor id)         | exact |
| system / developer messages     | top-level ``system`` (joined by blank line) | exact; mid-conversation ones hoisted |
| user/assistant/tool messages    | alternating user/assistant turns           | same-role turns merged; tool results in a user turn |
| image_url data: / http(s)       | image source base64 / url                  | detail dropped; other media types 400 |
| file (PDF data URL)             | document block, base64 source              | other files 400; input_audio 400 |
| max_completion_tokens/max_tokens| max_tokens (required)                      | absent: the profile's default_max_tokens |
| temperature                     | temperature                                | 0..1 only: above 1 is a 400 (profile range), never clamped |
| top_p                           | top_p                                      | exact; not with temperature on newer models (profile) |
| stop                            | stop_sequences                             | string -> one-element list |
| user / safety_identifier        | metadata.user_id                           | exact |
| tools (function)                | tools {name, description, input_schema}    | custom tools 400 |
| tool_choice auto/none/required  | {type: auto/none/any}                      | exact |
| tool_choice {function: name}    | {type: tool, name}                         | exact |
| parallel_tool_calls: false      | tool_choice.disable_parallel_tool_use      | exact |
| response_format json_schema     | output_config.format (native models) or a forced tool whose input is the answer | exact / approx |
| response_format json_object     | forced tool with an object schema          | approx |
| reasoning_effort                | thinking {enabled, budget_tokens}          | minimal/low 1024, medium 4096, high 16384, xhigh 32768, max 65536; none -> off |
| n > 1                           | n parallel upstream calls, merged          | gateway fan-out (api/chat.py) |
| logprobs, top_logprobs, logit_bias, penalties, seed | -                       | 400 naming it (profile), or dropped + reported |
| metadata, store, service_tier, prediction, modalities, audio, web_search_options, verbosity, prompt_cache_key | - | non-default value: 400, or dropped + reported |
| message ``name``                | -                                          | dropped, reported in x-chatgate-dropped-params |

Back: text -> content, tool_use -> tool_calls, thinking -> reasoning_content (+ the signed
blocks in ``thinking_blocks`` for replay), stop_reason -> finish_reason, usage with cache
reads and writes counted in prompt_tokens.
"""

from __future__ import annotations

import re
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
from ..schema import (
    AssistantMessage,
    AudioPart,
    ChatRequest,
    CustomTool,
    DeveloperMessage,
    FilePart,
    FunctionMessage,
    FunctionTool,
    ImagePart,
    JSONObjectFormat,
    JSONSchemaFormat,
    RedactedThinkingBlock,
    SystemMessage,
    TextPart,
    ToolChoiceFunction,
    ToolMessage,
    Usage,
    UserMessage,
)
from ._shared import (
    OPENAI_ONLY,
    ChunkWriter,
    assistant_text,
    completion,
    decode_body,
    decode_event,
    error_object,
    function_role,
    scrub,
    text_of,
    tool_call_args,
)
from .base import Context, UpstreamRequest

API_VERSION = "2023-06-01"
MIN_OUTPUT = 1
NATIVE_N = False  # n > 1 is served by fanning out n calls
# Parameters of the OpenAI API with no Anthropic equivalent at all (model-independent).
UNSUPPORTED = OPENAI_ONLY
THINKING_BUDGET = {
    "minimal": 1024,
    "low": 1024,
    "medium": 4096,
    "high": 16384,
    "xhigh": 32768,
    "max": 65536,
}
JSON_TOOL = "json_output"  # the forced tool of the structured-output fallback
FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "stop",
    "model_context_window_exceeded": "length",
}
IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)$", re.S)

_decode = msgspec.json.decode
_encode = msgspec.json.encode


# --- request ---------------------------------------------------------------------------


def build_request(
    req: ChatRequest, dep: Deployment, provider: Provider, ctx: Context, profile: Profile
) -> UpstreamRequest:
    body: dict[str, Any] = {"model": dep.model}
    system, messages = _messages(req, ctx)
    if messages[-1]["role"] == "assistant":
        _prefill(messages, profile, len(req.messages) - 1)
    if system:
        body["system"] = system
    body["messages"] = messages
    max_tokens = req.max_completion_tokens or req.max_tokens
    thinking = _thinking(req, profile, max_tokens)
    if thinking is not None and _unsigned_tool_turn(messages):
        # Anthropic refuses thinking when the assistant turn that called the tools carries
        # no signed thinking block (e.g. the conversation started without reasoning):
        # answer this turn without thinking, and say so.
        thinking = None
        ctx.dropped.append("reasoning_effort")
    if max_tokens is None:
        max_tokens = profile.default_max_tokens or 4096
        if thinking is not None:
            max_tokens = max(max_tokens, thinking["budget_tokens"] + 4096)
            if profile.max_output_tokens:
                max_tokens = min(max_tokens, profile.max_output_tokens)
    body["max_tokens"] = ctx.max_output = max_tokens
    if thinking is not None:
        body["thinking"] = thinking
    if req.temperature is not None:
        body["temperature"] = req.temperature
    if req.top_p is not None:
        body["top_p"] = req.top_p
    if req.stop is not None:
        body["stop_sequences"] = [req.stop] if isinstance(req.stop, str) else list(req.stop)
    user = req.safety_identifier or req.user
    if user:
        body["metadata"] = {"user_id": user}
    tools, tool_choice = _tools(req, thinking is not None, ctx.dropped)
    fmt = _response_format(req, profile, thinking is not None, bool(tools))
    if fmt is not None:
        kind, value, wrapped = fmt
        if kind == "native":
            body["output_config"] = {"format": value}
        else:
            tools.append(value)
            tool_choice = {"type": "tool", "name": JSON_TOOL}
            ctx.json_tool = True
            ctx.json_tool_wrapped = wrapped
    if tools:
        body["tools"] = tools
    if tool_choice is not None:
        body["tool_choice"] = tool_choice
    if req.stream:
        body["stream"] = True
    headers = {
        "content-type": "application/json",
        "anthropic-version": API_VERSION,
        **provider.headers,
    }
    if provider.api_key:
        headers["x-api-key"] = provider.api_key
    return UpstreamRequest(
        url=provider.base_url.rstrip("/") + "/v1/messages",
        headers=headers,
        body=_encode(body),
        stream=bool(req.stream),
    )


def _prefill(turns: list[dict[str, Any]], profile: Profile, last: int) -> None:
    """A conversation ending with an assistant turn asks Claude to continue that text."""
    if not profile.prefill:
        raise InvalidRequest(
            "This model cannot continue a final assistant message (prefill); end the "
            "conversation with a user message.",
            param=f"messages[{last}]",
            code="unsupported_value",
        )
    # Anthropic refuses a prefill ending in whitespace; the continuation is the same.
    blocks = turns[-1]["content"]
    if blocks and blocks[-1]["type"] == "text":
        text = blocks[-1]["text"].rstrip()
        if text:
            blocks[-1] = {"type": "text", "text": text}
        else:
            blocks.pop()
    if not blocks:
        turns.pop()


def _unsigned_tool_turn(turns: list[dict[str, Any]]) -> bool:
    """The last assistant turn uses tools but starts with no (redacted) thinking block."""
    for turn in reversed(turns):
        if turn["role"] == "assistant":
            blocks = turn["content"]
            uses_tools = any(b["type"] == "tool_use" for b in blocks)
            signed = bool(blocks) and blocks[0]["type"] in ("thinking", "redacted_thinking")
            return uses_tools and not signed
    return False


def _messages(req: ChatRequest, ctx: Context) -> tuple[str, list[dict[str, Any]]]:
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    tool_names: dict[str, str] = {}

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})

    named = False
    for i, msg in enumerate(req.messages):
        if getattr(msg, "name", None) and not isinstance(msg, FunctionMessage):
            named = True
        if isinstance(msg, (SystemMessage, DeveloperMessage)):
            text = text_of(msg.content)
            if text:
                system.append(text)
        elif isinstance(msg, UserMessage):
            add("user", _user_blocks(msg, i))
        elif isinstance(msg, AssistantMessage):
            blocks = _assistant_blocks(msg, i)
            for tc in msg.tool_calls or ():
                tool_names[tc.id] = getattr(getattr(tc, "function", None), "name", "")
            if blocks:
                add("assistant", blocks)
        elif isinstance(msg, ToolMessage):
            add(
                "user",
                [
                    {
                        "type": "tool_result",
                        "tool_use_id": msg.tool_call_id,
                        "content": text_of(msg.content),
                    }
                ],
            )
        else:  # FunctionMessage (deprecated functions API)
            raise function_role(i)
    for turn in turns:
        if turn["role"] == "user":
            # tool_result blocks must come first in a user turn
            content = turn["content"]
            results = [b for b in content if b["type"] == "tool_result"]
            if results and content[: len(results)] != results:
                turn["content"] = results + [b for b in content if b["type"] != "tool_result"]
    if named:
        ctx.dropped.append("messages[].name")
    if not turns:
        raise InvalidRequest(
            "The conversation needs at least one user or assistant message besides the "
            "system prompt.",
            param="messages",
        )
    return "\n\n".join(system), turns


def _user_blocks(msg: UserMessage, i: int) -> list[dict[str, Any]]:
    if isinstance(msg.content, str):
        return [{"type": "text", "text": msg.content}] if msg.content else []
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(msg.content):
        param = f"messages[{i}].content[{j}]"
        if isinstance(part, TextPart):
            if part.text:
                blocks.append({"type": "text", "text": part.text})
        elif isinstance(part, ImagePart):
            blocks.append(_image(part.image_url.url, param + ".image_url.url"))
        elif isinstance(part, FilePart):
            data = part.file.file_data or ""
            m = _DATA_URL.match(data)
            if not m or m.group("mime") != "application/pdf":
                raise InvalidRequest(
                    "Only PDF files given as a base64 data URL in 'file_data' can be sent "
                    "to this model.",
                    param=param + ".file",
                    code="unsupported_value",
                )
            blocks.append(
                {
                    "type": "document",
                    "source": {
                        "type": "base64",
                        "media_type": "application/pdf",
                        "data": m.group("data"),
                    },
                }
            )
        elif isinstance(part, AudioPart):
            raise InvalidRequest(
                "Audio input is not supported by this model.",
                param=param + ".type",
                code="unsupported_value",
            )
    return blocks


def _image(url: str, param: str) -> dict[str, Any]:
    if url.startswith("data:"):
        m = _DATA_URL.match(url)
        if not m:
            raise InvalidRequest("Invalid image data URL: expected base64.", param=param)
        mime = m.group("mime").lower()
        if mime not in IMAGE_TYPES:
            raise InvalidRequest(
                f"Image type '{mime}' is not supported by this model (use jpeg, png, gif or webp).",
                param=param,
                code="unsupported_value",
            )
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": mime, "data": m.group("data")},
        }
    return {"type": "image", "source": {"type": "url", "url": url}}


def _assistant_blocks(msg: AssistantMessage, i: int) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for tb in msg.thinking_blocks or ():
        if isinstance(tb, RedactedThinkingBlock):
            blocks.append({"type": "redacted_thinking", "data": tb.data})
        elif tb.signature:
            blocks.append({"type": "thinking", "thinking": tb.thinking, "signature": tb.signature})
    blocks.extend({"type": "text", "text": t} for t in assistant_text(msg))
    for j, tc in enumerate(msg.tool_calls or ()):
        name, args = tool_call_args(tc, i, j)
        blocks.append({"type": "tool_use", "id": tc.id, "name": name, "input": args})
    return blocks


def _thinking(req: ChatRequest, profile: Profile, max_tokens: int | None) -> dict[str, Any] | None:
    effort = req.reasoning_effort
    if effort is None or effort == "none":
        return None
    budget = THINKING_BUDGET[effort]
    if max_tokens is not None:
        if max_tokens <= 1024:
            p = "max_completion_tokens" if req.max_completion_tokens else "max_tokens"
            raise InvalidRequest(
                f"'{p}' must be greater than 1024 when reasoning is on (Anthropic's smallest "
                "thinking budget is 1024 tokens).",
                param=p,
            )
        budget = min(budget, max_tokens - 1)
    if req.temperature is not None and req.temperature != 1:
        raise InvalidRequest(
            "'temperature' cannot be changed while reasoning is on for this model; leave it "
            "unset or set reasoning_effort to 'none'.",
            param="temperature",
            code="unsupported_value",
        )
    if req.top_p is not None and req.top_p < 0.95:
        raise InvalidRequest(
            "'top_p' must be between 0.95 and 1 while reasoning is on for this model.",
            param="top_p",
            code="unsupported_value",
        )
    return {"type": "enabled", "budget_tokens": budget}


def _tools(
    req: ChatRequest, thinking: bool, dropped: list[str]
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    tools: list[dict[str, Any]] = []
    for i, tool in enumerate(req.tools or ()):
        if isinstance(tool, CustomTool):
            raise InvalidRequest(
                "Custom tools are not supported by this model; use function tools.",
                param=f"tools[{i}].type",
                code="unsupported_value",
            )
        assert isinstance(tool, FunctionTool)
        fn = tool.function
        t: dict[str, Any] = {
            "name": fn.name,
            "input_schema": fn.parameters or {"type": "object", "properties": {}},
        }
        if fn.description:
            t["description"] = fn.description
        if fn.strict:
            strict = strict_schema(t["input_schema"])
            if strict is not None:
                t["strict"] = True
                t["input_schema"] = strict
            else:  # a schema Anthropic cannot enforce strictly: sent non-strict, and said so
                dropped.append(f"tools[{i}].function.strict")
        tools.append(t)
    choice = req.tool_choice
    out: dict[str, Any] | None
    if choice is None:
        out = None
    elif choice == "auto":
        out = {"type": "auto"}
    elif choice == "none":
        out = {"type": "none"}
    elif choice == "required":
        out = {"type": "any"}
    elif isinstance(choice, ToolChoiceFunction):
        out = {"type": "tool", "name": choice.function.name}
    else:
        raise InvalidRequest(
            "This form of 'tool_choice' is not supported by this model.",
            param="tool_choice",
            code="unsupported_value",
        )
    if thinking and out is not None and out["type"] in ("any", "tool"):
        raise InvalidRequest(
            "A forced 'tool_choice' cannot be combined with reasoning on this model; use "
            "'auto' or set reasoning_effort to 'none'.",
            param="tool_choice",
            code="unsupported_value",
        )
    if req.parallel_tool_calls is False and tools:
        if out is None:
            out = {"type": "auto"}
        if out["type"] != "none":
            out["disable_parallel_tool_use"] = True
    return tools, out


# Not accepted in Anthropic structured-output (and strict tool) schemas.
_STRICT_UNSUPPORTED = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
                       "multipleOf", "minLength", "maxLength", "maxItems")  # fmt: skip


def strict_schema(schema: Any) -> Any:
    """The schema as Anthropic's structured outputs take it, or None if it cannot be.

    Every object must say ``additionalProperties: false``: where the client left it open it
    is closed (any value valid against the result is valid against the original). Keywords
    Anthropic does not support, or open additionalProperties, make the schema unusable: the
    caller then falls back to a forced tool, which takes any JSON Schema.
    """
    if isinstance(schema, list):
        items = [strict_schema(s) for s in schema]
        return None if any(i is None for i in items) else items
    if not isinstance(schema, dict):
        return schema
    if any(k in schema for k in _STRICT_UNSUPPORTED) or schema.get("minItems", 0) not in (0, 1):
        return None
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            sub = {name: strict_schema(v) for name, v in value.items()}
            if any(v is None for v in sub.values()):
                return None
            out[key] = sub
        elif key in ("items", "anyOf", "allOf", "oneOf", "prefixItems", "not"):
            sub_value = strict_schema(value)
            if sub_value is None:
                return None
            out[key] = sub_value
        else:
            out[key] = value
    t = schema.get("type")
    if t == "object" or (isinstance(t, list) and "object" in t) or "properties" in schema:
        extra = schema.get("additionalProperties")
        if extra not in (None, False):
            return None
        out["additionalProperties"] = False
    return out


def _response_format(
    req: ChatRequest, profile: Profile, thinking: bool, has_tools: bool
) -> tuple[str, dict[str, Any], bool] | None:
    """("native", output format, False) or ("tool", forced tool, wrapped) or None."""
    fmt = req.response_format
    if isinstance(fmt, JSONSchemaFormat):
        schema = fmt.json_schema.schema or {"type": "object"}
        native = strict_schema(schema) if profile.native_json_schema else None
        if native is not None:
            return "native", {"type": "json_schema", "schema": native}, False
    elif isinstance(fmt, JSONObjectFormat):
        schema = {"type": "object"}
    else:
        return None
    if thinking:
        raise InvalidRequest(
            "JSON output on this model uses a forced tool call, which cannot be combined "
            "with reasoning; set reasoning_effort to 'none'.",
            param="response_format",
            code="unsupported_value",
        )
    if has_tools:
        raise InvalidRequest(
            "JSON output on this model uses a forced tool call, which cannot be combined "
            "with your own 'tools'.",
            param="response_format",
            code="unsupported_value",
        )
    # A tool's input must be an object: any other answer is wrapped as {"value": ...}.
    wrapped = schema.get("type") != "object"
    if wrapped:
        schema = {"type": "object", "properties": {"value": schema}, "required": ["value"]}
    tool = {
        "name": JSON_TOOL,
        "description": "Reply by calling this tool; its input is your answer.",
        "input_schema": schema,
    }
    return "tool", tool, wrapped


# --- response --------------------------------------------------------------------------


def usage_from(u: dict[str, Any]) -> Usage:
    inp = int(u.get("input_tokens") or 0)
    write = int(u.get("cache_creation_input_tokens") or 0)
    read = int(u.get("cache_read_input_tokens") or 0)
    out = int(u.get("output_tokens") or 0)
    details = u.get("output_tokens_details") or {}
    reasoning = details.get("thinking_tokens") if isinstance(details, dict) else None
    prompt = inp + write + read
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=out,
        total_tokens=prompt + out,
        cached_tokens=read,
        reasoning_tokens=reasoning,
        cache_write_tokens=write,
    )


def _json_tool_text(block: dict[str, Any], wrapped: bool) -> str:
    value = block.get("input")
    if wrapped and isinstance(value, dict) and "value" in value:
        value = value["value"]
    return _encode(value).decode()


def parse_response(body: bytes, ctx: Context) -> tuple[bytes, Usage | None]:
    data = decode_body(body)
    if not isinstance(data, dict) or data.get("type") != "message":
        raise UpstreamError("The upstream provider returned an unexpected response.")
    text: list[str] = []
    reasoning: list[str] = []
    blocks: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    json_answer: str | None = None
    for b in data.get("content") or ():
        kind = b.get("type")
        if kind == "text":
            text.append(b.get("text", ""))
        elif kind == "thinking":
            reasoning.append(b.get("thinking", ""))
            blocks.append(
                {"type": "thinking", "thinking": b.get("thinking", ""),
                 "signature": b.get("signature")}
            )  # fmt: skip
        elif kind == "redacted_thinking":
            blocks.append({"type": "redacted_thinking", "data": b.get("data", "")})
        elif kind == "tool_use":
            if b.get("name") == JSON_TOOL and ctx.json_tool:
                json_answer = _json_tool_text(b, ctx.json_tool_wrapped)
                continue
            calls.append(
                {
                    "id": b.get("id"),
                    "type": "function",
                    "function": {
                        "name": b.get("name"),
                        "arguments": _encode(b.get("input") or {}).decode(),
                    },
                }
            )
    stop = data.get("stop_reason")
    finish = FINISH.get(stop or "", "stop")
    if json_answer is not None:
        text = [json_answer]
        if finish == "tool_calls" and not calls:
            finish = "stop"
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(text) if text else None,
        "refusal": None,
    }
    if stop == "refusal":
        details = data.get("stop_details") or {}
        message["refusal"] = details.get("explanation") or "The model declined to answer."
    if calls:
        message["tool_calls"] = calls
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if blocks:
        message["thinking_blocks"] = blocks
    usage = usage_from(data.get("usage") or {})
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
    return completion(ctx, [choice], usage), usage


# --- streaming -------------------------------------------------------------------------


class AnthropicStream(ChunkWriter):
    """message_start ... message_stop -> OpenAI chunks (a state machine, one per request)."""

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self._raw_usage: dict[str, Any] = {}
        self._blocks: dict[int, dict[str, Any]] = {}  # anthropic index -> block state
        self._tools = 0  # OpenAI tool_calls index of the next tool_use block

    def partial_usage(self) -> Usage | None:
        return self.usage or (usage_from(self._raw_usage) if self._raw_usage else None)

    def feed(self, data: bytes) -> bytes:
        ev = decode_event(data)
        kind = ev.get("type")
        if kind == "content_block_delta":
            return self._delta(ev)
        if kind == "message_start":
            msg = ev.get("message") or {}
            self._raw_usage.update(msg.get("usage") or {})
            return self._chunk({"role": "assistant", "content": "", "refusal": None})
        if kind == "content_block_start":
            return self._start(ev)
        if kind == "content_block_stop":
            return self._stop(ev.get("index", 0))
        if kind == "message_delta":
            self._raw_usage.update(ev.get("usage") or {})
            delta = ev.get("delta") or {}
            stop = delta.get("stop_reason")
            out = b""
            for idx in list(self._blocks):  # blocks left open (seen: max_tokens mid tool)
                out += self._stop(idx)
            self.finish_reason = FINISH.get(stop or "", "stop")
            if self.finish_reason == "tool_calls" and self._tools == 0:
                self.finish_reason = "stop"  # only the JSON-output tool was called
            d: dict[str, Any] = {}
            if stop == "refusal":
                details = delta.get("stop_details") or {}
                d["refusal"] = details.get("explanation") or "The model declined to answer."
            return out + self._chunk(d, self.finish_reason)
        if kind == "message_stop":
            self.done = True
            self.usage = usage_from(self._raw_usage)
            return self._usage_chunk()
        if kind == "error":
            err = ev.get("error") or {}
            if self._raw_usage:
                self.usage = usage_from(self._raw_usage)
            etype = err.get("type") or "api_error"
            raise StreamInterrupted(
                str(err.get("message") or "The upstream stream failed."),
                code="overloaded" if etype == "overloaded_error" else etype,
            )
        return b""  # ping and event types added after this was written

    def _start(self, ev: dict[str, Any]) -> bytes:
        idx = ev.get("index", 0)
        block = ev.get("content_block") or {}
        kind = block.get("type")
        state: dict[str, Any] = {"type": kind, "text": []}
        self._blocks[idx] = state
        if kind == "tool_use":
            if block.get("name") == JSON_TOOL and self._ctx.json_tool:
                state["type"] = "json_tool"
                return b""
            state["k"] = self._tools
            self._tools += 1
            call = {
                "index": state["k"],
                "id": block.get("id"),
                "type": "function",
                "function": {"name": block.get("name"), "arguments": ""},
            }
            return self._chunk({"tool_calls": [call]})
        if kind == "redacted_thinking":
            tb = {"type": "redacted_thinking", "data": block.get("data", "")}
            return self._chunk({"thinking_blocks": [tb]})
        if kind == "text" and block.get("text"):
            return self._chunk({"content": block["text"]})
        return b""

    def _delta(self, ev: dict[str, Any]) -> bytes:
        state = self._blocks.get(ev.get("index", 0))
        delta = ev.get("delta") or {}
        dt = delta.get("type")
        if dt == "text_delta":
            text = delta.get("text", "")
            return self._chunk({"content": text}) if text else b""
        if dt == "input_json_delta":
            frag = delta.get("partial_json", "")
            if state is None or not frag:
                return b""
            if state["type"] == "json_tool":
                state["text"].append(frag)
                return b""
            return self._chunk(
                {"tool_calls": [{"index": state["k"], "function": {"arguments": frag}}]}
            )
        if dt == "thinking_delta":
            text = delta.get("thinking", "")
            if state is not None:
                state["text"].append(text)
            return self._chunk({"reasoning_content": text}) if text else b""
        if dt == "signature_delta" and state is not None:
            state["signature"] = delta.get("signature")
        return b""

    def _stop(self, idx: int) -> bytes:
        state = self._blocks.pop(idx, None)
        if state is None:
            return b""
        if state["type"] == "thinking":
            tb = {
                "type": "thinking",
                "thinking": "".join(state["text"]),
                "signature": state.get("signature"),
            }
            return self._chunk({"thinking_blocks": [tb]})
        if state["type"] == "json_tool":
            raw = "".join(state["text"]) or "{}"
            try:
                value = _decode(raw)
            except msgspec.DecodeError:
                return self._chunk({"content": raw})  # cut short (max_tokens): as it came
            if self._ctx.json_tool_wrapped and isinstance(value, dict) and "value" in value:
                value = value["value"]
            return self._chunk({"content": _encode(value).decode()})
        return b""


def stream_translator(ctx: Context) -> AnthropicStream:
    return AnthropicStream(ctx)


# --- errors ----------------------------------------------------------------------------


def parse_error(
    status: int, headers: dict[str, str], body: bytes, secret: str | None
) -> GatewayError:
    err = error_object(body)
    etype = str(err.get("type") or "")
    message = str(err.get("message") or f"Upstream returned HTTP {status}.")
    message = scrub(message, secret)
    retry = {k: v for k, v in headers.items() if k in ("retry-after", "retry-after-ms")}
    limits = {k: v for k, v in headers.items() if k.startswith("anthropic-ratelimit")}
    if status in (401, 403) or etype in ("authentication_error", "permission_error"):
        return UpstreamError(
            "The upstream provider refused the gateway's credentials; "
            "the gateway operator has been told in the logs.",
            code="upstream_auth_failed",
        )
    if status == 402 or etype == "billing_error":
        return RateLimited(
            "The upstream account has no credit left.",
            code="insufficient_quota",
            type="insufficient_quota",
        )
    if status == 429 or etype == "rate_limit_error":
        return RateLimited(
            message, code="rate_limit_exceeded", headers=retry, upstream_headers=limits
        )
    if status == 404 or etype == "not_found_error":
        return NotFound(message, code="model_not_found")
    if status == 413 or etype == "request_too_large":
        return InvalidRequest(message, status=413, code="request_too_large")
    if status == 529 or etype == "overloaded_error":
        return UpstreamError(
            message, status=503, code="overloaded", headers=retry, upstream_headers=limits
        )
    if 400 <= status < 500:
        return InvalidRequest(message, status=400 if status != 422 else 422)
    return UpstreamError(
        message,
        status=status if status in (500, 502, 503, 504) else 502,
        code=etype or "upstream_error",
        headers=retry,
    )
