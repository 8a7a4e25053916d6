"""OpenAI Responses API upstream (POST {base_url}/responses), for the models OpenAI serves
there (gpt-5.3-codex, the hosted-tool "-all" variants).

Parameter table (chat client -> Responses), checkable against ../shared/protocols/mapping.md:

| chat completions              | Responses                                   | decision |
|-------------------------------|---------------------------------------------|----------|
| model                         | model                                       | exact |
| system / developer messages   | system / developer input items, in place    | exact (not hoisted into instructions) |
| user text / image_url / file  | input message: input_text / input_image / input_file | exact |
| assistant content             | input message role assistant, output_text   | exact |
| assistant tool_calls          | function_call items {call_id, name, arguments} | exact |
| tool messages                 | function_call_output items {call_id, output} | exact |
| tools (function)              | tools {type: function, name, description, parameters, strict} (flattened) | exact |
| tool_choice                   | "auto"/"none"/"required" / {type: function, name} | exact |
| parallel_tool_calls           | parallel_tool_calls                         | exact |
| response_format               | text.format (json_schema flattened / json_object) | exact |
| reasoning_effort              | reasoning.effort + reasoning.summary "auto"  | exact; summaries come back as reasoning_content |
| max_tokens / max_completion_tokens | max_output_tokens                      | exact |
| temperature, top_p            | temperature, top_p                          | exact (profile rules apply) |
| user, safety_identifier, prompt_cache_key, metadata, service_tier, verbosity | same names (verbosity -> text.verbosity) | exact |
| store                         | store (false unless the client says true)   | gateway default: nothing kept upstream |
| n > 1                         | n parallel calls, merged                    | gateway fan-out |
| stop                          | -  (applied by the gateway: text is cut at the first stop sequence, finish_reason stop; usage counts what the upstream generated) | emulated |
| seed, penalties, logit_bias, logprobs, top_logprobs, audio, modalities, prediction, web_search_options | - | 400 naming them, or dropped + reported |
| options.web_search (-all)     | tools {type: web_search}                    | exact |

Back: message output_text -> content (refusal parts -> refusal), function_call -> tool_calls
(id = call_id), reasoning summaries -> reasoning_content; status / incomplete_details ->
finish_reason; usage input/output (+ cached, reasoning) -> chat usage.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ..config import Deployment, Profile, Provider
from ..errors import GatewayError, InvalidRequest, StreamInterrupted, UpstreamError
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
    SystemMessage,
    TextPart,
    ToolChoiceFunction,
    ToolMessage,
    Usage,
    UserMessage,
)
from . import openai as chat
from ._shared import (
    ChunkWriter,
    completion,
    decode_body,
    decode_event,
    function_role,
    require_json_word,
    text_of,
)
from .base import Context, StopScanner, UpstreamRequest, cut_at_stop

MIN_OUTPUT = 16  # the Responses API refuses a smaller max_output_tokens
NATIVE_N = False
UNSUPPORTED = (
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "audio",
    "modalities",
    "prediction",
    "web_search_options",
    "prompt_cache_retention",
    "functions",
    "function_call",
)
_AFTER_STOP = frozenset(
    {
        "response.function_call_arguments.delta",
        "response.reasoning_summary_text.delta",
        "response.output_item.added",
        "response.refusal.delta",
    }
)
INCOMPLETE = {"max_output_tokens": "length", "content_filter": "content_filter"}

_decode = msgspec.json.decode
_encode = msgspec.json.encode


# --- request ---------------------------------------------------------------------------


def build_request(
    req: ChatRequest, dep: Deployment, provider: Provider, ctx: Context, profile: Profile
) -> UpstreamRequest:
    items = _input(req, ctx)
    if req.stop is not None:
        ctx.stop = [req.stop] if isinstance(req.stop, str) else list(req.stop)
    body: dict[str, Any] = {"model": dep.model, "input": items, "store": bool(req.store)}
    max_tokens = req.max_completion_tokens or req.max_tokens
    if isinstance(req.response_format, JSONObjectFormat):
        require_json_word(req)
    if max_tokens is not None:
        body["max_output_tokens"] = ctx.max_output = max_tokens
    for name in (
        "temperature",
        "top_p",
        "user",
        "safety_identifier",
        "prompt_cache_key",
        "metadata",
        "service_tier",
        "parallel_tool_calls",
    ):
        value = getattr(req, name)
        if value is not None:
            body[name] = value
    if req.reasoning_effort is not None:
        reasoning: dict[str, Any] = {"effort": req.reasoning_effort}
        if req.reasoning_effort != "none":
            reasoning["summary"] = "auto"
        body["reasoning"] = reasoning
    elif profile.reasoning is not None and profile.reasoning.default != "none":
        body["reasoning"] = {"summary": "auto"}
    text: dict[str, Any] = {}
    fmt = req.response_format
    if isinstance(fmt, JSONSchemaFormat):
        js = fmt.json_schema
        f: dict[str, Any] = {"type": "json_schema", "name": js.name}
        if js.schema is not None:
            f["schema"] = js.schema
        if js.strict is not None:
            f["strict"] = js.strict
        if js.description:
            f["description"] = js.description
        text["format"] = f
    elif isinstance(fmt, JSONObjectFormat):
        text["format"] = {"type": "json_object"}
    if req.verbosity is not None:
        text["verbosity"] = req.verbosity
    if text:
        body["text"] = text
    tools = _tools(req, dep)
    if tools:
        body["tools"] = tools
    choice = req.tool_choice
    if isinstance(choice, str):
        body["tool_choice"] = choice
    elif isinstance(choice, ToolChoiceFunction):
        body["tool_choice"] = {"type": "function", "name": choice.function.name}
    elif choice is not None:
        raise InvalidRequest(
            "This form of 'tool_choice' is not supported by this model.",
            param="tool_choice",
            code="unsupported_value",
        )
    if req.stream:
        body["stream"] = True
    headers = {"Content-Type": "application/json", **provider.headers}
    if provider.api_key:
        headers["Authorization"] = f"Bearer {provider.api_key}"
    return UpstreamRequest(
        url=provider.base_url.rstrip("/") + "/responses",
        headers=headers,
        body=_encode(body),
        stream=bool(req.stream),
    )


def _input(req: ChatRequest, ctx: Context) -> list[dict[str, Any]]:
    """Messages become input items in order; system and developer messages stay where they
    are, as system/developer items (not hoisted into ``instructions``)."""
    items: list[dict[str, Any]] = []
    named = False
    for i, msg in enumerate(req.messages):
        if getattr(msg, "name", None) and not isinstance(msg, FunctionMessage):
            named = True
        if isinstance(msg, (SystemMessage, DeveloperMessage)):
            role = "system" if isinstance(msg, SystemMessage) else "developer"
            items.append(
                {"role": role, "content": [{"type": "input_text", "text": text_of(msg.content)}]}
            )
        elif isinstance(msg, UserMessage):
            items.append({"role": "user", "content": _user_content(msg, i)})
        elif isinstance(msg, AssistantMessage):
            items.extend(_assistant_items(msg, i))
        elif isinstance(msg, ToolMessage):
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": msg.tool_call_id,
                    "output": text_of(msg.content),
                }
            )
        else:
            raise function_role(i)
    if named:
        ctx.dropped.append("messages[].name")
    return items


def _user_content(msg: UserMessage, i: int) -> list[dict[str, Any]]:
    if isinstance(msg.content, str):
        return [{"type": "input_text", "text": msg.content}]
    out: list[dict[str, Any]] = []
    for j, part in enumerate(msg.content):
        if isinstance(part, TextPart):
            out.append({"type": "input_text", "text": part.text})
        elif isinstance(part, ImagePart):
            img: dict[str, Any] = {"type": "input_image", "image_url": part.image_url.url}
            img["detail"] = part.image_url.detail or "auto"
            out.append(img)
        elif isinstance(part, FilePart):
            f: dict[str, Any] = {"type": "input_file"}
            for k in ("file_data", "file_id", "filename"):
                v = getattr(part.file, k)
                if v is not None:
                    f[k] = v
            out.append(f)
        elif isinstance(part, AudioPart):
            raise InvalidRequest(
                "Audio input is not supported by this model.",
                param=f"messages[{i}].content[{j}].type",
                code="unsupported_value",
            )
    return out


def _assistant_items(msg: AssistantMessage, i: int) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    content = msg.content
    parts: list[dict[str, Any]] = []
    if isinstance(content, str):
        if content:
            parts.append({"type": "output_text", "text": content})
    elif content:
        for p in content:
            if isinstance(p, TextPart):
                parts.append({"type": "output_text", "text": p.text})
            else:
                parts.append({"type": "refusal", "refusal": p.refusal})
    if msg.refusal and not content:
        parts.append({"type": "refusal", "refusal": msg.refusal})
    if parts:
        items.append({"role": "assistant", "content": parts})
    for j, tc in enumerate(msg.tool_calls or ()):
        fn = getattr(tc, "function", None)
        if fn is None:
            raise InvalidRequest(
                "Custom tool calls cannot be sent to this model.",
                param=f"messages[{i}].tool_calls[{j}].type",
                code="unsupported_value",
            )
        items.append(
            {"type": "function_call", "call_id": tc.id, "name": fn.name, "arguments": fn.arguments}
        )
    return items


def _tools(req: ChatRequest, dep: Deployment) -> list[dict[str, Any]]:
    tools: list[dict[str, Any]] = []
    for i, tool in enumerate(req.tools or ()):
        if isinstance(tool, CustomTool):
            raise InvalidRequest(
                "Custom tools are not supported through this gateway for this model.",
                param=f"tools[{i}].type",
                code="unsupported_value",
            )
        assert isinstance(tool, FunctionTool)
        fn = tool.function
        t: dict[str, Any] = {"type": "function", "name": fn.name}
        if fn.description:
            t["description"] = fn.description
        t["parameters"] = fn.parameters or {"type": "object", "properties": {}}
        # Chat Completions functions are non-strict unless asked; Responses defaults to strict.
        t["strict"] = bool(fn.strict)
        tools.append(t)
    if dep.options.get("web_search"):
        tools.append({"type": "web_search"})
    return tools


# --- response --------------------------------------------------------------------------


def usage_from(u: dict[str, Any]) -> Usage:
    inp = int(u.get("input_tokens") or 0)
    out = int(u.get("output_tokens") or 0)
    cached = (u.get("input_tokens_details") or {}).get("cached_tokens")
    reasoning = (u.get("output_tokens_details") or {}).get("reasoning_tokens")
    return Usage(
        prompt_tokens=inp,
        completion_tokens=out,
        total_tokens=int(u.get("total_tokens") or inp + out),
        cached_tokens=cached,
        reasoning_tokens=reasoning,
    )


def _finish(resp: dict[str, Any], has_calls: bool) -> str:
    if resp.get("status") == "incomplete":
        reason = (resp.get("incomplete_details") or {}).get("reason")
        return INCOMPLETE.get(reason or "", "length")
    return "tool_calls" if has_calls else "stop"


def _failed(resp: dict[str, Any]) -> GatewayError | None:
    if resp.get("status") != "failed":
        return None
    err = resp.get("error") or {}
    return UpstreamError(
        str(err.get("message") or "The upstream response failed."),
        code=str(err.get("code") or "upstream_error"),
    )


def parse_response(body: bytes, ctx: Context) -> tuple[bytes, Usage | None]:
    resp = decode_body(body)
    if not isinstance(resp, dict) or resp.get("object") != "response":
        raise UpstreamError("The upstream provider returned an unexpected response.")
    failed = _failed(resp)
    if failed is not None:
        raise failed
    text: list[str] = []
    refusal: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    annotations: list[Any] = []
    for item in resp.get("output") or ():
        kind = item.get("type")
        if kind == "message":
            for part in item.get("content") or ():
                if part.get("type") == "output_text":
                    text.append(part.get("text", ""))
                    annotations.extend(part.get("annotations") or ())
                elif part.get("type") == "refusal":
                    refusal.append(part.get("refusal", ""))
        elif kind == "function_call":
            calls.append(
                {
                    "id": item.get("call_id"),
                    "type": "function",
                    "function": {"name": item.get("name"), "arguments": item.get("arguments", "")},
                }
            )
        elif kind == "reasoning":
            reasoning.extend(s.get("text", "") for s in item.get("summary") or ())
    content = "".join(text) if text else None
    stopped = False
    if content is not None and ctx.stop:
        content, stopped = cut_at_stop(content, ctx.stop)
        if stopped:
            calls = []  # the answer ends at the stop sequence
    message: dict[str, Any] = {
        "role": "assistant",
        "content": content,
        "refusal": "".join(refusal) if refusal else None,
        "annotations": annotations,
    }
    if calls:
        message["tool_calls"] = calls
    if reasoning:
        message["reasoning_content"] = "\n\n".join(reasoning)
    usage = usage_from(resp.get("usage") or {})
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": "stop" if stopped else _finish(resp, bool(calls)),
    }
    return completion(ctx, [choice], usage, service_tier=resp.get("service_tier")), usage


# --- streaming -------------------------------------------------------------------------


class ResponsesStream(ChunkWriter):
    """Semantic events (response.created ... response.completed) -> chat chunks."""

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self._calls: dict[int, int] = {}  # output_index -> tool_calls index
        self._stop = StopScanner(ctx.stop) if ctx.stop else None

    def feed(self, data: bytes) -> bytes:
        ev = decode_event(data)
        kind = ev.get("type")
        if kind == "response.output_text.delta":
            delta = ev.get("delta", "")
            if self._stop is not None:
                delta = self._stop.push(delta)
            return self._chunk({"content": delta}) if delta else b""
        if self._stop is not None and self._stop.hit and kind in _AFTER_STOP:
            return b""  # past a stop sequence: only the end (for usage) still matters
        if kind == "response.function_call_arguments.delta":
            k = self._calls.get(ev.get("output_index", -1))
            frag = ev.get("delta", "")
            if k is None or not frag:
                return b""
            return self._chunk({"tool_calls": [{"index": k, "function": {"arguments": frag}}]})
        if kind == "response.reasoning_summary_text.delta":
            delta = ev.get("delta", "")
            return self._chunk({"reasoning_content": delta}) if delta else b""
        if kind == "response.created":
            return self._chunk({"role": "assistant", "content": "", "refusal": None})
        if kind == "response.output_item.added":
            item = ev.get("item") or {}
            if item.get("type") != "function_call":
                return b""
            k = len(self._calls)
            self._calls[ev.get("output_index", k)] = k
            call = {
                "index": k,
                "id": item.get("call_id"),
                "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments") or ""},
            }
            return self._chunk({"tool_calls": [call]})
        if kind == "response.refusal.delta":
            delta = ev.get("delta", "")
            return self._chunk({"refusal": delta}) if delta else b""
        if kind in ("response.completed", "response.incomplete"):
            return self._end(ev)
        if kind == "response.failed":
            resp = ev.get("response") or {}
            failed = _failed(resp) or UpstreamError("The upstream response failed.")
            if resp.get("usage"):
                self.usage = usage_from(resp["usage"])
            raise StreamInterrupted(failed.message, code=failed.code)
        if kind == "error":
            raise StreamInterrupted(
                str(ev.get("message") or "The upstream stream failed."),
                code=str(ev.get("code") or "upstream_stream_error"),
            )
        return b""  # in_progress, *.done, content_part.*, and event types added later

    def _end(self, ev: dict[str, Any]) -> bytes:
        resp = ev.get("response") or {}
        self.done = True
        self.usage = usage_from(resp.get("usage") or {})
        out = b""
        if self._stop is not None:
            rest = self._stop.flush()
            if rest:
                out += self._chunk({"content": rest})
        stopped = self._stop is not None and self._stop.hit
        self.finish_reason = "stop" if stopped else _finish(resp, bool(self._calls))
        return out + self._chunk({}, self.finish_reason) + self._usage_chunk()


def stream_translator(ctx: Context) -> ResponsesStream:
    return ResponsesStream(ctx)


# The Responses API shares Chat Completions' error envelope and statuses.
parse_error = chat.parse_error
